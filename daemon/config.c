#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config-internal.h"
#include "paths.h"

struct key {
	const char *name;
	bool in_root;
	int (*set)(struct parser *p, struct section *s, const char *value);
};

int config_report(struct parser *p, unsigned line, const char *fmt, ...)
{
	va_list ap;

	p->n_errors++;
	if (!p->err)
		return -EINVAL;
	fprintf(p->err, "%s:%u: ", p->file, line);
	va_start(ap, fmt);
	vfprintf(p->err, fmt, ap);
	va_end(ap);
	fputc('\n', p->err);
	return -EINVAL;
}

/* Errors that stop the parse: no line to blame, one message. */
void config_fail(struct parser *p, int err, const char *what)
{
	if (p->fatal)
		return;
	p->fatal = err;
	if (p->err)
		fprintf(p->err, "%s: %s%s\n", p->file, what, strerror(-err));
}

static void free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

const char *mode_name(enum mode mode)
{
	switch (mode) {
	case MODE_DELETE:
		return "delete";
	case MODE_OBSERVE:
		return "observe";
	case MODE_RELOCATE:
		return "relocate";
	}
	return "unknown";
}

int mode_parse(const char *s, enum mode *out)
{
	static const enum mode modes[] = {
		MODE_DELETE, MODE_OBSERVE, MODE_RELOCATE,
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		if (strcmp(s, mode_name(modes[i])) == 0) {
			*out = modes[i];
			return 0;
		}
	}
	return -EINVAL;
}

static int bool_parse(const char *s, bool *out)
{
	static const char *const words[][2] = {
		{ "yes", "no" }, { "true", "false" }, { "on", "off" }, { "1", "0" },
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		for (size_t b = 0; b < 2; b++) {
			if (strcmp(s, words[i][b]) == 0) {
				*out = b == 0;
				return 0;
			}
		}
	}
	return -EINVAL;
}

void config_init(struct config *cfg)
{
	*cfg = (struct config){
		.mode = MODE_DELETE,
		.sweep = true,
		.skip_venvs = true,
		.log_level = LOG_LEVEL_INFO,
	};
}

static void root_conf_finish(struct root_conf *rc)
{
	free(rc->path);
	free_strv(rc->excludes, rc->n_excludes);
}

void config_finish(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_roots; i++)
		root_conf_finish(&cfg->roots[i]);
	free(cfg->roots);
	free_strv(cfg->excludes, cfg->n_excludes);
	free(cfg->file);
	free(cfg->cache_dir);
	config_init(cfg);
}

int config_default_path(char **out)
{
	return paths_xdg("XDG_CONFIG_HOME", ".config", "pycached/pycached.conf",
			 out);
}

/* NULL with errno ENOENT when "~" needs an unset or empty $HOME. */
char *config_expand_home(const char *path)
{
	const char *home;
	char *out;

	if (path[0] != '~' || (path[1] != '\0' && path[1] != '/'))
		return strdup(path);
	home = getenv("HOME");
	if (!home || !home[0]) {
		errno = ENOENT;
		return NULL;
	}
	if (asprintf(&out, "%s%s", home, path + 1) < 0) {
		errno = ENOMEM;
		return NULL;
	}
	return out;
}

static int bad_value(struct parser *p, const char *key, const char *value,
		     const char *allowed)
{
	return config_report(p, p->line, "bad value '%s' for %s: expected %s",
			     value, key, allowed);
}

static int set_mode(struct parser *p, struct section *s, const char *value)
{
	if (mode_parse(value, &s->mode) < 0)
		return bad_value(p, "mode", value, "delete, observe or relocate");
	return 0;
}

static const char bool_words[] = "yes, no, true, false, on, off, 1 or 0";

static int set_sweep(struct parser *p, struct section *s, const char *value)
{
	if (bool_parse(value, &s->sweep) < 0)
		return bad_value(p, "sweep", value, bool_words);
	return 0;
}

