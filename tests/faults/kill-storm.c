/*
 * The kill -9 test's storm: workers and the toggler (kill-storm.h), the
 * self-checking pyc, and the state file's format as the test reads it.
 */
#include "kill-storm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PYC_HEADER 16
/* Header, "KILL", length, nonce, hash. */
#define PYC_MIN 48
#define PYC_MAX (8u << 20)
#define BIG_MIN (1u << 20)
#define BIG_SPAN (3u << 20)
/* One pycachectl call of the toggler; the daemon may be dead meanwhile. */
#define CTL_MS 10000

/* importlib.util.MAGIC_NUMBER of CPython 3.11 (3495), as harness.c. */
static const unsigned char pyc_magic[4] = { 0xa7, 0x0d, 0x0d, 0x0a };

struct worker {
	const struct ks_world *w;
	struct ks_shared *s;
	unsigned idx;
	uint64_t rng;
	uint64_t *count;
	int user_log, pyc_log;
	unsigned serial;
	bool log_failed;
};

/* --- small things -------------------------------------------------------- */

uint64_t ks_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

int64_t ks_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ks_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static unsigned rnd(struct worker *wk, unsigned n)
{
	return n ? (unsigned)(ks_next(&wk->rng) % n) : 0;
}

__attribute__((format(printf, 3, 4)))
static void fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(buf, len, f, ap);
	va_end(ap);
	/* A path that does not fit is a broken fixture, not a finding. */
	if (n < 0 || (size_t)n >= len)
		abort();
}

void ks_dir(char *buf, size_t len, unsigned n, unsigned k)
{
	static const char *const tails[] = { "", "/s", "/s/t" };
	fmt(buf, len, "w%u/d%u%s", n, k, tails[k % 3]);
}

void ks_foreign_dir(char *buf, size_t len, unsigned n, unsigned k)
{
	fmt(buf, len, "w%u/f%u", n, k);
}

void ks_moved_dir(char *buf, size_t len, unsigned n, unsigned k)
{
	fmt(buf, len, "w%u/m%u", n, k);
}

bool ks_is_bytecode_name(const char *name)
{
	size_t len = strlen(name);
	const char *dot;

	if (len > 4 && (!strcmp(name + len - 4, ".pyc") ||
			!strcmp(name + len - 4, ".pyo")))
		return true;
	dot = strstr(name, ".pyc.");
	return dot && dot[5] && strspn(dot + 5, "0123456789") == strlen(dot + 5);
}

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3u;
	return h;
}

static void put_le(unsigned char *p, uint64_t v, unsigned bytes)
{
	for (unsigned i = 0; i < bytes; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < bytes; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* --- the self-checking pyc ----------------------------------------------- */

/* CPython's 16-byte header (timestamp-based: flags 0), then ours. */
static void pyc_fill(unsigned char *b, size_t size, uint64_t nonce)
{
	uint64_t rng = nonce;

	memcpy(b, pyc_magic, 4);
	put_le(b + 4, 0, 4);
	put_le(b + 8, (uint32_t)time(NULL), 4);
	put_le(b + 12, (uint32_t)size, 4);
	memcpy(b + 16, "KILL", 4);
	put_le(b + 20, (uint32_t)size, 4);
	put_le(b + 24, nonce, 8);
	for (size_t i = 32; i < size - 8; i++)
		b[i] = (i & 7) ? (unsigned char)(b[i - 1] + 1)
			       : (unsigned char)ks_next(&rng);
	put_le(b + size - 8, fnv1a(b, size - 8), 8);
}

__attribute__((format(printf, 3, 4)))
static int why_not(char *why, size_t len, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	vsnprintf(why, len, f, ap);
	va_end(ap);
	return -1;
}

static int pyc_verify(const unsigned char *b, size_t n, char *why, size_t len)
{
	if (n < PYC_MIN)
		return why_not(why, len, "%zu bytes: shorter than any pyc written", n);
	if (memcmp(b, pyc_magic, 4) || memcmp(b + 16, "KILL", 4))
		return why_not(why, len, "%zu bytes: not a pyc this test wrote", n);
	if (get_le(b + 20, 4) != n)
		return why_not(why, len, "%zu bytes of the %llu written", n,
			       (unsigned long long)get_le(b + 20, 4));
	if (get_le(b + n - 8, 8) != fnv1a(b, n - 8))
		return why_not(why, len, "%zu bytes, as written, but their hash "
			       "is wrong: torn", n);
	return 0;
}

int ks_pyc_check(int dfd, const char *name, char *why, size_t len)
{
	int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;
	unsigned char *b;
	ssize_t got;
	int r;

	if (fd < 0)
		return why_not(why, len, "cannot open: %s", strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > PYC_MAX) {
		close(fd);
		return why_not(why, len, "not a regular file of at most %u bytes",
			       PYC_MAX);
	}
	b = malloc((size_t)st.st_size + 1);
	if (!b)
		abort();
	got = pread(fd, b, (size_t)st.st_size, 0);
	close(fd);
	r = got != st.st_size ? why_not(why, len, "short read")
	    : pyc_verify(b, (size_t)got, why, len);
	free(b);
	return r;
}

/* --- the workers ---------------------------------------------------------- */

__attribute__((format(printf, 3, 4)))
static void log_line(struct worker *wk, int fd, const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	if (vdprintf(fd, f, ap) < 0)
		wk->log_failed = true;
	va_end(ap);
}

/* Write then log: only what exists is ever looked for. */
static void user_file(struct worker *wk, const char *dir, const char *name,
		      size_t size, bool pyc)
{
	char path[PATH_MAX];
	unsigned char *b = malloc(size);
	int fd;

	if (!b)
		abort();
	fmt(path, sizeof path, "%s/%s", dir, name);
	if (pyc) {
		pyc_fill(b, size, ks_next(&wk->rng));
	} else {
		for (size_t i = 0; i < size; i++)
			b[i] = (unsigned char)('a' + (i + wk->serial) % 26);
		b[size - 1] = '\n';
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd >= 0 && write(fd, b, size) == (ssize_t)size && close(fd) == 0)
		log_line(wk, wk->user_log, "%s\t%zu\t%016llx\n", path, size,
			 (unsigned long long)fnv1a(b, size));
	else if (fd >= 0)
		close(fd);
	wk->count[KS_USER]++;
	free(b);
}

/* CPython's way: an O_EXCL "<name>.<digits>", written, renamed. */
static int write_pyc(struct worker *wk, const char *cache, const char *stem,
		     size_t size)
{
	char final[PATH_MAX], tmp[PATH_MAX + 32];
	unsigned char *b = malloc(size);
	int fd, r = 0;

	if (!b)
		abort();
	pyc_fill(b, size, ks_next(&wk->rng));
	fmt(final, sizeof final, "%s/%s.cpython-311.pyc", cache, stem);
	fmt(tmp, sizeof tmp, "%s.%d%u", final, (int)getpid(), ++wk->serial);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(b);
		return -errno;
	}
	if (write(fd, b, size) != (ssize_t)size)
		r = -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, final) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	free(b);
	return r;
}

