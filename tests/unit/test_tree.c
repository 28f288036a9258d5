/*
 * The tree against a model, in seeded random storms: adds, renames and
 * moves (names of every length, so that nodes cross the store's record
 * classes and go out of line), kills, watches set and taken back, pins
 * held across turns. After every operation tree_check() must pass and
 * every node the model knows must be where the model says, with its
 * name, watch and parent; the store's records are reused first in,
 * first out, which the ASan build checks (a freed record is poisoned).
 *
 * TREE_SEED picks one seed (printed on failure), TREE_OPS the operations
 * per seed (20,000, divided by PYCACHED_TEST_SLOWDOWN under valgrind).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tree.h"

#define TOPS 3
#define NODES_MAX 4096
#define WDS 8192

struct node {
	struct dir *d;
	int parent;           /* model index; -1 for a top */
	int top;
	char name[48];
	int wd;               /* -1: unwatched */
	unsigned pins;
	bool alive;
};

struct model {
	struct tree t;
	struct tree_top tt[TOPS];
	struct node n[NODES_MAX];
	size_t count;
	bool wd_used[WDS];
	int released[WDS];    /* what the unwatch callback was handed */
	size_t n_released;
	uint64_t rng;
	unsigned seed;
};

static uint32_t rnd(struct model *m, uint32_t n)
{
	m->rng ^= m->rng << 13;
	m->rng ^= m->rng >> 7;
	m->rng ^= m->rng << 17;
	return (uint32_t)(m->rng % n);
}

__attribute__((format(printf, 2, 3)))
static void die(const struct model *m, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fail_msg("seed %u: %s", m->seed, msg);
}

static void on_unwatch(void *ud, int wd)
{
	struct model *m = ud;

	if (m->n_released < WDS)
		m->released[m->n_released++] = wd;
}

/* A name of 1 to 40 bytes from a small alphabet, so that names clash. */
static void random_name(struct model *m, char *out)
{
	static const size_t lens[] = { 1, 2, 7, 8, 15, 16, 23, 24, 31, 32, 40 };
	size_t len = lens[rnd(m, sizeof(lens) / sizeof(lens[0]))];

	for (size_t i = 0; i < len; i++)
		out[i] = "ab"[rnd(m, len > 2 ? 1 : 2)];
	out[len] = '\0';
	if (len > 2)
		out[len - 1] = "ab"[rnd(m, 2)];
}

static int random_wd(struct model *m)
{
	return rnd(m, 4) == 0 ? -1 : (int)rnd(m, WDS);
}

/* A model node that is alive, or any whose memory is still the tree's. */
static int pick(struct model *m, bool alive_only)
{
	if (!m->count)
		return -1;
	for (int tries = 0; tries < 16; tries++) {
		int i = (int)rnd(m, (uint32_t)m->count);

		if (m->n[i].d && (!alive_only || m->n[i].alive))
			return i;
	}
	return -1;
}

static bool below(const struct model *m, int a, int i)
{
	for (; i >= 0; i = m->n[i].parent)
		if (i == a)
			return true;
	return false;
}

static int holder(const struct model *m, int parent, const char *name)
{
	for (size_t i = 0; i < m->count; i++)
		if (m->n[i].alive && m->n[i].parent == parent &&
		    !strcmp(m->n[i].name, name))
			return (int)i;
	return -1;
}

static int slot(struct model *m)
{
	for (size_t i = 0; i < m->count; i++)
		if (!m->n[i].d)
			return (int)i;
	return m->count < NODES_MAX ? (int)m->count++ : -1;
}

static void op_add(struct model *m)
{
	int p = pick(m, true), i, wd = random_wd(m), r, want;
	struct dir *d = NULL;
	char name[48];

	if (p < 0 || (i = slot(m)) < 0)
		return;
	random_name(m, name);
	want = holder(m, p, name) >= 0 ? -EEXIST
	       : wd >= 0 && m->wd_used[wd] ? -EBUSY : 0;
	r = tree_add(&m->t, m->n[p].d, name, (uint64_t)i, wd, &d);
	if (r != want)
		die(m, "add '%s' under %d: %d, model says %d", name, p, r, want);
	if (r < 0)
		return;
	m->n[i] = (struct node){ .d = d, .parent = p, .top = m->n[p].top,
				 .wd = wd, .alive = true };
	strcpy(m->n[i].name, name);
	if (wd >= 0)
		m->wd_used[wd] = true;
}

static void op_add_top(struct model *m)
{
	int k = (int)rnd(m, TOPS), i, wd = random_wd(m), r;
	struct dir *d = NULL;

	if (m->tt[k].node || (i = slot(m)) < 0)
		return;
	r = tree_add_top(&m->t, &m->tt[k], (uint64_t)i, wd, &d);
	if (r != (wd >= 0 && m->wd_used[wd] ? -EBUSY : 0))
		die(m, "add top %d: %d", k, r);
	if (r < 0)
		return;
	m->n[i] = (struct node){ .d = d, .parent = -1, .top = k, .wd = wd,
				 .alive = true };
	if (wd >= 0)
		m->wd_used[wd] = true;
}

