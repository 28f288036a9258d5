/*
 * The cmocka side of watchfx.h: a fixture whose *state is a calloc'ed
 * struct wfx, a teardown that fails the test unless uv_loop_close()
 * returned 0, and assertions that say what they found. Not for a forked
 * child (no cmocka there): it uses watchfx.h alone.
 */
#ifndef PYCACHED_TESTS_LOOP_WFX_TEST_H
#define PYCACHED_TESTS_LOOP_WFX_TEST_H

struct root_stats;
struct wfx;

/* *state becomes a fresh struct wfx (wfx_init), owned by the fixture. */
int wfx_test_setup(void **state);
/*
 * wfx_finish() and free(*state). *state may also be a bigger fixture that
 * begins with its struct wfx, allocated as one block.
 */
int wfx_test_teardown(void **state);
/* wfx_stats(), failing the test when path is no root. */
const struct root_stats *wfx_test_stats(struct wfx *f, const char *path);
/* Fails the test, with the counts, unless wfx_watching_exactly(f, dir). */
void wfx_test_assert_watching_exactly(struct wfx *f, const char *dir);

#endif
