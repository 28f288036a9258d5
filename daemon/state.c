#include "state.h"

#include <dirent.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "paths.h"

/*
 * File format, one record per line, so that any path up to PATH_MAX
 * survives whole (no INI parser splitting long lines):
 *
 *   pycached-roots 1
 *   root default /home/u/src/proj
 *   root observe /home/u/src/odd\x0aname
 *   end
 *
 * A backslash and every byte below 0x20 or equal to 0x7f are written as
 * \xNN; other bytes are written as they are (file names are bytes). The
 * "end" line tells a whole file from a truncated one.
 */
#define STATE_MAGIC "pycached-roots 1"
#define STATE_FILE_MAX (16 * 1024 * 1024)

struct state {
	char *file;
	struct state_root *roots;
	size_t n_roots;
	bool unreadable;     /* the file exists but could not be read */
};

static void roots_clear(struct state_root *roots, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(roots[i].path);
	free(roots);
}

char *state_escape(const char *path)
{
	static const char hex[] = "0123456789abcdef";
	char *out = malloc(strlen(path) * 4 + 1), *o = out;

	if (!out)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
		if (*p >= 0x20 && *p != 0x7f && *p != '\\') {
			*o++ = (char)*p;
			continue;
		}
		*o++ = '\\';
		*o++ = 'x';
		*o++ = hex[*p >> 4];
		*o++ = hex[*p & 0xf];
	}
	*o = '\0';
	return out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int state_unescape(const char *text, char **out)
{
	char *s = malloc(strlen(text) + 1), *o = s;

	if (!s)
		return -ENOMEM;
	for (const char *p = text; *p; p++) {
		int hi, lo;

		if (*p != '\\') {
			*o++ = *p;
			continue;
		}
		if (p[1] != 'x' || (hi = hexval(p[2])) < 0 ||
		    (lo = hexval(p[3])) < 0 || (hi == 0 && lo == 0)) {
			free(s);
			return -EINVAL;
		}
		*o++ = (char)(hi << 4 | lo);
		p += 3;
	}
	*o = '\0';
	*out = s;
	return 0;
}

/* --- reading ------------------------------------------------------------ */

static int read_file(const char *file, char **out, size_t *len)
{
	FILE *f = fopen(file, "re");
	char *buf;
	size_t n;

	if (!f)
		return -errno;
	buf = malloc(STATE_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, STATE_FILE_MAX + 1, f);
	if (ferror(f)) {
		free(buf);
		fclose(f);
		return -EIO;
	}
	fclose(f);
	buf[n < STATE_FILE_MAX ? n : STATE_FILE_MAX] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

static int parse_record(char *line, struct state_root *r)
{
	char *mode = line + strlen("root "), *path;

	if (strncmp(line, "root ", 5) != 0)
		return -EINVAL;
	path = strchr(mode, ' ');
	if (!path)
		return -EINVAL;
	*path++ = '\0';
	*r = (struct state_root){ 0 };
	if (strcmp(mode, "default") != 0) {
		if (mode_parse(mode, &r->mode) < 0)
			return -EINVAL;
		r->has_mode = true;
	}
	if (path[0] != '/')
		return -EINVAL;
	return state_unescape(path, &r->path);
}

static bool roots_contain(const struct state_root *roots, size_t n,
			  const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(roots[i].path, path) == 0)
			return true;
	return false;
}

/* Take r over; a duplicate is dropped (the first one wins). */
static int roots_append(struct state_root **roots, size_t *n,
			struct state_root r)
{
	struct state_root *more;

	if (roots_contain(*roots, *n, r.path)) {
		free(r.path);
		return 0;
	}
	more = realloc(*roots, (*n + 1) * sizeof(**roots));
	if (!more) {
		free(r.path);
		return -ENOMEM;
	}
	*roots = more;
	(*roots)[(*n)++] = r;
	return 0;
}

/* One line of text (NUL-terminated in place); *ended after "end". */
static int parse_line(char *line, unsigned line_no, bool *ended,
		      struct state_root **roots, size_t *n)
{
	struct state_root r;
	int err;

	if (line_no == 1)
		return strcmp(line, STATE_MAGIC) ? -EINVAL : 0;
	if (strcmp(line, "end") == 0) {
		*ended = true;
		return 0;
	}
	err = parse_record(line, &r);
	return err < 0 ? err : roots_append(roots, n, r);
}

/* Parse text in place. -EINVAL (with *bad_line) when it is not whole. */
static int parse_text(char *text, size_t len, struct state_root **out,
		      size_t *n_out, unsigned *bad_line)
{
	struct state_root *roots = NULL;
	size_t n = 0;
	unsigned line_no = 0;
	bool ended = false;
	int err = 0;

	if (len > STATE_FILE_MAX || strlen(text) != len)
		err = -EINVAL;   /* too big, or a NUL byte inside */
	for (char *line = text, *nl; !err && *line; line = nl + 1) {
		nl = strchr(line, '\n');
		line_no++;
		/* No final newline, or anything after "end": truncated or worse. */
		if (!nl || ended) {
			err = -EINVAL;
			break;
		}
		*nl = '\0';
		err = parse_line(line, line_no, &ended, &roots, &n);
	}
	if (!err && !ended)
		err = -EINVAL;
	if (err) {
		*bad_line = line_no;
		roots_clear(roots, n);
		return err;
	}
	*out = roots;
	*n_out = n;
	return 0;
}

