/*
 * Relocate mode with the root on another filesystem than the cache
 * directory: a tmpfs mounted in a private user and mount namespace that
 * this test binary enters before its first test, so the daemon, python3
 * and pycachectl it starts all see the mount. Where the namespaces cannot
 * be made, every test skips and says why.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>

#include "itr.h"
#include "rt.h"

/*
 * Why the namespaces could not be made, or "": set once by main() before
 * any test runs. cmocka hands a test only its own state, so this one
 * fact of the process lives at file scope.
 */
static char ns_unavailable[256];

static void need_namespaces(void)
{
	if (ns_unavailable[0]) {
		print_message("skipped: %s\n", ns_unavailable);
		skip();
	}
}

/* The daemon goes first: a lazy unmount then leaves nothing busy. */
static int xfs_teardown(void **state)
{
	struct hx *h = *state;
	int rc = 0;

	if (h && hx_pid(h) && hx_stop(h, SIGTERM) != 0) {
		fprintf(stderr, "pycached did not exit 0 on SIGTERM\n");
		rc = -1;
	}
	if (h)
		umount2(hx_path(h, "proj"), MNT_DETACH);
	return hx_teardown(state) | rc;
}

static void root_on_tmpfs_pays_copy(void **state)
{
	struct itr w;
	struct hx_proc p;
	const char *m;
	int r;

	need_namespaces();
	itr_world(&w, *state, NULL);
	r = rt_mount_tmpfs(w.root, NULL);
	if (r < 0)
		fail_msg("mount -t tmpfs %s: %s", w.root, strerror(-r));
	itr_make_pkg(&w, STEMS("m"));
	itr_add_root(&w);
	itr_import(&w, "pkg", "pkg.m", STEMS("__init__", "m"));
	m = itr_pyc(&w, "pkg", "m");
	/* Copied under a temporary name, then renamed: none is left. */
	assert_int_equal(hx_count_entries(hx_path(w.h, "%s%s/pkg", w.prefix,
						  w.root)), 2);
	assert_true(hx_log_contains(w.h, "copied across filesystems"));
	p = itr_ctl_ok(&w, "status", NULL);
	if (!strstr(p.out, "pays a copy (cache_dir on another filesystem)"))
		fail_msg("status does not say the root pays a copy:\n%s", p.out);
	p = itr_ctl_ok(&w, "--json", "status", NULL);
	assert_non_null(strstr(p.out, "\"pays_copy\":true"));
	p = itr_python_prefixed(&w, "-v", "-c", "import pkg.m", NULL);
	if (!strstr(p.err, hx_str(w.h, "code object from '%s'", m)))
		fail_msg("python3 -v did not load %s:\n%s", m, p.err);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(root_on_tmpfs_pays_copy,
						hx_setup, xfs_teardown),
	};

	/* Before any thread or child exists: unshare needs one thread. */
	rt_private_mounts(ns_unavailable, sizeof(ns_unavailable));
	return hx_run_group(tests, argc, argv);
}
