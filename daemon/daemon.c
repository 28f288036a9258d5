#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"
#include "prefix.h"
#include "relocate.h"
#include "state.h"
#include "watch.h"

/*
 * sd_notify(), without blocking on a manager that does not read:
 * libsystemd's sends on a blocking socket, and once the manager's queue is
 * full (net.unix.max_dgram_qlen datagrams, 10 here) the daemon would stop
 * in the middle of its work. STATUS= and WATCHDOG=1 that do not fit are
 * dropped (they come again); a state change (READY=1, RELOADING=1,
 * STOPPING=1), which the manager waits for, gets a second of room first.
 */
#define NOTIFY_WAIT_MS 1000

#ifdef HAVE_LIBSYSTEMD
static int send_now(int fd, const char *msg)
{
	return send(fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ?
	       -errno : 0;
}
#endif

static void notify(const char *msg)
{
#ifdef HAVE_LIBSYSTEMD
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = path ? strlen(path) : 0;
	bool state = strncmp(msg, "STATUS=", 7) && strncmp(msg, "WATCHDOG=", 9);
	int fd, r;

	if (len < 2 || len >= sizeof(sa.sun_path) ||
	    (path[0] != '/' && path[0] != '@'))
		return;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';   /* the abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	/* Connected, so that POLLOUT says whether the manager has room. */
	r = connect(fd, (struct sockaddr *)&sa,
		    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0 ?
	    -errno : send_now(fd, msg);
	if (r == -EAGAIN && state) {
		struct pollfd pfd = { .fd = fd, .events = POLLOUT };

		r = poll(&pfd, 1, NOTIFY_WAIT_MS) > 0 ? send_now(fd, msg) : -EAGAIN;
	}
	if (r < 0)
		log_debug("the service manager missed '%.20s': %s", msg,
			  strerror(-r));
	close(fd);
#else
	(void)msg;
#endif
}

void daemon_notify_status(struct daemon *d)
{
	char buf[256];
	uint64_t removed = 0;
	size_t roots = 0;

	for (struct root *r = watcher_next_root(d->watcher, NULL); r;
	     r = watcher_next_root(d->watcher, r)) {
		roots++;
		removed += root_stats(r)->caches_removed;
	}
	snprintf(buf, sizeof(buf), "STATUS=%zu root%s watched, %llu caches removed",
		 roots, roots == 1 ? "" : "s", (unsigned long long)removed);
	notify(buf);
}

/* STATUS= at most every few seconds, and only after something happened:
 * a one-shot timer, so an idle daemon has no timer at all. */
#define STATUS_INTERVAL_MS 2000

static void on_status_timer(uv_timer_t *t)
{
	daemon_notify_status(t->data);
}

static uint64_t bytes_relocated(const struct daemon *d)
{
	uint64_t sum = 0;

	for (struct root *r = watcher_next_root(d->watcher, NULL); r;
	     r = watcher_next_root(d->watcher, r))
		sum += root_stats(r)->bytes_relocated;
	return sum;
}

uint64_t daemon_cache_estimate(const struct daemon *d)
{
	uint64_t moved = bytes_relocated(d);

	/* A root that left took its counter along: then the count alone. */
	return d->prefix_bytes + (moved >= d->relocated_mark ?
				  moved - d->relocated_mark : 0);
}

void daemon_cache_counted(struct daemon *d, uint64_t bytes)
{
	d->prefix_bytes = bytes;
	d->relocated_mark = bytes_relocated(d);
}

/*
 * The prefix is counted by a walk only when the running estimate (last count
 * plus what was relocated since) passes the cap: between reaps this is a sum.
 */
void daemon_check_cache_size(struct daemon *d, bool recount)
{
	uint64_t cap = d->cfg.cache_max_size;
	struct prefix_result res;
	int r;

	if (!cap || d->prefix_fd < 0)
		return;
	if (!recount && daemon_cache_estimate(d) <= cap)
		return;
	r = prefix_evict(d->prefix_fd, cap, &res);
	/* On failure, count 0: the next walk waits for another cap's worth. */
	daemon_cache_counted(d, r < 0 ? 0 : res.bytes_left);
	if (r < 0) {
		if (r != -EPERM)
			log_errno(r, "cannot evict from %s", d->cfg.cache_dir);
		return;
	}
	if (res.files_removed)
		log_info("cache directory over cache_max_size: evicted %llu least "
			 "recently used files (%llu bytes)",
			 (unsigned long long)res.files_removed,
			 (unsigned long long)res.bytes_removed);
}

static void on_watcher_activity(struct watcher *w, void *ud)
{
	struct daemon *d = ud;

	daemon_check_cache_size(d, false);
	if (!uv_is_active((uv_handle_t *)&d->status_timer))
		uv_timer_start(&d->status_timer, on_status_timer,
			       STATUS_INTERVAL_MS, 0);
}

#ifdef HAVE_LIBSYSTEMD
static void on_watchdog(uv_timer_t *t)
{
	notify("WATCHDOG=1");
}
#endif

/* Ping at half the interval systemd gave us; no timer when it gave none. */
static void start_watchdog(struct daemon *d)
{
#ifdef HAVE_LIBSYSTEMD
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
		uint64_t ms = usec / 2000;

		uv_timer_start(&d->watchdog, on_watchdog, ms, ms);
		notify("WATCHDOG=1");
	}
#else
	(void)d;
#endif
}

/*
 * READY=1 once every root is crawled and swept: at start, and after each
 * RELOADING=1 (ExecReload= waits for it), so that "reload done" also means
 * the new roots are watched.
 */
static void send_ready(struct daemon *d)
{
	if (d->ready)
		return;
	d->ready = true;
	notify("READY=1");
	daemon_notify_status(d);
	log_info("ready: every root is watched");
}

static void on_watcher_idle(struct watcher *w, void *ud)
{
	send_ready(ud);
}

static bool same_conf(const struct root_conf *a, const struct root_conf *b)
{
	if (a->mode != b->mode || a->sweep != b->sweep ||
	    a->n_excludes != b->n_excludes)
		return false;
	for (size_t i = 0; i < a->n_excludes; i++)
		if (strcmp(a->excludes[i], b->excludes[i]))
			return false;
	return true;
}

static const struct root_conf *find_conf(const struct root_conf *roots,
					 size_t n, const char *path)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(roots[i].path, path))
			return &roots[i];
	return NULL;
}

