/*
 * The watcher out of inotify watches (ENOSPC): degraded, slow rescans of the
 * unwatched directories, recovery when the limit is raised. The limit is
 * lowered where it harms nobody: each scenario runs in a forked child that
 * enters a private user namespace and writes its own
 * /proc/sys/user/max_inotify_watches (FACTS.md). Only when that is refused
 * does the test fall back to the machine-wide fs.inotify.max_user_watches,
 * saved in the parent and restored in teardown whatever happened; when that
 * is not writable either, it skips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "watch-internal.h"
#include "watchfx.h"

#define NS_LIMIT "/proc/sys/user/max_inotify_watches"
#define GLOBAL_LIMIT "/proc/sys/fs/inotify/max_user_watches"
#define RESCAN_WAIT_MS 12000   /* two 5 s rescan periods and some */
#define CHILD_MS 90000
#define SKIP_CODE 77

struct efx {
	char *base;
	bool global;          /* the machine-wide knob is in use */
	char saved[32];       /* its value before, restored in teardown */
	unsigned limit;       /* watches the scenario may use */
	int (*scenario)(struct wfx *f, struct efx *e);
};

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		r = -errno;
	close(fd);
	return r;
}

/* --- the two ways to lower the limit -------------------------------------- */

/* Root in a new user namespace, mapped onto our own uid and gid. */
static int enter_userns(void)
{
	char uid_map[32], gid_map[32];

	/* Taken before unshare(): inside, unmapped ids read as 65534. */
	snprintf(uid_map, sizeof(uid_map), "0 %u 1\n", (unsigned)geteuid());
	snprintf(gid_map, sizeof(gid_map), "0 %u 1\n", (unsigned)getegid());
	if (unshare(CLONE_NEWUSER) < 0 ||
	    write_file("/proc/self/uid_map", uid_map) < 0 ||
	    write_file("/proc/self/setgroups", "deny") < 0 ||
	    write_file("/proc/self/gid_map", gid_map) < 0)
		return -1;
	return 0;
}

/* inotify watches held by processes of our uid, machine-wide. */
static unsigned long count_user_watches(void)
{
	DIR *proc = opendir("/proc");
	unsigned long n = 0;
	struct dirent *de;

	while (proc && (de = readdir(proc))) {
		char path[600], line[256];
		struct dirent *fe;
		DIR *fdinfo;

		snprintf(path, sizeof(path), "/proc/%s/fdinfo", de->d_name);
		if (de->d_name[0] < '0' || de->d_name[0] > '9' ||
		    !(fdinfo = opendir(path)))
			continue;
		while ((fe = readdir(fdinfo))) {
			FILE *fp;

			snprintf(path, sizeof(path), "/proc/%s/fdinfo/%s",
				 de->d_name, fe->d_name);
			if (!(fp = fopen(path, "re")))
				continue;
			while (fgets(line, sizeof(line), fp))
				n += !strncmp(line, "inotify wd:", 11);
			fclose(fp);
		}
		closedir(fdinfo);
	}
	if (proc)
		closedir(proc);
	return n;
}

/* Allow the scenario `limit` watches from now on. */
static int set_limit(const struct efx *e, unsigned long limit)
{
	char v[32];

	if (e->global)
		limit += count_user_watches();
	snprintf(v, sizeof(v), "%lu\n", limit);
	return write_file(e->global ? GLOBAL_LIMIT : NS_LIMIT, v);
}

static int run_scenario(struct efx *e)
{
	struct wfx f;
	int r, fin;

	if (set_limit(e, e->limit) < 0)
		return SKIP_CODE;
	if (wfx_init(&f, e->base) < 0)
		return 2;
	r = e->scenario(&f, e);
	fin = wfx_finish(&f);
	if (fin != 0)
		fprintf(stderr, "uv_loop_close: %s\n", uv_strerror(fin));
	return r ? r : fin ? 3 : 0;
}

static int child_userns(void *ud)
{
	if (enter_userns() < 0)
		return SKIP_CODE;
	return run_scenario(ud);
}

static int child_global(void *ud)
{
	return run_scenario(ud);
}

static int setup(void **state)
{
	struct efx *e = calloc(1, sizeof(*e));

	if (!e || !(e->base = lt_mkdtemp()))
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct efx *e = *state;
	int r = 0;

	if (e->global && (r = write_file(GLOBAL_LIMIT, e->saved)) < 0)
		print_error("could not restore %s to %s", GLOBAL_LIMIT, e->saved);
	lt_rm_rf(e->base);
	free(e->base);
	free(e);
	return r < 0 ? -1 : 0;
}

static bool save_global(struct efx *e)
{
	FILE *fp = fopen(GLOBAL_LIMIT, "re");
	bool ok = fp && fgets(e->saved, sizeof(e->saved), fp);

	if (fp)
		fclose(fp);
	/* Writable? Write the same value back. */
	return ok && write_file(GLOBAL_LIMIT, e->saved) == 0;
}

