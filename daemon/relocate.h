/*
 * The destination side of relocate mode: a PYTHONPYCACHEPREFIX tree, where
 * the bytecode of /a/b/pkg/m.py lives at <prefix>/a/b/pkg/m.<tag>.pyc with
 * no __pycache__ component (FACTS.md). Directories are created as CPython
 * creates them and opened one component at a time without following
 * symlinks. A file moves there atomically, is copied to a temporary name
 * first when the prefix is on another filesystem, and never replaces a
 * newer one. Any thread; no logging.
 */
#ifndef PYCACHED_RELOCATE_H
#define PYCACHED_RELOCATE_H

#include <stdbool.h>

/*
 * A copy in progress is ".<name>" RELOCATE_COPY_TAG "<pid>-<n>" beside its
 * destination, or ".long.pyc" RELOCATE_COPY_TAG "<pid>-<n>" when <name> is
 * too long for that; a daemon killed in the middle leaves it behind
 * (prefix_clean removes it).
 */
#define RELOCATE_COPY_TAG ".pycached-"

enum relocate_outcome {
	RELOCATE_MOVED,      /* renamed into the prefix */
	RELOCATE_COPIED,     /* copied across filesystems, then the source unlinked */
	RELOCATE_KEPT,       /* the prefix already had it, same or newer: source unlinked */
};

/*
 * Open (creating what is missing, mode 0777 less the umask) the directory
 * of the prefix that mirrors src_dir, an absolute path. O_PATH fd or -errno
 * (-ELOOP when a symlink is on the way).
 */
int relocate_open_dir(int prefix_fd, const char *src_dir);

/* Like relocate_open_dir, but never creates anything: -ENOENT instead. */
int relocate_find_dir(int prefix_fd, const char *src_dir);

/*
 * Move src_dir_fd/name, a regular bytecode file the caller verified (as
 * *expect), to dst_dir_fd/name, unless dst_dir_fd holds the same or a newer
 * one. source_dir_fd is the directory of the .py files (-1: unknown): a
 * pyc that matches its source is never taken for the older one. 0 with
 * *out set, or -errno with the source untouched; -ESTALE when what the
 * rename moved was not that file (it was swapped under us): it is moved
 * back, and must not be unlinked either.
 */
struct stat;
int relocate_file(int src_dir_fd, const char *name, int dst_dir_fd,
		  const struct stat *expect, int source_dir_fd,
		  enum relocate_outcome *out);

/* True for a finished bytecode name ("*.pyc", "*.pyo"); false for CPython's
 * in-flight "*.pyc.<digits>" temporaries, which are never worth keeping. */
bool relocate_worth_keeping(const char *name);

#endif
