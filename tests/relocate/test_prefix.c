/*
 * Loop-level tests of daemon/prefix.c on real mkdtemp trees: claiming a
 * cache directory, pruning bytecode whose source is gone (and nothing else),
 * and evicting the least recently used bytecode down to 90% of a cap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "prefix.h"
#include "rt.h"

#define SIGNATURE "Signature: 8a477f597d28d172789f06886806bc55"

struct pfx {
	char *base;             /* mkdtemp */
	char src[PATH_MAX];     /* base/src: a source tree */
	char prefix[PATH_MAX];  /* base/prefix */
	char mirror[PATH_MAX];  /* prefix + src */
	int prefix_fd;          /* O_PATH, as the daemon holds it */
};

static int setup(void **state)
{
	struct pfx *f = calloc(1, sizeof(*f));

	if (!f || !(f->base = rt_mkdtemp()))
		return -1;
	rt_fmt(f->src, sizeof(f->src), "%s/src", f->base);
	rt_fmt(f->prefix, sizeof(f->prefix), "%s/prefix", f->base);
	rt_fmt(f->mirror, sizeof(f->mirror), "%s%s", f->prefix, f->src);
	if (rt_mkdirs("%s", f->src) < 0 || rt_mkdirs("%s", f->prefix) < 0)
		return -1;
	f->prefix_fd = open(f->prefix, O_PATH | O_DIRECTORY | O_CLOEXEC);
	*state = f;
	return f->prefix_fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	struct pfx *f = *state;
	int r = rt_rm_rf(f->base);

	close(f->prefix_fd);
	free(f->base);
	free(f);
	return r;
}

/* --- claim -------------------------------------------------------------- */

static void test_claim_empty(void **state)
{
	struct pfx *f = *state;
	char *tag;

	assert_int_equal(prefix_claim(f->prefix_fd), 0);
	tag = rt_read(NULL, "%s/CACHEDIR.TAG", f->prefix);
	assert_non_null(tag);
	assert_memory_equal(tag, SIGNATURE, strlen(SIGNATURE));
	free(tag);
	/* Claimed once, claimed for good: the tag makes it ours. */
	assert_int_equal(rt_write("x", 1, "%s/a/b.cpython-311.pyc", f->prefix), 0);
	assert_int_equal(prefix_claim(f->prefix_fd), 0);
}

static void test_claim_refuses_non_empty(void **state)
{
	struct pfx *f = *state;

	assert_int_equal(rt_write("keep", 4, "%s/mine.pyc", f->prefix), 0);
	assert_int_equal(prefix_claim(f->prefix_fd), -EPERM);
	assert_false(rt_exists("%s/CACHEDIR.TAG", f->prefix));
	assert_true(rt_exists("%s/mine.pyc", f->prefix));
}

/* An empty directory is content too: someone else's tree may be starting. */
static void test_claim_refuses_subdir(void **state)
{
	struct pfx *f = *state;

	assert_int_equal(rt_mkdirs("%s/d", f->prefix), 0);
	assert_int_equal(prefix_claim(f->prefix_fd), -EPERM);
	assert_false(rt_exists("%s/CACHEDIR.TAG", f->prefix));
}

/* A tag that is not a regular file claims nothing. */
static void test_claim_tag_not_regular(void **state)
{
	struct pfx *f = *state;
	char tag[PATH_MAX], real[PATH_MAX];

	rt_fmt(tag, sizeof(tag), "%s/CACHEDIR.TAG", f->prefix);
	rt_fmt(real, sizeof(real), "%s/tag", f->base);
	assert_int_equal(rt_write(SIGNATURE "\n", strlen(SIGNATURE) + 1, "%s",
				  real), 0);
	assert_int_equal(symlink(real, tag), 0);
	assert_int_equal(prefix_claim(f->prefix_fd), -EPERM);
	assert_int_equal(unlink(tag), 0);
	assert_int_equal(mkdir(tag, 0755), 0);
	assert_int_equal(prefix_claim(f->prefix_fd), -EPERM);
}

/* --- prune -------------------------------------------------------------- */

/* A pyc of size bytes at <prefix><src>/dir/name; its size. */
static uint64_t mirrored(struct pfx *f, const char *dir, const char *name,
			 size_t size)
{
	assert_int_equal(rt_pyc(1000, size, "%s/%s/%s", f->mirror, dir, name),
			 0);
	return size;
}

static void source(struct pfx *f, const char *rel)
{
	assert_int_equal(rt_write("pass\n", 5, "%s/%s", f->src, rel), 0);
}

