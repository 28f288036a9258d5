/*
 * Pure name predicates: which file names are bytecode, which directory names
 * are excluded from watching. No I/O, no allocation; any thread.
 */
#ifndef PYCACHED_MATCH_H
#define PYCACHED_MATCH_H

#include <stdbool.h>
#include <stddef.h>

#define PYCACHE_NAME "__pycache__"

/*
 * True for "<stem>.pyc", "<stem>.pyo" and CPython's in-flight temporaries
 * "<stem>.pyc.<digits>", with a non-empty stem. Nothing else: numba's
 * .nbi/.nbc and anything unknown are foreign.
 */
bool match_bytecode_name(const char *name);

/* True when name matches one of the n fnmatch(3) globs. */
bool match_exclude(const char *const *globs, size_t n, const char *name);

/* Directory names never descended into, whatever the configuration says. */
extern const char *const match_builtin_excludes[];
extern const size_t match_builtin_excludes_len;

/* name is one of match_builtin_excludes (all plain names, no glob). */
bool match_builtin_exclude(const char *name);

#endif
