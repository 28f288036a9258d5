/*
 * pycachectl against the real daemon: a smoke test of the harness's
 * run_ctl plumbing (private runtime dir, --socket). The control issue's own
 * integration tests build on hx_ctl().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"

/* pycachectl's documented exit status when no daemon answers. */
#define CTL_NOT_RUNNING 3

static void ctl_lists_configured_root(void **state)
{
	struct hx *h = *state;
	const char *root = hx_path(h, "root");
	hx_mkdirs(root);
	hx_config_roots(h, NULL, root, NULL);
	hx_start(h, NULL);

	struct hx_proc p = hx_ctl(h, (const char *const[]){ "list", NULL });
	if (p.status != 0)
		fail_msg("pycachectl list exited %d: %s", p.status, p.err);
	if (!strstr(p.out, root))
		fail_msg("pycachectl list does not show %s:\n%s", root, p.out);
}

static void ctl_without_daemon(void **state)
{
	struct hx *h = *state;
	struct hx_proc p = hx_ctl(h, (const char *const[]){ "list", NULL });
	assert_int_equal(p.status, CTL_NOT_RUNNING);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(ctl_lists_configured_root,
						hx_setup, hx_teardown),
		cmocka_unit_test_setup_teardown(ctl_without_daemon,
						hx_setup, hx_teardown),
	};
	return hx_run_group(tests, argc, argv);
}