static void test_prune_orphans_only(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;
	uint64_t gone = 0, left = 0;

	assert_int_equal(prefix_claim(f->prefix_fd), 0);
	source(f, "pkg/m.py");
	source(f, "pkg/k.py");
	left += mirrored(f, "pkg", "m.cpython-311.pyc", 100);
	left += mirrored(f, "pkg", "m.cpython-311.opt-1.pyc", 110);
	left += mirrored(f, "pkg", "k.pypy310.pyc", 120);
	gone += mirrored(f, "pkg", "gone.cpython-311.pyc", 130);
	gone += mirrored(f, "pkg", "gone.cpython-311.opt-2.pyc", 140);
	gone += mirrored(f, "old/sub", "a.cpython-311.pyc", 150);
	/* Not bytecode, or not finished bytecode: never pruned. */
	assert_int_equal(rt_write("n", 1, "%s/pkg/notes.txt", f->mirror), 0);
	assert_int_equal(rt_write("t", 1, "%s/pkg/x.cpython-311.pyc.12345",
				  f->mirror), 0);
	assert_int_equal(rt_mkdirs("%s/empty/deeper", f->mirror), 0);

	assert_int_equal(prefix_prune(f->prefix_fd, &res), 0);
	assert_int_equal(res.files_removed, 3);
	assert_int_equal(res.bytes_removed, gone);
	assert_int_equal(res.files_left, 3);
	assert_int_equal(res.bytes_left, left);
	/* old/sub, old, empty/deeper, empty. */
	assert_int_equal(res.dirs_removed, 4);
	assert_false(rt_exists("%s/pkg/gone.cpython-311.pyc", f->mirror));
	assert_false(rt_exists("%s/old", f->mirror));
	assert_false(rt_exists("%s/empty", f->mirror));
	assert_int_equal(rt_count_entries("%s/pkg", f->mirror), 5);
	assert_true(rt_exists("%s/CACHEDIR.TAG", f->prefix));
}

__attribute__((format(printf, 1, 2)))
static char *fmt_path(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&p, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	return p;
}

/* A pid no process has: a child's, once it is reaped. */
static long dead_pid(void)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	return (long)pid;
}

/* A copy a dead daemon left half-done goes; look-alikes stay. */
static void test_prune_stale_copies(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;
	long dead = dead_pid();

	assert_int_equal(prefix_claim(f->prefix_fd), 0);
	source(f, "pkg/m.py");
	assert_int_equal(rt_write("t", 1, "%s/pkg/.m.cpython-311.pyc.pycached-%ld-34",
				  f->mirror, dead), 0);
	assert_int_equal(rt_write("t", 1, "%s/pkg/.notes.txt.pycached-%ld-34",
				  f->mirror, dead), 0);
	assert_int_equal(rt_write("t", 1, "%s/pkg/.m.cpython-311.pyc.pycached-x",
				  f->mirror), 0);
	assert_int_equal(rt_write("t", 1, "%s/pkg/m.cpython-311.pyc.pycached-1",
				  f->mirror), 0);
	assert_int_equal(prefix_prune(f->prefix_fd, &res), 0);
	assert_int_equal(res.files_removed, 1);
	assert_false(rt_exists("%s/pkg/.m.cpython-311.pyc.pycached-%ld-34",
			       f->mirror, dead));
	assert_true(rt_exists("%s/pkg/.notes.txt.pycached-%ld-34", f->mirror,
			      dead));
	assert_true(rt_exists("%s/pkg/.m.cpython-311.pyc.pycached-x", f->mirror));
	assert_true(rt_exists("%s/pkg/m.cpython-311.pyc.pycached-1", f->mirror));
}

/*
 * The start-up clean: the copies of a dead pid and of this process go
 * (its copies start and end in one call), those of a live process stay (a
 * second daemon on the same prefix may be writing them), every look-alike
 * stays, and nothing else is pruned: no orphan, no empty directory, nothing
 * behind a symlink.
 */
