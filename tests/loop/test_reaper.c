/*
 * Loop-level tests of daemon/reaper.c on real mkdtemp trees. Each test tries
 * to make the reaper remove something it must not, and checks that it did
 * not: symlinks, foreign files, other owners, other mounts, hard links, near
 * miss names, and a CPython-style writer racing it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "reaper.h"

#define PYC_SIZE 24   /* what lt_cache() writes */
#define TMP_PREFIX ".__pycache__.pycached-"

/*
 * A link-time hook (-Wl,--wrap=fstatat64, see meson.build): when vanish_name
 * is set, that entry is unlinked just before the reaper stats it, which is
 * the window in which a CPython writer renames its temporary away. The
 * linker calls it, so its one setting lives at file scope.
 */
static const char *vanish_name;

int __real_fstatat64(int fd, const char *name, struct stat64 *st, int flags);
int __wrap_fstatat64(int fd, const char *name, struct stat64 *st, int flags);

int __wrap_fstatat64(int fd, const char *name, struct stat64 *st, int flags)
{
	if (vanish_name && !strcmp(name, vanish_name)) {
		vanish_name = NULL;
		unlinkat(fd, name, 0);
	}
	return __real_fstatat64(fd, name, st, flags);
}

/*
 * A second hook (-Wl,--wrap=getdents64): when at_end is set, it runs once,
 * the first time a listing reaches its end, with the fd being listed: what
 * a writer does between the reaper's dry pass and its rename, or between
 * the listing of an empty cache and its rmdir().
 */
static void (*at_end)(int cache_fd);
static unsigned at_end_ran;

ssize_t __real_getdents64(int fd, void *buf, size_t len);
ssize_t __wrap_getdents64(int fd, void *buf, size_t len);

ssize_t __wrap_getdents64(int fd, void *buf, size_t len)
{
	ssize_t n = __real_getdents64(fd, buf, len);
	void (*fn)(int) = at_end;

	if (n == 0 && fn) {
		at_end = NULL;
		at_end_ran++;
		fn(fd);
	}
	return n;
}

struct rfx {
	char *base;      /* mkdtemp; the parent of the __pycache__ under test */
	int pfd;         /* base, O_RDONLY|O_DIRECTORY */
	struct reap_policy pol;
	struct reap_result res;
};

static int setup(void **state)
{
	struct rfx *f = calloc(1, sizeof(*f));
	uint64_t ino;

	if (!f || !(f->base = lt_mkdtemp()))
		return -1;
	f->pfd = open(f->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	f->pol.uid = geteuid();
	f->pol.prefix_fd = -1;   /* delete; relocation is not tested here */
	if (f->pfd < 0 || reaper_fd_identity(f->pfd, &f->pol.mnt_id, &ino) < 0)
		return -1;
	*state = f;
	return 0;
}

/* Whatever a test did, the reaper must never leave its temporary names. */
static int teardown(void **state)
{
	struct rfx *f = *state;
	size_t left = lt_count_tree(f->base, TMP_PREFIX, true);

	if (left)
		print_error("%zu '%s*' left under %s\n", left, TMP_PREFIX, f->base);
	close(f->pfd);
	lt_rm_rf(f->base);
	free(f->base);
	free(f);
	return left ? -1 : 0;
}

static int reap(struct rfx *f)
{
	return reaper_reap(f->pfd, "__pycache__", &f->pol, &f->res);
}

static const char *outcome_name(enum reap_outcome o)
{
	static const char *const names[] = {
		[REAP_REMOVED] = "REMOVED", [REAP_WOULD_REMOVE] = "WOULD_REMOVE",
		[REAP_SKIPPED] = "SKIPPED", [REAP_GONE] = "GONE",
		[REAP_AVOIDED] = "AVOIDED",
	};

	return o <= REAP_AVOIDED ? names[o] : "?";
}

static void expect(const struct rfx *f, enum reap_outcome want,
		   const char *reason_word)
{
	if (f->res.outcome != want)
		fail_msg("outcome %s (reason '%s'), want %s",
			 outcome_name(f->res.outcome), f->res.reason,
			 outcome_name(want));
	if (reason_word && !strstr(f->res.reason, reason_word))
		fail_msg("reason '%s' does not mention '%s'", f->res.reason,
			 reason_word);
}

static void must(int r)
{
	if (r < 0)
		fail_msg("setup step failed: %s", strerror(-r));
}

static int remove_cache(const struct rfx *f)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/__pycache__", f->base);
	return lt_rm_rf(path);
}

