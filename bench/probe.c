/*
 * probe: creators and an independent observer for the benchmarks. The
 * observer is this process's own inotify instance, never the watcher's: a
 * cache counts as gone when the kernel reports IN_DELETE of the directory
 * (pycached renames a cache before emptying it, so the name deleted may be
 * its temporary one; the rename is reported separately as "gone").
 *
 *   probe latency [--trials N] [--timeout-ms T] [--gap-us G] ROOT...
 *   probe deep    [--n N] [--tag S] [--quiet-ms Q] ROOT
 *   probe burst   [--stop PID,...] [--pids PID,...] [--quiet-ms Q]
 *                 [--timeout-ms T] ROOT N
 *   probe noise   [--n N] ROOT
 *   probe mktree | count | clean | control | exec   (probe-tree.c, probe-ctl.c)
 */
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/inotify.h>

#include "bench.h"
#include "probe.h"

#define OBS_MASK (IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR)

static int obs_new(void)
{
	int fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);

	if (fd < 0)
		die("inotify_init1:");
	return fd;
}

static int open_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		die("open %s:", path);
	return fd;
}

/* --- latency ------------------------------------------------------------ */

struct trial {
	int wd;
	uint64_t t0, gone, del;
};

static void trial_events(struct trial *t, const char *buf, ssize_t n)
{
	for (ssize_t off = 0; off < n;) {
		const struct inotify_event *ev = (const void *)(buf + off);
		uint64_t now = now_ns();

		off += (ssize_t)(sizeof(*ev) + ev->len);
		if (ev->wd != t->wd || !(ev->mask & IN_ISDIR))
			continue;
		if ((ev->mask & IN_MOVED_FROM) && !strcmp(ev->name, PYCACHE) && !t->gone)
			t->gone = now;
		if (ev->mask & IN_DELETE) {
			t->del = now;
			if (!t->gone)
				t->gone = now;
		}
	}
}

/* Wait until the observer saw the cache deleted, or the deadline. */
static void trial_wait(int ifd, struct trial *t, uint64_t deadline)
{
	char buf[8192] __attribute__((aligned(8)));

	while (!t->del) {
		struct pollfd p = { .fd = ifd, .events = POLLIN };
		uint64_t now = now_ns();
		ssize_t n;

		if (now >= deadline)
			return;
		if (poll(&p, 1, (int)((deadline - now) / 1000000 + 1)) <= 0)
			continue;
		while ((n = read(ifd, buf, sizeof(buf))) > 0)
			trial_events(t, buf, n);
	}
}

static void drain(int ifd)
{
	char buf[8192] __attribute__((aligned(8)));

	while (read(ifd, buf, sizeof(buf)) > 0)
		;
}

/*
 * One trial on one root: mkdir pkg/__pycache__ and a CPython-style .pyc
 * write, then wait for the observer. Prints "IDX ROOTIDX GONE_NS DEL_NS"
 * (-1: not deleted before the timeout; the cache is then removed here).
 */
static void trial_run(int ifd, int wd, int pkgfd, int idx, int ridx,
		      uint64_t timeout_ns)
{
	struct trial t = { .wd = wd };
	struct stat st;

	/* A cache left by an earlier trial that timed out, or raced. */
	if (fstatat(pkgfd, PYCACHE, &st, AT_SYMLINK_NOFOLLOW) == 0)
		remove_cache(pkgfd, PYCACHE);
	drain(ifd);
	t.t0 = now_ns();
	make_cache(pkgfd, "mod");
	trial_wait(ifd, &t, t.t0 + timeout_ns);
	printf("%d %d %lld %lld\n", idx, ridx,
	       t.gone ? (long long)(t.gone - t.t0) : -1LL,
	       t.del ? (long long)(t.del - t.t0) : -1LL);
	if (!t.del)
		remove_cache(pkgfd, PYCACHE);
}