static void test_clean_only_dead_copies(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;
	char link[PATH_MAX], outside[PATH_MAX], name[NAME_MAX + 1];
	long dead = dead_pid(), me = (long)getpid();
	char *gone[5], *kept[8];

	assert_int_equal(prefix_clean(f->prefix_fd, &res), -EPERM);
	assert_int_equal(prefix_claim(f->prefix_fd), 0);
	source(f, "pkg/m.py");
	memset(name, 'n', 200);
	strcpy(name + 200, ".pyc");
	gone[0] = fmt_path("%s/pkg/.m.cpython-311.pyc.pycached-%ld-2", f->mirror, dead);
	gone[1] = fmt_path("%s/deep/er/.x.pyc.pycached-%ld-1", f->mirror, dead);
	gone[2] = fmt_path("%s/pkg/.m.cpython-311.pyc.pycached-%ld-7", f->mirror, me);
	gone[3] = fmt_path("%s/pkg/.%s.pycached-%ld-3", f->mirror, name, dead);
	gone[4] = fmt_path("%s/pkg/.a.pycached-9.pyc.pycached-%ld-3", f->mirror, dead);
	kept[0] = fmt_path("%s/pkg/.m.cpython-311.pyc.pycached-1-2", f->mirror);
	kept[1] = fmt_path("%s/pkg/.notes.txt.pycached-%ld-2", f->mirror, dead);
	kept[2] = fmt_path("%s/pkg/.m.cpython-311.pyc.pycached-%ld", f->mirror, dead);
	kept[3] = fmt_path("%s/pkg/.m.cpython-311.pyc.pycached--%ld-2", f->mirror, dead);
	kept[4] = fmt_path("%s/pkg/.m.cpython-311.pyc.pycached-%ld-2x", f->mirror, dead);
	kept[5] = fmt_path("%s/pkg/m.cpython-311.pyc.pycached-%ld-2", f->mirror, dead);
	kept[6] = fmt_path("%s/pkg/.pycached-%ld-2", f->mirror, dead);
	kept[7] = fmt_path("%s/pkg/gone.cpython-311.pyc", f->mirror);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(rt_write("t", 1, "%s", gone[i]), 0);
	for (size_t i = 0; i < 8; i++)
		assert_int_equal(rt_write("t", 1, "%s", kept[i]), 0);
	assert_int_equal(rt_mkdirs("%s/pkg/.d.pyc.pycached-%ld-2", f->mirror, dead), 0);
	assert_int_equal(rt_mkdirs("%s/empty", f->mirror), 0);
	rt_fmt(outside, sizeof(outside), "%s/outside", f->base);
	assert_int_equal(rt_write("t", 1, "%s/.o.pyc.pycached-%ld-2", outside, dead), 0);
	rt_fmt(link, sizeof(link), "%s/ln", f->mirror);
	assert_int_equal(symlink(outside, link), 0);
	rt_fmt(link, sizeof(link), "%s/pkg/.l.pyc.pycached-%ld-2", f->mirror, dead);
	assert_int_equal(symlink("m.py", link), 0);

	assert_int_equal(prefix_clean(f->prefix_fd, &res), 0);
	assert_int_equal(res.files_removed, 5);
	assert_int_equal(res.dirs_removed, 0);
	for (size_t i = 0; i < 5; i++) {
		assert_false(rt_exists("%s", gone[i]));
		free(gone[i]);
	}
	for (size_t i = 0; i < 8; i++) {
		assert_true(rt_exists("%s", kept[i]));
		free(kept[i]);
	}
	assert_true(rt_is_dir("%s/pkg/.d.pyc.pycached-%ld-2", f->mirror, dead));
	assert_true(rt_is_dir("%s/empty", f->mirror));
	assert_true(rt_is_dir("%s/deep/er", f->mirror));
	assert_true(rt_exists("%s/.o.pyc.pycached-%ld-2", outside, dead));
	assert_true(rt_exists("%s", link));
}

/* The walk does not follow a symlink in the prefix, even to orphans. */
static void test_prune_no_symlink(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;
	char link[PATH_MAX], outside[PATH_MAX];

	assert_int_equal(prefix_claim(f->prefix_fd), 0);
	rt_fmt(outside, sizeof(outside), "%s/outside", f->base);
	assert_int_equal(rt_pyc(1, 64, "%s/o.cpython-311.pyc", outside), 0);
	assert_int_equal(rt_mkdirs("%s", f->mirror), 0);
	rt_fmt(link, sizeof(link), "%s/pkg", f->mirror);
	assert_int_equal(symlink(outside, link), 0);
	assert_int_equal(prefix_prune(f->prefix_fd, &res), 0);
	assert_int_equal(res.files_removed, 0);
	assert_true(rt_exists("%s/outside/o.cpython-311.pyc", f->base));
	assert_true(rt_exists("%s", link));
}