static int set_skip_venvs(struct parser *p, struct section *s,
			  const char *value)
{
	if (bool_parse(value, &s->skip_venvs) < 0)
		return bad_value(p, "skip_venvs", value, bool_words);
	return 0;
}

static int set_log_level(struct parser *p, struct section *s,
			 const char *value)
{
	if (log_level_parse(value, &s->log_level) < 0)
		return bad_value(p, "log_level", value,
				 "error, warning, info or debug");
	return 0;
}

static int set_cache_dir(struct parser *p, struct section *s,
			 const char *value)
{
	char *path = config_expand_home(value);

	if (!path && errno == ENOMEM)
		return -ENOMEM;
	if (!path || path[0] != '/') {
		free(path);
		return bad_value(p, "cache_dir", value,
				 "an absolute path or one under '~/'");
	}
	free(s->cache_dir);
	s->cache_dir = path;
	p->cache_dir_line = p->line;
	return 0;
}

/* "0", "unlimited", or a number with an optional K, M, G or T (x1024). */
int config_parse_size(const char *s, uint64_t *out)
{
	static const char units[] = "KMGT";
	unsigned long long v;
	char *end;

	if (!strcmp(s, "unlimited")) {
		*out = 0;
		return 0;
	}
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	if (*end) {
		const char *u = strchr(units, toupper((unsigned char)*end));

		if (!u || !*u || (end[1] && strcmp(end + 1, "B") && strcmp(end + 1, "iB")))
			return -EINVAL;
		for (long i = 0; i <= u - units; i++) {
			if (v > UINT64_MAX / 1024)
				return -EINVAL;
			v *= 1024;
		}
	}
	*out = v;
	return 0;
}

static int set_cache_max_size(struct parser *p, struct section *s,
			      const char *value)
{
	if (config_parse_size(value, &s->cache_max_size) < 0)
		return bad_value(p, "cache_max_size", value,
				 "a size such as 500M or 2G, or unlimited");
	return 0;
}

static size_t count_words(const char *s)
{
	size_t n = 0;

	while (*(s = lskip(s))) {
		n++;
		while (*s && !isspace((unsigned char)*s))
			s++;
	}
	return n;
}

/* Whitespace-separated words into a new vector: 0 or -ENOMEM. */
static int split_words(const char *s, char ***out, size_t *n_out)
{
	size_t n = count_words(s);
	char **v = n ? calloc(n, sizeof(*v)) : NULL;

	if (n && !v)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		size_t len;

		s = lskip(s);
		for (len = 0; s[len] && !isspace((unsigned char)s[len]); len++)
			;
		v[i] = strndup(s, len);
		if (!v[i]) {
			free_strv(v, i);
			return -ENOMEM;
		}
		s += len;
	}
	*out = v;
	*n_out = n;
	return 0;
}

static int set_exclude(struct parser *p, struct section *s, const char *value)
{
	int r = split_words(value, &s->excludes, &s->n_excludes);

	if (r < 0)
		return r;
	/* The watcher matches globs against one directory name at a time. */
	for (size_t i = 0; i < s->n_excludes; i++) {
		if (strchr(s->excludes[i], '/')) {
			config_report(p, p->line,
				      "exclude glob '%s' contains '/': globs match a single directory name",
				      s->excludes[i]);
			r = -EINVAL;
		}
	}
	return r;
}

static const struct key keys[KEY_COUNT] = {
	[KEY_MODE] = { "mode", true, set_mode },
	[KEY_SWEEP] = { "sweep", true, set_sweep },
	[KEY_EXCLUDE] = { "exclude", true, set_exclude },
	[KEY_SKIP_VENVS] = { "skip_venvs", false, set_skip_venvs },
	[KEY_LOG_LEVEL] = { "log_level", false, set_log_level },
	[KEY_CACHE_DIR] = { "cache_dir", false, set_cache_dir },
	[KEY_CACHE_MAX_SIZE] = { "cache_max_size", false, set_cache_max_size },
};

static int key_find(const char *name)
{
	for (int i = 0; i < KEY_COUNT; i++) {
		if (strcmp(name, keys[i].name) == 0)
			return i;
	}
	return -1;
}