static bool in_relocating_root(const struct worker *wk, const char *dir)
{
	char rel[PATH_MAX];
	fmt(rel, sizeof rel, "%s/" KS_REL "/", wk->w->dir);
	return !strncmp(dir, rel, strlen(rel));
}

/* n pycs in dir/__pycache__; the first a big one now and then. */
static void cache(struct worker *wk, const char *dir, unsigned n, bool big)
{
	char cache[PATH_MAX], stem[32];
	bool log = in_relocating_root(wk, dir);

	fmt(cache, sizeof cache, "%s/__pycache__", dir);
	if (mkdir(cache, 0777) < 0 && errno != EEXIST)
		return;
	wk->count[KS_CACHES]++;
	for (unsigned i = 0; i < n; i++) {
		size_t size = PYC_MIN + rnd(wk, 3000);
		if (big && i == 0) {
			size = BIG_MIN + rnd(wk, BIG_SPAN);
			fmt(stem, sizeof stem, "big%u", rnd(wk, 2));
		} else {
			fmt(stem, sizeof stem, "mod%u", rnd(wk, 10));
		}
		if (write_pyc(wk, cache, stem, size) < 0)
			continue;
		wk->count[KS_PYCS]++;
		wk->count[KS_BIG] += big && i == 0;
		if (log)
			log_line(wk, wk->pyc_log, "%s/%s.cpython-311.pyc\n", dir, stem);
	}
}

static const char *pick_root(struct worker *wk)
{
	return rnd(wk, 2) ? KS_DEL : KS_REL;
}

static void pick_dir(struct worker *wk, char *buf, size_t len)
{
	char sub[64];
	ks_dir(sub, sizeof sub, wk->idx, rnd(wk, KS_DIRS));
	fmt(buf, len, "%s/%s/%s", wk->w->dir, pick_root(wk), sub);
}

static void op_cache(struct worker *wk)
{
	char dir[PATH_MAX];
	pick_dir(wk, dir, sizeof dir);
	cache(wk, dir, 1 + rnd(wk, 8), wk->w->big &&
	      in_relocating_root(wk, dir) && rnd(wk, 10) == 0);
}

/* mkdir -p of a fresh chain, a cache at the bottom: the crawl of new
 * directories, and of ones made while the daemon is dead. */
