/*
 * Relocate mode end to end: the real pycached, real python3 and pycachectl
 * in a private world per test (tests/integration/harness.h). Bytecode that
 * python3 writes into a relocating root must leave the tree and land at
 * the exact PYTHONPYCACHEPREFIX path, where a second python3 run with that
 * prefix loads it; prune, env and status are checked through pycachectl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itr.h"
#include "rt.h"

/* --- import ------------------------------------------------------------- */

static void import_relocates(void **state)
{
	struct itr w;
	struct hx_proc p;
	const char *m;

	itr_start(&w, *state);
	itr_make_pkg(&w, STEMS("m"));
	itr_import(&w, "pkg", "pkg.m", STEMS("__init__", "m"));
	m = itr_pyc(&w, "pkg", "m");
	/* The layout has no __pycache__ component. */
	assert_false(hx_exists(hx_path(w.h, "%s%s/pkg/__pycache__", w.prefix,
				       w.root)));
	p = itr_python_prefixed(&w, "-v", "-c", "import pkg.m", NULL);
	assert_int_equal(p.status, 0);
	if (!strstr(p.err, hx_str(w.h, "code object from '%s'", m)))
		fail_msg("python3 -v did not load %s:\n%s", m, p.err);
	/* With the prefix, python3 writes nothing into the tree itself (the
	 * stdlib's bytecode goes to the prefix now). */
	assert_null(strstr(p.err, hx_str(w.h, "# created '%s/", w.root)));
	assert_int_equal(hx_count_caches(w.root), 0);
}

/*
 * The first run of a program in a fresh tree: CPython makes the cache and
 * writes every module into it at once. Not one pyc may be lost, though the
 * daemon sees the cache before the first one is finished. Big modules
 * keep each write in flight long enough for the daemon to act meanwhile.
 */
static void first_run_relocates_all(void **state)
{
	static const char *const code = "import pkg.a, pkg.b, pkg.c, pkg.d";
	struct itr w;
	struct hx_proc p;

	itr_start(&w, *state);
	itr_make_big_pkg(&w, STEMS("a", "b", "c", "d"), ITR_BIG_LINES);
	p = hx_python(w.h, w.root, "-v", "-c", code, NULL);
	if (p.status != 0)
		fail_msg("python3 -c '%s' exited %d:\n%s", code, p.status,
			 p.err);
	hx_expect_no_caches(w.root, HX_REMOVE_MS);
	itr_expect_relocated(&w, "pkg", STEMS("__init__", "a", "b", "c", "d"),
			     p.err);
}

/*
 * The quick start: no configuration file at all, one `add --mode
 * relocate`. The default cache directory must apply then too.
 */
static void relocates_without_config_file(void **state)
{
	struct itr w;

	itr_init(&w, *state);
	assert_false(hx_exists(hx_path(w.h, "config/pycached/pycached.conf")));
	hx_start_raw(w.h, NULL);
	itr_add_root(&w);
	itr_make_pkg(&w, STEMS("m"));
	itr_import(&w, "pkg", "pkg.m", STEMS("__init__", "m"));
	assert_false(hx_log_contains(w.h, "cannot use the cache directory"));
}

/* What status says about a relocating root on the cache's filesystem. */
static void status_counts_relocations(void **state)
{
	struct itr w;
	struct hx_proc p;

	itr_start(&w, *state);
	itr_make_pkg(&w, STEMS("m"));
	itr_import(&w, "pkg", "pkg.m", STEMS("__init__", "m"));
	p = itr_ctl_ok(&w, "status", NULL);
	if (!strstr(p.out, "mode relocate") || !strstr(p.out, " relocated (") ||
	    !strstr(p.out, hx_str(w.h, "cache directory: %s", w.prefix)))
		fail_msg("status does not count relocations:\n%s", p.out);
	assert_null(strstr(p.out, "pays a copy"));
	p = itr_ctl_ok(&w, "--json", "status", NULL);
	assert_non_null(strstr(p.out, "\"pays_copy\":false"));
	assert_null(strstr(p.out, "\"files_relocated\":0"));
	assert_null(strstr(p.out, "\"caches_relocated\":0"));
}

