/*
 * Unit tests of daemon/config.c. Each test gets a fresh mkdtemp directory
 * with a small tree to name as roots; config texts and expected errors say
 * "@" for that directory. Expected errors are written ":LINE: message" (or
 * ": message") and get the config file's name prepended.
 */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "oom-alloc.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))


struct fx {
	char dir[PATH_MAX];       /* canonical */
	char file[PATH_MAX + 32]; /* @/pycached.conf */
	char *home;               /* $HOME before the test, restored after */
	char *xdg;                /* $XDG_CONFIG_HOME likewise */
};

static char *dup_env(const char *name)
{
	const char *v = getenv(name);

	return v ? strdup(v) : NULL;
}

static void restore_env(const char *name, const char *value)
{
	if (value)
		setenv(name, value, 1);
	else
		unsetenv(name);
}

static void touch(const struct fx *fx, const char *name)
{
	char path[PATH_MAX + 64];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", fx->dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
}

static void make_dir(const struct fx *fx, const char *name)
{
	char path[PATH_MAX + 64];

	snprintf(path, sizeof(path), "%s/%s", fx->dir, name);
	assert_int_equal(mkdir(path, 0755), 0);
}

static int setup(void **state)
{
	const char *tmp = getenv("TMPDIR");
	char tmpl[PATH_MAX];
	struct fx *fx = calloc(1, sizeof(*fx));
	char link[PATH_MAX + 16];

	assert_non_null(fx);
	snprintf(tmpl, sizeof(tmpl), "%s/test_config.XXXXXX",
		 tmp && tmp[0] ? tmp : "/tmp");
	assert_non_null(mkdtemp(tmpl));
	/* Roots are stored canonical: so must be what we compare them with. */
	assert_non_null(realpath(tmpl, fx->dir));
	snprintf(fx->file, sizeof(fx->file), "%s/pycached.conf", fx->dir);
	make_dir(fx, "a");
	make_dir(fx, "a/b");
	make_dir(fx, "c");
	touch(fx, "file");
	snprintf(link, sizeof(link), "%s/link", fx->dir);
	assert_int_equal(symlink("a", link), 0);
	fx->home = dup_env("HOME");
	fx->xdg = dup_env("XDG_CONFIG_HOME");
	*state = fx;
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	return remove(path);
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	restore_env("HOME", fx->home);
	restore_env("XDG_CONFIG_HOME", fx->xdg);
	nftw(fx->dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
	free(fx->home);
	free(fx->xdg);
	free(fx);
	return 0;
}

/* text with every '@' replaced by the test directory. */
static char *expand(const struct fx *fx, const char *text)
{
	size_t n = 1;
	char *out, *o;

	for (const char *t = text; *t; t++)
		n += *t == '@' ? strlen(fx->dir) : 1;
	out = o = malloc(n);
	assert_non_null(out);
	for (const char *t = text; *t; t++) {
		if (*t == '@')
			o = stpcpy(o, fx->dir);
		else
			*o++ = *t;
	}
	*o = '\0';
	return out;
}

static void write_bytes(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

/* config_load with the error stream captured into *errs (caller frees). */
static int load_path(struct config *cfg, const char *path, bool explicit_file,
		     char **errs)
{
	size_t size;
	FILE *err = open_memstream(errs, &size);
	int r;

	assert_non_null(err);
	r = config_load(cfg, path, explicit_file, err);
	assert_int_equal(fclose(err), 0);
	return r;
}

static int load_text(const struct fx *fx, const char *text, struct config *cfg,
		     char **errs)
{
	char *data = expand(fx, text);

	write_bytes(fx->file, data, strlen(data));
	free(data);
	return load_path(cfg, fx->file, true, errs);
}

/* errs must be exactly the expected lines, each prefixed with the file. */
static void check_errors(const struct fx *fx, const char *file,
			 const char *errs, const char *expected)
{
	char *want = NULL;
	size_t size;
	FILE *f = open_memstream(&want, &size);
	char *exp = expand(fx, expected);

	assert_non_null(f);
	for (char *line = strtok(exp, "\n"); line; line = strtok(NULL, "\n"))
		fprintf(f, "%s%s\n", file, line);
	fclose(f);
	assert_string_equal(errs, want);
	free(want);
	free(exp);
}

/* A config that failed must be empty, so that nothing can leak from it. */
static void assert_empty(const struct config *cfg)
{
	assert_null(cfg->file);
	assert_null(cfg->roots);
	assert_int_equal(cfg->n_roots, 0);
	assert_null(cfg->excludes);
	assert_int_equal(cfg->n_excludes, 0);
	assert_int_equal(cfg->mode, MODE_DELETE);
	assert_true(cfg->sweep);
}

static void assert_defaults(const struct config *cfg)
{
	assert_int_equal(cfg->mode, MODE_DELETE);
	assert_true(cfg->sweep);
	assert_true(cfg->skip_venvs);
	assert_int_equal(cfg->log_level, LOG_LEVEL_INFO);
	assert_int_equal(cfg->n_excludes, 0);
	assert_int_equal(cfg->n_roots, 0);
}

/* The whole file must be refused with exactly these errors. */
static void expect_errors(const struct fx *fx, const char *text,
			  const char *expected)
{
	struct config cfg;
	char *errs;

	assert_int_equal(load_text(fx, text, &cfg, &errs), -EINVAL);
	check_errors(fx, fx->file, errs, expected);
	assert_empty(&cfg);
	free(errs);
}

static void test_full_file(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs, *path;
	int r = load_text(fx,
		"; pycached test\n"
		"# another comment\n"
		"\n"
		"[root @/a]         ; before [pycached]: inherits all the same\n"
		"exclude = data   logs\n"
		"\n"
		"[pycached]\n"
		"mode = observe\n"
		"sweep = no\n"
		"exclude = build dist *.egg-info   ; inline comment\n"
		"skip_venvs = off\n"
		"log_level = debug\n"
		"\n"
		"[root @/c]\n"
		"  ; an indented comment is still a comment\n"
		"mode = delete\n"
		"sweep: yes\n"
		"exclude=tmp;x\n",
		&cfg, &errs);

	assert_string_equal(errs, "");
	assert_int_equal(r, 0);
	assert_string_equal(cfg.file, fx->file);
	assert_int_equal(cfg.mode, MODE_OBSERVE);
	assert_false(cfg.sweep);
	assert_false(cfg.skip_venvs);
	assert_int_equal(cfg.log_level, LOG_LEVEL_DEBUG);
	assert_int_equal(cfg.n_excludes, 3);
	assert_string_equal(cfg.excludes[0], "build");
	assert_string_equal(cfg.excludes[1], "dist");
	assert_string_equal(cfg.excludes[2], "*.egg-info");
	assert_int_equal(cfg.n_roots, 2);

	path = expand(fx, "@/a");
	assert_string_equal(cfg.roots[0].path, path);
	free(path);
	assert_int_equal(cfg.roots[0].line, 4);
	assert_int_equal(cfg.roots[0].mode, MODE_OBSERVE);
	assert_false(cfg.roots[0].sweep);
	assert_int_equal(cfg.roots[0].n_excludes, 2);
	assert_string_equal(cfg.roots[0].excludes[0], "data");
	assert_string_equal(cfg.roots[0].excludes[1], "logs");

	path = expand(fx, "@/c");
	assert_string_equal(cfg.roots[1].path, path);
	free(path);
	assert_int_equal(cfg.roots[1].line, 14);
	assert_int_equal(cfg.roots[1].mode, MODE_DELETE);
	assert_true(cfg.roots[1].sweep);
	assert_int_equal(cfg.roots[1].n_excludes, 1);
	/* ';' starts a comment only after whitespace, as in inih. */
	assert_string_equal(cfg.roots[1].excludes[0], "tmp;x");

	config_finish(&cfg);
	free(errs);
}

static void test_inherit_defaults(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	assert_int_equal(load_text(fx, "[root @/a]\n[root @/c]\nmode = observe\n"
				   "[pycached]\nexclude =\n", &cfg, &errs), 0);
	assert_string_equal(errs, "");
	assert_int_equal(cfg.n_roots, 2);
	assert_int_equal(cfg.roots[0].mode, MODE_DELETE);
	assert_true(cfg.roots[0].sweep);
	assert_int_equal(cfg.roots[0].n_excludes, 0);
	assert_int_equal(cfg.roots[1].mode, MODE_OBSERVE);
	assert_true(cfg.skip_venvs);
	assert_int_equal(cfg.n_excludes, 0);
	config_finish(&cfg);
	free(errs);
}

static void test_empty_file(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	assert_int_equal(load_text(fx, "", &cfg, &errs), 0);
	assert_string_equal(errs, "");
	assert_defaults(&cfg);
	assert_string_equal(cfg.file, fx->file);
	config_finish(&cfg);
	free(errs);
}

static void test_example_conf(void **state)
{
	struct config cfg;
	char *errs;

	assert_int_equal(load_path(&cfg, EXAMPLE_CONF, true, &errs), 0);
	assert_string_equal(errs, "");
	assert_defaults(&cfg);
	config_finish(&cfg);
	free(errs);
}

static void test_booleans(void **state)
{
	static const struct {
		const char *word;
		bool value;
	} words[] = {
		{ "yes", true }, { "true", true }, { "on", true }, { "1", true },
		{ "no", false }, { "false", false }, { "off", false },
		{ "0", false },
	};
	struct fx *fx = *state;

	for (size_t i = 0; i < N_ELEMS(words); i++) {
		struct config cfg;
		char text[128], *errs;

		snprintf(text, sizeof(text), "[pycached]\nskip_venvs = %s\n",
			 words[i].word);
		assert_int_equal(load_text(fx, text, &cfg, &errs), 0);
		assert_int_equal(cfg.skip_venvs, words[i].value);
		config_finish(&cfg);
		free(errs);
	}
}

static void test_bad_values(void **state)
{
	expect_errors(*state,
		"[pycached]\n"
		"sweep = maybe\n"
		"skip_venvs = Yes\n"
		"mode = remove\n"
		"log_level = loud\n"
		"[root @/a]\n"
		"sweep = 2\n"
		"mode =\n",
		":2: bad value 'maybe' for sweep: expected yes, no, true, false, on, off, 1 or 0\n"
		":3: bad value 'Yes' for skip_venvs: expected yes, no, true, false, on, off, 1 or 0\n"
		":4: bad value 'remove' for mode: expected delete, observe or relocate\n"
		":5: bad value 'loud' for log_level: expected error, warning, info or debug\n"
		":7: bad value '2' for sweep: expected yes, no, true, false, on, off, 1 or 0\n"
		":8: bad value '' for mode: expected delete, observe or relocate\n");
}

static void test_relocate_cache_dir(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs, *path;

	make_dir(fx, "a/cache");
	make_dir(fx, "wide");
	make_dir(fx, "b");
	path = expand(fx, "@/wide");
	assert_int_equal(chmod(path, 0777), 0);
	free(path);
	assert_int_equal(load_text(fx, "[pycached]\ncache_dir = @/b\n"
				   "cache_max_size = 500M\n[root @/a/cache]\n"
				   "mode = relocate\n", &cfg, &errs), 0);
	assert_string_equal(errs, "");
	assert_int_equal(cfg.roots[0].mode, MODE_RELOCATE);
	assert_int_equal(cfg.cache_max_size, 500ull << 20);
	path = expand(fx, "@/b");
	assert_string_equal(cfg.cache_dir, path);
	free(path);
	config_finish(&cfg);
	free(errs);
	expect_errors(fx, "[pycached]\ncache_dir = @/a/cache\n[root @/a]\n",
		      ":2: cache_dir @/a/cache is inside root @/a: choose a "
		      "directory outside every root\n");
	expect_errors(fx, "[pycached]\ncache_dir = @/a\n[root @/a/cache]\n",
		      ":2: root @/a/cache is inside cache_dir @/a\n");
	/* The fixture's @/link points at @/a. */
	expect_errors(fx, "[pycached]\ncache_dir = @/link\n",
		      ":2: cache_dir @/link is a symbolic link; name the real "
		      "directory\n");
	expect_errors(fx, "[pycached]\ncache_dir = @/wide\n",
		      ":2: cache_dir @/wide is world-writable; use a private "
		      "directory\n");
	/* Not there yet: its name is compared as written, so it must be
	 * written plainly (fuzz-config found "@/x/../a/b" taken for apart
	 * from root @/a). */
	expect_errors(fx, "[pycached]\ncache_dir = @/nope/../a/b\n[root @/a]\n",
		      ":2: cache_dir @/nope/../a/b does not exist yet and has a "
		      "'.' or '..' in it: write the path it is to be\n");
	expect_errors(fx, "[pycached]\ncache_dir = @/a//new/\n[root @/a]\n",
		      ":2: cache_dir @/a/new is inside root @/a: choose a "
		      "directory outside every root\n");
	expect_errors(fx, "[pycached]\ncache_dir = rel\ncache_max_size = 5Q\n",
		      ":2: bad value 'rel' for cache_dir: expected an absolute "
		      "path or one under '~/'\n"
		      ":3: bad value '5Q' for cache_max_size: expected a size "
		      "such as 500M or 2G, or unlimited\n");
}

static void test_sizes(void **state)
{
	uint64_t v;

	assert_int_equal(config_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_parse_size("unlimited", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(config_parse_size("1024", &v), 0);
	assert_int_equal(v, 1024);
	assert_int_equal(config_parse_size("2k", &v), 0);
	assert_int_equal(v, 2048);
	assert_int_equal(config_parse_size("3GiB", &v), 0);
	assert_int_equal(v, 3ull << 30);
	assert_int_equal(config_parse_size("1T", &v), 0);
	assert_int_equal(v, 1ull << 40);
	assert_int_equal(config_parse_size("-1", &v), -EINVAL);
	assert_int_equal(config_parse_size("5X", &v), -EINVAL);
	assert_int_equal(config_parse_size("5MM", &v), -EINVAL);
	assert_int_equal(config_parse_size("99999999999T", &v), -EINVAL);
}

static void test_unknown_sections_and_keys(void **state)
{
	expect_errors(*state,
		"mode = delete\n"
		"[pycached]\n"
		"colour = blue\n"
		"[server]\n"
		"port = 1\n"
		"[root @/a]\n"
		"log_level = debug\n"
		"frobnicate = yes\n"
		"Mode = delete\n"
		"= x\n",
		":1: key 'mode' outside any section; put it under [pycached] or [root PATH]\n"
		":3: unknown key 'colour' in [pycached]; known keys: mode, sweep, exclude, skip_venvs, log_level, cache_dir, cache_max_size\n"
		":4: unknown section [server]; expected [pycached] or [root PATH]\n"
		":7: key 'log_level' is only allowed in [pycached], not in [root @/a]\n"
		":8: unknown key 'frobnicate' in [root @/a]; known keys: mode, sweep, exclude\n"
		":9: unknown key 'Mode' in [root @/a]; known keys: mode, sweep, exclude\n"
		":10: missing key name before '='\n");
}

static void test_duplicates(void **state)
{
	expect_errors(*state,
		"[pycached]\n"
		"mode = delete\n"
		"mode = observe\n"
		"[root @/a]\n"
		"sweep = no\n"
		"sweep = no\n"
		"[root @/a/]\n"
		"[root @/link]\n"
		"[pycached]\n"
		"mode = observe\n",
		":3: duplicate key 'mode' in [pycached] (first at line 2)\n"
		":6: duplicate key 'sweep' in [root @/a] (first at line 5)\n"
		":7: duplicate root '@/a' (first at line 4)\n"
		":8: duplicate root '@/a' (first at line 4)\n"
		":9: duplicate section [pycached] (first at line 1)\n");
}

static void test_bad_roots(void **state)
{
	expect_errors(*state,
		"[root a]\n"
		"[root @/nope]\n"
		"[root @/file]\n"
		"[root /]\n"
		"[root /..]\n"
		"[root]\n"
		"[root ~user/x]\n"
		"[root @/file/x]\n"
		"[rooted @/a]\n",
		":1: root 'a' is relative; use an absolute path or ~/\n"
		":2: root '@/nope' does not exist\n"
		":3: root '@/file' is not a directory\n"
		":4: root '/' is the whole file system ('/'); name a project directory\n"
		":5: root '/..' is the whole file system ('/'); name a project directory\n"
		":6: missing path: expected [root PATH]\n"
		":7: root '~user/x' is relative; use an absolute path or ~/\n"
		":8: root '@/file/x': Not a directory\n"
		":9: unknown section [rooted @/a]; expected [pycached] or [root PATH]\n");
}

static void test_nested_roots(void **state)
{
	expect_errors(*state,
		"[root @/a/b]\n"
		"[root @/a]\n"
		"[root @/c]\n"
		"[root @/link/b]\n",
		":2: root '@/a' contains root '@/a/b' (line 1)\n"
		":4: duplicate root '@/a/b' (first at line 1)\n");
	expect_errors(*state, "[root @/a]\n\n[root @/a/b]\n",
		      ":3: root '@/a/b' is inside root '@/a' (line 1)\n");
}

static void test_sibling_prefix_not_nested(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	/* "@/a" is a string prefix of "@/ab" but not its parent. */
	make_dir(fx, "ab");
	assert_int_equal(load_text(fx, "[root @/a]\n[root @/ab]\n", &cfg, &errs),
			 0);
	assert_string_equal(errs, "");
	assert_int_equal(cfg.n_roots, 2);
	config_finish(&cfg);
	free(errs);
}

static void test_exclude_slash(void **state)
{
	expect_errors(*state,
		"[pycached]\n"
		"exclude = ok a/b */x also-ok\n"
		"[root @/a]\n"
		"exclude = /abs\n",
		":2: exclude glob 'a/b' contains '/': globs match a single directory name\n"
		":2: exclude glob '*/x' contains '/': globs match a single directory name\n"
		":4: exclude glob '/abs' contains '/': globs match a single directory name\n");
}

static void test_syntax_errors(void **state)
{
	expect_errors(*state,
		"[pycached\n"
		"mode = delete\n"
		"[pycached] junk\n"
		"just some words\n"
		"skip_venvs ; = no\n"
		"[ pycached ]\n",
		":1: missing ']' in section header\n"
		":3: unexpected text after ']': 'junk'\n"
		":4: expected 'key = value', [pycached] or [root PATH]\n"
		":5: expected 'key = value', [pycached] or [root PATH]\n"
		":6: duplicate section [pycached] (first at line 3)\n");
}

static void test_long_line(void **state)
{
	struct fx *fx = *state;
	char text[512];
	char pad[256];

	/* 250 bytes: "exclude = " and 240 more. */
	memset(pad, 'x', 240);
	pad[240] = '\0';
	snprintf(text, sizeof(text),
		 "[pycached]\n; two\nexclude = %s\nbogus = 1\n", pad);
	expect_errors(fx, text,
		":3: line too long (250 bytes, at most 198)\n"
		":4: unknown key 'bogus' in [pycached]; known keys: mode, sweep, exclude, skip_venvs, log_level, cache_dir, cache_max_size\n");
}

static void test_line_limit_exact(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char text[512], *errs;
	char pad[256];

	/* "exclude = " is 10 bytes: 188 more make 198, one more is too many. */
	memset(pad, 'y', 188);
	pad[188] = '\0';
	snprintf(text, sizeof(text), "[pycached]\nexclude = %s\n", pad);
	assert_int_equal(load_text(fx, text, &cfg, &errs), 0);
	assert_string_equal(errs, "");
	assert_int_equal(cfg.n_excludes, 1);
	assert_int_equal(strlen(cfg.excludes[0]), 188);
	config_finish(&cfg);
	free(errs);

	/* No trailing newline on the last line changes nothing. */
	snprintf(text, sizeof(text), "[pycached]\nexclude = %sy", pad);
	expect_errors(fx, text, ":2: line too long (199 bytes, at most 198)\n");
}

static void test_long_header_ignores_its_keys(void **state)
{
	struct fx *fx = *state;
	char text[512];
	char pad[256];

	memset(pad, 'z', 200);
	pad[200] = '\0';
	/* Its keys must not land in [pycached] as duplicates. */
	snprintf(text, sizeof(text),
		 "[pycached]\nmode = delete\n[root /%s]\nmode = observe\n", pad);
	expect_errors(fx, text, ":3: line too long (208 bytes, at most 198)\n");
}

static void test_nul_byte(void **state)
{
	static const char data[] = "[pycached]\nmode = delete\0junk\nsweep = maybe\n";
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	write_bytes(fx->file, data, sizeof(data) - 1);
	assert_int_equal(load_path(&cfg, fx->file, true, &errs), -EINVAL);
	check_errors(fx, fx->file, errs,
		     ":2: NUL byte in line\n"
		     ":3: bad value 'maybe' for sweep: expected yes, no, true, false, on, off, 1 or 0\n");
	assert_empty(&cfg);
	free(errs);
}

static void test_indented_line(void **state)
{
	expect_errors(*state,
		"[pycached]\n"
		"exclude = a\n"
		"  b\n"
		"\t\n"
		"   \n"
		"\t# comment\n"
		"\tmode = observe\n",
		":3: indented line: it would continue the previous value; remove the leading whitespace\n"
		":7: indented line: it would continue the previous value; remove the leading whitespace\n");
}

static void test_crlf_and_bom(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	assert_int_equal(load_text(fx, "\xef\xbb\xbf[pycached]\r\nmode = observe\r\n"
				   "\r\n[root @/a]\r\n", &cfg, &errs), 0);
	assert_string_equal(errs, "");
	assert_int_equal(cfg.mode, MODE_OBSERVE);
	assert_int_equal(cfg.n_roots, 1);
	config_finish(&cfg);
	free(errs);
}

static void test_many_errors_all_reported(void **state)
{
	expect_errors(*state,
		"[pycached]\n"                /* 1 */
		"mode = observe\n"
		"sweep = perhaps\n"           /* 3 */
		"[root @/a]\n"
		"exclude = x/y\n"             /* 5 */
		"mode = observe\n"
		"mode = delete\n"             /* 7 */
		"[nope]\n"                    /* 8 */
		"whatever = 1\n"
		"[root @/a/b]\n"              /* 10 */
		"[root relative]\n"           /* 11 */
		"[root @/c]\n"
		"nonsense\n"                  /* 13 */
		"  sweep = no\n"              /* 14 */
		"log_level = debug\n",        /* 15 */
		":3: bad value 'perhaps' for sweep: expected yes, no, true, false, on, off, 1 or 0\n"
		":5: exclude glob 'x/y' contains '/': globs match a single directory name\n"
		":7: duplicate key 'mode' in [root @/a] (first at line 6)\n"
		":8: unknown section [nope]; expected [pycached] or [root PATH]\n"
		":10: root '@/a/b' is inside root '@/a' (line 4)\n"
		":11: root 'relative' is relative; use an absolute path or ~/\n"
		":13: expected 'key = value', [pycached] or [root PATH]\n"
		":14: indented line: it would continue the previous value; remove the leading whitespace\n"
		":15: key 'log_level' is only allowed in [pycached], not in [root @/c]\n");
}

static void test_directory_as_config(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	assert_int_equal(load_path(&cfg, fx->dir, true, &errs), -EINVAL);
	check_errors(fx, fx->dir, errs, ": is a directory, not a regular file\n");
	assert_empty(&cfg);
	free(errs);
	/* Implicit or not: only a missing file means "no configuration". */
	assert_int_equal(load_path(&cfg, fx->dir, false, &errs), -EINVAL);
	free(errs);
}

static void test_fifo_as_config(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	/* Must not block on open waiting for a writer. */
	assert_int_equal(mkfifo(fx->file, 0600), 0);
	assert_int_equal(load_path(&cfg, fx->file, true, &errs), -EINVAL);
	check_errors(fx, fx->file, errs, ": is a special file, not a regular file\n");
	assert_empty(&cfg);
	free(errs);
}

static void test_missing_file(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	assert_int_equal(load_path(&cfg, fx->file, false, &errs), 0);
	assert_string_equal(errs, "");
	assert_defaults(&cfg);
	assert_null(cfg.file);
	config_finish(&cfg);
	free(errs);

	assert_int_equal(load_path(&cfg, fx->file, true, &errs), -ENOENT);
	check_errors(fx, fx->file, errs,
		     ": cannot read: No such file or directory\n");
	assert_empty(&cfg);
	free(errs);
}

static void test_unreadable_file(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs;

	if (geteuid() == 0)
		skip();  /* root reads mode 000 files */
	write_bytes(fx->file, "", 0);
	assert_int_equal(chmod(fx->file, 0), 0);
	assert_int_equal(load_path(&cfg, fx->file, false, &errs), -EACCES);
	check_errors(fx, fx->file, errs, ": cannot read: Permission denied\n");
	assert_empty(&cfg);
	free(errs);
}

static void test_null_error_stream(void **state)
{
	struct fx *fx = *state;
	struct config cfg;

	write_bytes(fx->file, "[x]\n", 4);
	assert_int_equal(config_load(&cfg, fx->file, true, NULL), -EINVAL);
	assert_empty(&cfg);
}

static void test_home_expansion(void **state)
{
	struct fx *fx = *state;
	struct config cfg;
	char *errs, *path;

	setenv("HOME", fx->dir, 1);
	assert_int_equal(load_text(fx, "[root ~/a]\nsweep = off\n[root ~/c/]\n",
				   &cfg, &errs), 0);
	assert_string_equal(errs, "");
	assert_int_equal(cfg.n_roots, 2);
	path = expand(fx, "@/a");
	assert_string_equal(cfg.roots[0].path, path);
	free(path);
	path = expand(fx, "@/c");
	assert_string_equal(cfg.roots[1].path, path);
	free(path);
	config_finish(&cfg);
	free(errs);

	/* A lone "~" is $HOME itself. */
	assert_int_equal(load_text(fx, "[root ~]\n", &cfg, &errs), 0);
	assert_string_equal(cfg.roots[0].path, fx->dir);
	config_finish(&cfg);
	free(errs);

	unsetenv("HOME");
	expect_errors(fx, "[root ~/a]\n",
		      ":1: cannot expand '~' in '~/a': $HOME is not set\n");
}

static void test_expand_home(void **state)
{
	char *s;

	setenv("HOME", "/home/u", 1);
	s = config_expand_home("~");
	assert_string_equal(s, "/home/u");
	free(s);
	s = config_expand_home("~/src/p");
	assert_string_equal(s, "/home/u/src/p");
	free(s);
	s = config_expand_home("~user/src");
	assert_string_equal(s, "~user/src");
	free(s);
	s = config_expand_home("/abs/~/x");
	assert_string_equal(s, "/abs/~/x");
	free(s);
	s = config_expand_home("");
	assert_string_equal(s, "");
	free(s);

	setenv("HOME", "", 1);
	errno = 0;
	assert_null(config_expand_home("~/x"));
	assert_int_equal(errno, ENOENT);
	unsetenv("HOME");
	assert_null(config_expand_home("~"));
	s = config_expand_home("/no/tilde");
	assert_string_equal(s, "/no/tilde");
	free(s);
}

static void test_default_path(void **state)
{
	char *s;

	setenv("HOME", "/home/u", 1);
	setenv("XDG_CONFIG_HOME", "/xdg", 1);
	assert_int_equal(config_default_path(&s), 0);
	assert_string_equal(s, "/xdg/pycached/pycached.conf");
	free(s);

	/* Relative or empty XDG values are ignored, per the XDG spec. */
	setenv("XDG_CONFIG_HOME", "rel", 1);
	assert_int_equal(config_default_path(&s), 0);
	assert_string_equal(s, "/home/u/.config/pycached/pycached.conf");
	free(s);
	setenv("XDG_CONFIG_HOME", "", 1);
	assert_int_equal(config_default_path(&s), 0);
	assert_string_equal(s, "/home/u/.config/pycached/pycached.conf");
	free(s);

	unsetenv("XDG_CONFIG_HOME");
	assert_int_equal(config_default_path(&s), 0);
	assert_string_equal(s, "/home/u/.config/pycached/pycached.conf");
	free(s);

	/* Without HOME, the passwd entry's home, as for every XDG path. */
	unsetenv("HOME");
	assert_int_equal(config_default_path(&s), 0);
	assert_non_null(strstr(s, "/.config/pycached/pycached.conf"));
	assert_int_equal(s[0], '/');
	free(s);
}

static void test_modes(void **state)
{
	static const enum mode modes[] = { MODE_DELETE, MODE_OBSERVE,
					   MODE_RELOCATE };
	enum mode m = MODE_OBSERVE;

	for (size_t i = 0; i < N_ELEMS(modes); i++) {
		assert_int_equal(mode_parse(mode_name(modes[i]), &m), 0);
		assert_int_equal(m, modes[i]);
	}
	assert_string_equal(mode_name(MODE_DELETE), "delete");
	assert_string_equal(mode_name(MODE_OBSERVE), "observe");
	assert_string_equal(mode_name(MODE_RELOCATE), "relocate");
	assert_int_equal(mode_parse("Delete", &m), -EINVAL);
	assert_int_equal(mode_parse("", &m), -EINVAL);
	assert_int_equal(mode_parse("delete ", &m), -EINVAL);
	assert_int_equal(m, MODE_RELOCATE);
}

/*
 * Fail each allocation in turn until one run needs fewer: -ENOMEM or, where
 * libc absorbs the failure (stdio falls back to no buffer), success, and
 * never a block left behind. Under valgrind or ASan the allocator is theirs.
 */
static void test_out_of_memory(void **state)
{
#if HAVE_ALLOC_FAILURES
	struct fx *fx = *state;
	char *text = expand(fx,
		"[root ~/a]\nexclude = x y z\n[pycached]\nexclude = a b\n"
		"[root @/a/b/../../c/]\nsweep = no\n");
	long failures = 0;
	bool reached = true;

	setenv("HOME", fx->dir, 1);
	write_bytes(fx->file, text, strlen(text));
	free(text);
	for (unsigned long n = 1; reached; n++) {
		long live = oom.live;
		struct config cfg;
		int r;

		oom_arm(n);
		r = config_load(&cfg, fx->file, true, NULL);
		reached = oom.failed;
		oom_disarm();
		if (r == 0) {
			config_finish(&cfg);
		} else {
			assert_int_equal(r, -ENOMEM);
			assert_empty(&cfg);
			failures++;
		}
		assert_int_equal(oom.live, live);
	}
	print_message("%ld allocation failures gave -ENOMEM\n", failures);
	if (failures == 0)
		skip();
#else
	skip();
#endif
}

static void test_init_finish(void **state)
{
	struct config cfg;
	struct config zero = { 0 };

	config_init(&cfg);
	assert_defaults(&cfg);
	assert_null(cfg.file);
	config_finish(&cfg);
	config_finish(&cfg);
	assert_defaults(&cfg);
	config_finish(&zero);
	config_finish(&zero);
}

#define FX_TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		FX_TEST(test_full_file),
		FX_TEST(test_inherit_defaults),
		FX_TEST(test_empty_file),
		FX_TEST(test_example_conf),
		FX_TEST(test_booleans),
		FX_TEST(test_bad_values),
		FX_TEST(test_relocate_cache_dir),
		cmocka_unit_test(test_sizes),
		FX_TEST(test_unknown_sections_and_keys),
		FX_TEST(test_duplicates),
		FX_TEST(test_bad_roots),
		FX_TEST(test_nested_roots),
		FX_TEST(test_sibling_prefix_not_nested),
		FX_TEST(test_exclude_slash),
		FX_TEST(test_syntax_errors),
		FX_TEST(test_long_line),
		FX_TEST(test_line_limit_exact),
		FX_TEST(test_long_header_ignores_its_keys),
		FX_TEST(test_nul_byte),
		FX_TEST(test_indented_line),
		FX_TEST(test_crlf_and_bom),
		FX_TEST(test_many_errors_all_reported),
		FX_TEST(test_directory_as_config),
		FX_TEST(test_fifo_as_config),
		FX_TEST(test_missing_file),
		FX_TEST(test_unreadable_file),
		FX_TEST(test_null_error_stream),
		FX_TEST(test_home_expansion),
		FX_TEST(test_expand_home),
		FX_TEST(test_default_path),
		FX_TEST(test_modes),
		FX_TEST(test_out_of_memory),
		FX_TEST(test_init_finish),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
