/*
 * limit: the floor pycached is held to. A raw-inotify watcher that does only
 * the job: crawl (open + getdents64 + inotify_add_watch, no stat), then a
 * blocking read(); a new directory is watched first and then scanned; a new
 * __pycache__ gets a bare rmdir first and unlink-then-rmdir only when it is
 * not empty; IN_Q_OVERFLOW triggers a full rescan. No safety checks, no
 * bookkeeping beyond a wd -> path table: what is left is the kernel's cost.
 *
 *   limit [-t THREADS] [--watch-by path|fd] [--crawl-only] ROOT
 *
 * Prints "ready CRAWL_NS DIRS" on stdout once ROOT is fully watched. The
 * crawl runs on THREADS threads sharing one inotify fd (FACTS.md: 2 threads
 * crawl about 1.7x faster than one on these 2-core machines).
 */
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <sys/inotify.h>

#include "bench.h"

#define WATCH_MASK (IN_CREATE | IN_MOVED_TO | IN_ONLYDIR)

struct limit {
	int ifd;
	bool watch_by_fd;
	int threads;
	char **paths;           /* wd -> owned path; guarded by lock */
	size_t cap;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	char **stack;           /* owned paths waiting to be crawled */
	size_t n, scap;
	unsigned active;        /* threads inside crawl_dir() */
	uint64_t dirs;
	uint64_t caches;
};

static int add_watch(struct limit *L, int fd, const char *path)
{
	char proc[32];

	if (!L->watch_by_fd)
		return inotify_add_watch(L->ifd, path, WATCH_MASK);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	return inotify_add_watch(L->ifd, proc, WATCH_MASK);
}

/* Locked. Returns true when path now belongs to the table. */
static bool set_path(struct limit *L, int wd, char *path)
{
	if ((size_t)wd >= L->cap) {
		size_t cap = L->cap ? L->cap : 1024;

		while (cap <= (size_t)wd)
			cap *= 2;
		L->paths = xrealloc(L->paths, cap * sizeof(*L->paths));
		memset(L->paths + L->cap, 0, (cap - L->cap) * sizeof(*L->paths));
		L->cap = cap;
	}
	if (L->paths[wd])	/* a rescan met a watched directory again */
		return false;
	L->paths[wd] = path;
	L->dirs++;
	return true;
}

/* Locked. Takes the paths. */
static void push_paths(struct limit *L, char **v, size_t n)
{
	if (L->n + n > L->scap) {
		L->scap = (L->n + n) * 2;
		L->stack = xrealloc(L->stack, L->scap * sizeof(*L->stack));
	}
	memcpy(L->stack + L->n, v, n * sizeof(*v));
	L->n += n;
}

