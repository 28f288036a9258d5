/*
 * Shared by config.c (the key table, value setters, section commits and
 * config_load) and config-lines.c (inih's line reader, the [section]
 * headers and root paths). Not for other modules: they use config.h. Loop
 * thread only.
 */
#ifndef PYCACHED_CONFIG_INTERNAL_H
#define PYCACHED_CONFIG_INTERNAL_H

#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "config.h"

/*
 * Longest line accepted, without its '\n'. Debian's libinih 55 reads into a
 * fixed 200-byte buffer: a longer line is split and its tail handed to the
 * handler as a phantom "key = value", so we refuse it before inih sees it.
 */
#define LINE_MAX_BYTES 198

enum key_id {
	KEY_MODE,
	KEY_SWEEP,
	KEY_EXCLUDE,
	KEY_SKIP_VENVS,
	KEY_LOG_LEVEL,
	KEY_CACHE_DIR,
	KEY_CACHE_MAX_SIZE,
	KEY_COUNT,
};

enum section_kind {
	SECTION_NONE,     /* before the first header */
	SECTION_MAIN,
	SECTION_ROOT,
	SECTION_UNKNOWN,  /* a bad header, already reported: keys are ignored */
};

/* One [section] as it is read; applied to the config when it ends. */
struct section {
	enum section_kind kind;
	bool commit;                      /* header valid and not a duplicate */
	unsigned line;
	unsigned key_line[KEY_COUNT];     /* where each key was set; 0: unset */
	char title[LINE_MAX_BYTES + 1];   /* between the brackets */
	char *path;                       /* canonical root path, owned */
	enum mode mode;
	bool sweep;
	bool skip_venvs;
	enum log_level log_level;
	char *cache_dir;                  /* expanded, owned */
	uint64_t cache_max_size;
	char **excludes;                  /* owned */
	size_t n_excludes;
};

struct pending_root {
	struct root_conf conf;
	bool mode_set;   /* otherwise inherited from [pycached], once known */
	bool sweep_set;
};

struct parser {
	struct config *cfg;
	const char *file;
	FILE *in;
	FILE *err;                /* may be NULL: count errors, print nothing */
	char *buf;                /* getline's */
	size_t buf_size;
	unsigned line;            /* of the line last handed to inih */
	unsigned n_errors;
	int fatal;                /* -errno that stopped the parse */
	unsigned main_line;       /* first [pycached] header, 0 before */
	unsigned cache_dir_line;  /* where cache_dir was set, 0: default */
	struct section sec;
	struct pending_root *roots;
	size_t n_roots;
	size_t roots_size;
};

static inline char *lskip(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return (char *)s;
}

static inline void rstrip(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
}

static inline bool path_inside(const char *child, const char *parent)
{
	size_t n = strlen(parent);

	return strncmp(child, parent, n) == 0 && child[n] == '/';
}

/* config.c */

/* One "FILE:LINE: message" error; returns -EINVAL for the caller's use. */
int config_report(struct parser *p, unsigned line, const char *fmt, ...)
	LOG_FORMAT(3, 4);

/* Errors that stop the parse (-ENOMEM, a read error): the first one wins. */
void config_fail(struct parser *p, int err, const char *what);
/* Ends (and commits) the current section, then starts one at p->line. */
void config_section_begin(struct parser *p, enum section_kind kind);

/* config-lines.c */

/* inih's reader (ini_reader): the parser is its stream. */
char *config_read_line(char *str, int num, void *stream);

#endif
