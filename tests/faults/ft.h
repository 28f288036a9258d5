/*
 * What the reload and injection tests (test_reload.c, test_inject.c) share:
 * the daemon's configuration as status --json reports it, its inotify
 * watches as the kernel counts them, and the directories they should
 * cover. Helpers fail the running cmocka test on error; strings and
 * arrays belong to the struct hx. Single-threaded.
 */
#ifndef PYCACHED_TESTS_FT_H
#define PYCACHED_TESTS_FT_H

#include <stdbool.h>
#include <stddef.h>

struct hx;

#define FT_MAX_ROOTS 8

/* One root as status reports it. */
struct ft_root {
	const char *path;
	const char *mode;
};

/* What pycachectl --json status says (owned by the hx). */
struct ft_status {
	struct ft_root roots[FT_MAX_ROOTS];
	size_t n_roots;
	unsigned long long watches;  /* the daemon's own count */
	bool reloaded;               /* last_reload is there */
	bool reload_ok;
	const char *reload_errors;   /* or NULL */
	const char *json;            /* the whole reply */
};

/* pycachectl --json status, parsed; fails the test if it does not answer. */
void ft_status(struct hx *h, struct ft_status *st);
/* Is root path with this mode in st? */
bool ft_has_root(const struct ft_status *st, const char *path,
		 const char *mode);
/*
 * inotify watches the daemon holds now, from /proc/PID/fdinfo ("inotify
 * wd:" lines of every inotify fd it has).
 */
size_t ft_kernel_watches(struct hx *h);
/*
 * Directories under root, root included, that a watcher must watch: not
 * symlinks, not named __pycache__, not named one of the excludes
 * (NULL-terminated list, may be NULL), nor under one of those.
 */
size_t ft_count_dirs(const char *root, const char *const *excludes);
/* How many times needle occurs in hay. */
size_t ft_count(const char *hay, const char *needle);

#endif
