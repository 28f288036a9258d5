/*
 * The roots added with `pycachectl add`, kept in memory and persisted to
 * $XDG_STATE_HOME/pycached/roots (rewritten whole and atomically on every
 * change) so that they survive restarts; and the merge of those with the
 * configuration's roots into the list the watcher is given. Roots from the
 * configuration file are never stored here. Loop thread only.
 */
#ifndef PYCACHED_STATE_H
#define PYCACHED_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

struct state;

#define STATE_FILE_NAME "roots"

struct state_root {
	char *path;       /* canonical absolute path, owned */
	bool has_mode;    /* --mode was given; otherwise the config's mode */
	enum mode mode;
};

/*
 * Open the state file (file NULL: the XDG default) and read it. A missing
 * file is an empty state. A corrupt or truncated one is renamed to
 * FILE.corrupt with a warning and the state starts empty; a file that
 * cannot be read at all is left alone with a warning and the state refuses
 * to save (-EIO) so that it never clobbers what it could not read.
 * Returns 0, -ENOMEM, or -ENOENT when no HOME gives a default path.
 */
int state_new(const char *file, struct state **out);
void state_destroy(struct state *s);

/*
 * Remove the temporaries of saves that a killed daemon never finished
 * in the file's directory: regular files of state_save()'s names only,
 * none of a live pid (another daemon may share the directory). Count or
 * -errno.
 */
int state_clean(const struct state *s);

/* Read the file again (for reload), with state_new's rules. */
int state_reload(struct state *s);

const char *state_file(const struct state *s);
const struct state_root *state_roots(const struct state *s, size_t *n);
bool state_has(const struct state *s, const char *path);

/*
 * Add (mode NULL: follow the config) or remove a root and write the file.
 * On a write failure the change is undone in memory and -errno returned.
 * state_add: -EEXIST if present; state_remove: -ENOENT if absent.
 */
int state_add(struct state *s, const char *path, const enum mode *mode);
int state_remove(struct state *s, const char *path);

/*
 * The effective roots: every root of cfg (copied as is), then every stored
 * root that is not already a config root, with the config's [pycached]
 * mode (unless --mode was stored) and sweep. A stored root nested in or
 * containing a config root is left out with a warning: the config wins.
 * s may be NULL. *out is an array of *n deep copies; free it with
 * state_roots_free(). 0 or -ENOMEM.
 */
int state_merge_roots(const struct state *s, const struct config *cfg,
		      struct root_conf **out, size_t *n);
void state_roots_free(struct root_conf *roots, size_t n);

/* The stored file format's escape, exposed for the tests. Caller frees. */
char *state_escape(const char *path);
int state_unescape(const char *text, char **out);

#endif
