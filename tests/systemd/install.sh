#!/bin/sh
# `meson install --destdir` into a temporary directory, then check that
# exactly the files a packager expects are there, with sane modes, and that
# the installed pieces fit together.
#
#   install.sh MESON BUILDDIR VERSION BINDIR MANDIR EXAMPLEDIR UNITDIR BASHDIR ZSHDIR FISHDIR
#
# Directories are absolute install paths; an empty one means that part is
# disabled in this build and must not be installed at all.
set -eu

meson=$1 builddir=$2 version=$3 bindir=$4 mandir=$5 exampledir=$6 unitdir=$7
bashdir=$8 zshdir=$9
shift 9
fishdir=$1

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pycached-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
dest=$tmp/dest

"$meson" install -C "$builddir" --destdir "$dest" --no-rebuild --quiet ||
	fail "meson install failed"

expected=$tmp/expected
{
	echo "$bindir/pycached"
	echo "$bindir/pycachectl"
	echo "$exampledir/pycached.conf"
	if [ -n "$mandir" ]; then
		echo "$mandir/man1/pycached.1"
		echo "$mandir/man1/pycachectl.1"
		echo "$mandir/man5/pycached.conf.5"
	fi
	if [ -n "$unitdir" ]; then
		echo "$unitdir/pycached.service"
		echo "$unitdir/pycached.socket"
	fi
	[ -z "$bashdir" ] || echo "$bashdir/pycachectl"
	[ -z "$zshdir" ] || echo "$zshdir/_pycachectl"
	[ -z "$fishdir" ] || echo "$fishdir/pycachectl.fish"
} | sort >"$expected"

(cd "$dest" && find . ! -type d | sed 's|^\.||' | sort) >"$tmp/installed"
if ! cmp -s "$expected" "$tmp/installed"; then
	echo "expected (-) against installed (+):" >&2
	diff -u "$expected" "$tmp/installed" | tail -n +3 >&2
	fail "the installed files are not the expected ones"
fi

while read -r f; do
	mode=$(stat -c %a "$dest$f")
	case $f in
	"$bindir"/*) want=755 ;;
	*) want=644 ;;
	esac
	[ "$mode" = "$want" ] || fail "$f has mode $mode, expected $want"
done <"$expected"

# The installed binaries run from where they were put.
out=$("$dest$bindir/pycached" --version) || fail "installed pycached --version"
[ "$out" = "pycached $version" ] || fail "pycached --version said '$out'"
"$dest$bindir/pycachectl" --version >/dev/null ||
	fail "installed pycachectl --version"

# The service runs the binaries at their installed paths, not the build's.
if [ -n "$unitdir" ]; then
	unit=$dest$unitdir/pycached.service
	grep -qx "ExecStart=$bindir/pycached" "$unit" ||
		fail "ExecStart= of the installed unit is not $bindir/pycached"
	grep -qx "ExecReload=$bindir/pycachectl reload" "$unit" ||
		fail "ExecReload= of the installed unit is not $bindir/pycachectl reload"
fi

# Man pages render without a groff warning, when man is there to ask.
if [ -n "$mandir" ] && command -v man >/dev/null 2>&1; then
	for page in man1/pycached.1 man1/pycachectl.1 man5/pycached.conf.5; do
		warn=$(MANWIDTH=80 man --warnings -l "$dest$mandir/$page" 2>&1 >/dev/null) ||
			fail "man -l $page failed: $warn"
		[ -z "$warn" ] || fail "man -l $page: $warn"
	done
fi

echo "ok: $(wc -l <"$expected") files installed as expected"