static void op_tree(struct worker *wk)
{
	char dir[PATH_MAX];
	fmt(dir, sizeof dir, "%s/%s/w%u/n%08x-%u", wk->w->dir, pick_root(wk),
	    wk->idx, (uint32_t)wk->w->seed, ++wk->serial);
	if (mkdir(dir, 0777) < 0)
		return;
	strcat(dir, "/a");
	mkdir(dir, 0777);
	strcat(dir, "/b");
	if (mkdir(dir, 0777) < 0)
		return;
	wk->count[KS_TREES]++;
	cache(wk, dir, 1 + rnd(wk, 3), false);
}

static void op_user(struct worker *wk, bool pyc)
{
	char dir[PATH_MAX], name[64];
	if (rnd(wk, 8) == 0)
		fmt(dir, sizeof dir, "%s/" KS_TOG, wk->w->dir);
	else
		pick_dir(wk, dir, sizeof dir);
	fmt(name, sizeof name, "%s-%u-%08x-%u.%s", pyc ? "legacy" : "user",
	    wk->idx, (uint32_t)wk->w->seed, ++wk->serial, pyc ? "pyc" : "py");
	user_file(wk, dir, name, pyc ? PYC_MIN + rnd(wk, 500) : 1 + rnd(wk, 300),
		  pyc);
}

/* A cache that holds a user file: it stays, and so must the file. */
static void op_foreign(struct worker *wk)
{
	char dir[PATH_MAX], sub[64], name[64];
	ks_foreign_dir(sub, sizeof sub, wk->idx, rnd(wk, KS_FOREIGN_DIRS));
	fmt(dir, sizeof dir, "%s/%s/%s/__pycache__", wk->w->dir, pick_root(wk),
	    sub);
	if (mkdir(dir, 0777) < 0 && errno != EEXIST)
		return;
	fmt(name, sizeof name, "notes-%u-%08x-%u.txt", wk->idx,
	    (uint32_t)wk->w->seed, ++wk->serial);
	user_file(wk, dir, name, 1 + rnd(wk, 200), false);
	*strrchr(dir, '/') = '\0';
	cache(wk, dir, 1 + rnd(wk, 3), false);
}