static void move_aside(const struct state *s, unsigned line)
{
	char aside[4096];

	snprintf(aside, sizeof(aside), "%s.corrupt", s->file);
	if (rename(s->file, aside) < 0)
		log_warn("%s:%u: corrupt or truncated; could not move it aside "
			 "(%s); starting with no added roots", s->file, line,
			 strerror(errno));
	else
		log_warn("%s:%u: corrupt or truncated; moved aside to %s; "
			 "starting with no added roots", s->file, line, aside);
}

static int state_load(struct state *s)
{
	struct state_root *roots = NULL;
	size_t n = 0, len = 0;
	unsigned bad = 0;
	char *text = NULL;
	int r = read_file(s->file, &text, &len);

	s->unreadable = r < 0 && r != -ENOENT && r != -ENOMEM;
	if (r == -ENOENT)
		goto replace;
	if (r == -ENOMEM)
		return r;
	if (r < 0) {
		log_warn("%s: %s; added roots are not loaded and will not be "
			 "saved", s->file, strerror(-r));
		goto replace;
	}
	r = parse_text(text, len, &roots, &n, &bad);
	free(text);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		move_aside(s, bad);
replace:
	roots_clear(s->roots, s->n_roots);
	s->roots = roots;
	s->n_roots = n;
	return 0;
}

int state_new(const char *file, struct state **out)
{
	struct state *s = calloc(1, sizeof(*s));
	char *dir = NULL;
	int r;

	if (!s)
		return -ENOMEM;
	if (file) {
		s->file = strdup(file);
	} else if ((r = paths_state_dir(&dir)) < 0) {
		free(s);
		return r;
	} else {
		s->file = malloc(strlen(dir) + sizeof("/" STATE_FILE_NAME));
		if (s->file)
			sprintf(s->file, "%s/%s", dir, STATE_FILE_NAME);
		free(dir);
	}
	r = s->file ? state_load(s) : -ENOMEM;
	if (r < 0) {
		state_destroy(s);
		return r;
	}
	*out = s;
	return 0;
}

void state_destroy(struct state *s)
{
	if (!s)
		return;
	roots_clear(s->roots, s->n_roots);
	free(s->file);
	free(s);
}

/*
 * state_save()'s "FILE.tmp.PID.XXXXXX", of this process (it saves in one
 * call: none is in progress) or of a pid no process has: a daemon killed
 * between mkostemp and rename. A live pid may be another daemon that shares
 * this state directory, in the middle of its save.
 */
static bool unfinished_save(const char *name, const char *base, size_t blen)
{
	const char *p = name + blen + 5, *dot;
	long pid;

	if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp.", 5) != 0)
		return false;
	dot = p + strspn(p, "0123456789");
	if (dot == p || dot - p > 10 || *dot != '.' || strlen(dot + 1) != 6 ||
	    strspn(dot + 1, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		   "0123456789") != 6)
		return false;
	pid = strtol(p, NULL, 10);
	return pid > 0 && (pid == (long)getpid() ||
			   (kill((pid_t)pid, 0) < 0 && errno == ESRCH));
}

int state_clean(const struct state *s)
{
	const char *slash = strrchr(s->file, '/');
	const char *base = slash ? slash + 1 : s->file;
	size_t blen = strlen(base), dlen = (size_t)(base - s->file);
	char dir[4096];
	struct dirent *de;
	struct stat st;
	int fd, n = 0;
	DIR *d;

	/* The directory state_save() writes into, by the same path. */
	if (dlen >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, slash ? s->file : "./", slash ? dlen : 2);
	dir[slash ? dlen : 2] = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		if (!unfinished_save(de->d_name, base, blen) ||
		    fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (unlinkat(fd, de->d_name, 0) == 0)
			n++;
	}
	closedir(d);
	return n;
}

int state_reload(struct state *s)
{
	return state_load(s);
}

const char *state_file(const struct state *s)
{
	return s->file;
}

const struct state_root *state_roots(const struct state *s, size_t *n)
{
	*n = s ? s->n_roots : 0;
	return s ? s->roots : NULL;
}

bool state_has(const struct state *s, const char *path)
{
	return s && roots_contain(s->roots, s->n_roots, path);
}

/* --- writing ------------------------------------------------------------ */