static bool is_type(const struct rfx *f, const char *rel, mode_t type)
{
	struct stat st;

	return fstatat(f->pfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	       (st.st_mode & S_IFMT) == type;
}

/* --- what is not a real directory -------------------------------------- */

static void test_symlink_to_dir_of_bytecode(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("a", "%s/target", f->base));
	must(lt_cache("b", "%s/target", f->base));
	assert_int_equal(symlinkat("target/__pycache__", f->pfd, "__pycache__"), 0);
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "symbolic link");
	assert_true(lt_exists("%s/target/__pycache__/a.cpython-311.pyc", f->base));
	assert_true(lt_exists("%s/target/__pycache__/b.cpython-311.pyc", f->base));
	assert_int_equal(f->res.files, 0);
	assert_true(is_type(f, "__pycache__", S_IFLNK));
}

static void test_regular_file_named_pycache(void **state)
{
	struct rfx *f = *state;

	must(lt_put("not a directory\n", "%s/__pycache__", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "not a directory");
	assert_true(lt_file_is("not a directory\n", "%s/__pycache__", f->base));
}

static void test_gone(void **state)
{
	struct rfx *f = *state;

	assert_int_equal(reap(f), 0);
	expect(f, REAP_GONE, NULL);
}

/* --- foreign content: kept, and so is the directory --------------------- */

static void test_foreign_text_file(void **state)
{
	struct rfx *f = *state;

	must(lt_put("keep me\n", "%s/__pycache__/notes.txt", f->base));
	must(lt_cache("a", "%s", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "notes.txt");
	assert_true(lt_file_is("keep me\n", "%s/__pycache__/notes.txt", f->base));
	assert_true(is_type(f, "__pycache__", S_IFDIR));
	/* The contract: bytecode goes even when the directory stays. */
	assert_int_equal(f->res.files, 1);
	assert_false(lt_exists("%s/__pycache__/a.cpython-311.pyc", f->base));
}

static void test_foreign_subdirectory_with_bytecode(void **state)
{
	struct rfx *f = *state;

	/* No recursion: a .pyc one level down is not the reaper's business. */
	must(lt_cache("inner", "%s/__pycache__/sub", f->base));
	must(lt_put("deep\n", "%s/__pycache__/sub/deeper/x.pyc", f->base));
	must(lt_cache("a", "%s", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "directory");
	assert_true(lt_exists("%s/__pycache__/sub/__pycache__/inner.cpython-311.pyc",
			      f->base));
	assert_true(lt_file_is("deep\n", "%s/__pycache__/sub/deeper/x.pyc", f->base));
	assert_true(is_type(f, "__pycache__", S_IFDIR));
}

static void test_foreign_fifo(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("a", "%s", f->base));
	/* Opening a FIFO would block: the reaper must only fstatat it. */
	assert_int_equal(mkfifoat(f->pfd, "__pycache__/m.cpython-311.pyc.1", 0644), 0);
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "FIFO");
	assert_true(is_type(f, "__pycache__/m.cpython-311.pyc.1", S_IFIFO));
}

static void test_foreign_symlink_with_bytecode_name(void **state)
{
	struct rfx *f = *state;

	must(lt_put("precious\n", "%s/outside.dat", f->base));
	must(lt_mkdirs("%s/__pycache__", f->base));
	assert_int_equal(symlinkat("../outside.dat", f->pfd,
				   "__pycache__/x.cpython-311.pyc"), 0);
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "symbolic link");
	assert_true(is_type(f, "__pycache__/x.cpython-311.pyc", S_IFLNK));
	assert_true(lt_file_is("precious\n", "%s/outside.dat", f->base));
}

