/*
 * Fuzz target: the configuration loader as the daemon calls it. The input
 * is a pycached.conf, written to one file per process in a scratch
 * directory (tmpfs when there is one) beside a small tree to name as
 * roots; $HOME points into it, so "~/a" means the same in every run:
 *
 *   ~/a/  ~/a/b/  ~/ab/  ~/c/  ~/file  ~/link -> a  ~/loop -> loop
 *   ~/dangling -> nowhere  ~/cache/ (0700)  ~/wide/ (0777)  ~/clink -> cache
 *   ~/.cache/pycached/prefix/ (the default cache_dir)
 *
 * config_load() reads it twice, with an error stream and without, and must
 * give the same answer both times, 0 or -EINVAL (the file is a readable
 * regular file: no other errno). On -EINVAL it printed at least one line,
 * each "FILE:LINE: message" with LINE a physical line of the input as
 * getline() counts them, and the config is empty (LeakSanitizer sees what a
 * half-applied config left behind). On 0 it printed nothing and the config
 * holds only what pycached.conf(5) allows: see check_config(). A broken
 * expectation prints "FUZZ FINDING: …" and aborts. PYCACHED_FUZZ_TRACE=1
 * prints what the loader said.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char base[PATH_MAX / 2];     /* the scratch directory, canonical */
static char conf[PATH_MAX];         /* the input, rewritten for each run */
static char *default_cache_dir;

/* The input being checked, for the messages. */
static const uint8_t *in_data;
static size_t in_size;

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	return remove(path);
}

static void remove_scratch(void)
{
	if (base[0])
		nftw(base, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	base[0] = '\0';
}

__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nFUZZ FINDING: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n--- the input (%zu bytes):\n", in_size);
	fwrite(in_data, 1, in_size, stderr);
	fprintf(stderr, "\n---\n");
	remove_scratch();
	abort();
}

static void scratch(const char *what, int r)
{
	if (r < 0)
		fail("cannot make %s in the scratch tree: %s", what,
		     strerror(errno));
}

static void make_world(void)
{
	static const char *const dirs[] = {
		"home", "home/a", "home/a/b", "home/ab", "home/c", "home/cache",
		"home/wide", "home/.cache", "home/.cache/pycached",
		"home/.cache/pycached/prefix",
	};
	static const char *const links[][2] = {
		{ "a", "home/link" }, { "loop", "home/loop" },
		{ "nowhere", "home/dangling" }, { "cache", "home/clink" },
	};
	const char *tmp = getenv("PYCACHED_FUZZ_TMP");
	char path[PATH_MAX], *real;
	FILE *f;

	if (!tmp)
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(path, sizeof(path), "%s/pycached-fuzz-config.XXXXXX", tmp);
	if (!mkdtemp(path) || !(real = realpath(path, NULL)))
		fail("cannot make a scratch directory in %s: %s", tmp,
		     strerror(errno));
	snprintf(base, sizeof(base), "%s", real);
	free(real);
	atexit(remove_scratch);
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", base, dirs[i]);
		scratch(dirs[i], mkdir(path, 0700));
	}
	snprintf(path, sizeof(path), "%s/home/wide", base);
	scratch("wide", chmod(path, 0777));
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", base, links[i][1]);
		scratch(links[i][1], symlink(links[i][0], path));
	}
	snprintf(path, sizeof(path), "%s/home/file", base);
	f = fopen(path, "w");
	scratch("file", f ? fclose(f) : -1);
	snprintf(path, sizeof(path), "%s/home", base);
	setenv("HOME", path, 1);
	unsetenv("XDG_CACHE_HOME");
	snprintf(conf, sizeof(conf), "%s/pycached.conf", base);
	if (config_default_cache_dir(&default_cache_dir) < 0)
		fail("no default cache_dir");
}

static void write_input(const uint8_t *data, size_t size)
{
	FILE *f = fopen(conf, "w");

	if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
		fail("cannot write %s: %s", conf, strerror(errno));
}

/* Physical lines as the loader's getline() reader sees them. */
static unsigned count_lines(const uint8_t *data, size_t size)
{
	unsigned lines = 0;

	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	return lines + (size > 0 && data[size - 1] != '\n');
}