static void op_move(struct model *m)
{
	int i = pick(m, true), p = pick(m, true), want, h, r;
	struct dir *clash = NULL;
	char name[48];

	if (i < 0 || p < 0)
		return;
	if (rnd(m, 3) == 0)
		strcpy(name, m->n[i].name);   /* a move that keeps the name */
	else
		random_name(m, name);
	h = holder(m, p, name);
	if (m->n[i].parent == p && !strcmp(m->n[i].name, name))
		want = 0;
	else if (m->n[i].parent < 0 || below(m, i, p))
		want = -ELOOP;
	else if (m->n[i].top != m->n[p].top)
		want = -EXDEV;
	else if (h >= 0 && h != i)
		want = -EEXIST;
	else
		want = 0;
	r = tree_move(&m->t, m->n[i].d, m->n[p].d, name, &clash);
	if (r != want)
		die(m, "move %d to %d/'%s': %d, model says %d", i, p, name, r, want);
	if (r == -EEXIST && clash != m->n[h].d)
		die(m, "move %d: the clash is not the holder", i);
	if (r == 0 && m->n[i].parent >= 0) {
		m->n[i].parent = p;
		strcpy(m->n[i].name, name);
	}
}

static void op_kill(struct model *m)
{
	static bool doomed[NODES_MAX];
	int i = pick(m, true);
	size_t expect = 0;

	if (i < 0 || (m->n[i].parent < 0 && rnd(m, 8)))
		return;
	for (size_t j = 0; j < m->count; j++) {
		doomed[j] = m->n[j].alive && below(m, i, (int)j);
		expect += doomed[j] && m->n[j].wd >= 0;
	}
	m->n_released = 0;
	tree_kill(&m->t, m->n[i].d);
	if (m->n_released != expect)
		die(m, "kill %d released %zu watches, model says %zu", i,
		    m->n_released, expect);
	for (size_t k = 0; k < m->n_released; k++)
		m->wd_used[m->released[k]] = false;
	for (size_t j = 0; j < m->count; j++)
		if (doomed[j]) {
			m->n[j].alive = false;
			m->n[j].wd = -1;
		}
}

static void op_set_wd(struct model *m)
{
	int i = pick(m, true), wd = random_wd(m), r, want;

	if (i < 0)
		return;
	want = wd >= 0 && m->wd_used[wd] && m->n[i].wd != wd ? -EBUSY : 0;
	r = tree_set_wd(&m->t, m->n[i].d, wd);
	if (r != want)
		die(m, "set wd %d of %d: %d, model says %d", wd, i, r, want);
	if (r == 0) {
		if (m->n[i].wd >= 0)
			m->wd_used[m->n[i].wd] = false;
		m->n[i].wd = wd;
		if (wd >= 0)
			m->wd_used[wd] = true;
	}
}

static void op_pin(struct model *m)
{
	int i = pick(m, false);

	if (i < 0)
		return;
	if (m->n[i].pins && rnd(m, 2)) {
		tree_unpin(m->n[i].d);
		m->n[i].pins--;
	} else {
		tree_pin(m->n[i].d);
		m->n[i].pins++;
	}
}

/* The end of a turn: unpinned dead nodes are freed, and forgotten. */
static void op_reap(struct model *m)
{
	tree_reap(&m->t);
	for (size_t j = 0; j < m->count; j++)
		if (m->n[j].d && !m->n[j].alive && !m->n[j].pins)
			m->n[j].d = NULL;
}

static void verify(struct model *m)
{
	struct tree_top *tops[TOPS];
	size_t live = 0;
	char why[256];

	for (int k = 0; k < TOPS; k++)
		tops[k] = &m->tt[k];
	if (tree_check(&m->t, tops, TOPS, why, sizeof(why)) < 0)
		die(m, "tree_check: %s", why);
	for (size_t i = 0; i < m->count; i++) {
		const struct node *n = &m->n[i];

		if (!n->d)
			continue;
		if (!n->alive) {
			if (dir_alive(n->d))
				die(m, "node %zu alive in the tree, dead in the model", i);
			continue;
		}
		live++;
		if (n->d->ino != i || strcmp(dir_name(n->d), n->parent < 0 ? "" : n->name))
			die(m, "node %zu: name '%s', model '%s'", i, dir_name(n->d), n->name);
		if (n->parent >= 0 && (dir_parent(&m->t, n->d) != m->n[n->parent].d ||
				       tree_child(&m->t, m->n[n->parent].d, n->name) != n->d))
			die(m, "node %zu is not under %d", i, n->parent);
		if (tree_top_of(&m->t, n->d) != &m->tt[n->top])
			die(m, "node %zu is not in top %d", i, n->top);
		if (dir_wd(n->d) != n->wd || (n->wd >= 0 && tree_by_wd(&m->t, n->wd) != n->d))
			die(m, "node %zu: wd %d, model %d", i, dir_wd(n->d), n->wd);
	}
	if (live != m->t.live)
		die(m, "%zu live in the model, %zu in the tree", live, m->t.live);
}

