/*
 * probe: the timing-critical side of the benchmarks, driven by bench/run.
 * Each subcommand prints its figures as "key value" pairs or one line per
 * sample on stdout; diagnostics go to stderr. Single-threaded except the
 * burst observer (probe.c).
 */
#ifndef PYCACHED_BENCH_PROBE_H
#define PYCACHED_BENCH_PROBE_H

#include <stddef.h>

/* A list of owned paths. */
struct paths {
	char **v;
	size_t n, cap;
};

void paths_add(struct paths *p, char *path);
void paths_free(struct paths *p);

/* probe-tree.c */
/* Directories under root (root excluded, caches excluded), breadth first,
 * at most max (0: all). */
void walk_dirs(const char *root, size_t max, struct paths *out);
/* Up to max regular files under root. */
void walk_files(const char *root, size_t max, struct paths *out);
int cmd_mktree(int argc, char **argv);
int cmd_count(int argc, char **argv);
int cmd_clean(int argc, char **argv);

/* probe-ctl.c */
int cmd_control(int argc, char **argv);
int cmd_exec(int argc, char **argv);

#endif
