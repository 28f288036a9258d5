#!/bin/sh
# The shell completions of pycachectl, in the real shells: each offers
# exactly the commands of the table in common/proto.h, the options their
# usage strings name, the modes of add, and the daemon's roots for remove. A shell that is not installed is
# skipped; with none at all the test is skipped (77).
#
#   completions.sh LIST_COMMANDS BASH_FILE ZSH_FILE FISH_FILE
set -eu

list_commands=$1 bash_file=$2 zsh_file=$3 fish_file=$4

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pycached-compl.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

"$list_commands" | sort >"$tmp/commands"
[ -s "$tmp/commands" ] || fail "no commands from $list_commands"
"$list_commands" options >"$tmp/options"
printf '%s\n' delete observe relocate >"$tmp/modes"

# A stand-in pycachectl on PATH: `list` prints two roots, one with a space.
mkdir "$tmp/bin" "$tmp/roots" "$tmp/roots/alpha" "$tmp/roots/be ta"
cat >"$tmp/bin/pycachectl" <<EOS
#!/bin/sh
for a; do last=\$a; done
[ "\$last" = list ] && printf '%s\n' "$tmp/roots/alpha" "$tmp/roots/be ta"
exit 0
EOS
chmod +x "$tmp/bin/pycachectl"
PATH=$tmp/bin:$PATH
export PATH

# same NAME FILE: the words in FILE, sorted, are exactly those expected.
same() {
	sort "$2" >"$2.sorted"
	cmp -s "$tmp/$1" "$2.sorted" ||
		{ diff -u "$tmp/$1" "$2.sorted" >&2; return 1; }
}

checked=0

if command -v bash >/dev/null 2>&1; then
	bash -n "$bash_file" || fail "bash: syntax"
	# words W...: run the completion function on the command line W...
	# (the last word being completed); print COMPREPLY one per line.
	bash_complete() {
		bash --norc --noprofile -c '
			. "$1"; shift
			COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
			_pycachectl
			[ ${#COMPREPLY[@]} -eq 0 ] || printf "%s\n" "${COMPREPLY[@]}"' _ "$bash_file" "$@"
	}
	bash_complete pycachectl "" >"$tmp/b1" && same commands "$tmp/b1" ||
		fail "bash: commands"
	bash_complete pycachectl --json "" >"$tmp/b2" && same commands "$tmp/b2" ||
		fail "bash: commands after --json"
	bash_complete pycachectl add --mode "" >"$tmp/b3" && same modes "$tmp/b3" ||
		fail "bash: add --mode"
	bash_complete pycachectl help "" >"$tmp/b4" && same commands "$tmp/b4" ||
		fail "bash: help COMMAND"
	bash_complete pycachectl remove "" >"$tmp/b5"
	grep -qx "$tmp/roots/be ta" "$tmp/b5" || fail "bash: remove does not offer the roots"
	bash_complete pycachectl status "" >"$tmp/b6"
	[ ! -s "$tmp/b6" ] || fail "bash: status takes no arguments"
	while read -r cmd opt; do
		bash_complete pycachectl "$cmd" -- | grep -qx -- "$opt" ||
			fail "bash: $cmd does not offer $opt"
	done <"$tmp/options"
	checked=$((checked + 1))
	echo "ok: bash"
fi

if command -v zsh >/dev/null 2>&1; then
	zsh -n "$zsh_file" || fail "zsh: syntax"
	# compinit reads the #compdef line: the function must be bound.
	mkdir "$tmp/zfunc"
	cp "$zsh_file" "$tmp/zfunc/_pycachectl"
	bound=$(ZDOTDIR=$tmp zsh -f -c 'fpath=("$1" $fpath)
		autoload -Uz compinit && compinit -u -D
		print -r -- $_comps[pycachectl]' _ "$tmp/zfunc")
	[ "$bound" = _pycachectl ] || fail "zsh: compinit bound '$bound', not _pycachectl"
	# Every command is described in the file.
	while read -r c; do
		grep -q "^ *'$c:" "$zsh_file" || fail "zsh: command $c is missing"
	done <"$tmp/commands"
	while read -r cmd opt; do
		sed -n "/^    $cmd)/,/;;/p" "$zsh_file" | grep -qF -e "'$opt=" -e "'$opt[" ||
			fail "zsh: $cmd does not offer $opt"
	done <"$tmp/options"
	n=$(grep -c "^ *'[a-z]*:" "$zsh_file")
	[ "$n" -eq "$(wc -l <"$tmp/commands")" ] || fail "zsh: $n commands listed"
	checked=$((checked + 1))
	echo "ok: zsh"
fi

if command -v fish >/dev/null 2>&1; then
	fish -n "$fish_file" || fail "fish: syntax"
	fish_complete() {
		fish --no-config -c 'source $argv[1]; complete -C $argv[2]' \
			"$fish_file" "$1" | cut -f1
	}
	fish_complete "pycachectl " | grep -v '^-' >"$tmp/f1"
	same commands "$tmp/f1" || fail "fish: commands"
	fish_complete "pycachectl add --mode " >"$tmp/f2"
	same modes "$tmp/f2" || fail "fish: add --mode"
	while read -r cmd opt; do
		fish_complete "pycachectl $cmd --" | grep -qx -- "$opt" ||
			fail "fish: $cmd does not offer $opt"
	done <"$tmp/options"
	fish_complete "pycachectl remove " >"$tmp/f3"
	grep -qx "$tmp/roots/be ta" "$tmp/f3" || fail "fish: remove does not offer the roots"
	checked=$((checked + 1))
	echo "ok: fish"
fi

if [ "$checked" -eq 0 ]; then
	echo "SKIP: none of bash, zsh, fish is installed"
	exit 77
fi