/* Where physical line n (from 1) starts, after a BOM on the first. */
static const uint8_t *line_start(const uint8_t *data, size_t size, unsigned n)
{
	const uint8_t *p = data, *end = data + size;

	if (n == 1 && size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		return data + 3;
	while (--n > 0) {
		p = memchr(p, '\n', (size_t)(end - p));
		if (!p)
			return end;
		p++;
	}
	return p;
}

/* Every line "FILE:LINE: message", 1 <= LINE <= lines. */
static void check_errors(const char *errs, size_t len, unsigned lines)
{
	size_t flen = strlen(conf);

	if (len == 0)
		fail("config_load() refused the file without a word");
	if (errs[len - 1] != '\n')
		fail("the errors do not end with a newline:\n%s", errs);
	for (const char *l = errs, *end; l < errs + len; l = end + 1) {
		unsigned long line;
		char *after;

		end = strchr(l, '\n');
		if (strncmp(l, conf, flen) != 0 || l[flen] != ':' ||
		    l[flen + 1] < '1' || l[flen + 1] > '9')
			fail("an error not in the form FILE:LINE: message:\n%.*s",
			     (int)(end - l), l);
		line = strtoul(l + flen + 1, &after, 10);
		if (after[0] != ':' || after[1] != ' ' || after + 2 >= end)
			fail("an error not in the form FILE:LINE: message:\n%.*s",
			     (int)(end - l), l);
		if (line < 1 || line > lines)
			fail("an error on line %lu of a %u-line file:\n%.*s",
			     line, lines, (int)(end - l), l);
	}
}

/* What a failed config_load() must leave: config_init()'s config. */
static void check_empty(const struct config *cfg)
{
	if (cfg->file || cfg->roots || cfg->n_roots || cfg->excludes ||
	    cfg->n_excludes || cfg->cache_dir || cfg->cache_max_size ||
	    cfg->mode != MODE_DELETE || !cfg->sweep || !cfg->skip_venvs ||
	    cfg->log_level != LOG_LEVEL_INFO)
		fail("a refused config is not empty");
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);

	return n >= t && strcmp(s + n - t, tail) == 0;
}

static bool canonical_looking(const char *p)
{
	return p[0] == '/' && !strstr(p, "//") && !strstr(p, "/./") &&
	       !strstr(p, "/../") && !ends_with(p, "/.") &&
	       !ends_with(p, "/..") && !(p[1] && ends_with(p, "/"));
}

static bool inside(const char *child, const char *parent)
{
	size_t n = strlen(parent);

	return strncmp(child, parent, n) == 0 && child[n] == '/';
}

/*
 * The directory a path names once the daemon creates what is missing of
 * it one component at a time (relocate.c's walk): "//" and "/./" collapse,
 * "/../" goes up. Lexical, which matches the kernel here because the
 * world's symlinks point at siblings (and the daemon refuses them anyway).
 */