static void run(struct efx *e)
{
	int r = lt_run_child(child_userns, e, lt_ms(CHILD_MS));

	if (r == SKIP_CODE) {
		print_message("no private user namespace: using %s\n", GLOBAL_LIMIT);
		if (!save_global(e))
			skip();
		e->global = true;
		r = lt_run_child(child_global, e, lt_ms(CHILD_MS));
	}
	if (r == SKIP_CODE)
		skip();
	assert_int_equal(r, 0);
}

/* --- scenarios (in the child: LT_CHECK, not cmocka) ------------------------ */

/* A cache in a directory the kernel would not watch: path of its dir. */
static char *unwatched_dir(struct root *r)
{
	const struct tree *t = &r->w->tree;

	for (size_t i = tree_unwatched_count(t); i-- > 0;) {
		struct dir *d = tree_unwatched_at(t, i);

		if (tree_top_of(t, d) == &r->tt)
			return tree_path(t, d, r->conf.path, NULL);
	}
	return NULL;
}

/* 50 directories, room for 5 watches; then room for all. */
static int degraded_rescanned_recovered(struct wfx *f, struct efx *e)
{
	char cache[PATH_MAX + 16], *dir;
	struct root *r;

	for (int i = 0; i < 10; i++)
		for (int k = 0; k < 4; k++)
			LT_CHECK(lt_mkdirs("%s/d%d/s%d", f->root, i, k) == 0);
	LT_CHECK(wfx_start(f) == 0);
	r = wfx_root(f, f->root);
	LT_CHECK(root_state(r) == ROOT_DEGRADED);
	LT_CHECK(root_state_reason(r) != NULL);
	LT_CHECK(root_stats(r)->dirs_unwatched > 0);
	LT_CHECK(root_stats(r)->dirs_watched <= e->limit);
	LT_CHECK(root_stats(r)->dirs_watched + root_stats(r)->dirs_unwatched == 51);
	LT_CHECK(wfx_busy_handles(f) == 1);   /* the rescan timer, nothing else */
	LT_CHECK((dir = unwatched_dir(r)) != NULL);
	snprintf(cache, sizeof(cache), "%s/__pycache__", dir);
	LT_CHECK(lt_cache("m", "%s", dir) == 0);
	free(dir);
	LT_CHECK(lt_run_until(&f->loop, lt_pred_gone, cache,
			      lt_ms(RESCAN_WAIT_MS)));
	/* Room again: every directory gets its watch back, the timer stops. */
	LT_CHECK(set_limit(e, 100000) == 0);
	LT_CHECK(wfx_wait_state(f, f->root, ROOT_ACTIVE, RESCAN_WAIT_MS));
	LT_CHECK(root_stats(r)->dirs_unwatched == 0);
	LT_CHECK(root_stats(r)->dirs_watched == 51);
	LT_CHECK(wfx_busy_handles(f) == 0);
	return 0;
}

/*
 * 100 sibling directories and room for 2 watches: 99 unwatched tops, more
 * than the rescan's per-tick batch. Every one of them must be covered.
 */
static int many_unwatched_siblings(struct wfx *f, struct efx *e)
{
	struct root *r;
	size_t left;

	for (int i = 0; i < 100; i++)
		LT_CHECK(lt_mkdirs("%s/s%03d", f->root, i) == 0);
	LT_CHECK(wfx_start(f) == 0);
	r = wfx_root(f, f->root);
	LT_CHECK(root_state(r) == ROOT_DEGRADED);
	LT_CHECK(root_stats(r)->dirs_unwatched >= 90);
	for (int i = 0; i < 100; i++)
		LT_CHECK(lt_cache("m", "%s/s%03d", f->root, i) == 0);
	if (!wfx_wait_no_caches(f, f->root, RESCAN_WAIT_MS)) {
		left = lt_count_tree(f->root, "__pycache__", false);
		fprintf(stderr, "%zu of 100 caches left after %u ms (%" PRIu64
			" directories unwatched)\n", left, lt_ms(RESCAN_WAIT_MS),
			root_stats(r)->dirs_unwatched);
		return 1;
	}
	return 0;
}

static void test_enospc_degraded_rescanned_recovered(void **state)
{
	struct efx *e = *state;

	e->limit = 5;
	e->scenario = degraded_rescanned_recovered;
	run(e);
}

/*
 * DAEMON BUG found by this test, fixed in a418801 (keep as a regression
 * test; it also caught an interim fix that stepped its index by k + 1).
 * watch-roots.c rescan_unwatched(): each 5 s tick pushed at most
 * RESCAN_BATCH (64) unwatched directories, always starting again from index
 * 0 of root::unwatched, so directories past the 64th top-level one were
 * never rescanned and their caches never removed.
 */
static void test_enospc_more_unwatched_than_one_batch(void **state)
{
	struct efx *e = *state;

	e->limit = 2;
	e->scenario = many_unwatched_siblings;
	run(e);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_enospc_degraded_rescanned_recovered),
		T(test_enospc_more_unwatched_than_one_batch),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
