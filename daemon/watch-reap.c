#include "watch-reap.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "reaper.h"
#include "watch-fs.h"
#include "watch-internal.h"

/*
 * Count a removal in parent. Only directories with two or more are shown
 * (root_hot_dirs()), so the path is built at the second: a burst over
 * distinct directories builds none.
 */
static void hot_note(struct root *r, const struct dir *parent)
{
	struct hot_slot *min = &r->hot[0];

	for (size_t i = 0; i < HOT_MAX; i++) {
		struct hot_slot *h = &r->hot[i];

		if (h->count && h->ino == parent->ino) {
			if (!h->path)
				h->path = tree_path(&r->w->tree, parent,
						    r->conf.path, NULL);
			h->count++;
			return;
		}
		if (h->count < min->count)
			min = h;
	}
	free(min->path);
	min->path = NULL;
	min->ino = parent->ino;
	min->count = 1;
}

static void account(struct root *r, const struct dir *parent, const char *path,
		    const struct reap_result *res)
{
	struct root_stats *s = &r->stats;

	switch (res->outcome) {
	case REAP_REMOVED:
		s->caches_removed++;
		s->files_removed += res->files;
		s->bytes_reclaimed += res->bytes;
		s->caches_relocated += res->relocated > 0;
		s->files_relocated += res->relocated;
		s->bytes_relocated += res->relocated ? res->bytes : 0;
		s->last_action = time(NULL);
		hot_note(r, parent);
		if (res->relocated)
			log_info("relocated %s (%u of %u files moved to the cache "
				 "directory%s)", path, res->relocated, res->files,
				 res->copied ? ", copied across filesystems" : "");
		else
			log_info("removed %s (%u files, %" PRIu64 " bytes)", path,
				 res->files, res->bytes);
		break;
	case REAP_WOULD_REMOVE:
		s->caches_would_remove++;
		s->last_action = time(NULL);
		log_info("would remove %s (%u files; observe mode)", path, res->files);
		break;
	case REAP_SKIPPED:
		s->caches_skipped++;
		s->files_removed += res->files;
		s->bytes_reclaimed += res->bytes;
		snprintf(s->last_skip, sizeof(s->last_skip), "%s: %s", path,
			 res->reason);
		log_warn("skipped %s: %s", path, res->reason);
		break;
	case REAP_GONE:
	case REAP_AVOIDED:
		break;
	}
}

static void avoid(struct root *r, const struct reap_result *res)
{
	r->avoid[r->avoid_next].ino = res->ino;
	r->avoid[r->avoid_next].birth = res->birth;
	r->avoid_next = (r->avoid_next + 1) % AVOID_MAX;
	if (r->n_avoid < AVOID_MAX)
		r->n_avoid++;
}

/* The path string is for the log and last_skip only: build it when read. */
static bool wants_path(int err, const struct reap_result *res)
{
	if (err < 0 || res->relocate_error || res->outcome == REAP_SKIPPED)
		return true;
	return (res->outcome == REAP_REMOVED ||
		res->outcome == REAP_WOULD_REMOVE) &&
	       log_get_level() >= LOG_LEVEL_INFO;
}

void watch_policy(const struct watcher *w, const struct root *r,
		  const char *src_dir, struct reap_policy *pol)
{
	*pol = (struct reap_policy){
		.uid = w->uid,
		.mnt_id = r->mnt_id,
		.observe = r->conf.mode == MODE_OBSERVE,
		.prefix_fd = src_dir ? w->settings.prefix_fd : -1,
		.src_dir = src_dir,
		.avoid = r->avoid,
		.n_avoid = r->n_avoid,
	};
}

void watch_add_moved(struct reap_result *to, const struct reap_result *from)
{
	to->files += from->files;
	to->bytes += from->bytes;
	to->relocated += from->relocated;
	to->copied += from->copied;
	if (from->relocate_error)
		to->relocate_error = from->relocate_error;
}

void watch_account_drained(const struct drain *dr)
{
	struct root_stats *s = &dr->root->stats;

	s->files_removed += dr->tally.files;
	s->bytes_reclaimed += dr->tally.bytes;
	s->files_relocated += dr->tally.relocated;
	s->bytes_relocated += dr->tally.bytes;
}

void watch_reap_at(struct watcher *w, struct dir *parent, int parent_fd,
		   const char *name, const struct reap_result *drained)
{
	struct root *r = watch_root_of(w, parent);
	bool relocate;
	char *src_dir, *path;
	struct reap_policy pol;
	struct reap_result res;
	int err;

	if (!r)
		return;
	relocate = r->conf.mode == MODE_RELOCATE && w->settings.prefix_fd >= 0;
	src_dir = relocate ? tree_path(&w->tree, parent, r->conf.path, NULL)
			   : NULL;
	watch_policy(w, r, src_dir, &pol);
	err = reaper_reap(parent_fd, name, &pol, &res);
	/* Without its source directory's path the bytecode cannot go to the
	 * prefix, and went as in delete mode: say so, as for any other
	 * relocation that failed. */
	if (err == 0 && relocate && !src_dir && res.files)
		res.relocate_error = -ENOMEM;
	if (err == 0 && drained)
		watch_add_moved(&res, drained);
	path = wants_path(err, &res)
	       ? tree_path(&w->tree, parent, r->conf.path, name) : NULL;
	if (err < 0)
		log_errno(err, "cannot remove %s", path ? path : name);
	else
		account(r, parent, path ? path : name, &res);
	if (err == 0 && res.relocate_error)
		log_errno(res.relocate_error, "cannot relocate the bytecode of %s "
			  "into the cache directory; it was deleted instead",
			  path ? path : name);
	free(src_dir);
	free(path);
	if (res.ino && (err < 0 || res.outcome == REAP_SKIPPED))
		avoid(r, &res);
	/* Told when the watcher returns to the loop (watch_leave()). */
	if (err == 0 && res.outcome != REAP_GONE && res.outcome != REAP_AVOIDED)
		w->activity++;
}
