#include "watch-roots.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crawl.h"
#include "drain.h"
#include "log.h"
#include "reaper.h"
#include "watch-fs.h"
#include "watch-internal.h"
#include "watch-wd.h"

/* --- anchors: how a missing root is waited for --------------------------- */

static bool root_shares_wd(const struct watcher *w, const struct root *r, int wd)
{
	for (const struct root *o = w->roots; o; o = o->next)
		if (o != r && o->anchor_wd == wd)
			return true;
	return false;
}

static void anchor_release(struct watcher *w, struct root *r)
{
	if (r->anchor_wd >= 0 && !root_shares_wd(w, r, r->anchor_wd) &&
	    !tree_by_wd(&w->tree, r->anchor_wd))
		inotify_rm_watch(w->fd, r->anchor_wd);
	r->anchor_wd = -1;
	free(r->anchor_next);
	r->anchor_next = NULL;
}

/* Wait, without polling, for `next` to appear in the directory at fd. */
static void anchor_set(struct watcher *w, struct root *r, int fd,
		       const char *next)
{
	int wd = watch_wd_add(w, fd, ANCHOR_MASK | IN_MASK_ADD);

	if (wd != r->anchor_wd)
		anchor_release(w, r);
	free(r->anchor_next);
	r->anchor_wd = wd < 0 ? -1 : wd;
	r->anchor_next = strdup(next);
	if (wd < 0)
		log_errno(wd, "cannot wait for root %s to appear", r->conf.path);
}

void roots_anchor_event(struct watcher *w, const struct inotify_event *ev)
{
	struct root *r, *next;

	for (r = w->roots; r; r = next) {
		next = r->next;
		if (r->anchor_wd != ev->wd)
			continue;
		if (ev->len && r->anchor_next && strcmp(ev->name, r->anchor_next))
			continue;
		roots_activate(w, r, true, NULL, NULL);
	}
}

/* --- found, lost ---------------------------------------------------------- */

static void set_missing(struct root *r, const char *reason)
{
	r->crawled = false;
	snprintf(r->reason, sizeof(r->reason), "%s", reason);
}

static void root_missing(struct watcher *w, struct root *r, int err, int anchor,
			 const char *next)
{
	set_missing(r, err == -ENOENT ? "it does not exist" :
		  err == -ENOTDIR || err == -ELOOP ?
		  "it is not a directory, or a symbolic link is on the way" :
		  strerror(-err));
	anchor_set(w, r, anchor, next);
	close(anchor);
}

static bool same_device(int a, int b)
{
	struct stat sa, sb;

	return b < 0 || (fstat(a, &sa) == 0 && fstat(b, &sb) == 0 &&
			 sa.st_dev == sb.st_dev);
}

void roots_activate(struct watcher *w, struct root *r, bool reap,
		    root_ready_cb cb, void *ud)
{
	char next[NAME_MAX + 1] = "";
	int anchor = -1, fd = watch_open_path(r->conf.path, &anchor, next, sizeof(next));
	bool missing = fd < 0 && anchor >= 0;
	uint64_t ino;
	struct job *j;
	int err = 0;

	r->want_activate = false;
	if (missing) {
		root_missing(w, r, fd, anchor, next);
		/* Watch, then check again: it may have appeared in between. */
		anchor = -1;
		fd = watch_open_path(r->conf.path, &anchor, next, sizeof(next));
		if (anchor >= 0)
			close(anchor);
	}
	if (fd < 0 && missing) {
		if (cb)
			cb(r, -ENOENT, ud);
		return;
	}
	if (fd < 0 || (err = reaper_fd_identity(fd, &r->mnt_id, &ino)) < 0 ||
	    !(j = crawl_job_new(w, r, reap, true, cb, ud))) {
		err = fd < 0 ? fd : err < 0 ? err : -ENOMEM;
		if (fd >= 0)
			close(fd);
		set_missing(r, strerror(-err));
		/* It is there, but could not be taken (ENOMEM, EMFILE): no
		 * event will say when it can, so the slow rescan tries again;
		 * an anchor would wait for a name that is already there. */
		anchor_release(w, r);
		watch_post_retry(w, r);
		if (cb)
			cb(r, err, ud);
		return;
	}
	anchor_release(w, r);
	if (r->tt.node && r->tt.node->ino != ino)
		tree_kill(&w->tree, r->tt.node);
	watch_root_let_go(r);
	r->active = true;
	r->ino = ino;
	r->stats.pays_copy = r->conf.mode == MODE_RELOCATE &&
			     !same_device(fd, w->settings.prefix_fd);
	close(fd);
	r->crawled = false;
	r->reason[0] = '\0';
	roots_mounts_note(w, r);
	crawl_push(w, j, NULL, -1, "");
	crawl_job_go(w, j);
}

