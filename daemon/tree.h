/*
 * The watcher's model of the directories under its roots: nodes linked
 * parent/children, indexed by inotify watch descriptor, and the index of
 * nodes whose watch the kernel refused. A data structure and nothing else:
 * no system calls, no policy, no knowledge of crawls, events or roots
 * beyond the struct tree_top each root embeds. Loop thread only.
 *
 * LIFETIME — the one rule for struct dir (tree_check() verifies it):
 *
 *  - The tree owns every node. A node is never freed where it is dropped:
 *    tree_kill() unlinks a subtree, takes each node out of both indexes
 *    (handing its watch to the unwatch callback), marks it dead and puts it
 *    on the graveyard. tree_reap() frees the dead nodes nobody pins; the
 *    watcher calls it only when the outermost of its entry points is about
 *    to return to the loop (watch_leave() in watch.c).
 *  - So a struct dir * met during one loop callback is valid memory until
 *    that callback returns, whatever ran since. Whether it still stands for
 *    a directory is dir_alive(): a dead node has no parent, no children, no
 *    watch and no top, and every function here that links refuses it.
 *  - Whoever keeps a node across a return to the loop pins it (tree_pin(),
 *    tree_unpin(): a count) or keeps its (wd, inode) and looks it up again
 *    with tree_by_wd(). A pin keeps the memory, not the node alive.
 *  - A node never moves in memory: a rename that does not fit puts the name
 *    out of line.
 *  - Shape: a node hangs from exactly one top; its root is not stored in
 *    it but found from that top (tree_top_of()), so no node can name a
 *    root it has left. Names are unique among siblings and are never "",
 *    ".", ".." or hold '/'; tree_move() refuses to put a node under itself
 *    or into another top's tree, so the tree has no cycle.
 *
 * struct root (watch-internal.h) lives by the same rule: removed, it is
 * killed (its crawl cancelled, its drains finished, its tree killed) and
 * freed at the same outermost exit once no crawl job pins it.
 */
#ifndef PYCACHED_TREE_H
#define PYCACHED_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dir;

/* The part of a root that the tree knows: embedded in struct root. */
struct tree_top {
	struct dir *node;     /* the root directory's node, or NULL */
	uint64_t watched;     /* live nodes below with a watch (node included) */
	uint64_t unwatched;   /* live nodes below whose watch was refused */
};

#define DIR_F_TOP 0x1u        /* a root's node: its struct tree_top * is in name[] */
#define DIR_F_DEAD 0x2u       /* killed: waiting in the graveyard */
#define DIR_F_NAME_OUT 0x4u   /* the name is a heap string, its pointer in name[] */
#define DIR_F_MARK 0x8u       /* tree_check()'s visited mark */
#define DIR_F_BLOCKED 0x10u   /* could not be entered, and it was said (crawl.c) */

/* A pin count that reaches this sticks: the node is freed by tree_finish(). */
#define DIR_PINS_MAX UINT16_MAX

/* A node's number in its tree's store (dir_at()); 0 is none. */
typedef uint32_t dir_ref;

/*
 * A directory. 40 bytes and its name, in a record of the tree's store: the
 * node count is the directory count, so every byte is paid 200,000 times.
 * Links are store numbers, not pointers; read them with dir_parent(),
 * dir_child() and dir_next().
 */
struct dir {
	uint64_t ino;         /* the inode the node stands for */
	dir_ref up;           /* the parent; 0 for a top and when dead */
	dir_ref child;        /* first of the struct dir::next/prev list */
	dir_ref next;         /* siblings; the graveyard's list when dead */
	dir_ref prev;
	dir_ref self;         /* its own number */
	/* >= 0: its watch. <= -2: not watched, at index -wd - 2 of the
	 * tree's unwatched index. -1: dead. Read it with dir_wd(). */
	int32_t wd;
	uint32_t gen;         /* the crawl generation that last met it (crawl.c) */
	uint16_t pins;
	uint8_t flags;
	uint8_t name_cap;     /* bytes in name[], in units of 8 */
	char name[];          /* read it with dir_name() */
};

/*
 * The nodes' memory: records of DIR_CLASSES sizes (40 bytes and 8, 16, 24
 * or 32 of name), in pages that never move or shrink while a node lives,
 * so that a struct dir * stays valid as the rule below says. No malloc
 * header per node, and 4-byte links. Freed records are reused first in,
 * first out, so that a stale pointer meets other data late rather than
 * soon (and ASan, where it runs, is told which records are free).
 * LIFETIME: embedded in struct tree; its pages go with tree_finish().
 */
#define DIR_CLASSES 4
#define DIR_PAGE_SHIFT 9      /* 512 records a page */
#define DIR_SLOT_BITS 30      /* a dir_ref: class in the top 2 bits */

struct dir_class {
	char **pages;
	size_t n_pages, cap_pages;
	size_t size;              /* bytes a record */
	uint32_t used;            /* records ever handed out */
	dir_ref free_head, free_tail;   /* through struct dir::next */
};

/* Every node and both indexes. Embedded in struct watcher. */
struct tree {
	struct dir_class store[DIR_CLASSES];
	dir_ref *table;           /* wd -> node, open addressing; 0 is free */
	size_t table_cap, table_len;
	struct dir **unwatched;   /* live nodes without a watch */
	size_t n_unwatched, cap_unwatched;
	dir_ref graveyard;        /* dead nodes, through struct dir::next */
	size_t live, dead;
	/* A killed node's watch: the owner removes it from the kernel. */
	void (*unwatch)(void *ud, int wd);
	void *ud;
};