/* A root that keeps making caches gets the hint to let Python do it. */
static void status_hints_env(void **state)
{
	struct itr w;
	struct hx_proc p;

	itr_start(&w, *state);
	itr_make_pkg(&w, STEMS("m"));
	/* Without the prefix set, every run compiles and writes again. */
	for (int i = 0; i < 3; i++)
		itr_import(&w, "pkg", "pkg.m", STEMS("m"));
	p = itr_ctl_ok(&w, "status", NULL);
	if (!strstr(p.out, "caches keep coming back in:") ||
	    !strstr(p.out, "hint: Python keeps writing caches here") ||
	    !strstr(p.out, "eval \"$(pycachectl env)\"") ||
	    !strstr(p.out, "'pycachectl env --systemd'"))
		fail_msg("no hint in status:\n%s", p.out);
}

/*
 * The prefix holds the pyc of m.py as it is now; an older one, of an
 * earlier m.py, arrives in a cache moved into the tree: it must not
 * replace the current one.
 */
static void newer_in_prefix_kept(void **state)
{
	struct itr w;
	const char *m, *staged;
	uint32_t mtime, size;

	itr_start(&w, *state);
	itr_make_pkg(&w, STEMS("m"));
	itr_source_stamp(hx_path(w.h, "%s/pkg/m.py", w.root), &mtime, &size);
	m = itr_pyc(&w, "pkg", "m");
	itr_plant_pyc_sized(&w, m, mtime, size);
	/* Made outside the root, so the daemon sees one finished cache
	 * arrive (IN_MOVED_TO), never a cache being written. */
	staged = hx_path(w.h, "stage/__pycache__");
	itr_plant_pyc_sized(&w, hx_str(w.h, "%s/m.%s.pyc", staged, w.tag),
			    mtime - 100, size);
	hx_rename(staged, hx_path(w.h, "%s/pkg/__pycache__", w.root));
	hx_expect_no_caches(w.root, HX_REMOVE_MS);
	assert_int_equal(itr_pyc_mtime(m), mtime);
	assert_false(hx_log_contains(w.h, "cannot relocate"));
}

/*
 * The prefix holds a pyc of a source mtime far ahead of m.py's, as after
 * `git checkout` or `cp -p` of an older m.py: that pyc is stale whatever
 * its mtime says, and the one python3 writes for m.py as it is now
 * replaces it. The older __init__ pyc is replaced either way.
 */
static void source_gone_back_replaces(void **state)
{
	struct itr w;
	const char *m, *init;
	uint32_t m_mtime, init_mtime;

	itr_start(&w, *state);
	m = itr_pyc(&w, "pkg", "m");
	init = itr_pyc(&w, "pkg", "__init__");
	itr_make_pkg(&w, STEMS("m"));
	itr_plant_pyc(&w, m, 0xfffffff0u);
	itr_plant_pyc(&w, init, 1);
	itr_import(&w, "pkg", "pkg.m", STEMS("__init__", "m"));
	itr_source_stamp(hx_path(w.h, "%s/pkg/m.py", w.root), &m_mtime, NULL);
	itr_source_stamp(hx_path(w.h, "%s/pkg/__init__.py", w.root), &init_mtime,
			 NULL);
	assert_int_equal(itr_pyc_mtime(m), m_mtime);
	assert_int_equal(itr_pyc_mtime(init), init_mtime);
	assert_false(hx_log_contains(w.h, "cannot relocate"));
}

/* --- compileall over a real package ------------------------------------ */

/*
 * compileall, unlike import, fails on a cache directory that vanishes
 * between its makedirs and its open (FACTS.md): one run must succeed and
 * leave the pyc of every module in the prefix. email has 20 top-level
 * modules, so the cache lives through many writes.
 */