/* --- mounts ----------------------------------------------------------------- */

/* The whole of /proc/self/mountinfo, NUL-terminated; NULL if unreadable. */
static char *read_mountinfo(void)
{
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	size_t len = 0, cap = 16 * 1024;
	char *buf = fd < 0 ? NULL : malloc(cap + 1), *n;
	ssize_t got = -1;

	while (buf) {
		got = read(fd, buf + len, cap - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		len += (size_t)got;
		if (len == cap) {
			if (!(n = realloc(buf, 2 * cap + 1)))
				break;
			buf = n;
			cap *= 2;
		}
	}
	if (fd >= 0)
		close(fd);
	if (got != 0) {
		free(buf);
		return NULL;
	}
	buf[len] = '\0';
	return buf;
}

/* Undo mountinfo's octal escapes (\040 for a space...) of field, in place. */
static void unescape_octal(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* The field of line (ending at end) after the first `skip`, or NULL. */
static const char *field(const char *line, const char *end, int skip,
			 size_t *len)
{
	const char *p = line, *q;

	for (int i = 0; i < skip; i++) {
		p = memchr(p, ' ', (size_t)(end - p));
		if (!p)
			return NULL;
		p++;
	}
	q = memchr(p, ' ', (size_t)(end - p));
	*len = (size_t)((q ? q : end) - p);
	return p;
}

/*
 * What is mounted on a directory of r's own mount strictly below it: a
 * hash of each such mount's id and mount point (FNV-1a), 0 when none.
 * Mounts on mounts (an automounted filesystem on its autofs trigger, say)
 * are left out: the crawl never enters the first one, and an automount
 * that comes and goes would have the root crawled each time. Each line
 * is "ID PARENT MAJ:MIN ROOT MOUNT_POINT ...", read within the line.
 */
static uint64_t mounts_below(const char *mountinfo, const struct root *r)
{
	const char *path = r->conf.path, *line = mountinfo;
	size_t plen = strlen(path);
	char point[PATH_MAX];
	uint64_t h = 0;

	while (line && *line) {
		const char *end = strchr(line, '\n'), *f;
		unsigned long long id, parent;
		size_t len;
		char *stop;

		if (!end)
			end = line + strlen(line);
		id = strtoull(line, &stop, 10);
		parent = stop < end ? strtoull(stop, &stop, 10) : 0;
		f = field(line, end, 4, &len);
		if (f && parent == r->mnt_id && len < sizeof(point)) {
			memcpy(point, f, len);
			point[len] = '\0';
			unescape_octal(point);
			if (!strncmp(point, path, plen) && point[plen] == '/') {
				uint64_t x = 1469598103934665603ull;

				for (const char *c = point; *c; c++)
					x = (x ^ (unsigned char)*c) * 1099511628211ull;
				/* Order-free: the table lists them as it likes. */
				h += (x ^ id) * 1099511628211ull;
			}
		}
		line = *end ? end + 1 : NULL;
	}
	return h;
}

void roots_mounts_note(struct watcher *w, struct root *r)
{
	char *text = read_mountinfo();

	if (text)
		r->mounts_below = mounts_below(text, r);
	free(text);
}

/*
 * No inotify event says that a filesystem was mounted over a root or
 * unmounted from under it (IN_UNMOUNT comes only for the tree that went,
 * and the root is then found again on what was below), nor that a
 * missing root appeared on a new mount. A root that names another
 * directory now is lost and found again; a missing one is looked for.
 *
 * Below a root, a mount is never entered; but one that comes hides a
 * watched directory, and one that goes uncovers a directory nobody
 * watches. Either way what is mounted below the root changed, and it is
 * crawled again (and swept: what was hidden may hold caches).
 */
void roots_mounts_changed(struct watcher *w)
{
	char *text = read_mountinfo();

	for (struct root *r = w->roots; r; r = r->next) {
		uint64_t below;
		int fd;

		if (r->dead)
			continue;
		if (!r->active) {
			r->want_activate = true;
			continue;
		}
		fd = watch_root_open(r);
		if (fd >= 0)
			close(fd);
		else if (fd != -ENOMEM && fd != -EMFILE && fd != -ENFILE) {
			watch_post_lost(w, r, "is another directory now (a mount "
					"changed)");
			continue;
		}
		if (!text)
			continue;
		below = mounts_below(text, r);
		if (below != r->mounts_below) {
			r->mounts_below = below;
			log_debug("a mount below %s changed: crawling it again",
				  r->conf.path);
			watch_post_rescan(w, r);
		}
	}
	free(text);
}

/* --- directories the kernel would not watch ----------------------------- */

uint64_t roots_max_watches(void)
{
	unsigned long long v = 0;
	FILE *f = fopen("/proc/sys/fs/inotify/max_user_watches", "re");

	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

void roots_warn_unwatched(struct root *r)
{
	unsigned long long max;

	r->want_warn = false;
	if (!r->tt.unwatched) {
		r->warned_unwatched = false;
		return;
	}
	if (r->warned_unwatched)
		return;
	r->warned_unwatched = true;
	max = roots_max_watches();
	log_warn("%s: %llu directories are not watched: the inotify watch limit "
		 "is reached (fs.inotify.max_user_watches = %llu). Raise it with "
		 "'sysctl fs.inotify.max_user_watches=%llu' (and a file in "
		 "/etc/sysctl.d/ to keep it); until then they are rescanned "
		 "every %d s", r->conf.path, (unsigned long long)r->tt.unwatched,
		 max, max ? max * 2 : 524288, UNWATCHED_RESCAN_MS / 1000);
}

/* Bounded per tick: every pushed parent holds an fd until it is crawled. */
#define RESCAN_BATCH 64

static void rescan_unwatched(struct watcher *w, struct root *r)
{
	const struct tree *t = &w->tree;
	struct job *j = crawl_job_new(w, r, true, false, NULL, NULL);
	size_t n = tree_unwatched_count(t), pushed = 0, k;
	size_t start = n ? r->unwatched_next % n : 0;

	if (!j)
		return;
	j->prune = true;
	/* Rotate through the index: each tick takes the next batch. */
	for (k = 0; k < n && pushed < RESCAN_BATCH; k++) {
		struct dir *u = tree_unwatched_at(t, (start + k) % n);
		struct dir *parent = dir_parent(&w->tree, u);
		int fd = -1;

		/* A crawl from the topmost unwatched node covers those below. */
		if (watch_root_of(w, u) != r || (parent && dir_wd(parent) < 0))
			continue;
		if (parent && (fd = watch_open_dir(w, parent)) < 0)
			continue;
		if (crawl_push(w, j, parent, fd, parent ? dir_name(u) : "") == 0)
			pushed++;
	}
	r->unwatched_next = n ? (start + k) % n : 0;
	crawl_job_go(w, j);
}

void roots_rescan_unwatched(struct watcher *w)
{
	for (struct root *r = w->roots; r; r = r->next) {
		if (r->want_retry) {
			r->want_retry = false;
			if (r->active)
				roots_recrawl(w, r, r->retry_reap);
			else if (!r->dead && r->anchor_wd < 0)
				r->want_activate = true;
		} else if (r->tt.unwatched && r->active) {
			rescan_unwatched(w, r);
		}
	}
}

/* --- added, removed, swept ------------------------------------------------ */

static bool path_within(const char *outer, const char *inner)
{
	size_t n = strlen(outer);

	return !strncmp(outer, inner, n) && (inner[n] == '/' || inner[n] == '\0');
}

static void conf_free(struct root_conf *c)
{
	for (size_t i = 0; c->excludes && i < c->n_excludes; i++)
		free(c->excludes[i]);
	free(c->excludes);
	free(c->path);
}

static int conf_copy(struct root_conf *dst, const struct root_conf *src)
{
	*dst = *src;
	dst->path = strdup(src->path);
	dst->excludes = calloc(src->n_excludes + 1, sizeof(char *));
	if (!dst->path || !dst->excludes)
		goto fail;
	for (size_t i = 0; i < src->n_excludes; i++)
		if (!(dst->excludes[i] = strdup(src->excludes[i])))
			goto fail;
	return 0;
fail:
	conf_free(dst);
	return -ENOMEM;
}

int roots_add(struct watcher *w, const struct root_conf *rc, root_ready_cb cb,
	      void *ud)
{
	struct root *r;

	for (r = w->roots; r; r = r->next) {
		if (!strcmp(r->conf.path, rc->path))
			return -EEXIST;
		if (path_within(r->conf.path, rc->path) ||
		    path_within(rc->path, r->conf.path))
			return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (conf_copy(&r->conf, rc) < 0) {
		free(r);
		return -ENOMEM;
	}
	r->w = w;
	r->anchor_wd = -1;
	r->turn_fd = -1;
	r->next = w->roots;
	w->roots = r;
	roots_activate(w, r, rc->sweep, cb, ud);
	return 0;
}

int roots_remove(struct watcher *w, const char *path)
{
	struct root **pp, *r = watcher_find_root(w, path);

	if (!r)
		return -ENOENT;
	/* Its jobs' callbacks may run here, and its drains finish: both
	 * still see it listed and reachable. */
	crawl_cancel_root(w, r);
	drain_forget(w, r);
	for (pp = &w->roots; *pp && *pp != r; pp = &(*pp)->next)
		;
	if (!*pp)
		return 0;   /* one of those callbacks removed it already */
	*pp = r->next;
	anchor_release(w, r);
	if (r->tt.node)
		tree_kill(&w->tree, r->tt.node);
	watch_root_let_go(r);
	r->dead = true;
	r->active = false;
	r->next = w->dead_roots;
	w->dead_roots = r;
	return 0;
}

void roots_reap(struct watcher *w)
{
	struct root **pp = &w->dead_roots;

	while (*pp) {
		struct root *r = *pp;

		if (r->pins) {
			pp = &r->next;
			continue;
		}
		*pp = r->next;
		for (size_t i = 0; i < HOT_MAX; i++)
			free(r->hot[i].path);
		conf_free(&r->conf);
		free(r);
	}
}

int roots_sweep(struct watcher *w, struct root *r, root_ready_cb cb, void *ud)
{
	struct job *j;

	/* Missing, or given up on after failed retries: look for it now. */
	if (!r->active) {
		if (r->dead)
			return -ENOENT;
		r->retries = 0;
		roots_activate(w, r, true, cb, ud);
		return 0;
	}
	r->n_avoid = 0;
	j = crawl_job_new(w, r, true, true, cb, ud);
	if (!j)
		return -ENOMEM;
	/* What the crawl will meet below it: a mount seen now that goes
	 * later must be seen to go (roots_mounts_changed()). */
	roots_mounts_note(w, r);
	w->stats.rescans++;
	r->want_rescan = false;
	crawl_push(w, j, NULL, -1, "");
	crawl_job_go(w, j);
	return 0;
}

void roots_recrawl(struct watcher *w, struct root *r, bool reap)
{
	struct job *j;

	if (!r->active)
		return;
	j = crawl_job_new(w, r, reap, true, NULL, NULL);
	if (!j) {
		watch_post_rescan(w, r);
		return;
	}
	crawl_push(w, j, NULL, -1, "");
	crawl_job_go(w, j);
}

/* --- the public getters --------------------------------------------------- */

struct root *watcher_find_root(struct watcher *w, const char *path)
{
	struct root *r;

	for (r = w->roots; r && strcmp(r->conf.path, path); r = r->next)
		;
	return r;
}

struct root *watcher_next_root(struct watcher *w, struct root *prev)
{
	/* A root removed meanwhile no longer knows its place: stop there. */
	if (prev && prev->dead)
		return NULL;
	return prev ? prev->next : w->roots;
}

const char *root_path(const struct root *r)
{
	return r->conf.path;
}

enum mode root_mode(const struct root *r)
{
	return r->conf.mode;
}

const struct root_conf *root_conf(const struct root *r)
{
	return &r->conf;
}

enum root_state root_state(const struct root *r)
{
	if (!r->active)
		return ROOT_MISSING;
	if (!r->crawled)
		return ROOT_CRAWLING;
	return r->tt.unwatched ? ROOT_DEGRADED : ROOT_ACTIVE;
}

const char *root_state_name(enum root_state s)
{
	static const char *const names[] = {
		[ROOT_CRAWLING] = "crawling",
		[ROOT_ACTIVE] = "active",
		[ROOT_DEGRADED] = "degraded",
		[ROOT_MISSING] = "missing",
	};

	return s <= ROOT_MISSING ? names[s] : "unknown";
}

const char *root_state_reason(const struct root *r)
{
	switch (root_state(r)) {
	case ROOT_MISSING:
		return r->reason[0] ? r->reason : NULL;
	case ROOT_DEGRADED:
		return "the inotify watch limit is reached";
	default:
		return NULL;
	}
}

const struct root_stats *root_stats(const struct root *r)
{
	/* The counts live in the tree; the root itself is never const. */
	struct root *m = (struct root *)r;

	m->stats.dirs_watched = r->tt.watched;
	m->stats.dirs_unwatched = r->tt.unwatched;
	return &m->stats;
}
