#!/bin/sh
# The Debian package (debian/), built as the README says from a copy of the
# tree, then checked from the outside: lintian on the binary and the source
# package, the file list, and the package unpacked into a scratch root
# (never the machine's /usr or /etc) where the programs run, the user units
# pass systemd-analyze, the shells find the completions and the maintainer
# scripts enable the units for every user.
#
#   deb.sh SRCDIR VERSION [LIST_COMMANDS COMPLETIONS_SH]
#
# VERSION is meson's project version: debian/changelog must carry it.
# LIST_COMMANDS and COMPLETIONS_SH (tests/systemd) check the installed
# completions against the command table. The package is built with
# DEB_BUILD_OPTIONS=nocheck: the other suites test this tree in their own
# build (tests/check runs them first), and debian/rules runs them through
# dh_auto_test in every package build without nocheck. Exits 77 (skip)
# when a packaging tool is missing, unless CI=true.
set -eu

src=$1 version=$2
list_commands=${3:-} completions_sh=${4:-}

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

ok() {
	echo "ok: $*"
}

for tool in git dpkg-buildpackage dpkg-source dh lintian man systemctl \
	systemd-analyze unshare; do
	command -v "$tool" >/dev/null 2>&1 && continue
	[ "${CI:-}" = true ] && fail "$tool is missing (tests/install-deps)"
	echo "SKIP: $tool is not installed (tests/install-deps installs it)"
	exit 77
done
git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1 || {
	echo "SKIP: $src is not a git checkout: no way to tell sources from outputs"
	exit 77
}

