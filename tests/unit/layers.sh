#!/bin/sh
# The watcher's modules call one way only (daemon/watch-internal.h): each
# may include the header of a module below it, never one above, and the
# tree, at the bottom, includes nothing of the watcher at all. watch.h is
# the public interface (types all may use); its entry points that change
# anything belong to watch.c, the top, and no module below calls them:
# they are where the watcher enters and leaves (watch_enter/watch_leave).
# Prints every violation; exits 1 if there is one.
set -u
daemon=${1:?usage: layers.sh DAEMON_DIR}
# Bottom to top.
order="tree tree-check watch-wd watch-fs watch-reap drain crawl watch-roots watch-events watch-check watch"

rank() {
	i=0
	for m in $order; do
		[ "$m" = "$1" ] && { echo $i; return; }
		i=$((i + 1))
	done
	echo -1
}

bad=0
for m in $order; do
	mine=$(rank "$m")
	for f in "$daemon/$m.c" "$daemon/$m.h"; do
		[ -f "$f" ] || continue
		for inc in $(sed -n 's/^#include "\([^"]*\)\.h".*/\1/p' "$f"); do
			[ "$inc" = watch ] && [ "${m%-check}" != tree ] && continue
			if [ "${m%-check}" = tree ] && [ "$inc" != tree ]; then
				echo "$f includes $inc.h: tree.c is a data structure" \
					"and knows nothing of its users"
				bad=1
				continue
			fi
			theirs=$(rank "$inc")
			if [ "$theirs" -gt "$mine" ]; then
				echo "$f includes $inc.h: $inc sits above $m"
				bad=1
			fi
		done
	done
done
for f in "$daemon"/*.c; do
	[ "$f" = "$daemon/watch.c" ] && continue
	if grep -n 'watcher_\(add_root\|remove_root\|sweep\|destroy\)(' "$f" |
		grep -v '^[0-9]*:[a-z].*watcher_[a-z_]*(struct watcher \*w' >/dev/null &&
		case "$f" in */tree.c|*/watch-*.c|*/crawl.c|*/drain.c) true;; *) false;; esac; then
		echo "$f calls a public entry point of the watcher from inside it"
		bad=1
	fi
done
[ $bad -eq 0 ] && echo "layers: every include points down ($order)"
exit $bad
