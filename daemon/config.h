/*
 * The INI configuration: strict parsing into a struct config that the caller
 * owns. Every problem is reported as "FILE:LINE: message" to the caller's
 * stream, all of them; a config with errors is never half-applied. Loop
 * thread only (it uses getenv and the process umask-free file APIs).
 */
#ifndef PYCACHED_CONFIG_H
#define PYCACHED_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "log.h"

enum mode {
	MODE_DELETE,
	MODE_OBSERVE,
	MODE_RELOCATE,
};

struct root_conf {
	char *path;          /* canonical absolute path (realpath), owned */
	enum mode mode;
	bool sweep;
	char **excludes;     /* this root's extra globs, owned */
	size_t n_excludes;
	unsigned line;       /* line of its [root …] header */
};

struct config {
	char *file;          /* the file read, owned; NULL when there was none */
	enum mode mode;
	bool sweep;
	bool skip_venvs;
	enum log_level log_level;
	char **excludes;     /* [pycached] exclude, owned; built-ins not included */
	size_t n_excludes;
	char *cache_dir;     /* the relocation prefix, absolute, owned; never NULL
	                        after a successful load (the XDG default) */
	uint64_t cache_max_size;  /* bytes; 0: unlimited */
	struct root_conf *roots;  /* owned array */
	size_t n_roots;
};

/* Built-in defaults, no roots. */
void config_init(struct config *cfg);
void config_finish(struct config *cfg);

/*
 * Resolve the default path: $XDG_CONFIG_HOME/pycached/pycached.conf, or
 * ~/.config/pycached/pycached.conf. Caller frees *out. 0 or -errno.
 */
int config_default_path(char **out);

/*
 * Parse file into *cfg (initialised here). explicit_file: the user named it
 * (--config), so a missing file is an error; otherwise a missing file is an
 * empty configuration. Errors are written to err as "FILE:LINE: message\n"
 * (or "FILE: message\n"). Returns 0, -EINVAL when the file has errors (cfg
 * is then finished and empty), or -errno; on error *cfg needs no finish.
 */
int config_load(struct config *cfg, const char *file, bool explicit_file,
		FILE *err);

const char *mode_name(enum mode mode);
/* "delete", "observe", "relocate" -> 0 or -EINVAL. */
int mode_parse(const char *s, enum mode *out);

/* "0", "unlimited", or a number with an optional K, M, G or T suffix
 * (powers of 1024, optionally followed by B or iB). 0 or -EINVAL. */
int config_parse_size(const char *s, uint64_t *out);

/* $XDG_CACHE_HOME/pycached/prefix, or ~/.cache/pycached/prefix. Caller
 * frees; 0 or -errno. */
int config_default_cache_dir(char **out);

/* Expand a leading "~/" (or a lone "~") with $HOME. Caller frees. */
char *config_expand_home(const char *path);

#endif
