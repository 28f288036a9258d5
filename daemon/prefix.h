/*
 * Housekeeping of the PYTHONPYCACHEPREFIX tree that relocate mode fills:
 * prune bytecode whose source is gone, and evict the least recently used
 * bytecode when the tree outgrows a cap. Only regular files with finished
 * bytecode names are ever removed, and then directories left empty; the walk
 * opens every directory with O_NOFOLLOW and keeps one fd per level. Loop
 * thread (it blocks for the length of one walk); no logging.
 */
#ifndef PYCACHED_PREFIX_H
#define PYCACHED_PREFIX_H

#include <stdint.h>

struct prefix_result {
	uint64_t files_removed;
	uint64_t bytes_removed;
	uint64_t dirs_removed;
	uint64_t files_left;
	uint64_t bytes_left;       /* the tree's bytecode after the operation */
};

/*
 * Claim the prefix: it carries a CACHEDIR.TAG that pycached writes only into
 * an empty directory. Prune and evict refuse (-EPERM) a directory without
 * one: they delete .pyc files, and sourceless .pyc files elsewhere are
 * importable programs. 0, -EPERM, or -errno.
 */
int prefix_claim(int prefix_fd);

/* Remove bytecode whose source (<dir>/<stem>.py, for any stem the name
 * allows) no longer exists, then empty directories. 0 or -errno. */
int prefix_prune(int prefix_fd, struct prefix_result *res);

/*
 * Remove the copies in progress that a killed daemon left (relocate.c's
 * ".<name>.pycached-<pid>-<ns>", any pid but this process's); nothing else,
 * not even directories left empty. Started once per prefix a process opens.
 * res counts what was removed. 0, -EPERM (unclaimed), or -errno.
 */
int prefix_clean(int prefix_fd, struct prefix_result *res);

/* When the bytecode adds up to more than max_bytes, remove the least
 * recently used (atime) until it is under 90% of it. 0 or -errno. */
int prefix_evict(int prefix_fd, uint64_t max_bytes, struct prefix_result *res);

/* For tests: is there a source file for this bytecode name in dir_path? */
int prefix_has_source(const char *dir_path, const char *name);

#endif
