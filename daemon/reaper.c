#include "reaper.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "digits.h"
#include "match.h"
#include "relocate.h"

/* How often to empty a cache that refills between our listing and rmdir. */
#define EVICT_TRIES 5

/* Where bytecode goes: the prefix directory (-1: delete) and the directory
 * of the sources, which decides between two versions of a pyc. */
struct dest {
	int fd;
	int source_fd;
	uid_t uid;    /* only the user's own files move into the user's prefix */
};

struct tally {
	unsigned files;
	unsigned relocated;
	unsigned copied;
	int relocate_error;
	uint64_t bytes;
	unsigned foreign;
	char first_foreign[96];
};

__attribute__((format(printf, 3, 4)))
static void set_reason(struct reap_result *res, enum reap_outcome outcome,
		       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	res->outcome = outcome;
	vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
	va_end(ap);
}

static const char *type_word(mode_t mode)
{
	if (S_ISDIR(mode))
		return "directory";
	if (S_ISLNK(mode))
		return "symbolic link";
	if (S_ISFIFO(mode))
		return "FIFO";
	if (S_ISSOCK(mode))
		return "socket";
	if (S_ISCHR(mode) || S_ISBLK(mode))
		return "device";
	return "file";
}

int reaper_fd_identity(int fd, uint64_t *mnt_id, uint64_t *ino)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
		  STATX_INO | STATX_MNT_ID, &stx) < 0)
		return -errno;
	/* Kernels before 5.8 give no mount id: 0 then matches 0. */
	*mnt_id = (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0;
	*ino = stx.stx_ino;
	return 0;
}

/* Why openat(O_NOFOLLOW|O_DIRECTORY) refused: say what the name really is. */
static int explain_open_error(int parent_fd, const char *name, int err,
			      struct reap_result *res)
{
	struct stat st;

	if (err == ENOENT) {
		res->outcome = REAP_GONE;
		return 0;
	}
	if (err != ELOOP && err != ENOTDIR)
		return -err;
	if (fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		res->outcome = REAP_GONE;
		return 0;
	}
	set_reason(res, REAP_SKIPPED, "it is a %s, not a directory",
		   type_word(st.st_mode));
	return 0;
}

/* The cache directory as one statx() saw it. */
struct cache_id {
	uint32_t dev_major, dev_minor;
	uint64_t ino;
	mode_t mode;
	uint64_t attributes;   /* STATX_ATTR_*, where the filesystem says */
};

/* The cache itself: ours, on the root's mount. 1 when fit to act on. */
static int check_cache_dir(int fd, const struct reap_policy *p,
			   struct reap_result *res, struct cache_id *id)
{
	struct statx stx;
	uint64_t mnt_id;

	if (statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
		  STATX_UID | STATX_MODE | STATX_INO | STATX_MNT_ID | STATX_BTIME,
		  &stx) < 0)
		return -errno;
	/* Kernels before 5.8 give no mount id: 0 then matches 0. */
	mnt_id = (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0;
	res->birth = (stx.stx_mask & STATX_BTIME) ?
		     (uint64_t)stx.stx_btime.tv_sec * 1000000000u +
		     stx.stx_btime.tv_nsec : 0;
	id->dev_major = stx.stx_dev_major;
	id->dev_minor = stx.stx_dev_minor;
	id->ino = stx.stx_ino;
	id->mode = stx.stx_mode;
	id->attributes = stx.stx_attributes & stx.stx_attributes_mask;
	if (stx.stx_uid != p->uid) {
		set_reason(res, REAP_SKIPPED, "it is owned by uid %u, not by uid %u",
			   (unsigned)stx.stx_uid, (unsigned)p->uid);
		return 0;
	}
	if (mnt_id != p->mnt_id) {
		set_reason(res, REAP_SKIPPED, "%s", "it is on another mount");
		return 0;
	}
	return 1;
}

static void note_foreign(struct tally *t, const char *name, mode_t mode)
{
	if (t->foreign++ > 0)
		return;
	if (S_ISREG(mode))
		snprintf(t->first_foreign, sizeof(t->first_foreign),
			 "'%.60s', which is not bytecode", name);
	else
		snprintf(t->first_foreign, sizeof(t->first_foreign),
			 "a %s '%.60s'", type_word(mode), name);
}