static void test_foreign_numba_files(void **state)
{
	struct rfx *f = *state;

	must(lt_put("index\n", "%s/__pycache__/foo.f-1.py311.nbi", f->base));
	must(lt_put("code\n", "%s/__pycache__/foo.f-1.py311.1.nbc", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "not bytecode");
	assert_true(lt_file_is("index\n", "%s/__pycache__/foo.f-1.py311.nbi", f->base));
	assert_true(lt_file_is("code\n", "%s/__pycache__/foo.f-1.py311.1.nbc", f->base));
}

/* Near misses of bytecode names: each alone with a real .pyc. */
static void test_near_miss_names_kept(void **state)
{
	static const char *const names[] = {
		"m.pyc.12a", "m.pyc.", ".pyc", "m.pyc~", "m.PYC", "m.pyo.123",
		"m.pyc.swp", "m.py", ".pyc.123", "m.cpython-311.pyc.-1",
	};
	struct rfx *f = *state;

	for (size_t i = 0; i < LT_NELEMS(names); i++) {
		must(lt_put("not bytecode\n", "%s/__pycache__/%s", f->base, names[i]));
		must(lt_cache("real", "%s", f->base));
		assert_int_equal(reap(f), 0);
		if (f->res.outcome != REAP_SKIPPED || !strstr(f->res.reason, names[i]))
			fail_msg("'%s': outcome %s, reason '%s'", names[i],
				 outcome_name(f->res.outcome), f->res.reason);
		if (!lt_file_is("not bytecode\n", "%s/__pycache__/%s", f->base, names[i]))
			fail_msg("'%s' was not kept", names[i]);
		must(remove_cache(f));
	}
}

/* Every bytecode spelling FACTS.md lists, temporaries included, goes. */
static void test_bytecode_names_removed(void **state)
{
	static const char *const names[] = {
		"m.cpython-311.pyc", "m.cpython-311.opt-1.pyc",
		"m.cpython-311.opt-2.pyc", "m.pypy310.pyc",
		"m.cpython-311-pytest-8.0.0.pyc", "m.cpython-311.pyc.123",
		"n.cpython-311.pyc.140234567", "legacy.pyo", "m.pyc.4567",
	};
	struct rfx *f = *state;

	for (size_t i = 0; i < LT_NELEMS(names); i++)
		must(lt_put("x", "%s/__pycache__/%s", f->base, names[i]));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_REMOVED, NULL);
	assert_int_equal(f->res.files, LT_NELEMS(names));
	assert_int_equal(f->res.bytes, LT_NELEMS(names));
	assert_false(lt_exists("%s/__pycache__", f->base));
}

/* --- ownership and mounts ------------------------------------------------ */

static void test_hard_link_to_outside_file(void **state)
{
	struct rfx *f = *state;
	struct stat st;

	must(lt_put("a precious file that happens to be linked\n",
		    "%s/keep.bin", f->base));
	must(lt_mkdirs("%s/__pycache__", f->base));
	assert_int_equal(linkat(f->pfd, "keep.bin", f->pfd,
				"__pycache__/m.cpython-311.pyc", 0), 0);
	assert_int_equal(reap(f), 0);
	expect(f, REAP_REMOVED, NULL);
	assert_true(lt_file_is("a precious file that happens to be linked\n",
			       "%s/keep.bin", f->base));
	assert_int_equal(fstatat(f->pfd, "keep.bin", &st, 0), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(f->res.files, 1);
	/* Its blocks are still in use: nothing was reclaimed. */
	assert_int_equal(f->res.bytes, 0);
}

static void test_owned_by_another_uid(void **state)
{
	struct rfx *f = *state;

	if (geteuid() != 0)
		skip();
	must(lt_cache("m", "%s", f->base));
	assert_int_equal(fchownat(f->pfd, "__pycache__", 65534, 65534, 0), 0);
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "uid 65534");
	assert_true(lt_exists("%s/__pycache__/m.cpython-311.pyc", f->base));
	assert_int_equal(f->res.files, 0);
}

static void test_policy_on_another_mount(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("m", "%s", f->base));
	f->pol.mnt_id++;
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "another mount");
	assert_true(lt_exists("%s/__pycache__/m.cpython-311.pyc", f->base));
}

/* In a private mount namespace: a tmpfs mounted on __pycache__ itself. */
static int mounted_cache_child(void *ud)
{
	struct rfx *f = ud;
	char path[4096];
	uint64_t ino;
	int r;

	snprintf(path, sizeof(path), "%s/__pycache__", f->base);
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", path, "tmpfs", 0, "mode=0755") < 0)
		return 77;
	if (lt_cache("m", "%s", f->base) < 0)
		return 2;
	/* Mount ids are per namespace, and a dirfd opened before unshare()
	 * still walks the old namespace's mounts: start again from here. */
	close(f->pfd);
	f->pfd = open(f->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->pfd < 0 || reaper_fd_identity(f->pfd, &f->pol.mnt_id, &ino) < 0)
		return 2;
	r = reap(f);
	if (r < 0 || f->res.outcome != REAP_SKIPPED ||
	    !strstr(f->res.reason, "another mount") ||
	    !lt_exists("%s/m.cpython-311.pyc", path)) {
		fprintf(stderr, "mounted cache: r=%d outcome %s reason '%s'\n", r,
			outcome_name(f->res.outcome), f->res.reason);
		return 1;
	}
	return 0;
}