# meson's test environment is not a user's: no malloc perturbation in the
# compiler, and nothing of the caller's build options.
unset MALLOC_PERTURB_ DEB_BUILD_PROFILES MAKEFLAGS MFLAGS

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pycached-deb.XXXXXX")
pid=
cleanup() {
	[ -z "$pid" ] || kill "$pid" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A user of our own: nothing of the caller's home (~/.devscripts, lintian's
# profile, the shells' completions) takes part, and nothing lands there.
# Temporary files too stay in $tmp (lintian 2.116 leaves two in TMPDIR).
home=$tmp/home
mkdir -p "$home" && mkdir -m 0700 "$tmp/run"
export TMPDIR="$tmp" HOME="$home" XDG_CONFIG_HOME="$home/.config" \
	XDG_DATA_HOME="$home/.local/share" XDG_STATE_HOME="$home/.local/state" \
	XDG_CACHE_HOME="$home/.cache" XDG_RUNTIME_DIR="$tmp/run"

# --- the version comes from meson.build ------------------------------------

debversion=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
[ "${debversion%-*}" = "$version" ] ||
	fail "debian/changelog says $debversion, meson.build says $version"
[ "$(dpkg-parsechangelog -l "$src/debian/changelog" -S Source)" = pycached ] ||
	fail "debian/changelog is not pycached's"
ok "debian/changelog $debversion matches meson's $version"

# --- a copy of what CI's clone would hold ----------------------------------

# Tracked and untracked files, not ignored ones (build dirs), not deleted
# ones: `git ls-files -c` still lists those, and `-d` lists them again.
tree=$tmp/pycached-$version
mkdir "$tree"
(cd "$src" && { git ls-files -z -co --exclude-standard; git ls-files -z -d; } |
	sort -z | uniq -z -u | tar --null -T - -cf -) | tar -xf - -C "$tree"
[ -f "$tree/debian/control" ] || fail "the copy has no debian/control"

# 3.0 (quilt): the upstream tarball is the same tree without debian/.
(cd "$tmp" && tar --exclude="pycached-$version/debian" --sort=name \
	--owner=0 --group=0 --numeric-owner \
	-czf "pycached_$version.orig.tar.gz" "pycached-$version")
(cd "$tmp" && dpkg-source -b "pycached-$version") >"$tmp/source.log" 2>&1 ||
	{ cat "$tmp/source.log" >&2; fail "dpkg-source -b"; }
ok "source package pycached_$debversion.dsc"

start=$(date +%s)
(cd "$tree" && DEB_BUILD_OPTIONS=nocheck dpkg-buildpackage -us -uc -b) \
	>"$tmp/build.log" 2>&1 ||
	{ tail -n 60 "$tmp/build.log" >&2; fail "dpkg-buildpackage -us -uc -b"; }
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb=$tmp/pycached_${debversion}_$arch.deb
[ -f "$deb" ] || fail "no $deb"
ok "dpkg-buildpackage -us -uc -b in $(($(date +%s) - start)) s"

# --- lintian: no error, no warning ----------------------------------------

root_opt=
[ "$(id -u)" -ne 0 ] || root_opt=--allow-root
lintian $root_opt --fail-on none -I --pedantic --show-overrides \
	"$tmp/pycached_${debversion}_$arch.changes" "$tmp/pycached_$debversion.dsc" \
	>"$tmp/lintian.log" 2>&1 ||
	{ cat "$tmp/lintian.log" >&2; fail "lintian did not run"; }
sed 's/^/  lintian: /' "$tmp/lintian.log"
! grep -q '^[EW]: ' "$tmp/lintian.log" || fail "lintian reports errors or warnings"
ok "lintian: no error, no warning"

# --- what the package holds ------------------------------------------------

doc=/usr/share/doc/pycached
sort >"$tmp/expected" <<EOF
/usr/bin/pycached 755
/usr/bin/pycachectl 755
/usr/lib/systemd/user/pycached.service 644
/usr/lib/systemd/user/pycached.socket 644
/usr/share/bash-completion/completions/pycachectl 644
$doc/README.Debian 644
$doc/README.md.gz 644
$doc/changelog.Debian.gz 644
$doc/copyright 644
$doc/examples/pycached.conf 644
/usr/share/fish/vendor_completions.d/pycachectl.fish 644
/usr/share/lintian/overrides/pycached 644
/usr/share/man/man1/pycached.1.gz 644
/usr/share/man/man1/pycachectl.1.gz 644
/usr/share/man/man5/pycached.conf.5.gz 644
/usr/share/zsh/vendor-completions/_pycachectl 644
EOF
# "-rwxr-xr-x root/root 63816 DATE TIME ./usr/bin/pycachectl": every file
# (no directory, no link) with its mode in octal, owned by root.
dpkg-deb -c "$deb" | awk '
	$2 != "root/root" { print "owner " $2 " " $6; next }
	substr($1, 1, 1) != "-" { next }
	{
		m = 0
		for (i = 2; i <= 10; i++)
			m = m * 2 + (substr($1, i, 1) != "-")
		printf "%s %o\n", substr($6, 2), m
	}' | sort >"$tmp/contents"
if ! cmp -s "$tmp/expected" "$tmp/contents"; then
	echo "expected (-) against the package (+):" >&2
	diff -u "$tmp/expected" "$tmp/contents" | tail -n +3 >&2
	fail "the package does not hold the expected files"
fi
ok "$(wc -l <"$tmp/expected") files, owners and modes as expected"

[ "$(dpkg-deb -f "$deb" Version)" = "$debversion" ] || fail "Version field"
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libuv1 libinih1 libjson-c5 libsystemd0 init-system-helpers; do
	case ", $depends," in
	*", $lib "* | *", $lib,"*) ;;
	*) fail "Depends lacks $lib: $depends" ;;
	esac
done
ok "Depends: $depends"

# --- the package in a scratch root -----------------------------------------

root=$tmp/root
dpkg-deb -x "$deb" "$root"

out=$("$root/usr/bin/pycached" --version) || fail "pycached --version"
[ "$out" = "pycached $version" ] || fail "pycached --version said '$out'"
"$root/usr/bin/pycachectl" --help >"$tmp/help" || fail "pycachectl --help"
grep -q '^Usage: pycachectl ' "$tmp/help" || fail "pycachectl --help: no usage"
"$root/usr/bin/pycached" --check-config \
	--config "$root$doc/examples/pycached.conf" >/dev/null ||
	fail "the example configuration does not pass --check-config"
ok "pycached --version, pycachectl --help, the example configuration"

# The installed daemon at work: a root added with pycachectl loses a cache.
daemon_fail() {
	cat "$tmp/daemon.log" >&2
	fail "$@"
}
ctl=$root/usr/bin/pycachectl
mkdir "$home/proj"
"$root/usr/bin/pycached" 2>"$tmp/daemon.log" &
pid=$!
i=0
until "$ctl" status >/dev/null 2>&1; do
	i=$((i + 1))
	[ "$i" -lt 100 ] || daemon_fail "the daemon does not answer after 10 s"
	sleep 0.1