static int write_records(FILE *f, const struct state *s)
{
	fprintf(f, "%s\n", STATE_MAGIC);
	for (size_t i = 0; i < s->n_roots; i++) {
		const struct state_root *r = &s->roots[i];
		char *esc = state_escape(r->path);

		if (!esc)
			return -ENOMEM;
		fprintf(f, "root %s %s\n",
			r->has_mode ? mode_name(r->mode) : "default", esc);
		free(esc);
	}
	fprintf(f, "end\n");
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* temp file in the same directory, fsync, rename, fsync the directory */
static int state_save(const struct state *s)
{
	size_t dlen = (size_t)(strrchr(s->file, '/') - s->file);
	char dir[4096], tmp[4200];
	FILE *f;
	int fd, r;

	if (s->unreadable)
		return -EIO;
	if (dlen == 0 || dlen >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, s->file, dlen);
	dir[dlen] = '\0';
	r = paths_mkdir_p(dir, 0700);
	if (r < 0)
		return r;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%ld.XXXXXX", s->file, (long)getpid());
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return -errno;
	f = fdopen(fd, "w");
	if (!f) {
		r = -errno;
		close(fd);
		goto fail_unlink;
	}
	r = write_records(f, s);
	if (r == 0 && (fflush(f) != 0 || fsync(fd) < 0))
		r = -errno;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, s->file) < 0)
		r = -errno;
	if (r < 0)
		goto fail_unlink;
	return fsync_dir(dir);
fail_unlink:
	unlink(tmp);
	return r;
}

int state_add(struct state *s, const char *path, const enum mode *mode)
{
	struct state_root *roots;
	int r;

	if (state_has(s, path))
		return -EEXIST;
	roots = realloc(s->roots, (s->n_roots + 1) * sizeof(*roots));
	if (!roots)
		return -ENOMEM;
	s->roots = roots;
	roots[s->n_roots] = (struct state_root){
		.path = strdup(path),
		.has_mode = mode != NULL,
		.mode = mode ? *mode : MODE_DELETE,
	};
	if (!roots[s->n_roots].path)
		return -ENOMEM;
	s->n_roots++;
	r = state_save(s);
	if (r < 0)
		free(s->roots[--s->n_roots].path);
	return r;
}

int state_remove(struct state *s, const char *path)
{
	struct state_root gone;
	size_t i;
	int r;

	for (i = 0; i < s->n_roots; i++)
		if (strcmp(s->roots[i].path, path) == 0)
			break;
	if (i == s->n_roots)
		return -ENOENT;
	gone = s->roots[i];
	memmove(&s->roots[i], &s->roots[i + 1],
		(s->n_roots - i - 1) * sizeof(*s->roots));
	s->n_roots--;
	r = state_save(s);
	if (r < 0) {
		/* Put it back where it was: the file still lists it. */
		memmove(&s->roots[i + 1], &s->roots[i],
			(s->n_roots - i) * sizeof(*s->roots));
		s->roots[i] = gone;
		s->n_roots++;
		return r;
	}
	free(gone.path);
	return 0;
}

/* --- merging ------------------------------------------------------------ */

static int conf_copy(struct root_conf *dst, const struct root_conf *src)
{
	*dst = *src;
	dst->excludes = calloc(src->n_excludes + 1, sizeof(char *));
	dst->path = strdup(src->path);
	if (!dst->excludes || !dst->path)
		return -ENOMEM;
	for (size_t i = 0; i < src->n_excludes; i++)
		if (!(dst->excludes[i] = strdup(src->excludes[i])))
			return -ENOMEM;
	return 0;
}

void state_roots_free(struct root_conf *roots, size_t n)
{
	for (size_t i = 0; roots && i < n; i++) {
		for (size_t j = 0; roots[i].excludes && j < roots[i].n_excludes; j++)
			free(roots[i].excludes[j]);
		free(roots[i].excludes);
		free(roots[i].path);
	}
	free(roots);
}

/* False (with a warning for an overlap) when the config already covers it. */
static bool stored_root_wanted(const struct config *cfg, const char *path)
{
	for (size_t i = 0; i < cfg->n_roots; i++) {
		const char *c = cfg->roots[i].path;

		if (strcmp(c, path) == 0)
			return false;
		if (paths_is_under(path, c) || paths_is_under(c, path)) {
			log_warn("%s (added with pycachectl) overlaps %s from "
				 "%s:%u; keeping the configuration's root",
				 path, c, cfg->file ? cfg->file : "the config",
				 cfg->roots[i].line);
			return false;
		}
	}
	return true;
}

int state_merge_roots(const struct state *s, const struct config *cfg,
		      struct root_conf **out, size_t *n)
{
	size_t n_stored, k = 0;
	const struct state_root *stored = state_roots(s, &n_stored);
	struct root_conf *roots = calloc(cfg->n_roots + n_stored + 1,
					 sizeof(*roots));

	if (!roots)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_roots; i++)
		if (conf_copy(&roots[k++], &cfg->roots[i]) < 0)
			goto fail;
	for (size_t i = 0; i < n_stored; i++) {
		struct root_conf rc = {
			.path = stored[i].path,
			.mode = stored[i].has_mode ? stored[i].mode : cfg->mode,
			.sweep = cfg->sweep,
		};

		if (stored_root_wanted(cfg, rc.path) &&
		    conf_copy(&roots[k++], &rc) < 0)
			goto fail;
	}
	*out = roots;
	*n = k;
	return 0;
fail:
	state_roots_free(roots, k);
	return -ENOMEM;
}