/*
 * A cache's entries, read with getdents64() into one buffer: no DIR, whose
 * fdopendir() and rewinddir() cost three system calls. When the whole
 * directory fits, the records stay, and with them the dry pass's verdict
 * on each bytecode entry: the removal after the rename unlinks those
 * names without listing the cache again.
 */
#define LISTING_BYTES 8192
#define LISTING_ROOM 512     /* more than one record with a 255-byte name */
#define LISTING_KEEP 128

struct listing {
	size_t len, pos;      /* records in buf; the next one */
	bool started;         /* the fd was read from: rewind it first */
	bool end;             /* getdents64() said there is no more */
	bool spilled;         /* buf was reused: the records are not all there */
	size_t n_keep;        /* bytecode entries of a dry pass, in order */
	struct kept {
		uint32_t off;     /* of the record in buf */
		uint64_t bytes;   /* its size if it had no other link, else 0 */
	} keep[LISTING_KEEP];
	char buf[LISTING_BYTES] __attribute__((aligned(8)));
};

/* From the start of the directory: fd must be fresh, or rewound. */
static void listing_reset(struct listing *l)
{
	l->len = l->pos = l->n_keep = 0;
	l->started = l->end = l->spilled = false;
}

/* The dry pass's verdicts, when every entry of the cache is in them. */
static bool listing_kept(const struct listing *l)
{
	return l->end && !l->spilled;
}

/* The next entry but "." and "..": 1 with *out, 0 at the end, or -errno. */
static int listing_next(struct listing *l, int fd, struct dirent64 **out)
{
	for (;;) {
		while (l->pos < l->len) {
			struct dirent64 *de = (struct dirent64 *)(l->buf + l->pos);

			l->pos += de->d_reclen;
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				*out = de;
				return 1;
			}
		}
		if (l->end)
			return 0;
		if (sizeof(l->buf) - l->len < LISTING_ROOM) {
			l->len = l->pos = 0;
			l->spilled = true;
		}
		ssize_t n = getdents64(fd, l->buf + l->len, sizeof(l->buf) - l->len);

		l->started = true;
		/* A record longer than LISTING_ROOM (FUSE allows 1,024-byte
		 * names): the whole buffer, once. */
		if (n < 0 && errno == EINVAL && l->len) {
			l->len = l->pos = 0;
			l->spilled = true;
			continue;
		}
		if (n < 0)
			return -errno;
		l->end = n == 0;
		l->len += (size_t)n;
	}
}

enum verdict { GONE, BYTECODE, FOREIGN };

/*
 * What the entry is. Only an entry that fstatat() shows to be a regular
 * file AND that has a bytecode name is BYTECODE (st filled in); d_type is
 * trusted only to keep an entry (a FOREIGN verdict, st->st_mode set), never
 * to remove one. GONE when it vanished; -errno.
 */
