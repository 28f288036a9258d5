/*
 * Where pycached keeps its socket and its state, for both binaries. Pure
 * path logic plus the stat/mkdir checks that decide whether a directory is
 * private to the user. Functions that can fail for a reason the user must
 * read write one line into err (no trailing newline) and return -errno;
 * they never log.
 */
#ifndef PYCACHED_PATHS_H
#define PYCACHED_PATHS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PATHS_SOCKET_ENV "PYCACHED_SOCKET"
#define PATHS_SOCKET_DIR "pycached"
#define PATHS_SOCKET_NAME "control.sock"

/* Room for a message from the functions below. */
#define PATHS_ERR_MAX 512

/*
 * The control socket: override (--socket) if not NULL, else
 * $PYCACHED_SOCKET if set and non-empty, else
 * $XDG_RUNTIME_DIR/pycached/control.sock, which requires XDG_RUNTIME_DIR
 * to be an absolute path to a directory owned by the user with mode 0700
 * (no fallback: a shared /tmp path could be taken by someone else). A
 * relative override is made absolute against the working directory. A path
 * that does not fit sockaddr_un.sun_path is -ENAMETOOLONG. *is_default
 * (may be NULL) tells the caller whether to create the pycached/ directory.
 * Caller frees *out.
 */
int paths_socket(const char *override, char **out, bool *is_default,
		 char *err, size_t errlen);

/* $XDG_RUNTIME_DIR, checked as described above. Caller frees *out. */
int paths_runtime_dir(char **out, char *err, size_t errlen);

/*
 * Make dir (mode 0700) or accept it when it already is a real directory
 * (not a symlink) owned by the user; tighten its mode to 0700 if needed.
 */
int paths_private_dir(const char *dir, char *err, size_t errlen);

/*
 * $env/suffix when $env is absolute, else $HOME/fallback/suffix (HOME from
 * the passwd entry when unset). -ENOENT without a home. Caller frees.
 */
int paths_xdg(const char *env, const char *fallback, const char *suffix,
	      char **out);

/*
 * $XDG_STATE_HOME/pycached, or $HOME/.local/state/pycached (a relative
 * XDG_STATE_HOME is ignored, as the XDG spec says). Not created here.
 */
int paths_state_dir(char **out);

/* Create path and its missing parents with mode; existing ones are kept. */
int paths_mkdir_p(const char *path, mode_t mode);

/* path unchanged when absolute, else cwd + "/" + path. Caller frees. */
int paths_absolute(const char *path, char **out);

/*
 * Lexical clean-up of an absolute path: "//" and "/./" collapse, ".."
 * drops the previous component, no trailing slash except for "/". No
 * file-system access (for paths that may not exist any more). -EINVAL when
 * path is not absolute.
 */
int paths_normalize(const char *path, char **out);

/* True when path equals dir or lies under it (both normalized). */
bool paths_is_under(const char *path, const char *dir);

#endif