static void drop_departed(struct daemon *d, const struct root_conf *roots,
			  size_t n)
{
	struct root *r, *next;

	for (r = watcher_next_root(d->watcher, NULL); r; r = next) {
		const struct root_conf *want;

		next = watcher_next_root(d->watcher, r);
		want = find_conf(roots, n, root_path(r));
		if (want && same_conf(want, root_conf(r)))
			continue;
		log_info("%s root %s", want ? "re-crawling changed" : "no longer watching",
			 root_path(r));
		watcher_remove_root(d->watcher, root_path(r));
	}
}

static void on_root_ready(struct root *r, int status, void *ud)
{
	const struct root_stats *s = root_stats(r);

	if (status == -ENOENT)
		log_warn("root %s: %s; it is watched for as soon as it appears",
			 root_path(r), root_state_reason(r));
	else if (status == 0)
		log_info("watching %s: %llu directories, %llu caches removed",
			 root_path(r), (unsigned long long)s->dirs_watched,
			 (unsigned long long)s->caches_removed);
}

static bool any_relocating(const struct root_conf *roots, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (roots[i].mode == MODE_RELOCATE)
			return true;
	return false;
}

static void push_settings(struct daemon *d)
{
	struct watch_settings ws = {
		.skip_venvs = d->cfg.skip_venvs,
		.excludes = d->cfg.excludes,
		.n_excludes = d->cfg.n_excludes,
		.prefix_fd = d->prefix_fd,
	};
	int r = watcher_set_settings(d->watcher, &ws);

	if (r < 0)
		log_errno(r, "cannot apply the exclude settings; the previous ones "
			  "stay in force");
}

/*
 * A daemon killed in the middle of a copy left its temporary in the prefix;
 * no other process would ever remove it. Once per prefix this process opens
 * (relocation runs on this thread: none of this process's is in progress).
 */
static void clean_prefix(struct daemon *d, const struct stat *st)
{
	struct prefix_result res;
	int r = prefix_clean(d->prefix_fd, &res);

	d->cleaned_dev = st->st_dev;
	d->cleaned_ino = st->st_ino;
	if (r < 0)
		log_errno(r, "cannot look for unfinished copies in %s",
			  d->cfg.cache_dir);
	else if (res.files_removed)
		log_info("removed %llu unfinished copies (%llu bytes) that a stopped "
			 "pycached left in %s", (unsigned long long)res.files_removed,
			 (unsigned long long)res.bytes_removed, d->cfg.cache_dir);
}

/*
 * (Re)open the relocation prefix, creating it as needed without following
 * symlinks. Without it, relocating roots fall back to deleting, loudly.
 */
void daemon_use_prefix(struct daemon *d, bool needed)
{
	struct stat st;
	int root, fd;

	if (d->prefix_fd >= 0)
		close(d->prefix_fd);
	d->prefix_fd = -1;
	if (!needed || !d->cfg.cache_dir) {
		push_settings(d);
		return;
	}
	root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	fd = root < 0 ? -errno : relocate_open_dir(root, d->cfg.cache_dir);
	if (root >= 0)
		close(root);
	if (fd >= 0 && (fstat(fd, &st) < 0 || st.st_uid != geteuid() ||
			(st.st_mode & S_IWOTH))) {
		close(fd);
		fd = -EPERM;
	}
	if (fd < 0) {
		log_errno(fd, "cannot use the cache directory %s: relocating roots "
			  "delete their caches instead", d->cfg.cache_dir);
		push_settings(d);
		return;
	}
	d->prefix_fd = fd;
	push_settings(d);
	if (prefix_claim(fd) < 0)
		log_warn("the cache directory %s is not empty and has no CACHEDIR.TAG: "
			 "bytecode is relocated there, but prune and cache_max_size "
			 "will not touch it", d->cfg.cache_dir);
	else if (st.st_dev != d->cleaned_dev || st.st_ino != d->cleaned_ino)
		clean_prefix(d, &st);
	daemon_check_cache_size(d, true);
}

