/*
 * Integration harness: one private world per test (a mkdtemp directory with
 * its own XDG dirs, HOME, NOTIFY_SOCKET and daemon log), the real pycached
 * started in it, real python3 run in it, and bounded waits on the
 * filesystem. Setup helpers fail the running cmocka test on error; the
 * hx_try_* helpers return 0 or -errno because they race the daemon on
 * purpose. Strings returned by hx_path(), hx_str(), hx_run()… belong to the
 * struct hx and live until hx_teardown(). Single-threaded.
 *
 * Knobs (environment of the test binary): PYCACHED_BIN, PYCACHECTL_BIN (set
 * by meson); PYCACHED_TEST_SLOWDOWN=N multiplies every timeout (valgrind);
 * PYCACHED_TEST_KEEP=1 keeps the temp dirs; PYCACHED_TEST_LOG_LEVEL sets
 * the daemon's log_level; PYCACHED_TEST_LOG_LINES how much of its log
 * teardown prints. One case: build/tests/integration/it-trees 'deep*'.
 */
#ifndef PYCACHED_TESTS_HARNESS_H
#define PYCACHED_TESTS_HARNESS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct dirent;
struct hx;

/* The outcome of one finished child process. */
struct hx_proc {
	int status;   /* exit code; 128+N if killed by signal N; -1 on timeout */
	char *out;    /* its stdout, owned by the hx */
	char *err;    /* its stderr, owned by the hx */
};

/* Default bounded waits, in milliseconds before PYCACHED_TEST_SLOWDOWN. */
#define HX_READY_MS 20000
#define HX_REMOVE_MS 10000
#define HX_RUN_MS 120000

/* cmocka setup/teardown: *state becomes a fresh struct hx. */
int hx_setup(void **state);
int hx_teardown(void **state);
/* Run the tests of one file; argv[1], if any, is a cmocka name filter. */
#define hx_run_group(tests, argc, argv) \
	hx_run_tests_((tests), sizeof(tests) / sizeof((tests)[0]), (argc), (argv))

/* The private temp dir (canonical: realpath'ed, so it matches daemon logs). */
const char *hx_dir(const struct hx *h);
/* "<tmp>/<fmt…>" unless fmt yields an absolute path; owned by h. */
__attribute__((format(printf, 2, 3)))
const char *hx_path(struct hx *h, const char *fmt, ...);
/* A formatted string owned by h. */
__attribute__((format(printf, 2, 3)))
const char *hx_str(struct hx *h, const char *fmt, ...);
/* The config file the daemon is started with (--config). */
const char *hx_config_path(const struct hx *h);
/* The control socket pycachectl is pointed at. */
const char *hx_socket_path(const struct hx *h);
/* Scale a timeout by PYCACHED_TEST_SLOWDOWN (valgrind, sanitizers). */
int hx_ms(int ms);
/* $PYCACHED_BIN, set by meson; fails the test when unset. */
const char *hx_daemon_bin(void);

/* --- configuration ------------------------------------------------------ */

/* Write the config file verbatim. */
__attribute__((format(printf, 2, 3)))
void hx_config(struct hx *h, const char *fmt, ...);
/*
 * Write "[pycached]\nlog_level = info\n<globals>" and one "[root R]"
 * section per root path (NULL-terminated list).
 */
void hx_config_roots(struct hx *h, const char *globals, ...);

/* --- the daemon --------------------------------------------------------- */

/*
 * Start pycached --config <hx_config_path> plus extra (NULL-terminated, may
 * be NULL) and wait for READY=1. Fails the test, with the log, if the daemon
 * exits or stays silent for HX_READY_MS.
 */
void hx_start(struct hx *h, const char *const *extra);
/* Start pycached with exactly these arguments (no --config added). */
void hx_start_raw(struct hx *h, const char *const *args);
/* SIGHUP, then wait for RELOADING=1 and the READY=1 after it. */
void hx_reload(struct hx *h);
/* Send sig and wait (bounded) for the exit; returns hx_proc-style status. */
int hx_stop(struct hx *h, int sig);
/* The daemon's pid, or 0 when none runs. */
pid_t hx_pid(const struct hx *h);
/* True while the daemon has not exited (a stopped daemon is alive). */
bool hx_alive(struct hx *h);
/* kill -STOP and wait until the kernel reports it stopped; kill -CONT. */
void hx_freeze(struct hx *h);
void hx_thaw(struct hx *h);
/*
 * Throw away what the daemon sent to our NOTIFY_SOCKET. Its STATUS=
 * updates (one every 2 s while busy) fill the datagram queue
 * (net.unix.max_dgram_qlen, 10 here) within half a minute, and then
 * sd_notify() blocks the daemon for good: a long test calls this while
 * it waits.
 */