void tree_init(struct tree *t, void (*unwatch)(void *ud, int wd), void *ud);
/* Free everything: every top must have been killed. Pins are ignored. */
void tree_finish(struct tree *t);

/* The node numbered r, or NULL for 0. r must be one t handed out. */
static inline struct dir *dir_at(const struct tree *t, dir_ref r)
{
	const struct dir_class *c;
	uint32_t slot;

	if (!r)
		return NULL;
	c = &t->store[r >> DIR_SLOT_BITS];
	slot = (r & ((UINT32_C(1) << DIR_SLOT_BITS) - 1)) - 1;
	return (struct dir *)(c->pages[slot >> DIR_PAGE_SHIFT] +
			      (size_t)(slot & ((1u << DIR_PAGE_SHIFT) - 1)) * c->size);
}

static inline bool dir_alive(const struct dir *d)
{
	return !(d->flags & DIR_F_DEAD);
}

static inline bool dir_is_top(const struct dir *d)
{
	return d->flags & DIR_F_TOP;
}

/* The watch, or -1 (not watched, or dead). */
static inline int dir_wd(const struct dir *d)
{
	return d->wd >= 0 ? d->wd : -1;
}

/* The parent: NULL for a top and for a dead node. */
static inline struct dir *dir_parent(const struct tree *t, const struct dir *d)
{
	return dir_at(t, d->up);
}

/* The first child, and the next sibling (the next dead node in the
 * graveyard): NULL at the end. */
static inline struct dir *dir_child(const struct tree *t, const struct dir *d)
{
	return dir_at(t, d->child);
}

static inline struct dir *dir_next(const struct tree *t, const struct dir *d)
{
	return dir_at(t, d->next);
}

static inline struct dir *tree_graveyard(const struct tree *t)
{
	return dir_at(t, t->graveyard);
}

/* The name; "" for a top. */
const char *dir_name(const struct dir *d);
/* Not "", ".", ".." and no '/'. */
bool tree_name_ok(const char *name);
/* The top d hangs from, or NULL when d is dead. */
struct tree_top *tree_top_of(const struct tree *t, const struct dir *d);
/* a is d or one of its ancestors. */
bool tree_is_ancestor(const struct tree *t, const struct dir *a,
		      const struct dir *d);

/*
 * New nodes, watched when wd >= 0, else in the unwatched index. 0 with
 * *out set; -EINVAL (a bad name), -ESTALE (parent dead), -EEXIST (the
 * name is taken: *out is the node holding it; tt already has a node),
 * -EBUSY (wd belongs to another node), -ENOMEM.
 */
int tree_add_top(struct tree *t, struct tree_top *tt, uint64_t ino, int wd,
		 struct dir **out);
int tree_add(struct tree *t, struct dir *parent, const char *name,
	     uint64_t ino, int wd, struct dir **out);

struct dir *tree_child(const struct tree *t, const struct dir *parent,
		       const char *name);
struct dir *tree_by_wd(const struct tree *t, int wd);

/* Watched with wd (>= 0), or unwatched (< 0). 0, -ESTALE, -EBUSY (wd
 * belongs to another node), -ENOMEM; on error nothing changed. */
int tree_set_wd(struct tree *t, struct dir *d, int wd);

/*
 * Move d to parent/name (a rename in place when parent is d's). 0, or
 * -ESTALE (d or parent dead), -ELOOP (d is a top, or parent is d or below
 * it), -EXDEV (parent hangs from another top), -EINVAL (a bad name),
 * -EEXIST (another node holds the name: *clash), -ENOMEM. On error
 * nothing changed.
 */
int tree_move(struct tree *t, struct dir *d, struct dir *parent,
	      const char *name, struct dir **clash);

/* Kill d and everything below it (see LIFETIME). A dead d is left alone. */
void tree_kill(struct tree *t, struct dir *d);

void tree_pin(struct dir *d);
void tree_unpin(struct dir *d);
/* Free the dead nodes nobody pins. Only the watcher's outermost exit. */
void tree_reap(struct tree *t);

/* Pre-order successor of d within top's subtree, or NULL. */
struct dir *tree_next(const struct tree *t, const struct dir *d,
		      const struct dir *top, bool skip_children);

/* The unwatched index, in no particular order. */
static inline size_t tree_unwatched_count(const struct tree *t)
{
	return t->n_unwatched;
}

static inline struct dir *tree_unwatched_at(const struct tree *t, size_t i)
{
	return t->unwatched[i];
}

/* d's path below its top: "a/b/c", or "." for the top. NULL when d is dead
 * or out of memory. Caller frees. */
char *tree_relpath(const struct tree *t, const struct dir *d);
/* "base/a/b/c" ("base" for the top), then "/name" if name. Caller frees. */
char *tree_path(const struct tree *t, const struct dir *d, const char *base,
		const char *name);

/*
 * Check every invariant of the tree (tree-check.c): links, shapes, names, both indexes,
 * the counts of each top, the graveyard, and that every live node hangs
 * from one of the n tops. 0, or -EUCLEAN with why (len bytes) filled.
 */
int tree_check(const struct tree *t, struct tree_top *const *tops, size_t n,
	       char *why, size_t len);

#endif