static void test_mount_point_cache(void **state)
{
	struct rfx *f = *state;
	int r;

	must(lt_mkdirs("%s/__pycache__", f->base));
	r = lt_run_child(mounted_cache_child, f, lt_ms(20000));
	if (r == 77)
		skip();
	assert_int_equal(r, 0);
}

/*
 * As an ordinary user, a cache the user cannot empty (mode 0555) in a
 * directory the user can write. Renaming it away and back would be a new
 * inotify event for the same cache, every time: it must be refused before
 * anything moves. An empty one too, which the reaper would otherwise
 * rmdir().
 */
static int read_only_child(void *ud)
{
	struct rfx *f = ud;
	struct stat before, after;
	bool had_pyc = lt_exists("%s/__pycache__/m.cpython-311.pyc", f->base);

	if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
		return 77;
	f->pol.uid = 65534;
	if (fstatat(f->pfd, "__pycache__", &before, 0) < 0)
		return 2;
	if (reap(f) != 0 || f->res.outcome != REAP_SKIPPED ||
	    !strstr(f->res.reason, "read-only")) {
		fprintf(stderr, "read-only cache%s: outcome %s reason '%s'\n",
			had_pyc ? "" : " (empty)", outcome_name(f->res.outcome),
			f->res.reason);
		return 1;
	}
	if (fstatat(f->pfd, "__pycache__", &after, 0) < 0 ||
	    after.st_ino != before.st_ino || after.st_ctime != before.st_ctime ||
	    (had_pyc && !lt_exists("%s/__pycache__/m.cpython-311.pyc", f->base)))
		return 1;
	return 0;
}

/* The cache under f->base made read-only and uid 65534's, reaped as them. */
static void reap_read_only(struct rfx *f)
{
	int r;

	if (geteuid() != 0)
		skip();
	assert_int_equal(fchownat(f->pfd, "", 65534, 65534, AT_EMPTY_PATH), 0);
	assert_int_equal(fchownat(f->pfd, "__pycache__", 65534, 65534, 0), 0);
	assert_int_equal(fchmodat(f->pfd, "__pycache__", 0555, 0), 0);
	r = lt_run_child(read_only_child, f, lt_ms(20000));
	assert_int_equal(fchmodat(f->pfd, "__pycache__", 0755, 0), 0);
	if (r == 77)
		skip();
	assert_int_equal(r, 0);
}

static void test_read_only_cache_not_renamed(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("m", "%s", f->base));
	reap_read_only(f);
}

static void test_empty_read_only_cache_kept(void **state)
{
	struct rfx *f = *state;

	assert_int_equal(mkdirat(f->pfd, "__pycache__", 0755), 0);
	reap_read_only(f);
}

/*
 * Relocating, on a read-only mount, a cache with foreign content: the
 * owner's write bit is set, yet nothing may be changed. Skipped before
 * any bytecode is copied into a prefix on another filesystem.
 */