/* Watch, then list: subdirectories are pushed, caches removed. Takes path. */
static void crawl_dir(struct limit *L, char *path)
{
	char buf[32768] __attribute__((aligned(8)));
	char *found[256];
	size_t nf = 0;
	bool kept = false;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int wd;

	if (fd < 0) {
		free(path);
		return;
	}
	wd = add_watch(L, fd, path);
	if (wd >= 0) {
		pthread_mutex_lock(&L->lock);
		kept = set_path(L, wd, path);
		pthread_mutex_unlock(&L->lock);
	}
	while ((n = getdents64(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t off = 0; off < n;) {
			struct dirent64 *de = (struct dirent64 *)(buf + off);

			off += de->d_reclen;
			if (de->d_type != DT_DIR || !strcmp(de->d_name, ".") ||
			    !strcmp(de->d_name, ".."))
				continue;
			if (!strcmp(de->d_name, PYCACHE)) {
				if (remove_cache(fd, PYCACHE) == 0)
					__atomic_add_fetch(&L->caches, 1, __ATOMIC_RELAXED);
				continue;
			}
			found[nf++] = path_join(path, de->d_name);
			if (nf == sizeof(found) / sizeof(found[0])) {
				pthread_mutex_lock(&L->lock);
				push_paths(L, found, nf);
				pthread_cond_broadcast(&L->cond);
				pthread_mutex_unlock(&L->lock);
				nf = 0;
			}
		}
	}
	close(fd);
	pthread_mutex_lock(&L->lock);
	push_paths(L, found, nf);
	if (nf)
		pthread_cond_broadcast(&L->cond);
	pthread_mutex_unlock(&L->lock);
	if (!kept)
		free(path);
}

static void *worker(void *arg)
{
	struct limit *L = arg;

	pthread_mutex_lock(&L->lock);
	for (;;) {
		char *path;

		while (!L->n && L->active)
			pthread_cond_wait(&L->cond, &L->lock);
		if (!L->n)
			break;
		path = L->stack[--L->n];
		L->active++;
		pthread_mutex_unlock(&L->lock);
		crawl_dir(L, path);
		pthread_mutex_lock(&L->lock);
		if (--L->active == 0 && !L->n)
			pthread_cond_broadcast(&L->cond);
	}
	pthread_mutex_unlock(&L->lock);
	return NULL;
}

/* Crawl the tree at path (taken) on `threads` threads, this one included. */
static void crawl(struct limit *L, char *path, int threads)
{
	pthread_t tid[16];
	int extra = threads > 16 ? 15 : threads - 1;

	L->stack = xrealloc(L->stack, 64 * sizeof(*L->stack));
	L->scap = 64;
	L->stack[0] = path;
	L->n = 1;
	for (int i = 0; i < extra; i++)
		if (pthread_create(&tid[i], NULL, worker, L) != 0)
			die("pthread_create:");
	worker(L);
	for (int i = 0; i < extra; i++)
		pthread_join(tid[i], NULL);
}

static void on_dir(struct limit *L, const struct inotify_event *ev,
		   const char *root)
{
	const char *parent = (size_t)ev->wd < L->cap ? L->paths[ev->wd] : NULL;
	char path[4096];

	if (!parent)
		return;
	if (snprintf(path, sizeof(path), "%s/%s", parent, ev->name) >= (int)sizeof(path))
		return;
	if (!strcmp(ev->name, PYCACHE)) {
		if (remove_cache(AT_FDCWD, path) == 0)
			L->caches++;
		return;
	}
	crawl(L, xstrdup(path), 1);
}

static void handle(struct limit *L, const struct inotify_event *ev,
		   const char *root)
{
	if (ev->mask & IN_Q_OVERFLOW) {
		crawl(L, xstrdup(root), L->threads);
	} else if (ev->mask & IN_IGNORED) {
		if ((size_t)ev->wd < L->cap) {
			free(L->paths[ev->wd]);
			L->paths[ev->wd] = NULL;
		}
	} else if ((ev->mask & IN_ISDIR) && ev->len) {
		on_dir(L, ev, root);
	}
}

static void run(struct limit *L, const char *root)
{
	char buf[65536] __attribute__((aligned(8)));

	for (;;) {
		ssize_t n = read(L->ifd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("read(inotify):");
		for (ssize_t off = 0; off < n;) {
			const struct inotify_event *ev = (const void *)(buf + off);

			off += (ssize_t)(sizeof(*ev) + ev->len);
			handle(L, ev, root);
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "threads", required_argument, NULL, 't' },
		{ "watch-by", required_argument, NULL, 'w' },
		{ "crawl-only", no_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	struct limit L = { .threads = 2, .watch_by_fd = false };
	bool crawl_only = false;
	uint64_t t0;
	int c;

	while ((c = getopt_long(argc, argv, "t:w:c", opts, NULL)) != -1) {
		switch (c) {
		case 't': L.threads = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
		case 'w': L.watch_by_fd = !strcmp(optarg, "fd"); break;
		case 'c': crawl_only = true; break;
		default: return 2;
		}
	}
	if (optind + 1 != argc)
		die("usage: limit [-t THREADS] [--watch-by path|fd] [--crawl-only] ROOT");
	pthread_mutex_init(&L.lock, NULL);
	pthread_cond_init(&L.cond, NULL);
	L.ifd = inotify_init1(IN_CLOEXEC);
	if (L.ifd < 0)
		die("inotify_init1:");
	t0 = now_ns();
	crawl(&L, xstrdup(argv[optind]), L.threads);
	printf("ready %llu %llu\n", (unsigned long long)(now_ns() - t0),
	       (unsigned long long)L.dirs);
	fflush(stdout);
	if (!crawl_only)
		run(&L, argv[optind]);
	return 0;
}