static int unknown_key(struct parser *p, const char *name, int id)
{
	struct section *s = &p->sec;

	if (s->kind == SECTION_MAIN)
		return config_report(p, p->line,
				     "unknown key '%s' in [pycached]; known keys: mode, sweep, exclude, skip_venvs, log_level, cache_dir, cache_max_size",
				     name);
	if (id >= 0)
		return config_report(p, p->line,
				     "key '%s' is only allowed in [pycached], not in [%s]",
				     name, s->title);
	return config_report(p, p->line,
			     "unknown key '%s' in [%s]; known keys: mode, sweep, exclude",
			     name, s->title);
}

static int on_key(struct parser *p, const char *name, const char *value)
{
	struct section *s = &p->sec;
	int id;

	if (s->kind == SECTION_UNKNOWN)
		return 0;
	if (s->kind == SECTION_NONE)
		return config_report(p, p->line,
				     "key '%s' outside any section; put it under [pycached] or [root PATH]",
				     name);
	if (!name[0])
		return config_report(p, p->line, "missing key name before '='");
	id = key_find(name);
	if (id < 0 || (s->kind == SECTION_ROOT && !keys[id].in_root))
		return unknown_key(p, name, id);
	if (s->key_line[id])
		return config_report(p, p->line,
				     "duplicate key '%s' in [%s] (first at line %u)",
				     name, s->title, s->key_line[id]);
	s->key_line[id] = p->line;
	return keys[id].set(p, s, value);
}

/* The one place inih's "non-zero is success" convention is met. */
static int ini_on_key(void *user, const char *section, const char *name,
		      const char *value)
{
	struct parser *p = user;
	int r = on_key(p, name, value);

	if (r == -ENOMEM)
		config_fail(p, r, "");
	return r == 0;
}

static void section_clear(struct section *s)
{
	free(s->path);
	free(s->cache_dir);
	free_strv(s->excludes, s->n_excludes);
	*s = (struct section){ .kind = SECTION_NONE };
}

static void commit_main(struct config *cfg, struct section *s)
{
	if (s->key_line[KEY_MODE])
		cfg->mode = s->mode;
	if (s->key_line[KEY_SWEEP])
		cfg->sweep = s->sweep;
	if (s->key_line[KEY_SKIP_VENVS])
		cfg->skip_venvs = s->skip_venvs;
	if (s->key_line[KEY_LOG_LEVEL])
		cfg->log_level = s->log_level;
	if (s->key_line[KEY_CACHE_MAX_SIZE])
		cfg->cache_max_size = s->cache_max_size;
	if (s->cache_dir) {
		free(cfg->cache_dir);
		cfg->cache_dir = s->cache_dir;
		s->cache_dir = NULL;
	}
	/* Only one [pycached] commits: a duplicate header is an error. */
	free_strv(cfg->excludes, cfg->n_excludes);
	cfg->excludes = s->excludes;
	cfg->n_excludes = s->n_excludes;
	s->excludes = NULL;
	s->n_excludes = 0;
}

static int commit_root(struct parser *p, struct section *s)
{
	struct pending_root *pr;

	if (p->n_roots == p->roots_size) {
		size_t size = p->roots_size ? 2 * p->roots_size : 8;
		void *roots = reallocarray(p->roots, size, sizeof(*p->roots));

		if (!roots)
			return -ENOMEM;
		p->roots = roots;
		p->roots_size = size;
	}
	pr = &p->roots[p->n_roots++];
	*pr = (struct pending_root){
		.conf = {
			.path = s->path,
			.mode = s->mode,
			.sweep = s->sweep,
			.excludes = s->excludes,
			.n_excludes = s->n_excludes,
			.line = s->line,
		},
		.mode_set = s->key_line[KEY_MODE] != 0,
		.sweep_set = s->key_line[KEY_SWEEP] != 0,
	};
	s->path = NULL;
	s->excludes = NULL;
	s->n_excludes = 0;
	return 0;
}