static void remove_stage(const char *stage)
{
	DIR *d = opendir(stage);
	char path[PATH_MAX];

	for (struct dirent *de; d && (de = readdir(d));) {
		if (de->d_name[0] == '.')
			continue;
		fmt(path, sizeof path, "%s/%s", stage, de->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(stage);
}

/*
 * A whole cache moved into place, as tar, git or mv make one: the reaper
 * then has many files to take at once, and a kill lands in the middle.
 */
static void op_moved_cache(struct worker *wk)
{
	char dir[PATH_MAX], stage[PATH_MAX], name[64];
	unsigned n = 50 + rnd(wk, 250);

	ks_moved_dir(name, sizeof name, wk->idx, rnd(wk, KS_MOVED_DIRS));
	fmt(dir, sizeof dir, "%s/%s/%s", wk->w->dir, pick_root(wk), name);
	fmt(stage, sizeof stage, "%s/stage-%08x-%u", dir, (uint32_t)wk->w->seed,
	    ++wk->serial);
	if (mkdir(stage, 0777) < 0)
		return;
	for (unsigned i = 0; i < n; i++) {
		fmt(name, sizeof name, "m%u", i);
		write_pyc(wk, stage, name, PYC_MIN + rnd(wk, 2000));
	}
	fmt(name, sizeof name, "%s/__pycache__", dir);
	if (renameat2(AT_FDCWD, stage, AT_FDCWD, name, RENAME_NOREPLACE) < 0) {
		remove_stage(stage);
		return;
	}
	wk->count[KS_CACHES]++;
	wk->count[KS_PYCS] += n;
	for (unsigned i = 0; i < n && in_relocating_root(wk, dir); i++)
		log_line(wk, wk->pyc_log, "%s/m%u.cpython-311.pyc\n", dir, i);
}

static void worker_step(struct worker *wk)
{
	unsigned pick = rnd(wk, 100);

	if (pick < 3)
		op_moved_cache(wk);
	else if (pick < 72)
		op_cache(wk);
	else if (pick < 77)
		op_tree(wk);
	else if (pick < 87)
		op_user(wk, false);
	else if (pick < 92)
		op_user(wk, true);
	else
		op_foreign(wk);
}

static int open_log(const struct ks_world *w, const char *kind, unsigned idx)
{
	char path[PATH_MAX];
	fmt(path, sizeof path, "%s/" KS_LOG_DIR "/%s-%u", w->dir, kind, idx);
	return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

int ks_worker(const struct ks_world *w, unsigned idx, struct ks_shared *s)
{
	struct worker wk = {
		.w = w, .s = s, .idx = idx, .count = s->count[idx],
		.rng = w->seed ^ (0x5851f42d4c957f2du * (idx + 1)),
	};

	/* A test that dies must not leave a storm behind; a test that waits
	 * for the moment to kill must get the CPU at once. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	(void)!nice(10);
	wk.user_log = open_log(w, "user", idx);
	wk.pyc_log = open_log(w, "pyc", idx);
	if (wk.user_log < 0 || wk.pyc_log < 0)
		return 1;
	while (!s->stop)
		worker_step(&wk);
	close(wk.user_log);
	close(wk.pyc_log);
	return wk.log_failed ? 1 : 0;
}

/* --- the toggler ---------------------------------------------------------- */

/* pycachectl verb tog; its exit status, -1 when it hung. */
static int ctl(const struct ks_world *w, const char *verb)
{
	char tog[PATH_MAX];
	int64_t end = ks_now_ms() + CTL_MS;
	pid_t pid;
	int st;

	fmt(tog, sizeof tog, "%s/" KS_TOG, w->dir);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		char log[PATH_MAX];
		fmt(log, sizeof log, "%s/" KS_LOG_DIR "/toggler", w->dir);
		int out = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (out < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
			_exit(126);
		execl(w->ctl_bin, w->ctl_bin, "--socket", w->socket, verb, tog,
		      (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (ks_now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return -1;
		}
		ks_sleep_ms(1);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

char *ks_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf = NULL;
	size_t n = 0, cap = 0;
	ssize_t got;

	if (fd < 0)
		return NULL;
	do {
		if (n + 4097 > cap) {
			cap = cap ? 2 * cap : 8192;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		got = read(fd, buf + n, cap - n - 1);
		n += got > 0 ? (size_t)got : 0;
	} while (got > 0);
	close(fd);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

/* The state file as a reader sees it between two saves. */
static void check_state(const struct ks_world *w, uint64_t *count)
{
	char why[256], path[PATH_MAX];
	char *text = ks_read_file(w->state, NULL);
	int fd;

	if (!text || ks_state_parse(text, NULL, why, sizeof why) == 0) {
		free(text);
		return;
	}
	/* The first bad version is kept for the report. */
	if (count[KS_STATE_BAD]++ == 0) {
		fmt(path, sizeof path, "%s/" KS_LOG_DIR "/state-bad", w->dir);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dprintf(fd, "%s\n----\n%s", why, text);
			close(fd);
		}
	}
	free(text);
}

int ks_toggler(const struct ks_world *w, struct ks_shared *s)
{
	uint64_t *count = s->count[w->workers];
	uint64_t rng = w->seed ^ 0x7f4a7c159e3779b9u;
	bool added = ks_next(&rng) & 1;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	while (!s->stop) {
		int st = ctl(w, added ? "remove" : "add");
		/* Refused means it already was as asked: flip all the same. */
		added = !added;
		count[st == 0 ? KS_CTL_OK : KS_CTL_FAILED]++;
		check_state(w, count);
		ks_sleep_ms(1 + (unsigned)(ks_next(&rng) % 15));
	}
	return 0;
}

/* --- the state file ------------------------------------------------------- */

static int parse_root_line(const char *line, size_t len, char **roots)
{
	const char *path = len < 6 ? NULL : memchr(line + 5, ' ', len - 5);
	size_t have, plen;

	if (!path || strncmp(line, "root ", 5) || path[1] != '/')
		return -1;
	if (!roots)
		return 0;
	have = *roots ? strlen(*roots) : 0;
	plen = len - (size_t)(path + 1 - line);
	*roots = realloc(*roots, have + plen + 2);
	if (!*roots)
		abort();
	memcpy(*roots + have, path + 1, plen);
	(*roots)[have + plen] = '\n';
	(*roots)[have + plen + 1] = '\0';
	return 0;
}

static int state_parse(const char *text, char **roots, char *why, size_t len)
{
	const char *p = text;
	unsigned line = 0;
	bool ended = false;

	if (!*text)
		return why_not(why, len, "empty");
	while (*p) {
		size_t n = strcspn(p, "\n");
		line++;
		if (p[n] != '\n')
			return why_not(why, len, "line %u has no newline: cut short", line);
		if (ended)
			return why_not(why, len, "line %u follows \"end\"", line);
		if (line == 1 && (n != 16 || strncmp(p, "pycached-roots 1", 16)))
			return why_not(why, len, "line 1 is not \"pycached-roots 1\"");
		else if (n == 3 && !strncmp(p, "end", 3))
			ended = true;
		else if (line > 1 && parse_root_line(p, n, roots) < 0)
			return why_not(why, len, "line %u is not a root", line);
		p += n + 1;
	}
	return ended ? 0 : why_not(why, len, "no \"end\" line: cut short");
}

int ks_state_parse(const char *text, char **roots, char *why, size_t len)
{
	int r;

	if (roots)
		*roots = NULL;
	r = state_parse(text, roots, why, len);
	if (r < 0 && roots) {
		free(*roots);
		*roots = NULL;
	}
	return r;
}