static int cmd_latency(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "trials", required_argument, NULL, 'n' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "gap-us", required_argument, NULL, 'g' },
		{ NULL, 0, NULL, 0 },
	};
	int trials = 100, nroots, c, ifd = obs_new(), gap_us = 2000;
	uint64_t timeout_ns = 2000000000ull;
	int *wd, *pkgfd;

	while ((c = getopt_long(argc, argv, "n:t:g:", opts, NULL)) != -1) {
		if (c == 'n')
			trials = atoi(optarg);
		else if (c == 'g')
			gap_us = atoi(optarg);
		else if (c == 't')
			timeout_ns = strtoull(optarg, NULL, 10) * 1000000ull;
		else
			return 2;
	}
	nroots = argc - optind;
	if (nroots < 1)
		die("usage: probe latency [--trials N] [--timeout-ms T] ROOT...");
	wd = xmalloc((size_t)nroots * sizeof(*wd));
	pkgfd = xmalloc((size_t)nroots * sizeof(*pkgfd));
	for (int r = 0; r < nroots; r++) {
		char *pkg = path_join(argv[optind + r], "pkg");

		if (mkdir(pkg, 0755) < 0 && errno != EEXIST)
			die("mkdir %s:", pkg);
		pkgfd[r] = open_dir(pkg);
		wd[r] = inotify_add_watch(ifd, pkg, OBS_MASK);
		if (wd[r] < 0)
			die("inotify_add_watch %s:", pkg);
		free(pkg);
	}
	/*
	 * Interleaved: trial i runs on every root in turn (A B C A B C), starting
	 * one further each time so that no watcher always follows the same one,
	 * with a pause between trials so that a slow watcher's aftermath (the
	 * one-liner's rm still exiting) does not land on the next one's trial.
	 */
	for (int i = 0; i < trials; i++) {
		for (int k = 0; k < nroots; k++) {
			int r = (i + k) % nroots;

			trial_run(ifd, wd[r], pkgfd[r], i, r, timeout_ns);
			usleep((useconds_t)gap_us);
		}
	}
	fflush(stdout);
	return 0;
}

/* --- deep new directories ----------------------------------------------- */

static int mkdir_open(int dirfd, const char *name)
{
	int fd;

	if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
		return -1;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd;
}

static size_t caches_left(int *fds, size_t n)
{
	struct stat st;
	size_t left = 0;

	for (size_t i = 0; i < n; i++)
		if (fds[i] >= 0 && fstatat(fds[i], PYCACHE, &st, AT_SYMLINK_NOFOLLOW) == 0)
			left++;
	return left;
}

/*
 * N x `mkdir -p TAGi/a/b/c/__pycache__` + a .pyc, back to back, then wait
 * until none is left or nothing changed for quiet-ms. A watcher that does
 * not scan a new directory after watching it never sees c/__pycache__.
 */
static int cmd_deep(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "n", required_argument, NULL, 'n' },
		{ "tag", required_argument, NULL, 'g' },
		{ "quiet-ms", required_argument, NULL, 'q' },
		{ NULL, 0, NULL, 0 },
	};
	const char *tag = "deep";
	size_t n = 300, left, prev;
	uint64_t quiet_ns = 1000000000ull, t_end, t_change, t_clear = 0;
	int c, rootfd, *fds;

	while ((c = getopt_long(argc, argv, "n:g:q:", opts, NULL)) != -1) {
		if (c == 'n')
			n = strtoul(optarg, NULL, 10);
		else if (c == 'g')
			tag = optarg;
		else if (c == 'q')
			quiet_ns = strtoull(optarg, NULL, 10) * 1000000ull;
		else
			return 2;
	}
	if (optind + 1 != argc)
		die("usage: probe deep [--n N] [--tag S] [--quiet-ms Q] ROOT");
	rootfd = open_dir(argv[optind]);
	fds = xmalloc(n * sizeof(*fds));
	for (size_t i = 0; i < n; i++) {
		static const char *const comps[] = { "a", "b", "c" };
		char name[64];
		int fd;

		snprintf(name, sizeof(name), "%s%zu", tag, i);
		fd = mkdir_open(rootfd, name);
		for (size_t k = 0; k < 3 && fd >= 0; k++) {
			int sub = mkdir_open(fd, comps[k]);

			close(fd);
			fd = sub;
		}
		if (fd >= 0)
			make_cache(fd, "mod");
		fds[i] = fd;
	}
	t_end = t_change = now_ns();
	prev = left = caches_left(fds, n);
	while (left && now_ns() - t_change < quiet_ns) {
		usleep(2000);
		left = caches_left(fds, n);
		if (left != prev)
			t_change = now_ns();
		prev = left;
	}
	if (!left)
		t_clear = now_ns() - t_end;
	printf("created %zu\nleft %zu\nclear_ns %lld\n", n, left,
	       left ? -1LL : (long long)t_clear);
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0) {
			remove_cache(fds[i], PYCACHE);
			close(fds[i]);
		}
	}
	return 0;
}

/* --- bursts ------------------------------------------------------------- */

struct observer {
	int ifd;
	size_t want;
	size_t deleted;         /* IN_DELETE of a directory: a cache is gone */
	bool overflow;
	uint64_t last;          /* time of the latest deletion */
	volatile bool stop;
	pthread_mutex_t lock;
};

