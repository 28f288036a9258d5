/*
 * Real python3 against the real daemon: imports and compileall leave no
 * __pycache__ behind, and the imports themselves never fail.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "harness.h"

/* "from pkg.sub import …" makes one import write two caches. */
static void make_package(struct hx *h, const char *proj)
{
	hx_mkdirs(hx_path(h, "%s/pkg/sub", proj));
	hx_write(hx_path(h, "%s/pkg/__init__.py", proj), "%s", "");
	hx_write(hx_path(h, "%s/pkg/sub/__init__.py", proj), "VALUE = 41\n");
	hx_write(hx_path(h, "%s/pkg/m.py", proj),
		 "from pkg.sub import VALUE\nX = VALUE + 1\n");
}

/*
 * Without this control every test here would pass against a machine whose
 * python writes no bytecode at all (PYTHONDONTWRITEBYTECODE leaking in).
 */
static void expect_python_writes_bytecode(struct hx *h)
{
	const char *control = hx_path(h, "outside/proj");
	make_package(h, control);
	struct hx_proc p = hx_python(h, control, "-c", "import pkg.m", NULL);
	assert_int_equal(p.status, 0);
	if (hx_count_caches(control) != 2)
		fail_msg("python3 wrote %zu caches outside any root, expected 2: "
			 "is PYTHONDONTWRITEBYTECODE still set?",
			 hx_count_caches(control));
}

static void import_leaves_no_cache(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	const char *proj = hx_path(h, "root/proj");
	expect_python_writes_bytecode(h);
	make_package(h, proj);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	struct hx_proc p = hx_python(h, proj, "-c",
				     "import pkg.m; print(pkg.m.X)", NULL);
	assert_int_equal(p.status, 0);
	assert_string_equal(p.out, "42\n");
	hx_expect_no_caches(root, HX_REMOVE_MS);
	assert_int_equal(hx_count_files(root, ".py"), 3);
}

/*
 * One interpreter importing module after module into the same package:
 * the daemon keeps deleting the cache CPython keeps re-creating, and no
 * import may fail because of it.
 */
static const char import_loop[] =
	"import importlib, os\n"
	"os.makedirs('loop', exist_ok=True)\n"
	"open('loop/__init__.py', 'w').close()\n"
	"for i in range(150):\n"
	"    with open(f'loop/m{i}.py', 'w') as f:\n"
	"        f.write(f'V = {i}\\n')\n"
	"    importlib.invalidate_caches()\n"
	"    assert importlib.import_module(f'loop.m{i}').V == i\n"
	"print('ok')\n";

static void import_loop_never_fails(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	expect_python_writes_bytecode(h);
	hx_mkdirs(root);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	struct hx_proc p = hx_python(h, root, "-c", import_loop, NULL);
	if (p.status != 0)
		fail_msg("python3 exited %d: %s", p.status, p.err);
	assert_string_equal(p.out, "ok\n");
	hx_expect_no_caches(root, HX_REMOVE_MS);
	assert_int_equal(hx_count_files(root, ".py"), 151);
}

/* A stdlib package copied without its caches, so only compileall makes any. */
static void copy_stdlib(struct hx *h, const char *module, const char *dst)
{
	struct hx_proc p = hx_python(h, NULL, "-B", "-c",
		"import importlib, os, shutil, sys\n"
		"m = importlib.import_module(sys.argv[1])\n"
		"shutil.copytree(os.path.dirname(m.__file__), sys.argv[2],\n"
		"                ignore=shutil.ignore_patterns('__pycache__'))\n",
		module, dst, NULL);
	if (p.status != 0)
		fail_msg("copying %s failed: %s", module, p.err);
}

static void compileall_leaves_no_cache(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	const char *control = hx_path(h, "outside/json");
	const char *stage = hx_path(h, "outside/email");
	const char *pkg = hx_path(h, "root/lib/email");

	copy_stdlib(h, "json", control);
	struct hx_proc p = hx_python(h, NULL, "-m", "compileall", "-q",
				     control, NULL);
	assert_int_equal(p.status, 0);
	assert_int_equal(hx_count_caches(control), 1);

	copy_stdlib(h, "email", stage);
	size_t sources = hx_count_files(stage, ".py");
	assert_true(sources > 20);
	hx_mkdirs(hx_path(h, "root/lib"));
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);
	hx_rename(stage, pkg);

	/* It may exit 1: directories vanish under it (FACTS.md). */
	p = hx_python(h, NULL, "-m", "compileall", "-q", pkg, NULL);
	assert_true(p.status == 0 || p.status == 1);
	hx_expect_no_caches(root, HX_REMOVE_MS);
	assert_int_equal(hx_count_files(pkg, ".py"), sources);
	assert_int_equal(hx_count_files(root, ".pyc"), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(import_leaves_no_cache,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(import_loop_never_fails,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(compileall_leaves_no_cache,
						hx_setup, hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