static void section_end(struct parser *p)
{
	struct section *s = &p->sec;
	int r = 0;

	if (s->commit && s->kind == SECTION_MAIN)
		commit_main(p->cfg, s);
	else if (s->commit && s->kind == SECTION_ROOT)
		r = commit_root(p, s);
	if (r < 0)
		config_fail(p, r, "");
	section_clear(s);
}

void config_section_begin(struct parser *p, enum section_kind kind)
{
	section_end(p);
	p->sec.kind = kind;
	p->sec.line = p->line;
}

/* Roots take [pycached]'s mode and sweep unless they set their own. */
static int roots_resolve(struct parser *p)
{
	struct config *cfg = p->cfg;

	if (!p->n_roots)
		return 0;
	cfg->roots = calloc(p->n_roots, sizeof(*cfg->roots));
	if (!cfg->roots)
		return -ENOMEM;
	for (size_t i = 0; i < p->n_roots; i++) {
		struct pending_root *pr = &p->roots[i];

		if (!pr->mode_set)
			pr->conf.mode = cfg->mode;
		if (!pr->sweep_set)
			pr->conf.sweep = cfg->sweep;
		cfg->roots[i] = pr->conf;
	}
	cfg->n_roots = p->n_roots;
	p->n_roots = 0;
	return 0;
}

int config_default_cache_dir(char **out)
{
	return paths_xdg("XDG_CACHE_HOME", ".cache", "pycached/prefix", out);
}

/* The prefix must be the user's own, and apart from every root. */
static void cache_dir_check(struct parser *p, const char *dir, unsigned line)
{
	const struct config *cfg = p->cfg;
	struct stat st;

	for (size_t i = 0; i < cfg->n_roots; i++) {
		const char *root = cfg->roots[i].path;
		unsigned at = line ? line : cfg->roots[i].line;

		if (!strcmp(dir, root) || path_inside(dir, root))
			config_report(p, at, "cache_dir %s is inside root %s: "
				      "choose a directory outside every root",
				      dir, root);
		else if (path_inside(root, dir))
			config_report(p, at, "root %s is inside cache_dir %s",
				      root, dir);
	}
	if (lstat(dir, &st) < 0)
		return;
	if (S_ISLNK(st.st_mode))
		config_report(p, line, "cache_dir %s is a symbolic link; "
			      "name the real directory", dir);
	else if (!S_ISDIR(st.st_mode))
		config_report(p, line, "cache_dir %s is not a directory", dir);
	else if (st.st_uid != geteuid())
		config_report(p, line, "cache_dir %s is owned by uid %u, "
			      "not by you", dir, (unsigned)st.st_uid);
	else if (st.st_mode & S_IWOTH)
		config_report(p, line, "cache_dir %s is world-writable; "
			      "use a private directory", dir);
}

static bool relocating(const struct config *cfg)
{
	if (cfg->mode == MODE_RELOCATE)
		return true;
	for (size_t i = 0; i < cfg->n_roots; i++)
		if (cfg->roots[i].mode == MODE_RELOCATE)
			return true;
	return false;
}

/*
 * A "." or ".." component in the name of a directory not there yet: it
 * could stand for a path a comparison with the roots would not see
 * (a/x/../b is a/b, or somewhere else when a is a symbolic link).
 */
static bool has_dot_component(const char *path)
{
	for (const char *s = path; *s;) {
		size_t n = strcspn(s, "/");

		if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return true;
		s += n + (s[n] == '/');
	}
	return false;
}