/* Without CACHEDIR.TAG nothing is touched: sourceless pycs are programs. */
static void test_prune_unclaimed(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;

	mirrored(f, "pkg", "gone.cpython-311.pyc", 64);
	assert_int_equal(rt_mkdirs("%s/empty", f->mirror), 0);
	assert_int_equal(prefix_prune(f->prefix_fd, &res), -EPERM);
	assert_int_equal(res.files_removed, 0);
	assert_true(rt_exists("%s/pkg/gone.cpython-311.pyc", f->mirror));
	assert_true(rt_is_dir("%s/empty", f->mirror));
	assert_false(rt_exists("%s/CACHEDIR.TAG", f->prefix));
}

static void test_has_source(void **state)
{
	struct pfx *f = *state;
	char link[PATH_MAX];

	source(f, "a.b.py");
	assert_int_equal(prefix_has_source(f->src, "a.b.cpython-311.pyc"), 1);
	assert_int_equal(prefix_has_source(f->src, "a.cpython-311.pyc"), 0);
	/* A dangling symlink is still a source someone meant: keep. */
	rt_fmt(link, sizeof(link), "%s/d.py", f->src);
	assert_int_equal(symlink("nowhere", link), 0);
	assert_int_equal(prefix_has_source(f->src, "d.cpython-311.opt-1.pyc"), 1);
}

/* --- evict -------------------------------------------------------------- */

#define N_EVICT 10
#define EVICT_SIZE 1000

/* Ten files whose atime order differs from their name order. */
static void evict_tree(struct pfx *f)
{
	assert_int_equal(prefix_claim(f->prefix_fd), 0);
	for (int i = 0; i < N_EVICT; i++) {
		assert_int_equal(rt_pyc(1000, EVICT_SIZE, "%s/f%d.cpython-311.pyc",
					f->mirror, i), 0);
		assert_int_equal(rt_set_atime(100000 + (i * 7 % N_EVICT) * 100,
					      "%s/f%d.cpython-311.pyc",
					      f->mirror, i), 0);
	}
}

/* The file's rank by atime, oldest 0. */
static int age_rank(int i)
{
	return i * 7 % N_EVICT;
}

static void test_evict_oldest_first(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;

	evict_tree(f);
	/* 10000 bytes over a 5000 cap: down to 4500, so 6 go. */
	assert_int_equal(prefix_evict(f->prefix_fd, 5000, &res), 0);
	assert_int_equal(res.files_removed, 6);
	assert_int_equal(res.bytes_removed, 6 * EVICT_SIZE);
	assert_int_equal(res.files_left, 4);
	assert_int_equal(res.bytes_left, 4 * EVICT_SIZE);
	for (int i = 0; i < N_EVICT; i++)
		assert_int_equal(rt_exists("%s/f%d.cpython-311.pyc", f->mirror, i),
				 age_rank(i) >= 6);
}

/* 90% of the cap exactly: 11 x 1000 over 10000 leaves 9000. */
static void test_evict_to_ninety_percent(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;

	evict_tree(f);
	assert_int_equal(rt_pyc(1000, EVICT_SIZE, "%s/new.cpython-311.pyc",
				f->mirror), 0);
	assert_int_equal(prefix_evict(f->prefix_fd, 10000, &res), 0);
	assert_int_equal(res.files_removed, 2);
	assert_int_equal(res.bytes_left, 9000);
	assert_true(rt_exists("%s/new.cpython-311.pyc", f->mirror));
}

static void test_evict_under_cap(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;

	evict_tree(f);
	assert_int_equal(prefix_evict(f->prefix_fd, 10000, &res), 0);
	assert_int_equal(res.files_removed, 0);
	assert_int_equal(res.files_left, N_EVICT);
	assert_int_equal(res.bytes_left, N_EVICT * EVICT_SIZE);
}

static void test_evict_unclaimed(void **state)
{
	struct pfx *f = *state;
	struct prefix_result res;

	mirrored(f, "pkg", "m.cpython-311.pyc", 5000);
	assert_int_equal(prefix_evict(f->prefix_fd, 100, &res), -EPERM);
	assert_true(rt_exists("%s/pkg/m.cpython-311.pyc", f->mirror));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_claim_empty),
		T(test_claim_refuses_non_empty),
		T(test_claim_refuses_subdir),
		T(test_claim_tag_not_regular),
		T(test_prune_orphans_only),
		T(test_prune_no_symlink),
		T(test_prune_stale_copies),
		T(test_clean_only_dead_copies),
		T(test_prune_unclaimed),
		T(test_has_source),
		T(test_evict_oldest_first),
		T(test_evict_to_ninety_percent),
		T(test_evict_under_cap),
		T(test_evict_unclaimed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