static int judge(int fd, const struct dirent64 *de, struct stat *st)
{
	bool bytecode = match_bytecode_name(de->d_name);

	if (de->d_type != DT_UNKNOWN && (de->d_type != DT_REG || !bytecode)) {
		st->st_mode = DTTOIF(de->d_type);
		return FOREIGN;
	}
	if (fstatat(fd, de->d_name, st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? GONE : -errno;
	return S_ISREG(st->st_mode) && bytecode ? BYTECODE : FOREIGN;
}

static int dispose(int fd, const char *name, const struct stat *st,
		   const struct dest *dst, struct tally *t)
{
	enum relocate_outcome how;
	int r;

	if (dst->fd >= 0 && st->st_uid == dst->uid && relocate_worth_keeping(name)) {
		r = relocate_file(fd, name, dst->fd, st, dst->source_fd, &how);
		if (r == 0) {
			t->relocated++;
			t->copied += how == RELOCATE_COPIED;
			return 0;
		}
		/* Not the file we checked: it is put back, never unlinked. */
		if (r == -ESTALE)
			return -ESTALE;
		/* Bytecode is only ever a cache: when it cannot move, it goes,
		 * and only then is it said to have gone instead. */
		if (unlinkat(fd, name, 0) < 0)
			return -errno;
		t->relocate_error = r;
		return 0;
	}
	return unlinkat(fd, name, 0) < 0 ? -errno : 0;
}

/* What removing the file frees: nothing while another link holds it. */
static uint64_t freed_bytes(const struct stat *st)
{
	return st->st_nlink <= 1 ? (uint64_t)st->st_size : 0;
}

/*
 * One pass over the cache, from the start: count its bytecode and note
 * what else it holds; with remove_files, dispose of the bytecode as it
 * goes. A dry pass over a fresh fd keeps its verdicts in l. 0 or -errno.
 */
static int scan_pass(int fd, struct listing *l, bool remove_files,
		     const struct dest *dst, struct tally *t)
{
	struct dirent64 *de = NULL;
	struct stat st;
	int r;

	memset(t, 0, sizeof(*t));
	if (l->started && lseek(fd, 0, SEEK_SET) < 0)
		return -errno;
	listing_reset(l);
	while ((r = listing_next(l, fd, &de)) > 0) {
		int v = judge(fd, de, &st);

		if (v < 0)
			return v;
		if (v == GONE)
			continue;
		if (v == FOREIGN) {
			note_foreign(t, de->d_name, st.st_mode);
			continue;
		}
		if (remove_files && (r = dispose(fd, de->d_name, &st, dst, t)) < 0) {
			if (r == -ENOENT)
				continue;
			if (r == -ESTALE) {
				note_foreign(t, de->d_name, S_IFSOCK);
				continue;
			}
			return r;
		}
		if (!remove_files && l->n_keep < LISTING_KEEP)
			l->keep[l->n_keep++] = (struct kept){
				.off = (uint32_t)((char *)de - l->buf),
				.bytes = freed_bytes(&st),
			};
		else if (!remove_files)
			l->spilled = true;
		t->files++;
		t->bytes += freed_bytes(&st);
	}
	return r;
}

/*
 * The removing pass; t is the dry pass's tally. Deleting, after a dry pass
 * that saw the whole cache:
 * the names it judged bytecode are unlinked as they are. A name swapped
 * since for a directory fails (unlinkat() without AT_REMOVEDIR); anything
 * that arrived since stays until rmdir() says the cache is not empty, and
 * the next pass lists it. Else a full pass.
 */
static int remove_pass(int fd, struct listing *l, const struct dest *dst,
		       struct tally *t)
{
	if (dst->fd >= 0 || !listing_kept(l))
		return scan_pass(fd, l, true, dst, t);
	/* What else the dry pass noted in t is still there. */
	t->files = 0;
	t->bytes = 0;
	for (size_t i = 0; i < l->n_keep; i++) {
		const struct dirent64 *de =
			(const struct dirent64 *)(l->buf + l->keep[i].off);

		if (unlinkat(fd, de->d_name, 0) < 0) {
			if (errno == ENOENT)
				continue;
			if (errno != EISDIR)
				return -errno;
			/* A directory by that name since: it stays. */
			note_foreign(t, de->d_name, S_IFDIR);
			continue;
		}
		t->files++;
		t->bytes += l->keep[i].bytes;
	}
	/* Used once: a next pass lists the cache again. */
	l->spilled = true;
	return 0;
}

static void add_tally(struct reap_result *res, const struct tally *t)
{
	res->files += t->files;
	res->bytes += t->bytes;
	res->relocated += t->relocated;
	res->copied += t->copied;
	if (t->relocate_error)
		res->relocate_error = t->relocate_error;
}

static void skip_foreign(struct reap_result *res, const struct tally *t)
{
	set_reason(res, REAP_SKIPPED, "it contains %s", t->first_foreign);
}

static void skip_read_only(struct reap_result *res)
{
	set_reason(res, REAP_SKIPPED, "%s", "it, or the directory holding it, "
		   "is read-only");
}

/* What a refused write says: the cache or its parent cannot be changed. */
static bool read_only_error(int err)
{
	return err == EACCES || err == EPERM || err == EROFS;
}

/* A rename or rmdir of the cache by name failed with err: true when that
 * says what became of it (gone, or read-only), with res filled. */
static bool refusal_settles(int err, struct reap_result *res)
{
	if (err == ENOENT)
		res->outcome = REAP_GONE;
	else if (read_only_error(err))
		skip_read_only(res);
	else
		return false;
	return true;
}

/* Put the cache back under its own name; say where it is if we cannot. */
static void restore(int parent_fd, const char *tmp, const char *name,
		    struct reap_result *res)
{
	size_t len;

	if (renameat2(parent_fd, tmp, parent_fd, name, RENAME_NOREPLACE) == 0)
		return;
	len = strlen(res->reason);
	snprintf(res->reason + len, sizeof(res->reason) - len,
		 " (kept as %s)", tmp);
}

static bool same_inode(int parent_fd, const char *name, const struct cache_id *id)
{
	struct statx stx;

	if (statx(parent_fd, name, AT_SYMLINK_NOFOLLOW, STATX_INO, &stx) < 0)
		return false;
	return stx.stx_dev_major == id->dev_major &&
	       stx.stx_dev_minor == id->dev_minor && stx.stx_ino == id->ino;
}

/*
 * Empty the renamed cache through its fd, then rmdir it by its temporary
 * name. A writer that resolved the old path before the rename may still land
 * a file: list again until rmdir succeeds. rmdir cannot lose data.
 */
static int empty_and_remove(int fd, struct listing *l, int parent_fd,
			    const char *tmp, const char *name,
			    const struct dest *dst, struct reap_result *res)
{
	struct tally t;

	memset(&t, 0, sizeof(t));   /* the dry pass found nothing foreign */
	for (int i = 0; i < EVICT_TRIES; i++) {
		int r = remove_pass(fd, l, dst, &t);

		add_tally(res, &t);
		if (r == 0 && t.foreign) {
			skip_foreign(res, &t);
			restore(parent_fd, tmp, name, res);
			return 0;
		}
		if (r < 0 && r != -ENOENT) {
			restore(parent_fd, tmp, name, res);
			return r;
		}
		if (unlinkat(parent_fd, tmp, AT_REMOVEDIR) == 0) {
			res->outcome = REAP_REMOVED;
			return 0;
		}
		if (errno != ENOTEMPTY && errno != EEXIST) {
			r = -errno;
			restore(parent_fd, tmp, name, res);
			return r;
		}
	}
	set_reason(res, REAP_SKIPPED, "%s", "it kept being refilled");
	restore(parent_fd, tmp, name, res);
	return 0;
}

/* The prefix directory to relocate into, or -1 to delete. */
static int open_destination(const struct reap_policy *p, struct reap_result *res)
{
	int fd;

	if (p->prefix_fd < 0 || !p->src_dir)
		return -1;
	fd = relocate_open_dir(p->prefix_fd, p->src_dir);
	if (fd < 0)
		res->relocate_error = fd;
	return fd;
}

/* The temporary names' pid, read once: getpid() is a system call. */
static uint64_t own_pid(void)
{
	static uint64_t pid;

	if (!pid)
		pid = (uint64_t)getpid();
	return pid;
}

/*
 * Rename the cache out of the writers' way first: a CPython writer that
 * opens "pkg/__pycache__/m.pyc.<id>" after this gets ENOENT, which import
 * ignores, instead of refilling a directory we are emptying (FACTS.md).
 * A parent we may not change refuses the rename: nothing moved.
 */
static int evict(int fd, struct listing *l, int parent_fd, const char *name,
		 const struct cache_id *id, const struct reap_policy *p,
		 struct dest *dst, struct reap_result *res)
{
	char tmp[sizeof(REAPER_TMP_PREFIX) + 42], *end;
	struct timespec ts;

	/* REAPER_TMP_PREFIX "<pid>-<ns>" (reaper_is_leftover()) */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	memcpy(tmp, REAPER_TMP_PREFIX, sizeof(REAPER_TMP_PREFIX) - 1);
	end = put_decimal(tmp + sizeof(REAPER_TMP_PREFIX) - 1, own_pid());
	*end++ = '-';
	*put_decimal(end, (uint64_t)ts.tv_nsec) = '\0';
	if (renameat2(parent_fd, name, parent_fd, tmp, RENAME_NOREPLACE) < 0)
		return refusal_settles(errno, res) ? 0 : -errno;
	/* Someone may have swapped the name between our open and the rename. */
	if (!same_inode(parent_fd, tmp, id)) {
		set_reason(res, REAP_SKIPPED, "%s", "it was replaced while being removed");
		restore(parent_fd, tmp, name, res);
		return 0;
	}
	/* Only now, when the bytecode is sure to go: it may make directories. */
	dst->fd = open_destination(p, res);
	return empty_and_remove(fd, l, parent_fd, tmp, name, dst, res);
}

bool reaper_is_leftover(const char *name)
{
	const char *p = name + strlen(REAPER_TMP_PREFIX);
	size_t pid;

	if (strncmp(name, REAPER_TMP_PREFIX, strlen(REAPER_TMP_PREFIX)))
		return false;
	pid = strspn(p, "0123456789");
	return pid > 0 && p[pid] == '-' && isdigit((unsigned char)p[pid + 1]) &&
	       strspn(p + pid + 1, "0123456789") == strlen(p + pid + 1);
}

static bool avoided(const struct reap_policy *p, const struct reap_result *res)
{
	for (size_t i = 0; i < p->n_avoid; i++)
		if (p->avoid[i].ino == res->ino && p->avoid[i].birth == res->birth)
			return true;
	return false;
}

/*
 * Renaming a cache we then cannot empty would only rename it back, and
 * that rename is a new event for the same cache: refuse up front. The
 * cache is the user's (checked): its owner's write bit says it, unless a
 * flag forbids changes; without the bit, only the kernel can say (root).
 */
static bool writable(int fd)
{
	return faccessat(fd, ".", W_OK, AT_EACCESS) == 0;
}

static bool cache_writable(int fd, const struct cache_id *id)
{
	if (id->attributes & (STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND))
		return false;
	return (id->mode & S_IWUSR) || writable(fd);
}


/*
 * Nothing in it, as far as the dry pass saw: rmdir() alone removes it, and
 * fails if a writer got a file in meanwhile (ENOTEMPTY: the caller goes
 * the long way). The name must still hold the directory checked: rmdir()
 * by name cannot say which directory it takes. 1 when done (res says
 * how), 0 to go on, or -errno.
 */
static int remove_empty(int parent_fd, const char *name,
			const struct cache_id *id, struct reap_result *res)
{
	if (!same_inode(parent_fd, name, id)) {
		res->outcome = REAP_GONE;   /* replaced: its own event follows */
		return 1;
	}
	if (unlinkat(parent_fd, name, AT_REMOVEDIR) == 0) {
		res->outcome = REAP_REMOVED;
		return 1;
	}
	if (refusal_settles(errno, res))
		return 1;
	return errno == ENOTEMPTY || errno == EEXIST ? 0 : -errno;
}

static int reap_dir(int fd, int parent_fd, const char *name,
		    const struct reap_policy *p, const struct cache_id *id,
		    struct reap_result *res)
{
	struct dest dst = { .fd = -1, .source_fd = parent_fd, .uid = p->uid };
	struct listing l;
	struct tally t;
	int r;

	listing_reset(&l);
	r = scan_pass(fd, &l, false, &dst, &t);
	if (r < 0)
		return r;
	if (p->observe) {
		add_tally(res, &t);
		if (t.foreign)
			skip_foreign(res, &t);
		else
			res->outcome = REAP_WOULD_REMOVE;
		return 0;
	}
	if (!cache_writable(fd, id)) {
		skip_read_only(res);
		return 0;
	}
	if (!t.foreign && !t.files && listing_kept(&l)) {
		r = remove_empty(parent_fd, name, id, res);
		if (r != 0)
			return r < 0 ? r : 0;
		l.spilled = true;   /* filled since: list it again */
	}
	/* Emptied in place, never renamed: only the kernel knows if it may
	 * be (a read-only mount keeps the owner's write bit). */
	if (t.foreign && !writable(fd)) {
		skip_read_only(res);
		return 0;
	}
	if (t.foreign) {
		/* The directory stays for its foreign content; bytecode goes. */
		dst.fd = open_destination(p, res);
		r = remove_pass(fd, &l, &dst, &t);
		add_tally(res, &t);
		if (r < 0 && read_only_error(-r)) {
			skip_read_only(res);
			r = 0;
		} else {
			skip_foreign(res, &t);
		}
	} else {
		r = evict(fd, &l, parent_fd, name, id, p, &dst, res);
	}
	if (dst.fd >= 0)
		close(dst.fd);
	return r;
}

/* Open parent_fd/name as a cache of ours on the root's mount: 0 with *fd
 * set, 0 with *fd = -1 and res saying why not, or -errno. */
static int open_cache(int parent_fd, const char *name,
		      const struct reap_policy *p, struct reap_result *res,
		      struct cache_id *id, int *fd)
{
	int r;

	memset(res, 0, sizeof(*res));
	*fd = openat(parent_fd, name,
		     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*fd < 0)
		return explain_open_error(parent_fd, name, errno, res);
	r = check_cache_dir(*fd, p, res, id);
	if (r > 0)
		res->ino = id->ino;
	if (r > 0 && avoided(p, res)) {
		res->outcome = REAP_AVOIDED;
		r = 0;
	}
	if (r <= 0) {
		close(*fd);
		*fd = -1;
	}
	return r < 0 ? r : 0;
}

int reaper_reap(int parent_fd, const char *name, const struct reap_policy *p,
		struct reap_result *res)
{
	struct cache_id id;
	int fd, r;

	r = open_cache(parent_fd, name, p, res, &id, &fd);
	if (fd < 0)
		return r;
	r = reap_dir(fd, parent_fd, name, p, &id, res);
	close(fd);
	return r;
}

int reaper_open(int parent_fd, const char *name, const struct reap_policy *p,
		struct reap_result *res, int *fd)
{
	struct cache_id id;
	int r = open_cache(parent_fd, name, p, res, &id, fd);

	if (*fd >= 0 && (!cache_writable(*fd, &id) || !writable(parent_fd))) {
		skip_read_only(res);
		close(*fd);
		*fd = -1;
	}
	return r;
}

/* One entry of a cache being drained: moved when it is finished bytecode. */
static int drain_one(int fd, const char *name, const struct dest *dst,
		     struct reap_result *res)
{
	enum relocate_outcome how;
	struct stat st;
	int r;

	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISREG(st.st_mode) || !match_bytecode_name(name)) {
		res->foreign++;
		return 0;
	}
	if (!relocate_worth_keeping(name)) {
		res->in_flight++;
		return 0;
	}
	/* Someone else's file in our cache: never into our prefix, where
	 * Python would load it; the final reap deletes it. */
	if (st.st_uid != dst->uid)
		return 0;
	r = relocate_file(fd, name, dst->fd, &st, dst->source_fd, &how);
	if (r == -ENOENT)
		return 0;
	if (r == -ESTALE) {
		res->foreign++;
		return 0;
	}
	if (r < 0) {
		/* It stays; the final reap deletes what cannot move. */
		res->relocate_error = r;
		return 0;
	}
	res->files++;
	res->relocated++;
	res->copied += how == RELOCATE_COPIED;
	res->bytes += freed_bytes(&st);
	return 0;
}

static int drain_all(int fd, const struct dest *dst, struct reap_result *res)
{
	int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 3), r = 0;
	struct dirent *de;
	DIR *dir;

	if (dfd < 0)
		return -errno;
	dir = fdopendir(dfd);
	if (!dir) {
		r = -errno;
		close(dfd);
		return r;
	}
	for (errno = 0; r == 0 && (de = readdir(dir)); errno = 0)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			r = drain_one(fd, de->d_name, dst, res);
	if (r == 0 && errno)
		r = -errno;
	closedir(dir);
	return r;
}

int reaper_drain(int cache_fd, int parent_fd, const char *only,
		 const struct reap_policy *p, struct reap_result *res)
{
	struct dest dst = { .fd = -1, .source_fd = parent_fd, .uid = p->uid };
	int r;

	memset(res, 0, sizeof(*res));
	if (only && (strchr(only, '/') || !strcmp(only, ".") || !strcmp(only, "..")))
		return -EINVAL;
	dst.fd = open_destination(p, res);
	if (dst.fd < 0)
		return 0;
	r = only ? drain_one(cache_fd, only, &dst, res)
		 : drain_all(cache_fd, &dst, res);
	close(dst.fd);
	return r;
}
