/*
 * What the relocate-mode integration tests share, on top of the harness
 * (tests/integration/harness.h): one world with a relocating root, the
 * default cache directory, python3's cache tag and magic number, crafted
 * pyc headers, and the checks that what real python3 wrote arrived in the
 * prefix. Strings belong to the struct hx. Helpers fail the running cmocka
 * test on error.
 */
#ifndef PYCACHED_TESTS_ITR_H
#define PYCACHED_TESTS_ITR_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

struct itr {
	struct hx *h;
	const char *root;     /* <tmp>/proj, canonical */
	const char *prefix;   /* the default cache_dir, $XDG_CACHE_HOME/pycached/prefix */
	const char *tag;      /* python3's sys.implementation.cache_tag */
	const char *magic;    /* python3's bytecode magic number, in hex */
};

/* Fill w in: the root exists, nothing runs yet. */
void itr_init(struct itr *w, struct hx *h);
/* itr_init, then start the daemon with a config file of no roots and
 * these [pycached] lines (may be NULL). */
void itr_world(struct itr *w, struct hx *h, const char *globals);
/* `pycachectl add --mode relocate ROOT`. */
void itr_add_root(struct itr *w);
/* Both of the above, without globals. */
void itr_start(struct itr *w, struct hx *h);

#define STEMS(...) ((const char *const[]){ __VA_ARGS__, NULL })

/* root/pkg/__init__.py and root/pkg/<module>.py for each module. */
void itr_make_pkg(struct itr *w, const char *const *modules);
/*
 * The same with lines more assignments in each module: its pyc takes a
 * while to marshal and write, which holds open the window between
 * CPython's mkdir (or makedirs) of the cache and its rename of the pyc.
 */
void itr_make_big_pkg(struct itr *w, const char *const *modules,
		      unsigned lines);
/* About 1 ms from that mkdir to the rename, 25 ms of compiling, a 40 KiB
 * pyc. A daemon that took the cache away at once lost a pyc of four such
 * modules in 12 runs of 12, of four tiny ones in 4 of 12. */
#define ITR_BIG_LINES 1500

/* pycachectl --socket … ARGS (NULL-terminated); _ok fails on non-zero. */
struct hx_proc itr_ctl(struct itr *w, ...) __attribute__((sentinel));
struct hx_proc itr_ctl_ok(struct itr *w, ...) __attribute__((sentinel));

/* <prefix><root>/<rel_dir>/<stem>.<tag>.pyc: where relocation must put it. */
const char *itr_pyc(struct itr *w, const char *rel_dir, const char *stem);

/*
 * `python3 -v -c "import <modules>"` in the root, once: it must exit 0,
 * the tree must lose its caches, and itr_expect_relocated() must hold for
 * stems. Without a cache in the tree python3 compiles and writes every
 * module it imports, so one run is enough.
 */
void itr_import(struct itr *w, const char *rel_dir, const char *modules,
		const char *const *stems);
/*
 * Fail, with the log, unless python3 -v's stderr verbose_err reports
 * writing the pyc of every rel_dir/<stem> and each is at itr_pyc(): a pyc
 * planted in the prefix before does not pass for a relocated one.
 */
void itr_expect_relocated(struct itr *w, const char *rel_dir,
			  const char *const *stems, const char *verbose_err);
/* python3 ARGS… in the root with PYTHONPYCACHEPREFIX=<prefix>. */
struct hx_proc itr_python_prefixed(struct itr *w, ...) __attribute__((sentinel));

/* A pyc with python3's magic, flags 0 and this source mtime; parents made. */
void itr_plant_pyc(struct itr *w, const char *path, uint32_t mtime);
/* The same with this source size: with both from itr_source_stamp(), a
 * header that matches the source as it is now. */
void itr_plant_pyc_sized(struct itr *w, const char *path, uint32_t mtime,
			 uint32_t size);
/* What a pyc header records of the source at path (lstat): its mtime and
 * size, cut to 32 bits. size may be NULL. */
void itr_source_stamp(const char *path, uint32_t *mtime, uint32_t *size);
/* The source mtime in a pyc header; fails the test if unreadable. */
uint32_t itr_pyc_mtime(const char *path);

/* Copy the top-level *.py files of a stdlib package (no subpackages) to
 * dst; how many. */
size_t itr_copy_stdlib_package(struct itr *w, const char *pkg, const char *dst);
/* How many *.py in dir have no pyc at itr_pyc(rel_dir, stem); each one
 * missing is named on stderr. */
size_t itr_missing_pycs(struct itr *w, const char *dir, const char *rel_dir);

/* eval "$(pycachectl env)" in sh gives PYTHONPYCACHEPREFIX=<prefix>. */
void itr_check_env_in_shell(struct itr *w);
/* line in $XDG_CONFIG_HOME/environment.d/ gives the same to systemd's
 * environment-d generator (skipped when it is not installed). */
void itr_check_env_in_environment_d(struct itr *w, const char *line);

#endif
