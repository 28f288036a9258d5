/*
 * What pycached must never touch: symlinks and what they lead to, foreign
 * files in a __pycache__, stray .pyc files, a file named __pycache__,
 * excluded directories and virtualenvs. Each test makes the daemon look at
 * the thing (at start-up and live), then uses a barrier before asserting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "harness.h"

static mode_t ftype(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 ? (st.st_mode & S_IFMT) : 0;
}

/* A directory outside the root holding two bytecode files directly. */
static const char *outside_pycs(struct hx *h, const char *name)
{
	const char *dir = hx_path(h, "outside/%s", name);
	hx_mkdirs(dir);
	assert_int_equal(hx_try_write_pyc(dir, "a"), 0);
	assert_int_equal(hx_try_write_pyc(dir, "b"), 0);
	return dir;
}

static void symlinked_cache_left_alone(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	const char *c1 = outside_pycs(h, "c1"), *c2 = outside_pycs(h, "c2");
	const char *c3 = outside_pycs(h, "c3");
	hx_mkdirs(hx_path(h, "root/pre"));
	hx_symlink(c1, hx_path(h, "root/pre/__pycache__"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	hx_mkdirs(hx_path(h, "root/live"));
	hx_symlink(c2, hx_path(h, "root/live/__pycache__"));
	hx_mkdirs(hx_path(h, "root/rel"));
	hx_symlink("../../outside/c3", hx_path(h, "root/rel/__pycache__"));
	hx_barrier(h, root);

	assert_true(hx_is_symlink(hx_path(h, "root/pre/__pycache__")));
	assert_true(hx_is_symlink(hx_path(h, "root/live/__pycache__")));
	assert_true(hx_is_symlink(hx_path(h, "root/rel/__pycache__")));
	assert_int_equal(hx_count_files(c1, ".pyc"), 2);
	assert_int_equal(hx_count_files(c2, ".pyc"), 2);
	assert_int_equal(hx_count_files(c3, ".pyc"), 2);
}

static void symlink_leading_outside_left_alone(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	const char *tree = hx_path(h, "outside/tree");
	const char *tree2 = hx_path(h, "outside/tree2");
	hx_mkdirs(hx_path(h, "%s/sub", tree));
	hx_mkdirs(tree2);
	hx_cache(hx_path(h, "%s/sub", tree), 2);
	hx_mkdirs(root);
	hx_symlink(tree, hx_path(h, "root/link"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	(void)hx_try_cache(tree, 1);
	hx_mkdirs(hx_path(h, "%s/new", tree));
	(void)hx_try_cache(hx_path(h, "%s/new", tree), 1);
	/* The same inodes reached through the link's path. */
	hx_mkdirs(hx_path(h, "root/link/via"));
	(void)hx_try_cache(hx_path(h, "root/link/via"), 1);
	/* A link made while the daemon runs. */
	hx_symlink(tree2, hx_path(h, "root/link2"));
	(void)hx_try_cache(tree2, 1);
	hx_barrier(h, root);

	assert_int_equal(hx_count_caches(tree), 4);
	assert_int_equal(hx_count_files(tree, ".pyc"), 5);
	assert_int_equal(hx_count_caches(tree2), 1);
	assert_true(hx_is_symlink(hx_path(h, "root/link")));
}

/* Things a __pycache__ may hold that are not bytecode. */
static const struct foreign {
	const char *kind;
	const char *item;
	mode_t type;
} foreign_items[] = {
	{ "notes", "notes.txt", S_IFREG },
	{ "subdir", "sub", S_IFDIR },
	{ "fifo", "pipe", S_IFIFO },
	{ "numba", "foo.nbi", S_IFREG },
	{ "numba", "foo.nbc", S_IFREG },
	{ "symlink", "link", S_IFLNK },
};

static void make_foreign(struct hx *h, const char *cache, const char *kind)
{
	if (!strcmp(kind, "notes")) {
		hx_write(hx_path(h, "%s/notes.txt", cache), "mine\n");
	} else if (!strcmp(kind, "subdir")) {
		hx_mkdirs(hx_path(h, "%s/sub", cache));
		assert_int_equal(hx_try_write_pyc(hx_path(h, "%s/sub", cache),
						  "inner"), 0);
	} else if (!strcmp(kind, "fifo")) {
		assert_int_equal(mkfifo(hx_path(h, "%s/pipe", cache), 0600), 0);
	} else if (!strcmp(kind, "numba")) {
		hx_write(hx_path(h, "%s/foo.nbi", cache), "index");
		hx_write(hx_path(h, "%s/foo.nbc", cache), "code");
	} else {
		hx_symlink(hx_path(h, "outside/target.txt"),
			   hx_path(h, "%s/link", cache));
	}
}

/*
 * base/<kind>/__pycache__ = bytecode + one foreign thing. Built in stage
 * and renamed in whole: made in place, the daemon could rightly remove the
 * directory while it still held bytecode only.
 */
static void make_foreign_set(struct hx *h, const char *base)
{
	static const char *const kinds[] = { "notes", "subdir", "fifo",
					     "numba", "symlink" };
	hx_mkdirs(hx_path(h, "outside"));
	hx_write(hx_path(h, "outside/target.txt"), "keep\n");
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
		const char *stage = hx_path(h, "outside/stage-%s", kinds[i]);
		const char *cache = hx_path(h, "%s/__pycache__", stage);
		hx_mkdirs(stage);
		hx_cache(stage, 2);
		make_foreign(h, cache, kinds[i]);
		hx_mkdirs(hx_path(h, "%s/%s", base, kinds[i]));
		hx_rename(cache, hx_path(h, "%s/%s/__pycache__", base, kinds[i]));
	}
}

static void expect_foreign_set(struct hx *h, const char *base)
{
	for (size_t i = 0; i < sizeof foreign_items / sizeof foreign_items[0]; i++) {
		const struct foreign *f = &foreign_items[i];
		const char *dir = hx_path(h, "%s/%s", base, f->kind);
		const char *item = hx_path(h, "%s/__pycache__/%s", dir, f->item);
		if (ftype(item) != f->type)
			fail_msg("%s is gone or changed type", item);
		/* No half-reaped debris next to the kept cache. */
		assert_int_equal(hx_count_entries(dir), 1);
	}
	assert_true(hx_is_reg(hx_path(h, "%s/subdir/__pycache__/sub/"
				      "inner.cpython-311.pyc", base)));
	assert_true(hx_is_reg(hx_path(h, "outside/target.txt")));
}

static void foreign_content_kept(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	make_foreign_set(h, hx_path(h, "root/pre"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	make_foreign_set(h, hx_path(h, "root/live"));
	hx_barrier(h, root);
	expect_foreign_set(h, hx_path(h, "root/pre"));
	expect_foreign_set(h, hx_path(h, "root/live"));
}

/*
 * A daemon killed in the middle of a reap leaves the cache under its
 * temporary name. The next sweep reaps it like any cache: the bytecode
 * goes, foreign content stays; a look-alike name is not touched.
 */
static void leftover_of_killed_daemon_reaped(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	const char *plain = hx_path(h, "root/a/.__pycache__.pycached-1-2");
	const char *mixed = hx_path(h, "root/b/.__pycache__.pycached-1-3");
	const char *alike = hx_path(h, "root/c/.__pycache__.pycached-mine");
	struct hx_proc p;

	hx_mkdirs(plain);
	hx_mkdirs(mixed);
	hx_mkdirs(alike);
	assert_int_equal(hx_try_write_pyc(plain, "m"), 0);
	assert_int_equal(hx_try_write_pyc(mixed, "m"), 0);
	hx_write(hx_path(h, "%s/notes.txt", mixed), "mine\n");
	assert_int_equal(hx_try_write_pyc(alike, "m"), 0);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	p = hx_ctl(h, (const char *const[]){ "sweep", NULL });
	assert_int_equal(p.status, 0);
	assert_false(hx_exists(plain));
	assert_true(hx_is_reg(hx_path(h, "%s/notes.txt", mixed)));
	assert_false(hx_exists(hx_path(h, "%s/m.cpython-311.pyc", mixed)));
	assert_true(hx_is_reg(hx_path(h, "%s/m.cpython-311.pyc", alike)));
	assert_int_equal(hx_count_entries(hx_path(h, "root/a")), 0);
	assert_int_equal(hx_count_entries(hx_path(h, "root/b")), 1);
}

/* Sourceless foo.pyc next to where foo.py was is importable: never touch. */
static void make_strays(struct hx *h, const char *base)
{
	hx_mkdirs(hx_path(h, "%s/pkg", base));
	hx_mkdirs(hx_path(h, "%s/file", base));
	hx_write(hx_path(h, "%s/foo.pyc", base), "legacy");
	hx_write(hx_path(h, "%s/pkg/bar.pyc", base), "legacy");
	assert_int_equal(hx_try_write_pyc(hx_path(h, "%s/pkg", base), "baz"), 0);
	hx_write(hx_path(h, "%s/file/__pycache__", base), "a file\n");
}

static void expect_strays(struct hx *h, const char *base)
{
	assert_true(hx_is_reg(hx_path(h, "%s/foo.pyc", base)));
	assert_true(hx_is_reg(hx_path(h, "%s/pkg/bar.pyc", base)));
	assert_true(hx_is_reg(hx_path(h, "%s/pkg/baz.cpython-311.pyc", base)));
	assert_true(hx_is_reg(hx_path(h, "%s/file/__pycache__", base)));
}

static void strays_and_pycache_file_kept(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	make_strays(h, root);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	make_strays(h, hx_path(h, "root/live"));
	hx_barrier(h, root);
	expect_strays(h, root);
	expect_strays(h, hx_path(h, "root/live"));
}

/*
 * Directories whose caches stay: config excludes, built-ins and a venv.
 * The root's own "exclude = data" is only used at the top of the root, so
 * that the test holds whether it names a directory anywhere or a path.
 */
static const char *const excluded[] = {
	"build", "src/dist", "src/dist/pkg", "foo.egg-info",
	"node_modules/x", ".tox/py311", ".git/hooks",
	"venv/lib/python3.11/site-packages/pkg",
	"data",   /* last: skipped below the top */
};
#define N_EXCLUDED (sizeof excluded / sizeof excluded[0])

static void make_excluded(struct hx *h, const char *base, bool top)
{
	hx_mkdirs(hx_path(h, "%s/venv", base));
	hx_write(hx_path(h, "%s/venv/pyvenv.cfg", base), "home = /usr/bin\n");
	for (size_t i = 0; i < N_EXCLUDED - !top; i++) {
		const char *d = hx_path(h, "%s/%s", base, excluded[i]);
		hx_mkdirs(d);
		(void)hx_try_cache(d, 1);
	}
}

static void excludes_and_venvs_left_alone(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(hx_path(h, "root/src/pkg"));
	hx_cache(hx_path(h, "root/src/pkg"), 1);
	make_excluded(h, root, true);
	hx_config(h, "[pycached]\nlog_level = info\n"
		  "exclude = build dist *.egg-info\nskip_venvs = yes\n\n"
		  "[root %s]\nexclude = data\n", root);
	hx_start(h, NULL);
	/* The control: the sweep did run. */
	assert_false(hx_exists(hx_path(h, "root/src/pkg/__pycache__")));

	/* New caches inside the excluded dirs, and new excluded dirs. */
	for (size_t i = 0; i < N_EXCLUDED; i++) {
		const char *d = hx_path(h, "root/%s/new", excluded[i]);
		hx_mkdirs(d);
		(void)hx_try_cache(d, 1);
	}
	make_excluded(h, hx_path(h, "root/src/live"), false);
	hx_barrier(h, root);
	assert_int_equal(hx_count_caches(root), 2 * N_EXCLUDED + N_EXCLUDED - 1);
}

/*
 * python3 -m venv creates lib/…/site-packages before pyvenv.cfg, and
 * pip byte-compiles into it afterwards: compileall must succeed and keep
 * its caches, even though the daemon saw the venv's directories appear.
 */
static void live_venv_left_alone(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(root);
	hx_config_roots(h, "skip_venvs = yes\n", root, NULL);
	hx_start(h, NULL);

	struct hx_proc p = hx_python(h, root, "-m", "venv", "--without-pip",
				     "venv", NULL);
	if (p.status != 0)
		fail_msg("python3 -m venv failed: %s", p.err);
	const char *py = hx_path(h, "root/venv/bin/python");
	p = hx_run(h, root, (const char *const[]){ py, "-c",
		"import sysconfig; print(sysconfig.get_paths()['purelib'], end='')",
		NULL });
	assert_int_equal(p.status, 0);
	const char *pkg = hx_path(h, "%s/pkg", p.out);
	hx_mkdirs(hx_path(h, "%s/sub", pkg));
	hx_write(hx_path(h, "%s/__init__.py", pkg), "%s", "");
	hx_write(hx_path(h, "%s/sub/__init__.py", pkg), "%s", "");
	p = hx_run(h, root, (const char *const[]){ py, "-m", "compileall", "-q",
						   pkg, NULL });
	if (p.status != 0)
		fail_msg("compileall in the venv failed: %s%s", p.out, p.err);
	hx_barrier(h, root);
	assert_int_equal(hx_count_caches(pkg), 2);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(symlinked_cache_left_alone,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(symlink_leading_outside_left_alone,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(foreign_content_kept,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(leftover_of_killed_daemon_reaped,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(strays_and_pycache_file_kept,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(excludes_and_venvs_left_alone,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(live_venv_left_alone,
						hx_setup, hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