void hx_drain_notify(struct hx *h);
/* CPU ticks (utime+stime) the daemon has used so far. */
unsigned long long hx_cpu_ticks(struct hx *h);

/* The daemon's stderr so far (owned by h) and a search in it. */
const char *hx_log(struct hx *h);
bool hx_log_contains(struct hx *h, const char *needle);
bool hx_wait_log(struct hx *h, const char *needle, int timeout_ms);
/* Print the tail of the daemon log to stderr, for a failing test. */
void hx_dump_log(struct hx *h);

/* --- child processes ---------------------------------------------------- */

/*
 * Run argv (argv[0] searched in PATH) in cwd (NULL: the temp dir) with the
 * private environment, PYTHONDONTWRITEBYTECODE and PYTHONPYCACHEPREFIX
 * removed, stdout and stderr captured. Bounded by HX_RUN_MS: then killed.
 */
struct hx_proc hx_run(struct hx *h, const char *cwd, const char *const *argv);
/* The same with its own bound (e.g. a daemon that should exit at once). */
struct hx_proc hx_run_for(struct hx *h, const char *cwd,
			  const char *const *argv, int timeout_ms);
/* python3 <args…> (NULL-terminated), as hx_run. */
struct hx_proc hx_python(struct hx *h, const char *cwd, ...);
/* pycachectl --socket <hx_socket_path> <argv…>; skips the test if unbuilt. */
struct hx_proc hx_ctl(struct hx *h, const char *const *argv);

/* --- trees -------------------------------------------------------------- */

/* mkdir -p. */
void hx_mkdirs(const char *path);
__attribute__((format(printf, 2, 3)))
void hx_write(const char *path, const char *fmt, ...);
void hx_symlink(const char *target, const char *link);
void hx_rename(const char *from, const char *to);
/* rm -rf without following symlinks; a missing path is fine. */
void hx_rmtree(const char *path);

/*
 * Write dir/stem.cpython-311.pyc the way CPython does: an O_EXCL temporary
 * "<name>.<digits>", a 16-byte header and some code, then rename(2).
 */
int hx_try_write_pyc(const char *dir, const char *stem);
/* mkdir dir/__pycache__ and write n pyc files in it (mod0, mod1…). */
int hx_try_cache(const char *dir, unsigned n);
/* The same, failing the test on error: for trees the daemon doesn't watch. */
void hx_cache(const char *dir, unsigned n);

/*
 * Called for each entry of dir (open at dfd), "." and ".." excepted; type
 * is a DT_* constant, from lstat when readdir leaves it DT_UNKNOWN. True:
 * descend into it, if it is a directory.
 */
typedef bool (*hx_visit_fn)(const char *dir, int dfd, const char *name,
			    unsigned char type, void *arg);
/*
 * Depth-first and iterative (moved trees can nest deep); symlinks are never
 * followed, not even tree itself; a directory that vanished is skipped.
 */
void hx_walk(const char *tree, hx_visit_fn fn, void *arg);
/* de's type; when readdir leaves it DT_UNKNOWN, fstatat(dfd) tells, without
 * following a symlink. */
unsigned char hx_dtype(int dfd, const struct dirent *de);

/* Real directories named __pycache__ under tree (symlinks not followed). */
size_t hx_count_caches(const char *tree);
/* Regular files whose name ends with suffix under tree. */
size_t hx_count_files(const char *tree, const char *suffix);
/* Entries in one directory, "." and ".." excepted; -1 if unreadable. */
long hx_count_entries(const char *dir);
/*
 * Wait until tree holds no directory whose name contains "__pycache__"
 * (the reaper's renamed temporaries included); on timeout, list them, fail.
 */
void hx_expect_no_caches(const char *tree, int timeout_ms);
/* Wait until path no longer exists (lstat); fail on timeout. */
void hx_expect_gone(const char *path, int timeout_ms);

bool hx_exists(const char *path);      /* lstat succeeds */
bool hx_is_dir(const char *path);      /* a real directory, not a symlink */
bool hx_is_symlink(const char *path);
bool hx_is_reg(const char *path);

/*
 * Make a sentinel cache in a fresh subdirectory of dir (a watched,
 * delete-mode directory) and wait until the daemon removed it. The daemon
 * handles inotify events in order, so every event queued before the
 * sentinel has been dealt with afterwards: a test can then assert that
 * something was left alone. Fails the test on timeout.
 */
void hx_barrier(struct hx *h, const char *dir);

/* Bounded wait: call cond every few ms until it is true or timeout_ms. */
bool hx_wait(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* Implementation of hx_run_group(). */
struct CMUnitTest;
int hx_run_tests_(const struct CMUnitTest *tests, size_t n, int argc,
		  char **argv);

#endif
