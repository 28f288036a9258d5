#!/bin/sh
# Every system call pycached makes at work must pass the SystemCallFilter=
# of pycached.service. The unit sets SystemCallErrorNumber=EPERM, so a call
# left out would not kill the daemon: it would fail quietly, in a real
# systemd only. So: trace the daemon through a start, crawls, removals,
# relocation, every pycachectl command and a stop, and check each call
# against the filter, expanded by systemd-analyze. Exits 77 without strace
# or systemd-analyze.
#
#   syscalls.sh PYCACHED PYCACHECTL SERVICE
set -eu

pycached=$1 pycachectl=$2 service=$3

fail() {
	echo "FAIL: $*" >&2
	[ ! -s "${tmp:-/nonexistent}/daemon.log" ] || sed 's/^/  /' "$tmp/daemon.log" >&2
	exit 1
}

for tool in strace systemd-analyze; do
	command -v $tool >/dev/null 2>&1 || { echo "SKIP: $tool is not installed"; exit 77; }
done
[ -x "$pycachectl" ] || { echo "SKIP: pycachectl is not built"; exit 77; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pycached-sys.XXXXXX")
daemon=
cleanup() {
	[ -z "$daemon" ] || kill -KILL "$daemon" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# Bounded wait: until COMMAND succeeds, at most 20 s.
wait_for() {
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -le 2000 ] || return 1
		sleep 0.01
	done
}

# --- the filter: groups expanded by systemd-analyze ----------------------
expand() {
	systemd-analyze syscall-filter --no-pager "$1" |
		sed -n 's/^    \([@a-z0-9_-]*\)$/\1/p' |
		while read -r name; do
			case $name in
			@*) expand "$name" ;;
			*) echo "$name" ;;
			esac
		done
}

: >"$tmp/allow"
: >"$tmp/deny"
sed -n 's/^SystemCallFilter=//p' "$service" >"$tmp/filters"
[ -s "$tmp/filters" ] || fail "no SystemCallFilter= in $service"
while read -r line; do
	case $line in
	~*) list=deny line=${line#\~} ;;
	*) list=allow ;;
	esac
	for item in $line; do
		case $item in
		@*) expand "$item" ;;
		*) echo "$item" ;;
		esac
	done >>"$tmp/$list"
done <"$tmp/filters"
sort -u "$tmp/allow" >"$tmp/allow.s"
sort -u "$tmp/deny" >"$tmp/deny.s"
comm -23 "$tmp/allow.s" "$tmp/deny.s" >"$tmp/permitted"

# --- a day's work under strace -------------------------------------------
mkdir -p "$tmp/home" "$tmp/state" "$tmp/cache" "$tmp/conf"
mkdir -m 0700 "$tmp/runtime"
for i in 1 2 3 4 5 6 7 8; do
	for r in r1 r2 r3; do
		mkdir -p "$tmp/$r/p$i/sub/__pycache__"
		echo "x = 1" >"$tmp/$r/p$i/sub/m.py"
		echo bytecode >"$tmp/$r/p$i/sub/__pycache__/m.cpython-311.pyc"
	done
done
cat >"$tmp/conf/pycached.conf" <<EOC
[pycached]
cache_max_size = 1M

[root $tmp/r1]

[root $tmp/r2]
mode = relocate
EOC

export HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/runtime" \
	XDG_STATE_HOME="$tmp/state" XDG_CACHE_HOME="$tmp/cache" \
	XDG_CONFIG_HOME="$tmp/conf"
unset PYCACHED_SOCKET NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID LISTEN_FDS \
	LISTEN_PID LISTEN_FDNAMES

strace -f -qq -o "$tmp/trace" "$pycached" --config "$tmp/conf/pycached.conf" \
	2>"$tmp/daemon.log" &
tracer=$!
wait_for "$pycachectl" status || fail "the daemon did not answer"
daemon=$("$pycachectl" --json status | tr -d ' \n' | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
[ -n "$daemon" ] || fail "no pid in pycachectl --json status"

"$pycachectl" add "$tmp/r3" >/dev/null || fail "pycachectl add"
"$pycachectl" status >/dev/null || fail "pycachectl status"
"$pycachectl" list >/dev/null || fail "pycachectl list"
mkdir -p "$tmp/r1/late/__pycache__" "$tmp/r2/late/__pycache__"
echo "x = 1" >"$tmp/r2/late/m.py"
echo bytecode >"$tmp/r2/late/__pycache__/m.cpython-311.pyc" 2>/dev/null || true
wait_for test ! -e "$tmp/r1/late/__pycache__" || fail "r1/late not removed"
wait_for test ! -e "$tmp/r2/late/__pycache__" || fail "r2/late not relocated"
"$pycachectl" sweep >/dev/null || fail "pycachectl sweep"
"$pycachectl" reload >/dev/null || fail "pycachectl reload"
"$pycachectl" env >/dev/null || fail "pycachectl env"
"$pycachectl" prune >/dev/null || fail "pycachectl prune"
"$pycachectl" version >/dev/null || fail "pycachectl version"
"$pycachectl" remove "$tmp/r3" >/dev/null || fail "pycachectl remove"
kill -TERM "$daemon"
i=0
while kill -0 "$tracer" 2>/dev/null; do
	i=$((i + 1))
	[ $i -le 2000 ] || fail "the daemon did not exit on SIGTERM"
	sleep 0.01
done
wait "$tracer" || fail "the daemon exited with status $?"
daemon=

# "PID name(args" and "PID <... name resumed>": the names.
sed -n 's/^[0-9]* *\(<\.\.\. \)\{0,1\}\([a-z0-9_]*\)[( ].*/\2/p' "$tmp/trace" |
	grep . | sort -u >"$tmp/used"
[ -s "$tmp/used" ] || fail "no system call traced"
comm -23 "$tmp/used" "$tmp/permitted" >"$tmp/denied"
if [ -s "$tmp/denied" ]; then
	echo "calls the unit's SystemCallFilter= would refuse (EPERM):" >&2
	sed 's/^/  /' "$tmp/denied" >&2
	fail "$(wc -l <"$tmp/denied") system calls outside the filter"
fi
echo "ok: $(wc -l <"$tmp/used") distinct system calls, all permitted"
