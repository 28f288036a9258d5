#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "config-internal.h"

/*
 * Division of labour with inih: the reader below checks every physical line,
 * owns the [section] headers (inih silently truncates section names to 49
 * bytes, too short for root paths) and hands inih only "key = value" lines,
 * every other line as an empty one. inih splits those lines into name and
 * value and strips comments; on_key() in config.c judges them.
 */

static void main_header(struct parser *p)
{
	p->sec.kind = SECTION_MAIN;
	if (p->main_line) {
		config_report(p, p->line,
			      "duplicate section [pycached] (first at line %u)",
			      p->main_line);
		return;
	}
	p->main_line = p->line;
	p->sec.commit = true;
}

/* Expand "~" and canonicalise: 0, -EINVAL (reported) or -ENOMEM. */
static int root_canonical(struct parser *p, const char *raw, char **out)
{
	char *path = config_expand_home(raw);
	int r;

	if (!path && errno == ENOMEM)
		return -ENOMEM;
	if (!path)
		return config_report(p, p->line,
				     "cannot expand '~' in '%s': $HOME is not set",
				     raw);
	if (path[0] != '/') {
		r = config_report(p, p->line,
				  "root '%s' is relative; use an absolute path or ~/",
				  path);
		free(path);
		return r;
	}
	*out = realpath(path, NULL);
	r = *out ? 0 : -errno;
	free(path);
	if (r == 0 || r == -ENOMEM)
		return r;
	if (r == -ENOENT)
		return config_report(p, p->line, "root '%s' does not exist",
				     raw);
	return config_report(p, p->line, "root '%s': %s", raw, strerror(-r));
}

/* Against the roots before it: the same directory, or one inside another. */
static int root_conflicts(struct parser *p, const char *path)
{
	for (size_t i = 0; i < p->n_roots; i++) {
		const struct root_conf *o = &p->roots[i].conf;
		const char *how = path_inside(path, o->path) ? "is inside" :
				  path_inside(o->path, path) ? "contains" :
				  NULL;

		if (strcmp(path, o->path) == 0)
			return config_report(p, p->line,
					     "duplicate root '%s' (first at line %u)",
					     path, o->line);
		if (how)
			return config_report(p, p->line,
					     "root '%s' %s root '%s' (line %u)",
					     path, how, o->path, o->line);
	}
	return 0;
}

static int root_check(struct parser *p, const char *raw, const char *path)
{
	struct stat st;

	if (stat(path, &st) < 0)
		return config_report(p, p->line, "root '%s': %s", raw,
				     strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return config_report(p, p->line,
				     "root '%s' is not a directory", raw);
	if (strcmp(path, "/") == 0)
		return config_report(p, p->line,
				     "root '%s' is the whole file system ('/'); name a project directory",
				     raw);
	return root_conflicts(p, path);
}

static void root_header(struct parser *p, const char *raw)
{
	struct section *s = &p->sec;
	int r;

	s->kind = SECTION_ROOT;
	if (!raw[0]) {
		config_report(p, p->line, "missing path: expected [root PATH]");
		return;
	}
	r = root_canonical(p, raw, &s->path);
	if (r == -ENOMEM)
		config_fail(p, r, "");
	if (r == 0 && root_check(p, raw, s->path) == 0)
		s->commit = true;
}

static void section_header(struct parser *p, char *s)
{
	char *end = strchr(s, ']');
	char *title;

	config_section_begin(p, SECTION_UNKNOWN);
	if (!end) {
		config_report(p, p->line, "missing ']' in section header");
		return;
	}
	title = lskip(end + 1);
	if (*title && *title != ';')
		config_report(p, p->line, "unexpected text after ']': '%s'",
			      title);
	*end = '\0';
	title = lskip(s + 1);
	rstrip(title);
	/* Fits: the whole line is at most LINE_MAX_BYTES. */
	strcpy(p->sec.title, title);
	if (strcmp(title, "pycached") == 0)
		main_header(p);
	else if (strncmp(title, "root", 4) == 0 &&
		 (!title[4] || isspace((unsigned char)title[4])))
		root_header(p, lskip(title + 4));
	else
		config_report(p, p->line,
			      "unknown section [%s]; expected [pycached] or [root PATH]",
			      title);
}

static bool is_comment(char c)
{
	return c == ';' || c == '#';
}

/* inih's rule: the first '=' or ':' not inside a " ;" inline comment. */
static bool has_separator(const char *s)
{
	bool was_space = false;

	for (; *s; s++) {
		if (*s == '=' || *s == ':')
			return true;
		if (was_space && *s == ';')
			return false;
		was_space = isspace((unsigned char)*s);
	}
	return false;
}

/* Physical problems inih would hide: 0 or -EINVAL (reported). */
static int check_line(struct parser *p, const char *s, size_t len,
		      size_t limit)
{
	const char *t = lskip(s);

	if (len > limit)
		return config_report(p, p->line,
				     "line too long (%zu bytes, at most %zu)",
				     len, limit);
	if (memchr(s, '\0', len))
		return config_report(p, p->line, "NUL byte in line");
	/* inih appends an indented line to the previous key's value. */
	if (t != s && *t && !is_comment(*t))
		return config_report(p, p->line,
				     "indented line: it would continue the previous value; remove the leading whitespace");
	return 0;
}

/* What inih gets to see of this line: the line itself, or NULL for "". */
static const char *line_filter(struct parser *p, char *s, size_t len,
			       size_t limit)
{
	/* inih would skip a UTF-8 BOM, but only if it saw it. */
	if (p->line == 1 && len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0) {
		s += 3;
		len -= 3;
	}
	if (check_line(p, s, len, limit) < 0) {
		/* Keys after a broken header belong to no known section. */
		if (*lskip(s) == '[')
			config_section_begin(p, SECTION_UNKNOWN);
		return NULL;
	}
	s[len] = '\0';
	rstrip(s);
	/* Leading space left here means an indented comment. */
	if (!s[0] || isspace((unsigned char)s[0]) || is_comment(s[0]))
		return NULL;
	if (s[0] == '[') {
		section_header(p, s);
		return NULL;
	}
	if (!has_separator(s)) {
		config_report(p, p->line,
			      "expected 'key = value', [pycached] or [root PATH]");
		return NULL;
	}
	return s;
}

/* inih's reader: exactly one physical line per call, so p->line is exact. */
char *config_read_line(char *str, int num, void *stream)
{
	struct parser *p = stream;
	/* A build with a smaller buffer than Debian's lowers the limit. */
	size_t limit = num >= LINE_MAX_BYTES + 2 ? LINE_MAX_BYTES :
		       (size_t)num - 2;
	const char *line;
	ssize_t n;

	if (p->fatal)
		return NULL;
	errno = 0;
	n = getline(&p->buf, &p->buf_size, p->in);
	if (n < 0) {
		if (errno)
			config_fail(p, -errno, "cannot read: ");
		return NULL;
	}
	p->line++;
	if (n > 0 && p->buf[n - 1] == '\n')
		n--;
	line = line_filter(p, p->buf, (size_t)n, limit);
	if (!line)
		line = "";
	/* Fits: line_filter() refused anything longer than limit. */
	snprintf(str, (size_t)num, "%s\n", line);
	return str;
}