done
"$ctl" add "$home/proj" >/dev/null || daemon_fail "pycachectl add"
# Made aside and moved in whole: the daemon would race a mkdir then write.
mkdir -p "$tmp/stage/pkg/__pycache__"
echo bytecode >"$tmp/stage/pkg/__pycache__/m.cpython-311.pyc"
mv "$tmp/stage/pkg" "$home/proj/pkg"
i=0
while [ -e "$home/proj/pkg/__pycache__" ]; do
	i=$((i + 1))
	[ "$i" -lt 100 ] || daemon_fail "the cache is still there after 10 s"
	sleep 0.1
done
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" -eq 0 ] || daemon_fail "pycached exited $rc on SIGTERM"
ok "the installed daemon removes a cache in a root added with pycachectl"

# Man pages render without a groff warning, and man finds them.
for page in man1/pycached.1.gz man1/pycachectl.1.gz man5/pycached.conf.5.gz; do
	warn=$(MANWIDTH=80 man --warnings -l "$root/usr/share/man/$page" 2>&1 \
		>/dev/null) || fail "man -l $page: $warn"
	[ -z "$warn" ] || fail "man -l $page: $warn"
done
[ "$(MANPATH="$root/usr/share/man" man -w pycached.conf)" = \
	"$root/usr/share/man/man5/pycached.conf.5.gz" ] ||
	fail "man -w pycached.conf does not find the installed page"
ok "man pages"

# systemd-analyze verify checks that ExecStart= exists, and it must see
# /usr/bin/pycached. A private mount namespace lays the scratch /usr over
# the machine's, read-only: the units and binaries at their installed paths,
# the machine's /usr untouched. Without root, a user namespace maps us to
# root in it (Debian 12 allows unprivileged overlayfs there).
[ "$(id -u)" -eq 0 ] && ns="unshare -m" || ns="unshare -Urm"
units="/usr/lib/systemd/user/pycached.service /usr/lib/systemd/user/pycached.socket"
# verify exits 0 on unknown keys and typos: any output is a failure.
# shellcheck disable=SC2086
out=$(MANPATH="$root/usr/share/man" $ns --propagation private sh -ec '
	mount -t overlay pycached-scratch -o ro,lowerdir="$1/usr":/usr /usr
	shift
	systemd-analyze --user verify "$@"' sh "$root" $units 2>&1) ||
	{ printf '%s\n' "$out" >&2; fail "systemd-analyze --user verify failed"; }
[ -z "$out" ] || { printf '%s\n' "$out" >&2; fail "systemd-analyze --user verify"; }
# The same check without the package's /usr must complain, or the one above
# proved nothing.
if [ ! -e /usr/bin/pycached ]; then
	out=$(MANPATH="$root/usr/share/man" systemd-analyze --user verify \
		"$root/usr/lib/systemd/user/pycached.service" 2>&1) || true
	case $out in
	*"/usr/bin/pycached is not executable"*) ;;
	*) printf '%s\n' "$out" >&2; fail "verify does not check ExecStart=" ;;
	esac
fi
ok "systemd-analyze --user verify of the installed units, with their man pages"

# --- the completions, where Debian's shells look ---------------------------

bashdir=/usr/share/bash-completion/completions
zshdir=/usr/share/zsh/vendor-completions
fishdir=/usr/share/fish/vendor_completions.d
if [ -n "$list_commands" ]; then
	sh "$completions_sh" "$list_commands" "$root$bashdir/pycachectl" \
		"$root$zshdir/_pycachectl" "$root$fishdir/pycachectl.fish" \
		>"$tmp/completions.log" 2>&1 ||
		{ cat "$tmp/completions.log" >&2; fail "completions.sh"; }
	sed 's/^/  completions: /' "$tmp/completions.log"
fi
# Each shell loads the file by itself, from the scratch copy of the
# directory it searches by default.
bash --norc --noprofile -c '. "$1"; complete -p pycachectl' _ \
	"$root$bashdir/pycachectl" | grep -q ' pycachectl$' ||
	fail "bash: sourcing the completion does not complete pycachectl"
