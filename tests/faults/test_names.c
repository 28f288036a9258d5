/*
 * Hostile names (issue 12). The real daemon meets directories whose names
 * only look like a cache (`__PYCACHE__`, `__pycache__.bak`, a trailing
 * space, 255 bytes, a newline, an escape sequence, invalid UTF-8), real
 * caches under directories with such names, a foreign file with such a
 * name in a cache, roots whose paths hold such bytes, and a chain of
 * directories deeper than PATH_MAX with a cache at the bottom. It must:
 *
 *   - touch only a directory named exactly `__pycache__`: each look-alike
 *     keeps its bytecode byte for byte, found by the crawl, by events and
 *     by a sweep;
 *   - remove the real caches under hostile names, and the deep one;
 *   - write every such name escaped (\xNN), one record per line, whole:
 *     no raw newline, ESC, BEL, C1 control or invalid UTF-8 byte from a
 *     file name reaches its log;
 *   - keep `pycachectl status --json` valid JSON in strict UTF-8, and
 *     pycachectl's plain output free of raw control bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define NAME_MAX_BYTES 255
/* Directories of this name length, this many deep: past PATH_MAX. */
#define DEEP_NAME 200
#define DEEP_LEVELS 24

/* Names that are not `__pycache__` but look like it. */
static const char *const lookalikes[] = {
	"__PYCACHE__",
	"__pycache__.bak",
	"__pycache__ ",
	" __pycache__",
	"__pycache_",
	"__pycache__\n",
	"__pycache__\033[2J",
	"__pycache__\xff",
	"__pyc\xc3\xa1""che__",
	NULL,   /* the 255-byte one, filled in by long_name() */
};
#define N_LOOKALIKES (sizeof(lookalikes) / sizeof(lookalikes[0]))

/* Parents of real caches, and how the daemon's log must write them. */
static const struct {
	const char *name, *logged;
} hostile[] = {
	{ "evil\nline", "evil\\x0aline" },
	{ "esc\033]0;pwned\a", "esc\\x1b]0;pwned\\x07" },
	{ "bad\xff\xfe", "bad\\xff\\xfe" },
	{ "csi\xc2\x9b""31m", "csi\\xc2\\x9b31m" },
	{ "tab\there", "tab\\x09here" },
};
#define N_HOSTILE (sizeof(hostile) / sizeof(hostile[0]))

/* A foreign file in a cache: the cache is skipped and its name logged. */
static const char foreign[] = "notes\n\033[2J\xff.txt";
static const char foreign_logged[] = "notes\\x0a\\x1b[2J\\xff.txt";

static const char *long_name(void)
{
	static char name[NAME_MAX_BYTES + 1];
	if (!name[0]) {
		memset(name, 'x', NAME_MAX_BYTES);
		memcpy(name, "__pycache__", 11);
	}
	return name;
}

static const char *lookalike(size_t i)
{
	return lookalikes[i] ? lookalikes[i] : long_name();
}

/* --- snapshots ----------------------------------------------------------- */

/* Every entry of dir (names, sizes, contents), in one comparable blob. */
struct snap {
	char *data;
	size_t len;
};

static struct snap take_snap(const char *dir)
{
	struct snap s = { NULL, 0 };
	FILE *f = open_memstream(&s.data, &s.len);
	struct dirent **ents;
	int n = scandir(dir, &ents, NULL, alphasort);
	assert_non_null(f);
	if (n < 0)
		fail_msg("scandir %s: %s", dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX + NAME_MAX_BYTES + 2], buf[4096];
		snprintf(path, sizeof path, "%s/%s", dir, ents[i]->d_name);
		fprintf(f, "%s%c", ents[i]->d_name, 0);
		FILE *in = fopen(path, "rb");
		for (size_t r; in && (r = fread(buf, 1, sizeof buf, in)) > 0;)
			fwrite(buf, 1, r, f);
		if (in)
			fclose(in);
		fputc(0, f);
		free(ents[i]);
	}
	free(ents);
	fclose(f);
	return s;
}

static bool snap_equal(const struct snap *a, const struct snap *b)
{
	return a->len == b->len && memcmp(a->data, b->data, a->len) == 0;
}