static int read_only_mount_child(void *ud)
{
	struct rfx *f = ud;
	char prefix[] = "/tmp/pycached-ro-prefix.XXXXXX";
	uint64_t ino;
	int r, copied;

	if (!mkdtemp(prefix))
		return 2;
	if (unshare(CLONE_NEWNS) < 0 ||
	    mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", prefix, "tmpfs", 0, "mode=0755") < 0 ||
	    /* The type is ignored here, but valgrind wants a string. */
	    mount(f->base, f->base, "none", MS_BIND, NULL) < 0 ||
	    mount("none", f->base, "none", MS_REMOUNT | MS_BIND | MS_RDONLY,
		  NULL) < 0) {
		rmdir(prefix);
		return 77;
	}
	close(f->pfd);
	f->pfd = open(f->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (f->pfd < 0 || reaper_fd_identity(f->pfd, &f->pol.mnt_id, &ino) < 0)
		return 2;
	f->pol.prefix_fd = open(prefix, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	f->pol.src_dir = f->base;
	if (f->pol.prefix_fd < 0)
		return 2;
	r = reap(f);
	copied = lt_count_pyc(prefix);
	if (r != 0 || f->res.outcome != REAP_SKIPPED ||
	    !strstr(f->res.reason, "read-only") || f->res.relocate_error ||
	    copied || !lt_exists("%s/__pycache__/m.cpython-311.pyc", f->base) ||
	    !lt_file_is("keep me\n", "%s/__pycache__/notes.txt", f->base)) {
		fprintf(stderr, "read-only mount: r=%d outcome %s reason '%s' "
			"relocate_error %d, %d copied\n", r,
			outcome_name(f->res.outcome), f->res.reason,
			f->res.relocate_error, copied);
		return 1;
	}
	return 0;
}

static void test_read_only_mount_relocating_foreign_cache(void **state)
{
	struct rfx *f = *state;
	int r;

	must(lt_put("keep me\n", "%s/__pycache__/notes.txt", f->base));
	must(lt_cache("m", "%s", f->base));
	r = lt_run_child(read_only_mount_child, f, lt_ms(20000));
	if (r == 77)
		skip();
	assert_int_equal(r, 0);
}

/* A cache that failed before is left alone until a sweep empties the list. */
static void test_avoided_cache_untouched(void **state)
{
	struct rfx *f = *state;
	struct statx stx;
	struct reap_identity avoid[3] = { { 1, 0 } };

	must(lt_cache("m", "%s", f->base));
	assert_int_equal(statx(f->pfd, "__pycache__", AT_SYMLINK_NOFOLLOW,
			       STATX_INO | STATX_BTIME, &stx), 0);
	/* The same inode number born at another time is another cache. */
	avoid[1].ino = stx.stx_ino;
	avoid[1].birth = 1;
	f->pol.avoid = avoid;
	f->pol.n_avoid = 2;
	if (stx.stx_mask & STATX_BTIME) {
		f->pol.observe = true;   /* judged, not touched */
		assert_int_equal(reap(f), 0);
		expect(f, REAP_WOULD_REMOVE, NULL);
		f->pol.observe = false;
	}
	avoid[2].ino = stx.stx_ino;
	avoid[2].birth = (stx.stx_mask & STATX_BTIME) ?
			 (uint64_t)stx.stx_btime.tv_sec * 1000000000u +
			 stx.stx_btime.tv_nsec : 0;
	f->pol.n_avoid = 3;
	assert_int_equal(reap(f), 0);
	expect(f, REAP_AVOIDED, NULL);
	assert_true(lt_exists("%s/__pycache__/m.cpython-311.pyc", f->base));
	f->pol.n_avoid = 0;
	assert_int_equal(reap(f), 0);
	expect(f, REAP_REMOVED, NULL);
}

/* --- the removal itself -------------------------------------------------- */

static void test_observe_touches_nothing(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("a", "%s", f->base));
	must(lt_cache("b", "%s", f->base));
	must(lt_cache("c", "%s", f->base));
	f->pol.observe = true;
	assert_int_equal(reap(f), 0);
	expect(f, REAP_WOULD_REMOVE, NULL);
	assert_int_equal(f->res.files, 3);
	assert_int_equal(lt_count_pyc(f->base), 3);
	/* Foreign content in observe mode: skipped, and still nothing removed. */
	must(lt_put("keep\n", "%s/__pycache__/notes.txt", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_SKIPPED, "notes.txt");
	assert_int_equal(lt_count_pyc(f->base), 3);
}

static void reap_normal(struct rfx *f)
{
	must(lt_put("12345", "%s/__pycache__/a.cpython-311.pyc", f->base));
	must(lt_put("1234567890", "%s/__pycache__/b.cpython-311.opt-1.pyc", f->base));
	must(lt_put("", "%s/__pycache__/c.pyo", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_REMOVED, NULL);
	assert_int_equal(f->res.files, 3);
	assert_int_equal(f->res.bytes, 15);
	assert_false(lt_exists("%s/__pycache__", f->base));
}

static void test_normal_case(void **state)
{
	reap_normal(*state);
}

/* The watcher hands the reaper O_PATH fds (watch_open_dir). */
static void test_normal_case_o_path_parent(void **state)
{
	struct rfx *f = *state;

	close(f->pfd);
	f->pfd = open(f->base, O_PATH | O_DIRECTORY | O_CLOEXEC);
	assert_true(f->pfd >= 0);
	reap_normal(f);
}

static void test_two_thousand_files(void **state)
{
	struct rfx *f = *state;

	must(lt_mkdirs("%s/__pycache__", f->base));
	for (int i = 0; i < 2000; i++)
		must(lt_put("0123456789abcdef01234567",
			    "%s/__pycache__/m%04d.cpython-311.pyc", f->base, i));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_REMOVED, NULL);
	assert_int_equal(f->res.files, 2000);
	assert_int_equal(f->res.bytes, 2000 * PYC_SIZE);
	assert_false(lt_exists("%s/__pycache__", f->base));
}

/* Only the named directory: stray and sibling bytecode stays. */
static void test_siblings_untouched(void **state)
{
	struct rfx *f = *state;

	must(lt_put("sourceless\n", "%s/legacy.pyc", f->base));
	must(lt_put("print(1)\n", "%s/mod.py", f->base));
	must(lt_cache("other", "%s/pkg", f->base));
	must(lt_cache("m", "%s", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_REMOVED, NULL);
	assert_true(lt_file_is("sourceless\n", "%s/legacy.pyc", f->base));
	assert_true(lt_file_is("print(1)\n", "%s/mod.py", f->base));
	assert_true(lt_exists("%s/pkg/__pycache__/other.cpython-311.pyc", f->base));
}

/*
 * DAEMON BUG found by this test, fixed in 2b310a9 (keep as a regression
 * test). reaper.c scan_pass(): an entry that vanished between readdir()
 * and fstatat() was skipped with `continue`, which left errno at ENOENT;
 * when no later bytecode entry reset it, the end of the directory was taken
 * for a readdir error and reaper_reap() failed with -ENOENT, leaving the
 * cache in place. A CPython writer renaming "m.pyc.<id>" away does this.
 */
static void test_entry_vanishing_mid_scan_is_not_an_error(void **state)
{
	struct rfx *f = *state;
	int r;

	must(lt_put("tmp", "%s/__pycache__/m.cpython-311.pyc.123", f->base));
	vanish_name = "m.cpython-311.pyc.123";
	r = reap(f);
	if (vanish_name)
		fail_msg("the fstatat64 hook never ran: is the --wrap link flag gone?");
	if (r < 0)
		fail_msg("reaper_reap: %s (the cache is left in place)", strerror(-r));
	expect(f, REAP_REMOVED, NULL);
	assert_false(lt_exists("%s/__pycache__", f->base));
}

/* --- what changes between the reaper's listing and its action ---------- */

static void put_notes(int cache_fd)
{
	int fd = openat(cache_fd, "notes.txt", O_WRONLY | O_CREAT | O_EXCL |
			O_CLOEXEC, 0644);

	if (fd >= 0) {
		if (write(fd, "keep\n", 5) != 5)
			abort();
		close(fd);
	}
}

static void pyc_becomes_directory(int cache_fd)
{
	int fd;

	if (unlinkat(cache_fd, "m.cpython-311.pyc", 0) < 0 ||
	    mkdirat(cache_fd, "m.cpython-311.pyc", 0755) < 0)
		abort();
	fd = openat(cache_fd, "m.cpython-311.pyc/data", O_WRONLY | O_CREAT |
		    O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, "keep\n", 5) != 5)
		abort();
	close(fd);
}

/* The name the cache has while it is emptied, seen from its parent. */
static int hook_parent_fd = -1;
static char seen_tmp[NAME_MAX + 1];

static void record_tmp(int cache_fd)
{
	int fd = dup(hook_parent_fd);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	(void)cache_fd;
	while (dir && (de = readdir(dir)))
		if (!strncmp(de->d_name, TMP_PREFIX, strlen(TMP_PREFIX)))
			snprintf(seen_tmp, sizeof(seen_tmp), "%s", de->d_name);
	if (dir)
		closedir(dir);
}

/* After the dry pass: a foreign file makes the reaper list again, after
 * its rename, and the next hook sees the name it renamed to. */
static void notes_then_record(int cache_fd)
{
	put_notes(cache_fd);
	at_end = record_tmp;
}

static void arm(void (*fn)(int))
{
	at_end = fn;
	at_end_ran = 0;
}

static void check_ran(void)
{
	if (!at_end_ran)
		fail_msg("the getdents64 hook never ran: is the --wrap link flag gone?");
	at_end = NULL;
}

/* Empty when listed: one rmdir() takes it, and nothing else is touched. */
static void test_empty_cache_removed(void **state)
{
	struct rfx *f = *state;

	assert_int_equal(mkdirat(f->pfd, "__pycache__", 0755), 0);
	must(lt_put("print(1)\n", "%s/mod.py", f->base));
	assert_int_equal(reap(f), 0);
	expect(f, REAP_REMOVED, NULL);
	assert_int_equal(f->res.files, 0);
	assert_false(lt_exists("%s/__pycache__", f->base));
	assert_true(lt_file_is("print(1)\n", "%s/mod.py", f->base));
}

/* Empty when listed, a foreign file before the rmdir(): it stays, in place. */
static void test_file_lands_in_empty_cache_after_listing(void **state)
{
	struct rfx *f = *state;

	assert_int_equal(mkdirat(f->pfd, "__pycache__", 0755), 0);
	arm(put_notes);
	assert_int_equal(reap(f), 0);
	check_ran();
	expect(f, REAP_SKIPPED, "notes.txt");
	assert_true(lt_file_is("keep\n", "%s/__pycache__/notes.txt", f->base));
}

/* Bytecode when listed, a foreign file before the rename: after it, the
 * bytecode is gone and the file is back under the cache's own name. */
static void test_file_lands_after_dry_pass(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("m", "%s", f->base));
	arm(put_notes);
	assert_int_equal(reap(f), 0);
	check_ran();
	expect(f, REAP_SKIPPED, "notes.txt");
	assert_true(lt_file_is("keep\n", "%s/__pycache__/notes.txt", f->base));
	assert_false(lt_exists("%s/__pycache__/m.cpython-311.pyc", f->base));
}

/* A daemon killed mid-reap leaves the temporary name: one it knows again. */
static void test_temporary_name_is_a_leftover(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("m", "%s", f->base));
	hook_parent_fd = f->pfd;
	seen_tmp[0] = '\0';
	arm(notes_then_record);
	assert_int_equal(reap(f), 0);
	check_ran();
	expect(f, REAP_SKIPPED, "notes.txt");
	if (!seen_tmp[0])
		fail_msg("no '%s*' name seen while the cache was emptied", TMP_PREFIX);
	print_message("temporary name: %s\n", seen_tmp);
	assert_true(reaper_is_leftover(seen_tmp));
}

