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
 * A pyc that matches its source replaces the prefix's, even one whose
 * header says it is newer (a source whose mtime went back); an older one
 * is replaced anyway.
 */
static void source_gone_back_replaces(void **state)
{
	struct itr w;
	const char *m, *init;

	itr_start(&w, *state);
	m = itr_pyc(&w, "pkg", "m");
	init = itr_pyc(&w, "pkg", "__init__");
	itr_make_pkg(&w, STEMS("m"));
	itr_plant_pyc(&w, m, 0xfffffff0u);
	itr_plant_pyc(&w, init, 1);
	itr_import(&w, "pkg", "pkg.m", STEMS("__init__", "m"));
	assert_true(itr_pyc_mtime(m) != 0xfffffff0u);
	assert_true(itr_pyc_mtime(init) > 1);
	assert_false(hx_log_contains(w.h, "cannot relocate"));
}

/* --- compileall over a real package ------------------------------------ */

static void compileall_relocates_all(void **state)
{
	struct itr w;
	const char *dir, *decoder;
	struct hx_proc p;
	size_t n, missing;
	int round;

	itr_start(&w, *state);
	dir = hx_path(w.h, "%s/json", w.root);
	n = missing = itr_copy_stdlib_package(&w, "json", dir);
	for (round = 0; round < ITR_COMPILE_ROUNDS && missing; round++) {
		p = hx_python(w.h, w.root, "-m", "compileall", "-q", "json", NULL);
		/* A directory that vanishes under compileall fails it (FACTS.md). */
		if (p.status != 0 && !strstr(p.out, "FileNotFoundError"))
			fail_msg("compileall exited %d:\n%s%s", p.status, p.out,
				 p.err);
		hx_expect_no_caches(w.root, HX_REMOVE_MS);
		missing = itr_missing_pycs(&w, dir, "json", p.out);
	}
	if (missing)
		fail_msg("%zu of %zu modules have no pyc under %s after %d runs",
			 missing, n, w.prefix, ITR_COMPILE_ROUNDS);
	assert_int_equal(hx_count_files(hx_path(w.h, "%s%s", w.prefix, dir),
					".pyc"), n);
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
		T(relocates_without_config_file),
		T(status_counts_relocations),
		T(status_hints_env),
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