/* Look-alikes with two pycs each under parent; snapshots in snaps[]. */
static void make_lookalikes(struct hx *h, const char *parent,
			    struct snap *snaps)
{
	hx_mkdirs(parent);
	for (size_t i = 0; i < N_LOOKALIKES; i++) {
		const char *dir = hx_path(h, "%s/%s", parent, lookalike(i));
		hx_mkdirs(dir);
		assert_int_equal(hx_try_write_pyc(dir, "mod0"), 0);
		assert_int_equal(hx_try_write_pyc(dir, "mod1"), 0);
		snaps[i] = take_snap(dir);
	}
}

static void expect_lookalikes(struct hx *h, const char *parent,
			      struct snap *snaps, const char *when)
{
	for (size_t i = 0; i < N_LOOKALIKES; i++) {
		const char *dir = hx_path(h, "%s/%s", parent, lookalike(i));
		if (!hx_is_dir(dir))
			fail_msg("%s: look-alike #%zu (%zu bytes) under %s is "
				 "gone", when, i, strlen(lookalike(i)), parent);
		struct snap now = take_snap(dir);
		bool same = snap_equal(&snaps[i], &now);
		free(now.data);
		if (!same)
			fail_msg("%s: look-alike #%zu (%zu bytes) under %s "
				 "changed", when, i, strlen(lookalike(i)), parent);
	}
}

static void free_snaps(struct snap *snaps)
{
	for (size_t i = 0; i < N_LOOKALIKES; i++)
		free(snaps[i].data);
}

static void make_hostile_caches(struct hx *h, const char *parent)
{
	for (size_t i = 0; i < N_HOSTILE; i++) {
		const char *dir = hx_path(h, "%s/%s", parent, hostile[i].name);
		hx_mkdirs(dir);
		hx_cache(dir, 2);
	}
}

static void expect_hostile_gone(struct hx *h, const char *parent)
{
	for (size_t i = 0; i < N_HOSTILE; i++)
		hx_expect_gone(hx_path(h, "%s/%s/__pycache__", parent,
				       hostile[i].name), HX_REMOVE_MS);
}

/* --- checks on text -------------------------------------------------------- */

static struct hx_proc ctl_ok(struct hx *h, const char *const *args)
{
	struct hx_proc p = hx_ctl(h, args);
	if (p.status != 0)
		fail_msg("pycachectl %s exited %d\nstdout: %s\nstderr: %s",
			 args[0], p.status, p.out, p.err);
	return p;
}

/*
 * No byte a terminal or the journal would act on: C0 controls but the
 * line's newline, DEL, C1 controls (U+0080..U+009F as UTF-8), and no
 * invalid UTF-8. Returns the offset of the first such byte, or -1.
 */