/* Empty when listed, then renamed away and another directory put in its
 * place before the rmdir(): that one was never checked, and stays. */
static void swap_empty_cache(int cache_fd)
{
	(void)cache_fd;
	if (renameat(hook_parent_fd, "__pycache__", hook_parent_fd, "orig") < 0 ||
	    mkdirat(hook_parent_fd, "__pycache__", 0755) < 0)
		abort();
}

static void test_empty_cache_swapped_before_rmdir(void **state)
{
	struct rfx *f = *state;

	assert_int_equal(mkdirat(f->pfd, "__pycache__", 0755), 0);
	hook_parent_fd = f->pfd;
	arm(swap_empty_cache);
	assert_int_equal(reap(f), 0);
	check_ran();
	if (f->res.outcome == REAP_REMOVED)
		fail_msg("removed a directory it never checked");
	assert_true(is_type(f, "__pycache__", S_IFDIR));
	assert_true(is_type(f, "orig", S_IFDIR));
}

/* A name judged bytecode is a directory by the time it is unlinked. */
static void test_bytecode_name_becomes_directory(void **state)
{
	struct rfx *f = *state;

	must(lt_cache("m", "%s", f->base));
	arm(pyc_becomes_directory);
	assert_int_equal(reap(f), 0);
	check_ran();
	expect(f, REAP_SKIPPED, "directory");
	assert_true(lt_file_is("keep\n", "%s/__pycache__/m.cpython-311.pyc/data",
			       f->base));
}