static void normalize(const char *path, char *out, size_t size)
{
	size_t n = 0;

	for (const char *p = path; *p;) {
		size_t len = strcspn(p, "/");

		if ((len == 1 && p[0] == '.') || len == 0) {
			/* nothing */
		} else if (len == 2 && p[0] == '.' && p[1] == '.') {
			while (n > 0 && out[--n] != '/')
				;
		} else if (n + 1 + len < size) {
			out[n++] = '/';
			memcpy(out + n, p, len);
			n += len;
		}
		p += len + (p[len] == '/');
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
}

static bool valid_mode(enum mode m)
{
	return m == MODE_DELETE || m == MODE_OBSERVE || m == MODE_RELOCATE;
}

/* Globs: whitespace-separated words without '/'. */
static void check_excludes(char *const *v, size_t n, const char *where)
{
	if (n && !v)
		fail("%s: %zu excludes and no vector", where, n);
	for (size_t i = 0; i < n; i++) {
		const char *g = v[i];

		if (!g[0] || strchr(g, '/') || strpbrk(g, " \t\n\v\f\r"))
			fail("%s: exclude glob '%s' accepted", where, g);
	}
}

static void check_root(const struct config *cfg, size_t i, unsigned lines)
{
	const struct root_conf *rc = &cfg->roots[i];
	const uint8_t *head;
	struct stat st;

	if (!rc->path || !canonical_looking(rc->path) || !strcmp(rc->path, "/"))
		fail("root '%s' accepted", rc->path ? rc->path : "(null)");
	if (stat(rc->path, &st) < 0 || !S_ISDIR(st.st_mode))
		fail("root '%s' is not a directory", rc->path);
	if (!valid_mode(rc->mode))
		fail("root '%s' has mode %d", rc->path, (int)rc->mode);
	if (rc->line < 1 || rc->line > lines)
		fail("root '%s' on line %u of a %u-line file", rc->path,
		     rc->line, lines);
	head = line_start(in_data, in_size, rc->line);
	if (head == in_data + in_size || *head != '[')
		fail("root '%s' says it is on line %u, which is no header",
		     rc->path, rc->line);
	check_excludes(rc->excludes, rc->n_excludes, rc->path);
	for (size_t j = 0; j < i; j++) {
		const char *o = cfg->roots[j].path;

		if (!strcmp(o, rc->path) || inside(o, rc->path) ||
		    inside(rc->path, o))
			fail("roots '%s' and '%s' overlap", o, rc->path);
	}
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
 * Named in the file or used (a root relocates): the directory the daemon
 * will create and fill must be apart from every root, and if it exists a
 * private real directory. A default nobody uses may sit anywhere.
 */
static void check_cache_dir(const struct config *cfg)
{
	const char *dir = cfg->cache_dir;
	char real[PATH_MAX];
	struct stat st;

	if (!dir || dir[0] != '/')
		fail("cache_dir '%s' accepted", dir ? dir : "(null)");
	if (!relocating(cfg) && !strcmp(dir, default_cache_dir))
		return;
	normalize(dir, real, sizeof(real));
	for (size_t i = 0; i < cfg->n_roots; i++) {
		const char *root = cfg->roots[i].path;

		if (!strcmp(real, root) || inside(real, root) ||
		    inside(root, real))
			fail("cache_dir '%s' (that is, %s) overlaps root '%s'",
			     dir, real, root);
	}
	if (lstat(dir, &st) == 0 &&
	    (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
	     (st.st_mode & S_IWOTH)))
		fail("cache_dir '%s' (mode %o, uid %u) accepted", dir,
		     (unsigned)st.st_mode, (unsigned)st.st_uid);
}

/* A loaded config holds only what pycached.conf(5) allows. */
static void check_config(const struct config *cfg, unsigned lines)
{
	if (!cfg->file || strcmp(cfg->file, conf) != 0)
		fail("the config names file '%s'", cfg->file ? cfg->file : "(null)");
	if (!valid_mode(cfg->mode))
		fail("mode %d", (int)cfg->mode);
	if (cfg->log_level != LOG_LEVEL_ERROR && cfg->log_level != LOG_LEVEL_WARN &&
	    cfg->log_level != LOG_LEVEL_INFO && cfg->log_level != LOG_LEVEL_DEBUG)
		fail("log_level %d", (int)cfg->log_level);
	check_excludes(cfg->excludes, cfg->n_excludes, "[pycached]");
	if (cfg->n_roots && !cfg->roots)
		fail("%zu roots and no array", cfg->n_roots);
	for (size_t i = 0; i < cfg->n_roots; i++)
		check_root(cfg, i, lines);
	check_cache_dir(cfg);
}

static bool same_strv(char *const *a, size_t na, char *const *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

/* The load without an error stream must have read the same config. */
static void check_same(const struct config *a, const struct config *b)
{
	bool same = a->mode == b->mode && a->sweep == b->sweep &&
		    a->skip_venvs == b->skip_venvs &&
		    a->log_level == b->log_level &&
		    a->cache_max_size == b->cache_max_size &&
		    !strcmp(a->cache_dir, b->cache_dir) &&
		    same_strv(a->excludes, a->n_excludes, b->excludes,
			      b->n_excludes) &&
		    a->n_roots == b->n_roots;

	for (size_t i = 0; same && i < a->n_roots; i++) {
		const struct root_conf *x = &a->roots[i], *y = &b->roots[i];

		same = !strcmp(x->path, y->path) && x->mode == y->mode &&
		       x->sweep == y->sweep && x->line == y->line &&
		       same_strv(x->excludes, x->n_excludes, y->excludes,
				 y->n_excludes);
	}
	if (!same)
		fail("two loads of one file differ");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config cfg, quiet;
	unsigned lines = count_lines(data, size);
	char *errs = NULL;
	size_t errs_len = 0;
	FILE *err;
	int r, r_quiet;

	if (!base[0])
		make_world();
	in_data = data;
	in_size = size;
	write_input(data, size);
	err = open_memstream(&errs, &errs_len);
	if (!err)
		fail("open_memstream: %s", strerror(errno));
	r = config_load(&cfg, conf, true, err);
	if (fclose(err) != 0)
		fail("the error stream: %s", strerror(errno));
	r_quiet = config_load(&quiet, conf, true, NULL);
	if (getenv("PYCACHED_FUZZ_TRACE"))
		fprintf(stderr, "config_load: %d, %u lines, %zu roots\n%s", r,
			lines, cfg.n_roots, errs);
	if (r != 0 && r != -EINVAL)
		fail("config_load() returned %d (%s):\n%s", r, strerror(-r), errs);
	if (r_quiet != r)
		fail("config_load() returned %d, and %d without an error stream",
		     r, r_quiet);
	if (r == 0) {
		if (errs_len)
			fail("config_load() accepted the file but said:\n%s", errs);
		check_config(&cfg, lines);
		check_same(&cfg, &quiet);
		config_finish(&cfg);
		config_finish(&quiet);
	} else {
		check_errors(errs, errs_len, lines);
		check_empty(&cfg);
		check_empty(&quiet);
	}
	free(errs);
	return 0;
}