static void *observe(void *arg)
{
	struct observer *o = arg;
	char buf[262144] __attribute__((aligned(8)));

	while (!o->stop) {
		struct pollfd p = { .fd = o->ifd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 20) <= 0)
			continue;
		while ((n = read(o->ifd, buf, sizeof(buf))) > 0) {
			uint64_t now = now_ns();

			pthread_mutex_lock(&o->lock);
			for (ssize_t off = 0; off < n;) {
				const struct inotify_event *ev = (const void *)(buf + off);

				off += (ssize_t)(sizeof(*ev) + ev->len);
				if (ev->mask & IN_Q_OVERFLOW)
					o->overflow = true;
				if ((ev->mask & (IN_DELETE | IN_ISDIR)) == (IN_DELETE | IN_ISDIR)) {
					o->deleted++;
					o->last = now;
				}
			}
			pthread_mutex_unlock(&o->lock);
		}
	}
	return NULL;
}

static size_t parse_pids(char *s, pid_t *out, size_t max)
{
	size_t n = 0;

	for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ","))
		out[n++] = (pid_t)atoi(tok);
	return n;
}

/* Wait until the kernel shows pid stopped ('T'), up to a second. */
static void wait_stopped(pid_t pid)
{
	char path[64], buf[512];

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	for (int i = 0; i < 1000; i++) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
		char *p;

		if (fd >= 0)
			close(fd);
		if (n <= 0)
			return;
		buf[n] = '\0';
		p = strrchr(buf, ')');
		if (p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't'))
			return;
		usleep(1000);
	}
}

struct burst {
	pid_t stop[8];          /* SIGSTOPped during the creation */
	size_t nstop;
	pid_t busy[8];          /* the watcher: busy while its CPU time grows */
	size_t nbusy;
	uint64_t quiet_ns, timeout_ns;
};

/* CPU ns of pid (every thread, exited ones too), plus its reaped children. */
static uint64_t cpu_of(pid_t pid)
{
	char path[64], buf[512];
	uint64_t total = 0;
	unsigned long long cu, cs;
	struct timespec ts;
	clockid_t clk;
	FILE *f;

	if (clock_getcpuclockid(pid, &clk) == 0 && clock_gettime(clk, &ts) == 0)
		total += (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((f = fopen(path, "re"))) {
		char *p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;

		/* Fields 16 and 17 (cutime, cstime): the one-liner's rm. */
		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
				"%*u %*u %llu %llu", &cu, &cs) == 2)
			total += (cu + cs) * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
		fclose(f);
	}
	return total;
}

static uint64_t busy_cpu(const struct burst *b)
{
	uint64_t total = 0;

	for (size_t i = 0; i < b->nbusy; i++)
		total += cpu_of(b->busy[i]);
	return total;
}

/*
 * Until every cache is gone, or nothing happened for quiet-ms: no deletion
 * and no CPU used by the watcher (a rescan may find nothing to delete for a
 * while, yet it is still at work), or the timeout.
 */
static void burst_wait(struct observer *o, uint64_t t_end, const struct burst *b)
{
	uint64_t cpu = busy_cpu(b), active = t_end;

	for (;;) {
		uint64_t now = now_ns(), c;
		size_t del;

		usleep(20000);
		pthread_mutex_lock(&o->lock);
		del = o->deleted;
		if (o->last > active)
			active = o->last;
		pthread_mutex_unlock(&o->lock);
		/* More than 2% of a CPU over the last 20 ms: still working. */
		c = busy_cpu(b);
		if (c - cpu > 400000)
			active = now;
		cpu = c;
		if (del >= o->want || now - t_end > b->timeout_ns ||
		    now - active > b->quiet_ns)
			return;
	}
}