static void compileall_relocates_all(void **state)
{
	static const char *const pkgs[] = { "json", "email" };
	struct itr w;
	const char *decoder, *dir[2];
	struct hx_proc p;
	size_t n[2], missing = 0;

	itr_start(&w, *state);
	for (size_t i = 0; i < 2; i++) {
		dir[i] = hx_path(w.h, "%s/%s", w.root, pkgs[i]);
		n[i] = itr_copy_stdlib_package(&w, pkgs[i], dir[i]);
	}
	p = hx_python(w.h, w.root, "-m", "compileall", "-q", pkgs[0], pkgs[1],
		      NULL);
	if (p.status != 0) {
		hx_dump_log(w.h);
		fail_msg("compileall exited %d:\n%s%s", p.status, p.out, p.err);
	}
	hx_expect_no_caches(w.root, HX_REMOVE_MS);
	for (size_t i = 0; i < 2; i++)
		missing += itr_missing_pycs(&w, dir[i], pkgs[i]);
	if (missing) {
		hx_dump_log(w.h);
		fail_msg("%zu of %zu modules have no pyc under %s", missing,
			 n[0] + n[1], w.prefix);
	}
	/* And no other pyc in the mirrors (a __pycache__ component would
	 * add some). */
	for (size_t i = 0; i < 2; i++)
		assert_int_equal(hx_count_files(hx_path(w.h, "%s%s", w.prefix,
							dir[i]), ".pyc"), n[i]);
	decoder = itr_pyc(&w, "json", "decoder");
	p = itr_python_prefixed(&w, "-v", "-c", "import json.decoder", NULL);
	if (!strstr(p.err, hx_str(w.h, "code object from '%s'", decoder)))
		fail_msg("python3 -v did not load %s:\n%s", decoder, p.err);
}

/* --- prune -------------------------------------------------------------- */

static void prune_removes_orphans(void **state)
{
	struct itr w;
	const char *mirror;
	struct hx_proc p;

	itr_start(&w, *state);
	mirror = hx_path(w.h, "%s%s", w.prefix, w.root);
	itr_make_pkg(&w, STEMS("m", "gone"));
	itr_import(&w, "pkg", "pkg.m, pkg.gone", STEMS("__init__", "m", "gone"));
	assert_int_equal(unlink(hx_path(w.h, "%s/pkg/gone.py", w.root)), 0);
	hx_write(hx_path(w.h, "%s/pkg/notes.txt", mirror), "mine\n");
	itr_plant_pyc(&w, hx_path(w.h, "%s/stale/x.%s.pyc", mirror, w.tag), 5);
	hx_mkdirs(hx_path(w.h, "%s/empty", mirror));

	p = itr_ctl_ok(&w, "prune", NULL);
	if (!strstr(p.out, hx_str(w.h, "Pruned %s: 2 files without source "
				  "removed", w.prefix)) ||
	    !strstr(p.out, "2 empty directories removed; 2 files left"))
		fail_msg("unexpected prune output:\n%s", p.out);
	assert_false(hx_exists(itr_pyc(&w, "pkg", "gone")));
	assert_false(hx_exists(hx_path(w.h, "%s/stale", mirror)));
	assert_false(hx_exists(hx_path(w.h, "%s/empty", mirror)));
	assert_true(hx_is_reg(itr_pyc(&w, "pkg", "m")));
	assert_true(hx_is_reg(itr_pyc(&w, "pkg", "__init__")));
	assert_true(hx_is_reg(hx_path(w.h, "%s/pkg/notes.txt", mirror)));
	assert_true(hx_is_reg(hx_path(w.h, "%s/CACHEDIR.TAG", w.prefix)));
	p = itr_ctl_ok(&w, "--json", "prune", NULL);
	assert_non_null(strstr(p.out, "\"files_removed\":0"));
	assert_non_null(strstr(p.out, "\"files_left\":2"));
}

/* A cache directory pycached did not create empty is never pruned. */
static void prune_refuses_unclaimed(void **state)
{
	struct itr w;
	const char *other;
	struct hx_proc p;

	itr_world(&w, *state, NULL);
	other = hx_path(w.h, "%s/keep.%s.pyc", w.prefix, w.tag);
	itr_plant_pyc(&w, other, 7);
	itr_add_root(&w);
	p = itr_ctl(&w, "prune", NULL);
	assert_int_equal(p.status, 1);
	if (!strstr(p.err, "no CACHEDIR.TAG"))
		fail_msg("prune does not say why it refused:\n%s", p.err);
	assert_true(hx_is_reg(other));
	assert_false(hx_exists(hx_path(w.h, "%s/CACHEDIR.TAG", w.prefix)));
}

