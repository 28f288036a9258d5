#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <inttypes.h>
#include <stdlib.h>

#include "helpers.h"
#include "watch.h"
#include "watchfx.h"
#include "wfx-test.h"

int wfx_test_setup(void **state)
{
	struct wfx *f = calloc(1, sizeof(*f));

	if (!f || wfx_init(f, NULL) < 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

int wfx_test_teardown(void **state)
{
	struct wfx *f = *state;
	int r = wfx_finish(f);

	free(f);
	/* After watcher_destroy() and the close callbacks: nothing may remain. */
	if (r != 0)
		fail_msg("uv_loop_close: %s", uv_strerror(r));
	return 0;
}

const struct root_stats *wfx_test_stats(struct wfx *f, const char *path)
{
	const struct root_stats *s = wfx_stats(f, path);

	assert_non_null(s);
	return s;
}

void wfx_test_assert_watching_exactly(struct wfx *f, const char *dir)
{
	const struct root_stats *s = wfx_test_stats(f, dir);

	if (!wfx_watching_exactly(f, dir))
		fail_msg("%s: %" PRIu64 " directories watched, %" PRIu64
			 " watches, %zu directories on disk", dir,
			 s->dirs_watched, wfx_watches(f), lt_count_dirs(dir));
}
