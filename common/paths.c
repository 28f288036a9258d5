#include "paths.h"

#include <errno.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static int fail(int r, char *err, size_t errlen, const char *fmt, ...)
	LOG_FORMAT(4, 5);

static int fail(int r, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

static char *join(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 2);

	if (!s)
		return NULL;
	memcpy(s, a, la);
	/* "/" + "x" must not become "//x". */
	if (la == 0 || a[la - 1] != '/')
		s[la++] = '/';
	memcpy(s + la, b, lb + 1);
	return s;
}

int paths_runtime_dir(char **out, char *err, size_t errlen)
{
	const char *dir = getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (!dir || !*dir)
		return fail(-ENOENT, err, errlen,
			    "XDG_RUNTIME_DIR is not set: log in through a "
			    "session manager (systemd --user sets it), or "
			    "pass --socket PATH");
	if (dir[0] != '/')
		return fail(-EINVAL, err, errlen,
			    "XDG_RUNTIME_DIR=%s is not an absolute path", dir);
	if (stat(dir, &st) < 0)
		return fail(-errno, err, errlen, "XDG_RUNTIME_DIR=%s: %s", dir,
			    strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(-ENOTDIR, err, errlen,
			    "XDG_RUNTIME_DIR=%s is not a directory", dir);
	if (st.st_uid != geteuid() || (st.st_mode & 0777) != 0700)
		return fail(-EPERM, err, errlen,
			    "XDG_RUNTIME_DIR=%s must be owned by uid %u with "
			    "mode 0700 (it is uid %u, mode %04o)",
			    dir, (unsigned)geteuid(), (unsigned)st.st_uid,
			    (unsigned)(st.st_mode & 07777));
	*out = strdup(dir);
	return *out ? 0 : -ENOMEM;
}

static int default_socket(char **out, char *err, size_t errlen)
{
	char *dir, *sub;
	int r = paths_runtime_dir(&dir, err, errlen);

	if (r < 0)
		return r;
	sub = join(dir, PATHS_SOCKET_DIR);
	*out = sub ? join(sub, PATHS_SOCKET_NAME) : NULL;
	free(sub);
	free(dir);
	return *out ? 0 : -ENOMEM;
}

int paths_socket(const char *override, char **out, bool *is_default,
		 char *err, size_t errlen)
{
	const char *env = getenv(PATHS_SOCKET_ENV);
	struct sockaddr_un sa;
	char *path = NULL;
	int r;

	if (!override && env && *env)
		override = env;
	if (is_default)
		*is_default = !override;
	if (override && !*override)
		return fail(-EINVAL, err, errlen, "empty socket path");
	r = override ? paths_absolute(override, &path)
		     : default_socket(&path, err, errlen);
	if (r < 0)
		return r == -ENOMEM || !override
			       ? r
			       : fail(r, err, errlen, "%s: %s", override,
				      strerror(-r));
	/* libuv 1.44 would truncate silently and bind somewhere else. */
	if (strlen(path) >= sizeof(sa.sun_path)) {
		r = fail(-ENAMETOOLONG, err, errlen,
			 "socket path %s is %zu bytes long; the limit is %zu",
			 path, strlen(path), sizeof(sa.sun_path) - 1);
		free(path);
		return r;
	}
	*out = path;
	return 0;
}

int paths_private_dir(const char *dir, char *err, size_t errlen)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return fail(-errno, err, errlen, "cannot create %s: %s", dir,
			    strerror(errno));
	/* lstat: a symlink planted here could point at someone else's dir. */
	if (lstat(dir, &st) < 0)
		return fail(-errno, err, errlen, "%s: %s", dir,
			    strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return fail(-ENOTDIR, err, errlen,
			    "%s is not a directory; refusing to use it", dir);
	if (st.st_uid != geteuid())
		return fail(-EPERM, err, errlen,
			    "%s is owned by uid %u, not %u; refusing to use it",
			    dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) < 0)
		return fail(-errno, err, errlen, "cannot chmod 0700 %s: %s",
			    dir, strerror(errno));
	return 0;
}

static const char *home_dir(void)
{
	const char *home = getenv("HOME");
	struct passwd *pw;

	if (home && home[0] == '/')
		return home;
	/* The user manager passes HOME, but a bare environment may not. */
	pw = getpwuid(geteuid());
	return pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
}

int paths_xdg(const char *env, const char *fallback, const char *suffix,
	      char **out)
{
	const char *xdg = getenv(env);
	const char *home;
	char *base;

	/* The XDG spec says to ignore a relative value. */
	if (xdg && xdg[0] == '/') {
		*out = join(xdg, suffix);
		return *out ? 0 : -ENOMEM;
	}
	home = home_dir();
	if (!home)
		return -ENOENT;
	base = join(home, fallback);
	*out = base ? join(base, suffix) : NULL;
	free(base);
	return *out ? 0 : -ENOMEM;
}

int paths_state_dir(char **out)
{
	return paths_xdg("XDG_STATE_HOME", ".local/state", "pycached", out);
}

int paths_mkdir_p(const char *path, mode_t mode)
{
	char *copy = strdup(path);
	int r = 0;

	if (!copy)
		return -ENOMEM;
	for (char *p = copy + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;

		*p = '\0';
		if (mkdir(copy, mode) < 0 && errno != EEXIST) {
			r = -errno;
			break;
		}
		*p = saved;
		if (saved == '\0')
			break;
	}
	free(copy);
	return r;
}

int paths_absolute(const char *path, char **out)
{
	char *cwd;

	if (path[0] == '/') {
		*out = strdup(path);
		return *out ? 0 : -ENOMEM;
	}
	cwd = getcwd(NULL, 0);
	if (!cwd)
		return -errno;
	*out = join(cwd, path);
	free(cwd);
	return *out ? 0 : -ENOMEM;
}

int paths_normalize(const char *path, char **out)
{
	size_t o = 0;
	char *s;

	if (path[0] != '/')
		return -EINVAL;
	s = malloc(strlen(path) + 2);
	if (!s)
		return -ENOMEM;
	for (const char *p = path; *p;) {
		size_t n;

		while (*p == '/')
			p++;
		n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.')) {
			p += n;
			continue;
		}
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			while (o > 0 && s[--o] != '/')
				;
		} else {
			s[o++] = '/';
			memcpy(s + o, p, n);
			o += n;
		}
		p += n;
	}
	if (o == 0)
		s[o++] = '/';
	s[o] = '\0';
	*out = s;
	return 0;
}

bool paths_is_under(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (strcmp(dir, "/") == 0)
		return true;
	return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}