/* --- a CPython-style writer racing the reaper ---------------------------- */

#define RACE_MODULES 8
#define RACE_MIN_REMOVED 10
#define RACE_MAX_REMOVED 3000

struct race {
	char pkg[4096];
	unsigned removed, gone, skipped, refilled;
	int first_error;
	char last_skip[128];
};

/* Import, forever: every module of the package, again and again. */
static void race_writer(const char *pkg, int ready_fd)
{
	unsigned long id = (unsigned long)getpid() * 1000000ul;
	bool told = false;

	for (;;) {
		for (int m = 0; m < RACE_MODULES; m++) {
			char stem[16];

			snprintf(stem, sizeof(stem), "m%d", m);
			if (lt_cpython_write(pkg, stem, id++) == 0 && !told) {
				told = write(ready_fd, "r", 1) == 1;
				close(ready_fd);
			}
		}
	}
}

static pid_t race_start(const char *pkg)
{
	pid_t pid, parent = getpid();
	int p[2];
	char c;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(p[0]);
		/* It writes forever: it must not outlive a test killed midway. */
		lt_die_with(parent);
		race_writer(pkg, p[1]);
		_exit(0);
	}
	close(p[1]);
	/* Blocks until the first write landed, or EOF if the child died. */
	if (pid > 0 && read(p[0], &c, 1) != 1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		pid = -1;
	}
	close(p[0]);
	return pid;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void race_note(struct race *rc, const struct reap_result *res, int r)
{
	if (r < 0 && !rc->first_error)
		rc->first_error = r;
	if (r < 0)
		return;
	switch (res->outcome) {
	case REAP_REMOVED:
		rc->removed++;
		break;
	case REAP_GONE:
		rc->gone++;
		break;
	default:
		rc->skipped++;
		rc->refilled += strstr(res->reason, "refilled") != NULL;
		snprintf(rc->last_skip, sizeof(rc->last_skip), "%s", res->reason);
		break;
	}
}