if [ -f /usr/share/bash-completion/bash_completion ]; then
	[ "$(pkg-config --variable=completionsdir bash-completion)" = "$bashdir" ] ||
		fail "bash-completion does not search $bashdir"
	XDG_DATA_DIRS=$root/usr/share bash --norc --noprofile -c '
		. /usr/share/bash-completion/bash_completion
		__load_completion pycachectl && complete -p pycachectl' |
		grep -q ' pycachectl$' || fail "bash-completion does not load it"
fi
ok "bash"
if command -v zsh >/dev/null 2>&1; then
	zsh -f -c 'print -rl -- $fpath' | grep -qx "$zshdir" ||
		fail "zsh does not search $zshdir"
	out=$(zsh -f -c 'fpath=("$1" $fpath)
		autoload -Uz compinit && compinit -u -D
		autoload +X _pycachectl
		print -r -- "$_comps[pycachectl] $functions_source[_pycachectl]"' _ \
		"$root$zshdir")
	[ "$out" = "_pycachectl $root$zshdir/_pycachectl" ] ||
		fail "zsh: compinit loaded '$out'"
	ok "zsh"
fi
if command -v fish >/dev/null 2>&1; then
	env -u XDG_DATA_DIRS fish -c 'printf "%s\n" $fish_complete_path' |
		grep -qx "$fishdir" || fail "fish does not search $fishdir"
	# fish autoloads the completions of a command that is on PATH.
	PATH=$root/usr/bin:$PATH fish --no-config -c '
		set fish_complete_path $argv[1]; complete -C "pycachectl "' \
		"$root$fishdir" | grep -q '^status' ||
		fail "fish does not autoload the completion"
	ok "fish"
fi

# --- the maintainer scripts enable the units for every user ----------------

# deb-systemd-helper works on $DPKG_ROOT when it is set; the scripts skip
# it then, so a stand-in on PATH sets it for the real helper: the real
# scripts, the real helper, the scratch root's /etc and /var.
mkdir "$tmp/control" "$tmp/helper"
dpkg-deb -e "$deb" "$tmp/control"
cat >"$tmp/helper/deb-systemd-helper" <<EOF
#!/bin/sh
DPKG_ROOT='$root' exec /usr/bin/deb-systemd-helper "\$@"
EOF
chmod +x "$tmp/helper/deb-systemd-helper"
maint() {
	PATH=$tmp/helper:$PATH DPKG_MAINTSCRIPT_PACKAGE=pycached \
		DPKG_MAINTSCRIPT_NAME=$1 sh "$tmp/control/$1" "$2" ||
		fail "$1 $2 failed"
}
links() {
	(cd "$1" && find etc -type l -printf '%p -> %l\n' 2>/dev/null | sort)
}

maint postinst configure
links "$root" >"$tmp/links.package"
# What `systemctl --user enable pycached` does, made for every user.
ref=$tmp/ref
dpkg-deb -x "$deb" "$ref"
systemctl --global --root="$ref" enable pycached.service >/dev/null 2>&1 ||
	fail "systemctl --global --root enable"
links "$ref" >"$tmp/links.systemctl"
[ -s "$tmp/links.package" ] || fail "postinst enabled nothing"
cmp -s "$tmp/links.systemctl" "$tmp/links.package" || {
	diff -u "$tmp/links.systemctl" "$tmp/links.package" >&2 || true
	fail "postinst does not enable what systemctl --global enable does"
}
[ "$(systemctl --global --root="$root" is-enabled pycached.service \
	pycached.socket | tr '\n' ' ')" = "enabled enabled " ] ||
	fail "systemctl --global is-enabled"
sed 's/^/  enabled: /' "$tmp/links.package"

# Removal keeps the links (they dangle, ignored), purge removes them.
maint postrm remove
[ -n "$(links "$root")" ] || fail "remove dropped the links"
maint postrm purge
[ -z "$(links "$root")" ] || fail "purge left links: $(links "$root")"

# Installed again, then disabled by the administrator: an upgrade keeps
# that choice.
maint postinst configure
systemctl --global --root="$root" disable pycached.service >/dev/null 2>&1
[ -z "$(links "$root")" ] || fail "systemctl --global disable left links"
maint postinst configure
[ -z "$(links "$root")" ] || fail "an upgrade enabled disabled units again"
ok "the maintainer scripts enable both units for every user as \
systemctl --global enable does, keep an administrator's disable across \
upgrades, and purge the links"

echo "ok: package pycached_${debversion}_$arch.deb"