/* No relocating root: the cache directory is found, never created. */
static void prune_without_relocating_root(void **state)
{
	struct itr w;
	const char *orphan;
	struct hx_proc p;

	itr_world(&w, *state, NULL);
	orphan = hx_path(w.h, "%s%s/gone/x.%s.pyc", w.prefix, hx_dir(w.h), w.tag);
	p = itr_ctl(&w, "prune", NULL);
	assert_int_equal(p.status, 1);
	if (!strstr(p.err, "does not exist"))
		fail_msg("prune without a cache directory:\n%s", p.err);
	assert_false(hx_exists(w.prefix));
	itr_plant_pyc(&w, orphan, 9);
	hx_write(hx_path(w.h, "%s/CACHEDIR.TAG", w.prefix),
		 "Signature: 8a477f597d28d172789f06886806bc55\n");
	p = itr_ctl_ok(&w, "prune", NULL);
	if (!strstr(p.out, "1 file without source removed"))
		fail_msg("unexpected prune output:\n%s", p.out);
	assert_false(hx_exists(orphan));
	assert_true(hx_is_reg(hx_path(w.h, "%s/CACHEDIR.TAG", w.prefix)));
}

/* --- cache_max_size ---------------------------------------------------- */

#define N_OLD 8

/*
 * Bytecode over the cap is evicted least recently used first, down to 90%
 * of it. The prefix is counted when it is (re)opened: a reload does that.
 */
static void cap_evicts_oldest_first(void **state)
{
	struct itr w;
	const char *mirror;

	itr_world(&w, *state, "cache_max_size = 4K\n");
	itr_add_root(&w);
	itr_make_pkg(&w, STEMS("m"));
	itr_import(&w, "pkg", "pkg.m", STEMS("__init__", "m"));
	mirror = hx_path(w.h, "%s%s/old", w.prefix, w.root);
	for (int i = 0; i < N_OLD; i++) {
		assert_int_equal(rt_pyc(1, 1000, "%s/f%d.%s.pyc", mirror, i,
					w.tag), 0);
		assert_int_equal(rt_set_atime(100000 + i * 100, "%s/f%d.%s.pyc",
					      mirror, i, w.tag), 0);
	}
	itr_ctl_ok(&w, "reload", NULL);
	/* 8000 bytes and the package's over 4096: down to 3681, 5 go. */
	assert_true(hx_log_contains(w.h, "evicted 5 least recently used"));
	for (int i = 0; i < N_OLD; i++)
		assert_int_equal(hx_exists(hx_path(w.h, "%s/f%d.%s.pyc", mirror, i,
						   w.tag)), i >= 5);
	assert_true(hx_is_reg(itr_pyc(&w, "pkg", "m")));
	assert_true(hx_is_reg(itr_pyc(&w, "pkg", "__init__")));
}

/* --- env ---------------------------------------------------------------- */

static void env_lines(void **state)
{
	struct itr w;
	struct hx_proc p;

	itr_world(&w, *state, NULL);
	/* Nothing to eval before a root relocates; the reason on stderr. */
	p = itr_ctl_ok(&w, "env", NULL);
	assert_string_equal(p.out, "");
	assert_non_null(strstr(p.err, "no root uses mode=relocate"));
	itr_add_root(&w);
	p = itr_ctl_ok(&w, "env", NULL);
	assert_string_equal(p.out, hx_str(w.h, "export PYTHONPYCACHEPREFIX='%s'\n",
					  w.prefix));
	itr_check_env_in_shell(&w);
	p = itr_ctl_ok(&w, "env", "--systemd", NULL);
	assert_string_equal(p.out, hx_str(w.h, "PYTHONPYCACHEPREFIX=%s\n",
					  w.prefix));
	itr_check_env_in_environment_d(&w, p.out);
	p = itr_ctl(&w, "status", "--systemd", NULL);
	assert_int_equal(p.status, 2);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, hx_setup, hx_teardown)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(import_relocates),
		T(first_run_relocates_all),
		T(relocates_without_config_file),
		T(status_counts_relocations),
		T(status_hints_env),
		T(newer_in_prefix_kept),
		T(source_gone_back_replaces),
		T(compileall_relocates_all),
		T(prune_removes_orphans),
		T(prune_refuses_unclaimed),
		T(prune_without_relocating_root),
		T(cap_evicts_oldest_first),
		T(env_lines),
	};

	/* A cache directory the tests make must not be world-writable. */
	umask(022);
	return hx_run_group(tests, argc, argv);
}