static long first_raw_byte(const char *text)
{
	const unsigned char *s = (const unsigned char *)text;
	for (size_t i = 0; s[i];) {
		unsigned char c = s[i];
		size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2
			 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
		if ((c < 0x20 && c != '\n') || c == 0x7f || n == 0 ||
		    (c == 0xc2 && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f))
			return (long)i;
		for (size_t k = 1; k < n; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return (long)i;
		i += n;
	}
	return -1;
}

static void expect_clean_text(const char *what, const char *text)
{
	long at = first_raw_byte(text);
	if (at >= 0)
		fail_msg("%s has a raw byte 0x%02x at offset %ld:\n%s", what,
			 (unsigned char)text[at], at, text);
}

/* Every line of the daemon's log is one of its records. */
static void expect_log_records(struct hx *h)
{
	const char *log = hx_log(h);
	expect_clean_text("the daemon log", log);
	for (const char *line = log; *line;) {
		const char *end = strchr(line, '\n');
		/* The harness marks each start of the daemon in its log. */
		if (strncmp(line, "pycached: ", 10) != 0 &&
		    strncmp(line, "=== hx: ", 8) != 0)
			fail_msg("a log line is not a record of its own: "
				 "\"%.*s\"", (int)(end ? end - line : 80), line);
		if (!end)
			break;
		line = end + 1;
	}
}

static void expect_logged(struct hx *h, const char *needle)
{
	if (!hx_wait_log(h, needle, HX_REMOVE_MS)) {
		hx_dump_log(h);
		fail_msg("the daemon log does not have \"%s\"", needle);
	}
}

/* python3 reads file as strict UTF-8 JSON and runs check on it as d. */
static void expect_json(struct hx *h, const char *text, const char *check)
{
	const char *file = hx_path(h, "reply-%u.json", (unsigned)rand());
	FILE *f = fopen(file, "wb");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	struct hx_proc py = hx_python(
		h, NULL, "-c",
		hx_str(h, "import json, sys\n"
		       "d = json.loads(open(sys.argv[1], 'rb').read())\n"
		       "%s\n", check),
		file, NULL);
	if (py.status != 0)
		fail_msg("not the JSON expected (%s):\n%s\n%s", check, text,
			 py.err);
}

/* --- 1. look-alikes ------------------------------------------------------- */

static void lookalikes_keep_their_bytecode(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	const char *pre = hx_path(h, "root/pre"), *post = hx_path(h, "root/post");
	struct snap before[N_LOOKALIKES], after[N_LOOKALIKES];

	make_lookalikes(h, pre, before);
	make_hostile_caches(h, pre);
	/* Watched before its entries appear: they come as events, not from
	 * a crawl of a new directory. */
	hx_mkdirs(post);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	expect_hostile_gone(h, pre);

	/* Made while the daemon is stopped: each cache whole when it looks. */
	hx_freeze(h);
	make_lookalikes(h, post, after);
	make_hostile_caches(h, post);
	hx_thaw(h);
	expect_hostile_gone(h, post);
	hx_barrier(h, root);
	expect_lookalikes(h, pre, before, "after the crawl");
	expect_lookalikes(h, post, after, "after the events");

	ctl_ok(h, (const char *const[]){ "sweep", NULL });
	expect_lookalikes(h, pre, before, "after a sweep");
	expect_lookalikes(h, post, after, "after a sweep");
	/* Only the look-alikes are left: nothing named __pycache__. */
	assert_int_equal(hx_count_caches(root), 0);
	assert_true(hx_alive(h));
	free_snaps(before);
	free_snaps(after);
}

/* --- 2. the log ------------------------------------------------------------ */

static void log_escapes_hostile_names(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(hx_path(h, "root/pre"));
	make_hostile_caches(h, hx_path(h, "root/pre"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	hx_freeze(h);
	hx_mkdirs(hx_path(h, "root/post"));
	make_hostile_caches(h, hx_path(h, "root/post"));
	/* A cache holding a file that is not bytecode is skipped, and said. */
	hx_mkdirs(hx_path(h, "root/user\033[1mpkg\xff/__pycache__"));
	hx_write(hx_path(h, "root/user\033[1mpkg\xff/__pycache__/%s", foreign),
		 "mine\n");
	assert_int_equal(hx_try_write_pyc(
		hx_path(h, "root/user\033[1mpkg\xff/__pycache__"), "m"), 0);
	hx_thaw(h);

	for (size_t i = 0; i < N_HOSTILE; i++) {
		expect_logged(h, hx_str(h, "removed %s/pre/%s/__pycache__ (2 "
					"files", root, hostile[i].logged));
		expect_logged(h, hx_str(h, "removed %s/post/%s/__pycache__ (2 "
					"files", root, hostile[i].logged));
	}
	expect_logged(h, hx_str(h, "skipped %s/user\\x1b[1mpkg\\xff/__pycache__"
				": it contains '%s'", root, foreign_logged));
	expect_log_records(h);
	assert_true(hx_is_reg(hx_path(h, "root/user\033[1mpkg\xff/__pycache__/%s",
				      foreign)));
}

/* --- 3. status ------------------------------------------------------------- */

static void status_json_stays_valid(void **state)
{
	struct hx *h = *state;
	const char *esc = hx_path(h, "esc\033[31mroot"),
		   *raw = hx_path(h, "raw\xff\xferoot"),
		   *plain = hx_path(h, "plain");
	const char *roots[] = { esc, raw, plain };
	for (size_t i = 0; i < 3; i++) {
		hx_mkdirs(hx_path(h, "%s/pkg\xc2\x9b\033]2;x\a/__pycache__", roots[i]));
		hx_write(hx_path(h, "%s/pkg\xc2\x9b\033]2;x\a/__pycache__/%s", roots[i],
				 foreign), "mine\n");
		make_hostile_caches(h, roots[i]);
	}
	hx_config_roots(h, NULL, esc, raw, plain, NULL);
	hx_start(h, NULL);
	for (size_t i = 0; i < 3; i++)
		expect_hostile_gone(h, roots[i]);

	struct hx_proc p = ctl_ok(h, (const char *const[]){ "--json", "status",
							    NULL });
	/* ESC is UTF-8: JSON escapes it; 0xff is not: the daemon does. */
	expect_json(h, p.out, hx_str(h,
		"paths = sorted(r['path'] for r in d['roots'])\n"
		"base = '%s'\n"
		"want = sorted([base + '/esc\\x1b[31mroot', base + "
		"'/raw\\\\xff\\\\xferoot', base + '/plain'])\n"
		"assert paths == want, (paths, want)\n"
		"for r in d['roots']:\n"
		"    assert r['caches_skipped'] == 1, r\n"
		"    assert 'notes\\n\\x1b[2J\\\\xff.txt' in r['last_skip'], r\n"
		"    assert r['caches_removed'] == %zu, r", hx_dir(h), N_HOSTILE));
	struct hx_proc q = ctl_ok(h, (const char *const[]){ "--json", "list",
							    NULL });
	expect_json(h, q.out, "assert len(d['roots']) == 3, d");

	struct hx_proc s = ctl_ok(h, (const char *const[]){ "status", NULL });
	expect_clean_text("pycachectl status", s.out);
	if (!strstr(s.out, hx_str(h, "%s/raw\\xff\\xferoot", hx_dir(h))) ||
	    !strstr(s.out, hx_str(h, "%s/esc\\x1b[31mroot", hx_dir(h))))
		fail_msg("pycachectl status does not show the roots escaped:\n%s",
			 s.out);
	struct hx_proc l = ctl_ok(h, (const char *const[]){ "list", NULL });
	expect_clean_text("pycachectl list", l.out);
	expect_log_records(h);
}

/*
 * A configuration whose errors quote hostile bytes (an unknown key with an
 * ESC sequence and invalid UTF-8): pycachectl reload prints the errors
 * escaped, and so does pycachectl status when it tells of the failed
 * reload; the log too.
 */
static void config_errors_escaped(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(root);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	hx_config(h, "[pycached]\ncol\033[2J\033]0;x\aour\xff = 1\n");
	struct hx_proc r = hx_ctl(h, (const char *const[]){ "reload", NULL });
	if (r.status != 1 || !strstr(r.err, "col\\x1b[2J\\x1b]0;x\\x07our\\xff"))
		fail_msg("pycachectl reload exited %d, without the key escaped:\n%s",
			 r.status, r.err);
	expect_clean_text("pycachectl reload's errors", r.err);
	struct hx_proc s = ctl_ok(h, (const char *const[]){ "status", NULL });
	if (!strstr(s.out, "failed") || !strstr(s.out, "col\\x1b[2J"))
		fail_msg("pycachectl status does not tell of the failed reload:\n%s",
			 s.out);
	expect_clean_text("pycachectl status", s.out);
	expect_log_records(h);
}

/* --- 4. deeper than PATH_MAX ---------------------------------------------- */

/* mkdir a chain of levels directories below dirfd; the bottom, open. */
static int deep_chain(int dirfd, unsigned levels, char tag)
{
	char name[DEEP_NAME + 1];
	memset(name, tag, DEEP_NAME);
	name[DEEP_NAME] = '\0';
	int fd = dup(dirfd);
	for (unsigned i = 0; fd >= 0 && i < levels; i++) {
		if (mkdirat(fd, name, 0777) < 0 && errno != EEXIST)
			fail_msg("mkdirat level %u: %s", i, strerror(errno));
		int next = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	if (fd < 0)
		fail_msg("open a deep level: %s", strerror(errno));
	return fd;
}

/* A cache (or look-alike) of n pycs in the directory dirfd, by fchdir. */
static void cache_at(int dirfd, const char *name, unsigned n)
{
	int here = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(here >= 0);
	assert_int_equal(fchdir(dirfd), 0);
	assert_int_equal(mkdir(name, 0777), 0);
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(hx_try_write_pyc(name, i ? "mod1" : "mod0"), 0);
	assert_int_equal(fchdir(here), 0);
	close(here);
}

struct deep_gone {
	int fd;
	const char *name;
};

static bool deep_is_gone(void *arg)
{
	struct deep_gone *g = arg;
	struct stat st;
	return fstatat(g->fd, g->name, &st, AT_SYMLINK_NOFOLLOW) < 0 &&
	       errno == ENOENT;
}

static void expect_deep_gone(struct hx *h, int fd, const char *what)
{
	struct deep_gone g = { fd, "__pycache__" };
	if (!hx_wait(deep_is_gone, &g, hx_ms(HX_REMOVE_MS))) {
		hx_dump_log(h);
		fail_msg("the cache at the bottom of %s is still there", what);
	}
}

static long deep_count(int fd, const char *name)
{
	int sub = openat(fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sub < 0)
		return -1;
	DIR *d = fdopendir(sub);
	long n = 0;
	for (struct dirent *de; (de = readdir(d));)
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

/* A line of the log that says "removed ROOT/…/TAG…/__pycache__ (" whole. */
struct deep_record {
	struct hx *h;
	const char *root;
	char last[DEEP_NAME + 32];
};

static bool whole_deep_record(void *arg)
{
	struct deep_record *w = arg;
	const char *log = hx_log(w->h);
	for (const char *p = log; (p = strstr(p, "removed ")); p++) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *hit = strstr(p, w->last);
		if (strncmp(p + 8, w->root, strlen(w->root)) == 0 && hit &&
		    hit < p + len && len > PATH_MAX)
			return true;
	}
	return false;
}

/* The removal is logged after the cache is out of sight: wait for it. */
static void expect_deep_record(struct hx *h, const char *root, char tag)
{
	struct deep_record w = { h, root, "" };
	memset(w.last, tag, DEEP_NAME);
	snprintf(w.last + DEEP_NAME, sizeof w.last - DEEP_NAME,
		 "/__pycache__ (2 files");
	if (!hx_wait(whole_deep_record, &w, hx_ms(HX_REMOVE_MS))) {
		hx_dump_log(h);
		fail_msg("no whole log record of the removal of the cache at "
			 "the bottom of the '%c' chain", tag);
	}
}

static void deep_chain_cache_removed(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(hx_path(h, "root/deep"));
	int top = open(hx_path(h, "root/deep"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(top >= 0);
	/* 24 x 201 bytes: about 4,800, past PATH_MAX (4,096). */
	int bottom = deep_chain(top, DEEP_LEVELS, 'a');
	cache_at(bottom, "__pycache__", 2);
	cache_at(bottom, "__pycache__.bak", 2);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	expect_deep_gone(h, bottom, "the chain crawled at start");
	/* Events at the bottom; made frozen, so that each cache is whole. */
	hx_freeze(h);
	cache_at(bottom, "__pycache__", 2);
	hx_thaw(h);
	expect_deep_gone(h, bottom, "the chain, by an event");
	/* A chain made below it while the daemon watches. */
	hx_freeze(h);
	int deeper = deep_chain(bottom, DEEP_LEVELS, 'b');
	cache_at(deeper, "__pycache__", 2);
	hx_thaw(h);
	expect_deep_gone(h, deeper, "a chain made while watched");

	assert_int_equal(deep_count(bottom, "__pycache__.bak"), 2);
	expect_deep_record(h, root, 'a');
	expect_deep_record(h, root, 'b');
	expect_log_records(h);
	struct hx_proc p = ctl_ok(h, (const char *const[]){ "--json", "status",
							    NULL });
	expect_json(h, p.out, hx_str(h,
		"r = d['roots'][0]\n"
		"assert r['dirs_watched'] >= %d, r\n"
		"assert r['caches_removed'] == 3, r", 2 * DEEP_LEVELS + 2));
	close(deeper);
	close(bottom);
	close(top);
}

/* rm -rf name below dirfd, by fds: its paths are too long for nftw. */
static void rm_below(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			O_CLOEXEC);
	if (fd >= 0) {
		DIR *d = fdopendir(fd);
		for (struct dirent *de; d && (de = readdir(d));)
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				rm_below(fd, de->d_name);
		if (d)
			closedir(d);
	}
	if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0 && errno == ENOTDIR)
		unlinkat(dirfd, name, 0);
}

/* The harness's teardown walks by path: take the deep chain away first. */
static int deep_teardown(void **state)
{
	struct hx *h = *state;
	int fd = open(hx_path(h, "root"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		rm_below(fd, "deep");
		close(fd);
	}
	return hx_teardown(state);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, hx_setup, hx_teardown)
		T(lookalikes_keep_their_bytecode),
		T(log_escapes_hostile_names),
		T(status_json_stays_valid),
		T(config_errors_escaped),
#undef T
		cmocka_unit_test_setup_teardown(deep_chain_cache_removed,
						hx_setup, deep_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