/* Checked when it is named or used: a default nobody uses may sit anywhere. */
static int cache_dir_resolve(struct parser *p)
{
	struct config *cfg = p->cfg;
	struct stat st;
	char *real;
	int r;

	if (!cfg->cache_dir) {
		r = config_default_cache_dir(&cfg->cache_dir);
		if (r == -ENOMEM)
			return r;
	}
	if (!cfg->cache_dir || (!p->cache_dir_line && !relocating(cfg)))
		return 0;
	/* The symlink check must see the name as written, not its target. */
	if (lstat(cfg->cache_dir, &st) == 0 && S_ISLNK(st.st_mode)) {
		config_report(p, p->cache_dir_line,
			      "cache_dir %s is a symbolic link; "
			      "name the real directory", cfg->cache_dir);
		return -EINVAL;
	}
	/* Compare canonical paths when it exists; it may not yet. */
	real = realpath(cfg->cache_dir, NULL);
	if (real) {
		free(cfg->cache_dir);
		cfg->cache_dir = real;
	} else if (has_dot_component(cfg->cache_dir)) {
		config_report(p, p->cache_dir_line, "cache_dir %s does not exist "
			      "yet and has a '.' or '..' in it: write the path it "
			      "is to be", cfg->cache_dir);
		return -EINVAL;
	} else {
		/* Compared as written: without repeated or trailing slashes. */
		r = paths_normalize(cfg->cache_dir, &real);
		if (r < 0)
			return r;
		free(cfg->cache_dir);
		cfg->cache_dir = real;
	}
	cache_dir_check(p, cfg->cache_dir, p->cache_dir_line);
	return p->n_errors ? -EINVAL : 0;
}

static void parser_finish(struct parser *p)
{
	section_clear(&p->sec);
	for (size_t i = 0; i < p->n_roots; i++)
		root_conf_finish(&p->roots[i].conf);
	free(p->roots);
	free(p->buf);
}

static int parse(struct parser *p)
{
	int line = ini_parse_stream(config_read_line, p, ini_on_key, p);
	int r;

	if (!p->fatal)
		section_end(p);
	/* Only -2, out of memory, is possible from ini_parse_stream. */
	if (line < 0)
		config_fail(p, -ENOMEM, "");
	if (p->fatal)
		return p->fatal;
	/* Every line inih can reject was checked first: this is a safety net. */
	if (line > 0 && !p->n_errors)
		config_report(p, (unsigned)line, "syntax error");
	if (p->n_errors)
		return -EINVAL;
	r = roots_resolve(p);
	if (r == 0)
		r = cache_dir_resolve(p);
	if (r == -ENOMEM)
		config_fail(p, r, "");
	return r;
}

/* *in is NULL (and 0 returned) when an implicit file does not exist. */
static int config_open(const char *file, bool explicit_file, FILE *err,
		       FILE **in)
{
	struct stat st;
	/* O_NONBLOCK: a FIFO must not hang us before fstat rejects it. */
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	int r;

	*in = NULL;
	if (fd < 0 && errno == ENOENT && !explicit_file)
		return 0;
	if (fd < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		if (err)
			fprintf(err, "%s: cannot read: %s\n", file, strerror(-r));
	} else if (!S_ISREG(st.st_mode)) {
		r = -EINVAL;
		if (err)
			fprintf(err, "%s: %s, not a regular file\n", file,
				S_ISDIR(st.st_mode) ? "is a directory" :
				"is a special file");
	} else if (!(*in = fdopen(fd, "r"))) {
		r = -errno;
		if (err)
			fprintf(err, "%s: %s\n", file, strerror(-r));
	} else {
		return 0;
	}
	if (fd >= 0)
		close(fd);
	return r;
}

int config_load(struct config *cfg, const char *file, bool explicit_file,
		FILE *err)
{
	struct parser p = { .cfg = cfg, .file = file, .err = err };
	int r;

	config_init(cfg);
	r = config_open(file, explicit_file, err, &p.in);
	if (r < 0)
		return r;
	if (!p.in) {
		/* No file: the defaults apply, the cache directory's too
		 * (relocate mode is one `pycachectl add --mode` away). */
		r = config_default_cache_dir(&cfg->cache_dir);
		return r == -ENOMEM ? r : 0;
	}
	r = parse(&p);
	fclose(p.in);
	parser_finish(&p);
	if (r == 0 && !(cfg->file = strdup(file))) {
		r = -ENOMEM;
		if (err)
			fprintf(err, "%s: %s\n", file, strerror(ENOMEM));
	}
	if (r < 0)
		config_finish(cfg);
	return r;
}
