#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/openat2.h>
#include <unistd.h>

#include "reaper.h"
#include "watch-internal.h"

/* wds come from a cyclic allocator, so they are sparse: hash them. */
static size_t slot_of(int wd, size_t cap)
{
	return ((uint32_t)wd * 2654435761u) & (cap - 1);
}

static int table_grow(struct watcher *w)
{
	size_t cap = w->table_cap ? w->table_cap * 2 : 1024;
	struct dir **t = calloc(cap, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (size_t i = 0; i < w->table_cap; i++) {
		struct dir *d = w->table[i];
		size_t s;

		if (!d)
			continue;
		for (s = slot_of(d->wd, cap); t[s]; s = (s + 1) & (cap - 1))
			;
		t[s] = d;
	}
	free(w->table);
	w->table = t;
	w->table_cap = cap;
	return 0;
}

int tree_table_insert(struct watcher *w, struct dir *d)
{
	size_t s;

	/* Load stays under 1/2 so that probes stay short. */
	if ((w->table_len + 1) * 2 > w->table_cap) {
		int r = table_grow(w);

		if (r < 0)
			return r;
	}
	for (s = slot_of(d->wd, w->table_cap); w->table[s];
	     s = (s + 1) & (w->table_cap - 1))
		;
	w->table[s] = d;
	w->table_len++;
	w->stats.watches++;
	return 0;
}

struct dir *tree_table_find(const struct watcher *w, int wd)
{
	if (!w->table_cap)
		return NULL;
	for (size_t s = slot_of(wd, w->table_cap); w->table[s];
	     s = (s + 1) & (w->table_cap - 1)) {
		if (w->table[s]->wd == wd)
			return w->table[s];
	}
	return NULL;
}

void tree_table_remove(struct watcher *w, struct dir *d)
{
	size_t mask = w->table_cap - 1, s, j;

	if (!w->table_cap)
		return;
	for (s = slot_of(d->wd, w->table_cap); w->table[s] != d; s = (s + 1) & mask)
		if (!w->table[s])
			return;
	/* Backward-shift deletion: no tombstones to sweep later. */
	for (j = (s + 1) & mask; w->table[j]; j = (j + 1) & mask) {
		size_t home = slot_of(w->table[j]->wd, w->table_cap);

		if (((j - home) & mask) >= ((j - s) & mask)) {
			w->table[s] = w->table[j];
			s = j;
		}
	}
	w->table[s] = NULL;
	w->table_len--;
	w->stats.watches--;
}

static void link_child(struct dir *parent, struct dir *d)
{
	d->parent = parent;
	d->prev = NULL;
	d->next = parent->child;
	if (parent->child)
		parent->child->prev = d;
	parent->child = d;
}

static void unlink_child(struct dir *d)
{
	if (!d->parent)
		return;
	if (d->prev)
		d->prev->next = d->next;
	else
		d->parent->child = d->next;
	if (d->next)
		d->next->prev = d->prev;
	d->parent = d->next = d->prev = NULL;
}

struct dir *tree_node_new(struct root *r, struct dir *parent, const char *name)
{
	size_t len = strlen(name);
	struct dir *d = calloc(1, sizeof(*d) + len + 1);

	if (!d)
		return NULL;
	memcpy(d->name, name, len + 1);
	d->root = r;
	d->wd = -1;
	if (parent)
		link_child(parent, d);
	return d;
}

struct dir *tree_find_child(const struct dir *parent, const char *name)
{
	for (struct dir *c = parent->child; c; c = c->next)
		if (!strcmp(c->name, name))
			return c;
	return NULL;
}

/* Point everything that referred to old at n instead. */
static void replace_node(struct watcher *w, struct dir *old, struct dir *n)
{
	struct root *r = old->root;

	if (n->prev)
		n->prev->next = n;
	else if (n->parent)
		n->parent->child = n;
	if (n->next)
		n->next->prev = n;
	for (struct dir *c = n->child; c; c = c->next)
		c->parent = n;
	if (n->wd >= 0) {
		tree_table_remove(w, old);
		tree_table_insert(w, n);
	}
	for (size_t i = 0; i < r->n_unwatched; i++)
		if (r->unwatched[i] == old)
			r->unwatched[i] = n;
	/* Pending crawl items under it must follow it, not be dropped. */
	if (old->flags & DIR_F_HAS_REF)
		dirref_retarget(w, old, n);
	if (w->move.node == old)
		w->move.node = n;
}

/* Rename in place when the allocation has room, else move to a new one. */
static struct dir *set_name(struct watcher *w, struct dir *d, const char *name)
{
	size_t len = strlen(name);
	struct dir *n;

	if (malloc_usable_size(d) >= sizeof(*d) + len + 1) {
		memcpy(d->name, name, len + 1);
		return d;
	}
	n = malloc(sizeof(*n) + len + 1);
	if (!n)
		return NULL;
	memcpy(n, d, sizeof(*n));
	memcpy(n->name, name, len + 1);
	replace_node(w, d, n);
	free(d);
	return n;
}

int tree_rename(struct dir *d, struct dir *new_parent, const char *name,
		struct dir **out)
{
	struct watcher *w = d->root->w;

	if (strcmp(d->name, name)) {
		d = set_name(w, d, name);
		if (!d)
			return -ENOMEM;
	}
	unlink_child(d);
	link_child(new_parent, d);
	*out = d;
	return 0;
}

bool tree_is_ancestor(const struct dir *a, const struct dir *d)
{
	for (; d; d = d->parent)
		if (d == a)
			return true;
	return false;
}

static void free_node(struct watcher *w, struct dir *d)
{
	if (d->wd >= 0) {
		tree_table_remove(w, d);
		inotify_rm_watch(w->fd, d->wd);
		d->root->stats.dirs_watched--;
	} else if (d->flags & DIR_F_UNWATCHED) {
		watch_unwatched_del(w, d);
	}
	if (d->flags & DIR_F_HAS_REF)
		dirref_detach(w, d);
	if (w->move.node == d)
		w->move.node = NULL;
	free(d);
}

void tree_drop(struct watcher *w, struct dir *d)
{
	unlink_child(d);
	/* Post-order without recursion: always free a leaf. */
	for (struct dir *c = d; c;) {
		struct dir *up;

		while (c->child)
			c = c->child;
		up = c == d ? NULL : c->parent;
		unlink_child(c);
		free_node(w, c);
		c = up;
	}
}

int tree_openat2(int dirfd, const char *path, uint64_t resolve)
{
	struct open_how how = {
		.flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
		.resolve = resolve | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof(how));

	return fd < 0 ? -errno : (int)fd;
}

/* d's path below its root, "a/b/c" ("." for the top). Caller frees. */
static char *relative_path(const struct dir *d)
{
	size_t len = 2;
	char *p, *end;

	for (const struct dir *c = d; c->parent; c = c->parent)
		len += strlen(c->name) + 1;
	p = malloc(len);
	if (!p)
		return NULL;
	if (!d->parent)
		return strcpy(p, ".");
	end = p + len - 2;
	*end = '\0';
	for (const struct dir *c = d; c->parent; c = c->parent) {
		size_t n = strlen(c->name);

		end -= n;
		memcpy(end, c->name, n);
		if (c->parent->parent)
			*--end = '/';
	}
	return memmove(p, end, strlen(end) + 1);
}

/*
 * One openat2() below the root, refusing symlinks and mount crossings; the
 * component walk below is the fallback (old kernels, very deep paths).
 */
static int open_below(int root_fd, const struct dir *d)
{
	char *rel = relative_path(d);
	int fd;

	if (!rel)
		return -ENOMEM;
	fd = tree_openat2(root_fd, rel, RESOLVE_BENEATH | RESOLVE_NO_XDEV);
	free(rel);
	return fd;
}

/* The fallback: one openat(O_NOFOLLOW) per component. */
static int walk_below(int root_fd, const struct dir *d)
{
	const struct dir **chain;
	size_t depth = 0;
	int fd;

	for (const struct dir *c = d; c->parent; c = c->parent)
		depth++;
	chain = malloc((depth + 1) * sizeof(*chain));
	if (!chain)
		return -ENOMEM;
	depth = 0;
	for (const struct dir *c = d; c->parent; c = c->parent)
		chain[depth++] = c;
	fd = openat(root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	for (size_t i = depth; fd >= 0 && i-- > 0;) {
		int next = openat(fd, chain[i]->name,
				  O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	free(chain);
	return fd < 0 ? -errno : fd;
}

int tree_open(const struct dir *d)
{
	int root = watch_root_open(d->root), fd, r;
	uint64_t mnt_id, ino;

	if (root < 0)
		return root;
	fd = open_below(root, d);
	if (fd == -ENOSYS || fd == -ENAMETOOLONG || fd == -E2BIG)
		fd = walk_below(root, d);
	close(root);
	if (fd < 0)
		return fd;
	/* The names are a cache: only the inode says it is the watched dir. */
	r = reaper_fd_identity(fd, &mnt_id, &ino);
	if (r == 0 && (ino != d->ino || mnt_id != d->root->mnt_id))
		r = -ESTALE;
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

char *tree_path(const struct dir *d, const char *name)
{
	size_t len = strlen(d->root->conf.path) + 1;
	const struct dir *c;
	char *p, *end;

	for (c = d; c->parent; c = c->parent)
		len += strlen(c->name) + 1;
	if (name)
		len += strlen(name) + 1;
	p = malloc(len);
	if (!p)
		return NULL;
	end = p + len - 1;
	*end = '\0';
	if (name) {
		end -= strlen(name);
		memcpy(end, name, strlen(name));
		*--end = '/';
	}
	for (c = d; c->parent; c = c->parent) {
		end -= strlen(c->name);
		memcpy(end, c->name, strlen(c->name));
		*--end = '/';
	}
	memcpy(p, d->root->conf.path, strlen(d->root->conf.path));
	return p;
}

struct dir *tree_next(const struct dir *d, const struct dir *top,
		      bool skip_children)
{
	if (!skip_children && d->child)
		return d->child;
	for (; d != top; d = d->parent)
		if (d->next)
			return d->next;
	return NULL;
}