/* Reap for up to ms, or until enough removals prove the race was on. */
static void race_reap(struct rfx *f, int pkg_fd, struct race *rc, unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (now_ms() < end && rc->removed < RACE_MAX_REMOVED) {
		int r = reaper_reap(pkg_fd, "__pycache__", &f->pol, &f->res);

		race_note(rc, &f->res, r);
	}
}

static void test_race_with_cpython_writer(void **state)
{
	struct rfx *f = *state;
	struct race rc = { .first_error = 0 };
	int pkg_fd;
	pid_t pid;

	snprintf(rc.pkg, sizeof(rc.pkg), "%s/pkg", f->base);
	must(lt_put("sourceless\n", "%s/legacy.pyc", rc.pkg));
	must(lt_put("print(1)\n", "%s/mod.py", rc.pkg));
	must(lt_put("data\n", "%s/data/notes.txt", rc.pkg));
	pkg_fd = open(rc.pkg, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(pkg_fd >= 0);
	pid = race_start(rc.pkg);
	assert_true(pid > 0);
	race_reap(f, pkg_fd, &rc, lt_ms(3000));
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* The writer is dead: one last reap must leave nothing behind. */
	race_note(&rc, &f->res, reaper_reap(pkg_fd, "__pycache__", &f->pol, &f->res));
	close(pkg_fd);
	print_message("race: %u removed, %u gone, %u skipped (%u refilled; last '%s')\n",
		      rc.removed, rc.gone, rc.skipped, rc.refilled, rc.last_skip);
	if (rc.first_error)
		fail_msg("reaper_reap failed: %s", strerror(-rc.first_error));
	expect(f, f->res.outcome == REAP_GONE ? REAP_GONE : REAP_REMOVED, NULL);
	assert_false(lt_exists("%s/__pycache__", rc.pkg));
	assert_int_equal(lt_count_tree(f->base, TMP_PREFIX, true), 0);
	assert_int_equal(lt_count_pyc(rc.pkg), 1);   /* legacy.pyc */
	assert_true(lt_file_is("sourceless\n", "%s/legacy.pyc", rc.pkg));
	assert_true(lt_file_is("print(1)\n", "%s/mod.py", rc.pkg));
	assert_true(lt_file_is("data\n", "%s/data/notes.txt", rc.pkg));
	assert_true(rc.removed >= RACE_MIN_REMOVED);
	/* A skip is final for the watcher: that cache would stay, full. */
	if (rc.skipped)
		fail_msg("%u reaps gave up on a cache being filled", rc.skipped);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_symlink_to_dir_of_bytecode),
		T(test_regular_file_named_pycache),
		T(test_gone),
		T(test_foreign_text_file),
		T(test_foreign_subdirectory_with_bytecode),
		T(test_foreign_fifo),
		T(test_foreign_symlink_with_bytecode_name),
		T(test_foreign_numba_files),
		T(test_near_miss_names_kept),
		T(test_bytecode_names_removed),
		T(test_hard_link_to_outside_file),
		T(test_owned_by_another_uid),
		T(test_policy_on_another_mount),
		T(test_mount_point_cache),
		T(test_read_only_cache_not_renamed),
		T(test_empty_read_only_cache_kept),
		T(test_read_only_mount_relocating_foreign_cache),
		T(test_avoided_cache_untouched),
		T(test_observe_touches_nothing),
		T(test_normal_case),
		T(test_normal_case_o_path_parent),
		T(test_two_thousand_files),
		T(test_siblings_untouched),
		T(test_entry_vanishing_mid_scan_is_not_an_error),
		T(test_empty_cache_removed),
		T(test_file_lands_in_empty_cache_after_listing),
		T(test_file_lands_after_dry_pass),
		T(test_bytecode_name_becomes_directory),
		T(test_temporary_name_is_a_leftover),
		T(test_empty_cache_swapped_before_rmdir),
		T(test_race_with_cpython_writer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