int daemon_apply_roots(struct daemon *d)
{
	struct root_conf *roots;
	size_t n;
	int ret = state_merge_roots(d->state, &d->cfg, &roots, &n);

	if (ret < 0) {
		log_errno(ret, "cannot list the roots to watch");
		return ret;
	}
	daemon_use_prefix(d, any_relocating(roots, n));
	drop_departed(d, roots, n);
	for (size_t i = 0; i < n; i++) {
		int r;

		if (watcher_find_root(d->watcher, roots[i].path))
			continue;
		r = watcher_add_root(d->watcher, &roots[i], on_root_ready, d);
		if (r < 0) {
			log_errno(r, "cannot watch %s", roots[i].path);
			ret = r;
		}
	}
	state_roots_free(roots, n);
	if (!watcher_busy(d->watcher))
		send_ready(d);
	return ret;
}

static void log_lines(enum log_level level, const char *text)
{
	const char *p = text;

	while (p && *p) {
		const char *nl = strchr(p, '\n');
		int len = nl ? (int)(nl - p) : (int)strlen(p);

		log_msg(level, "%.*s", len, p);
		p = nl ? nl + 1 : NULL;
	}
}

static void record_reload(struct daemon *d, int status, char *errors)
{
	free(d->last_reload.errors);
	d->last_reload.when = time(NULL);
	d->last_reload.status = status;
	d->last_reload.errors = errors && *errors ? errors : NULL;
	if (!d->last_reload.errors)
		free(errors);
}

int daemon_reload(struct daemon *d, FILE *errs)
{
	char buf[64], *text = NULL;
	size_t len = 0;
	struct config nc;
	FILE *mem = open_memstream(&text, &len);
	int r;

	if (!mem)
		return -ENOMEM;
	snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)(uv_hrtime() / 1000));
	notify(buf);
	d->ready = false;
	r = config_load(&nc, d->config_file, d->config_explicit, mem);
	fclose(mem);
	if (errs && text)
		fputs(text, errs);
	if (r < 0) {
		log_lines(LOG_LEVEL_ERROR, text);
		log_error("reload failed: the configuration in force is unchanged");
	} else {
		struct config old = d->cfg;

		if (d->state)
			state_reload(d->state);
		d->cfg = nc;
		log_set_level(d->cfg.log_level);
		daemon_apply_roots(d);
		config_finish(&old);
		log_info("configuration reloaded: %zu roots", d->cfg.n_roots);
	}
	record_reload(d, r, text);
	/* Else the watcher's idle callback sends it when the crawl ends. */
	if (!watcher_busy(d->watcher))
		send_ready(d);
	return r;
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct daemon *d = h->data;

	if (signum == SIGHUP) {
		daemon_reload(d, NULL);
		return;
	}
	log_info("%s received: exiting", strsignal(signum));
	daemon_stop(d, 0);
}

int daemon_init(struct daemon *d, uv_loop_t *loop)
{
	int r;

	d->loop = loop;
	d->prefix_fd = -1;
	d->start_usec = uv_hrtime() / 1000;
	d->start_time = time(NULL);
	r = watcher_new(loop, &d->watcher);
	if (r < 0)
		return r;
	watcher_on_idle(d->watcher, on_watcher_idle, d);
	watcher_on_activity(d->watcher, on_watcher_activity, d);
	uv_timer_init(loop, &d->watchdog);
	uv_timer_init(loop, &d->status_timer);
	d->watchdog.data = d->status_timer.data = d;
	start_watchdog(d);
	uv_signal_init(loop, &d->sig_term);
	uv_signal_init(loop, &d->sig_int);
	uv_signal_init(loop, &d->sig_hup);
	d->sig_term.data = d->sig_int.data = d->sig_hup.data = d;
	uv_signal_start(&d->sig_term, on_signal, SIGTERM);
	uv_signal_start(&d->sig_int, on_signal, SIGINT);
	uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
	return 0;
}

void daemon_stop(struct daemon *d, int status)
{
	if (!d->watcher)
		return;
	notify("STOPPING=1");
	d->exit_status = status;
	daemon_stop_server(d);
	watcher_destroy(d->watcher);
	d->watcher = NULL;
	uv_close((uv_handle_t *)&d->sig_term, NULL);
	uv_close((uv_handle_t *)&d->sig_int, NULL);
	uv_close((uv_handle_t *)&d->sig_hup, NULL);
	uv_close((uv_handle_t *)&d->watchdog, NULL);
	uv_close((uv_handle_t *)&d->status_timer, NULL);
}

void daemon_finish(struct daemon *d)
{
	state_destroy(d->state);
	d->state = NULL;
	if (d->prefix_fd >= 0)
		close(d->prefix_fd);
	d->prefix_fd = -1;
	config_finish(&d->cfg);
	free(d->config_file);
	free(d->socket_path);
	free(d->last_reload.errors);
}