static void burst_report(struct observer *o, struct paths *dirs, uint64_t t0,
			 uint64_t t_end, uint64_t t_from)
{
	struct stat st;
	size_t left = 0;

	for (size_t i = 0; i < dirs->n; i++) {
		char *p = path_join(dirs->v[i], PYCACHE);
		int fd;

		if (lstat(p, &st) == 0) {
			left++;
			fd = open(dirs->v[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd >= 0) {
				remove_cache(fd, PYCACHE);
				close(fd);
			}
		}
		free(p);
	}
	printf("created %zu\nleft %zu\ndeleted %zu\nobserver_overflow %d\n",
	       dirs->n, left, o->deleted, o->overflow);
	printf("create_ns %llu\n", (unsigned long long)(t_end - t0));
	/* All gone: time of the last deletion after the reference point. */
	if (!left && o->deleted >= dirs->n) {
		printf("last_after_end_ns %llu\n",
		       (unsigned long long)(o->last > t_from ? o->last - t_from : 0));
		printf("last_after_start_ns %llu\n",
		       (unsigned long long)(o->last - t0));
	} else {
		printf("last_after_end_ns -1\nlast_after_start_ns -1\n");
	}
}

/*
 * One cache in each of the first N directories under ROOT, as fast as
 * possible. With --stop, the watcher's processes are SIGSTOPped first and
 * SIGCONTed after the last one: its inotify queue overflows (> 16,384).
 */
static int cmd_burst(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "stop", required_argument, NULL, 's' },
		{ "pids", required_argument, NULL, 'p' },
		{ "quiet-ms", required_argument, NULL, 'q' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	struct burst b = { .quiet_ns = 1000000000ull, .timeout_ns = 120000000000ull };
	struct observer o = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct paths dirs = { 0 };
	uint64_t t0, t_end, t_from;
	pthread_t tid;
	int c;

	while ((c = getopt_long(argc, argv, "s:p:q:t:", opts, NULL)) != -1) {
		if (c == 's')
			b.nstop = parse_pids(optarg, b.stop, 8);
		else if (c == 'p')
			b.nbusy = parse_pids(optarg, b.busy, 8);
		else if (c == 'q')
			b.quiet_ns = strtoull(optarg, NULL, 10) * 1000000ull;
		else if (c == 't')
			b.timeout_ns = strtoull(optarg, NULL, 10) * 1000000ull;
		else
			return 2;
	}
	if (optind + 2 != argc)
		die("usage: probe burst [--stop PID,...] [--pids PID,...] [--quiet-ms Q] "
		    "[--timeout-ms T] ROOT N");
	walk_dirs(argv[optind], strtoul(argv[optind + 1], NULL, 10), &dirs);
	if (dirs.n < strtoul(argv[optind + 1], NULL, 10))
		die("probe burst: only %zu directories under %s", dirs.n, argv[optind]);
	o.ifd = obs_new();
	o.want = dirs.n;
	for (size_t i = 0; i < dirs.n; i++)
		if (inotify_add_watch(o.ifd, dirs.v[i], IN_DELETE | IN_ONLYDIR) < 0)
			die("inotify_add_watch %s:", dirs.v[i]);
	if (pthread_create(&tid, NULL, observe, &o) != 0)
		die("pthread_create:");
	for (size_t i = 0; i < b.nstop; i++) {
		kill(b.stop[i], SIGSTOP);
		wait_stopped(b.stop[i]);
	}
	t0 = now_ns();
	for (size_t i = 0; i < dirs.n; i++) {
		int fd = open(dirs.v[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (fd >= 0) {
			make_cache(fd, "mod");
			close(fd);
		}
	}
	t_end = t_from = now_ns();
	for (size_t i = 0; i < b.nstop; i++)
		kill(b.stop[i], SIGCONT);
	burst_wait(&o, t_end, &b);
	o.stop = true;
	pthread_join(tid, NULL);
	burst_report(&o, &dirs, t0, t_end, t_from);
	paths_free(&dirs);
	return 0;
}

/* --- write noise -------------------------------------------------------- */

/* N open-write-close cycles over up to 100 existing files under ROOT. */
static int cmd_noise(int argc, char **argv)
{
	static const char line[64] = "x = 1  # noise written by pycached's bench\n";
	struct paths files = { 0 };
	size_t n = 10000;
	uint64_t t0;

	if (argc >= 3 && !strcmp(argv[1], "--n")) {
		n = strtoul(argv[2], NULL, 10);
		argc -= 2;
		argv += 2;
	}
	if (argc != 2)
		die("usage: probe noise [--n N] ROOT");
	walk_files(argv[1], 100, &files);
	if (!files.n)
		die("probe noise: no files under %s", argv[1]);
	t0 = now_ns();
	for (size_t i = 0; i < n; i++) {
		int fd = open(files.v[i % files.n], O_WRONLY | O_TRUNC | O_CLOEXEC);

		if (fd < 0)
			die("open %s:", files.v[i % files.n]);
		if (write(fd, line, sizeof(line)) < 0)
			die("write:");
		close(fd);
	}
	printf("writes %zu\nfiles %zu\nns %llu\n", n, files.n,
	       (unsigned long long)(now_ns() - t0));
	paths_free(&files);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "latency", cmd_latency }, { "deep", cmd_deep },
		{ "burst", cmd_burst }, { "noise", cmd_noise },
		{ "mktree", cmd_mktree }, { "count", cmd_count },
		{ "clean", cmd_clean }, { "control", cmd_control },
		{ "exec", cmd_exec },
	};

	if (argc < 2)
		die("usage: probe latency|deep|burst|noise|mktree|count|clean|control|exec ...");
	setvbuf(stdout, NULL, _IOFBF, 1 << 16);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	die("probe: unknown command '%s'", argv[1]);
}
