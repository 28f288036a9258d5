/*
 * Trees for the benchmarks: make a synthetic one, walk one, count and clean
 * the caches in one. Paths only, no fds kept: these run outside timings.
 */
#include <stdbool.h>

#include "bench.h"
#include "probe.h"

void paths_add(struct paths *p, char *path)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 256;
		p->v = xrealloc(p->v, p->cap * sizeof(*p->v));
	}
	p->v[p->n++] = path;
}

void paths_free(struct paths *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i]);
	free(p->v);
	*p = (struct paths){ 0 };
}

static bool is_cache_name(const char *name)
{
	return !strcmp(name, PYCACHE) ||
	       !strncmp(name, ".__pycache__.pycached-", 22);
}

/*
 * Breadth-first over root, calling fn for every entry of every directory
 * (caches are reported but not descended into). Directories are found by
 * d_type, which tmpfs and ext4 always fill in.
 */
typedef bool (*walk_fn)(const char *dir, const struct dirent64 *de, void *ud);

static void walk(const char *root, walk_fn fn, void *ud)
{
	char buf[32768] __attribute__((aligned(8)));
	struct paths q = { 0 };

	paths_add(&q, xstrdup(root));
	for (size_t i = 0; i < q.n; i++) {
		int fd = open(q.v[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		ssize_t n;

		if (fd < 0)
			continue;
		while ((n = getdents64(fd, buf, sizeof(buf))) > 0) {
			for (ssize_t off = 0; off < n;) {
				struct dirent64 *de = (struct dirent64 *)(buf + off);

				off += de->d_reclen;
				if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
					continue;
				if (!fn(q.v[i], de, ud)) {
					close(fd);
					paths_free(&q);
					return;
				}
				if (de->d_type == DT_DIR && !is_cache_name(de->d_name))
					paths_add(&q, path_join(q.v[i], de->d_name));
			}
		}
		close(fd);
	}
	paths_free(&q);
}

struct collect {
	struct paths *out;
	size_t max;
	unsigned char type;
};

static bool collect_one(const char *dir, const struct dirent64 *de, void *ud)
{
	struct collect *c = ud;

	if (de->d_type != c->type || is_cache_name(de->d_name))
		return true;
	paths_add(c->out, path_join(dir, de->d_name));
	return !c->max || c->out->n < c->max;
}

void walk_dirs(const char *root, size_t max, struct paths *out)
{
	struct collect c = { out, max, DT_DIR };

	walk(root, collect_one, &c);
}

void walk_files(const char *root, size_t max, struct paths *out)
{
	struct collect c = { out, max, DT_REG };

	walk(root, collect_one, &c);
}

static void make_files(const char *dir, size_t files)
{
	for (size_t f = 0; f < files; f++) {
		char name[32];
		char *path;
		int fd;

		if (f < 2)
			snprintf(name, sizeof(name), f ? "mod.py" : "__init__.py");
		else
			snprintf(name, sizeof(name), "m%zu.py", f);
		path = path_join(dir, name);
		fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0)
			die("create %s:", path);
		close(fd);
		free(path);
	}
}

/*
 * mktree ROOT NDIRS [FANOUT [FILES]]: NDIRS directories breadth first, FANOUT
 * per parent (default 10), each holding FILES empty files (default 2:
 * __init__.py and mod.py, then m2.py, m3.py...), like a Python source tree.
 */
int cmd_mktree(int argc, char **argv)
{
	struct paths q = { 0 };
	size_t ndirs, fanout, files, made = 0;

	if (argc < 3)
		die("usage: probe mktree ROOT NDIRS [FANOUT [FILES]]");
	ndirs = strtoul(argv[2], NULL, 10);
	fanout = argc > 3 ? strtoul(argv[3], NULL, 10) : 10;
	files = argc > 4 ? strtoul(argv[4], NULL, 10) : 2;
	if (mkdir(argv[1], 0755) < 0 && errno != EEXIST)
		die("mkdir %s:", argv[1]);
	paths_add(&q, xstrdup(argv[1]));
	for (size_t i = 0; i < q.n && made < ndirs; i++) {
		int pfd = open(q.v[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if (pfd < 0)
			die("open %s:", q.v[i]);
		for (size_t k = 0; k < fanout && made < ndirs; k++, made++) {
			char name[32];

			snprintf(name, sizeof(name), "d%zu", k);
			if (mkdirat(pfd, name, 0755) < 0 && errno != EEXIST)
				die("mkdir %s/%s:", q.v[i], name);
			paths_add(&q, path_join(q.v[i], name));
		}
		close(pfd);
	}
	for (size_t i = 1; i < q.n; i++)
		make_files(q.v[i], files);
	printf("dirs %zu\n", made);
	paths_free(&q);
	return 0;
}

struct tally {
	size_t caches, hidden, dirs;
	bool remove;
};

static bool tally_one(const char *dir, const struct dirent64 *de, void *ud)
{
	struct tally *t = ud;
	int fd;

	if (de->d_type != DT_DIR)
		return true;
	if (!is_cache_name(de->d_name)) {
		t->dirs++;
		return true;
	}
	if (!strcmp(de->d_name, PYCACHE))
		t->caches++;
	else
		t->hidden++;
	if (t->remove && (fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		remove_cache(fd, de->d_name);
		close(fd);
	}
	return true;
}

/* count ROOT: "caches N hidden M dirs D" (hidden: pycached's renamed
 * caches; dirs: the others, ROOT not counted). */
int cmd_count(int argc, char **argv)
{
	struct tally t = { 0 };

	if (argc < 2)
		die("usage: probe count ROOT");
	walk(argv[1], tally_one, &t);
	printf("caches %zu\nhidden %zu\ndirs %zu\n", t.caches, t.hidden, t.dirs);
	return 0;
}

/* clean ROOT: remove every cache; prints what it found. */
int cmd_clean(int argc, char **argv)
{
	struct tally t = { .remove = true };

	if (argc < 2)
		die("usage: probe clean ROOT");
	walk(argv[1], tally_one, &t);
	printf("caches %zu\nhidden %zu\n", t.caches, t.hidden);
	return 0;
}