static void storm(unsigned seed, unsigned ops)
{
	struct model *m = calloc(1, sizeof(*m));

	assert_non_null(m);
	m->seed = seed;
	m->rng = (uint64_t)seed * 0x9e3779b97f4a7c15u | 1;
	tree_init(&m->t, on_unwatch, m);
	for (unsigned k = 0; k < ops; k++) {
		switch (rnd(m, 16)) {
		case 0:
			op_add_top(m);
			break;
		case 1: case 2: case 3: case 4: case 5: case 6:
			op_add(m);
			break;
		case 7: case 8: case 9:
			op_move(m);
			break;
		case 10:
			op_kill(m);
			break;
		case 11: case 12:
			op_set_wd(m);
			break;
		case 13: case 14:
			op_pin(m);
			break;
		default:
			op_reap(m);
			break;
		}
		verify(m);
	}
	for (int k = 0; k < TOPS; k++)
		if (m->tt[k].node)
			tree_kill(&m->t, m->tt[k].node);
	tree_finish(&m->t);
	free(m);
}

static void test_storms(void **state)
{
	const char *s = getenv("TREE_SEED"), *o = getenv("TREE_OPS");
	const char *slow = getenv("PYCACHED_TEST_SLOWDOWN");
	unsigned ops = o ? (unsigned)strtoul(o, NULL, 10) : 20000;

	/* Under valgrind (the slowdown set), fewer operations a seed. */
	if (!o && slow && strtoul(slow, NULL, 10) > 1)
		ops /= (unsigned)strtoul(slow, NULL, 10);

	(void)state;
	if (s) {
		storm((unsigned)strtoul(s, NULL, 10), ops);
		return;
	}
	for (unsigned seed = 1; seed <= 8; seed++)
		storm(seed, ops);
}

/* A record freed and reused keeps its number; a name that outgrows its
 * record goes out of line and comes back in. */
static void test_rename_across_classes(void **state)
{
	struct tree tree;
	struct tree *t = &tree;
	struct tree_top tt = { 0 };
	struct dir *top, *d, *clash;
	char longname[300];

	(void)state;
	tree_init(t, NULL, NULL);
	assert_int_equal(tree_add_top(t, &tt, 1, 1, &top), 0);
	assert_int_equal(tree_add(t, top, "a", 2, 2, &d), 0);
	memset(longname, 'x', 255);
	longname[255] = '\0';
	assert_int_equal(tree_move(t, d, top, longname, &clash), 0);
	assert_true(d->flags & DIR_F_NAME_OUT);
	assert_string_equal(dir_name(d), longname);
	assert_ptr_equal(tree_child(t, top, longname), d);
	assert_int_equal(tree_move(t, d, top, "b", &clash), 0);
	assert_false(d->flags & DIR_F_NAME_OUT);
	assert_string_equal(dir_name(d), "b");
	longname[254] = 'y';
	assert_int_equal(tree_add(t, top, longname, 3, -1, &d), 0);
	assert_string_equal(dir_name(d), longname);
	tree_kill(t, top);
	tree_reap(t);
	assert_int_equal(t->live, 0);
	assert_int_equal(t->dead, 0);
	tree_finish(t);
}

/* More records of one class than the store's first pages array holds
 * (16 pages of 512), and a wd index grown several times over. */
static void test_store_grows(void **state)
{
	struct tree *t = calloc(1, sizeof(*t));
	struct tree_top tt = { 0 };
	struct tree_top *tops[] = { &tt };
	struct dir *top, *d;
	char name[16], why[256];

	(void)state;
	assert_non_null(t);
	tree_init(t, NULL, NULL);
	assert_int_equal(tree_add_top(t, &tt, 0, 0, &top), 0);
	/* 100 of 100 each: tree_child() is linear in the siblings. */
	for (int i = 1; i <= 10100; i++) {
		struct dir *parent = i <= 100 ? top : tree_by_wd(t, (i % 100 + 1) * 7);

		snprintf(name, sizeof(name), "c%d", i);
		assert_int_equal(tree_add(t, parent, name, (uint64_t)i, i * 7, &d), 0);
	}
	assert_true(t->store[0].n_pages > 16);
	if (tree_check(t, tops, 1, why, sizeof(why)) < 0)
		fail_msg("%s", why);
	for (int i = 1; i <= 10100; i += 97)
		assert_int_equal(tree_by_wd(t, i * 7)->ino, (uint64_t)i);
	tree_kill(t, top);
	tree_reap(t);
	assert_int_equal(t->live + t->dead, 0);
	tree_finish(t);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_storms),
		cmocka_unit_test(test_rename_across_classes),
		cmocka_unit_test(test_store_grows),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
