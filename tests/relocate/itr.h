/*
 * What the relocate-mode integration tests share, on top of the harness
 * (tests/integration/harness.h): one world with a relocating root, the
 * default cache directory, python3's cache tag and magic number, and the
 * bounded loops that wait for real python3 writes. Strings belong to the
 * struct hx. Helpers fail the running cmocka test on error.
 */
#ifndef PYCACHED_TESTS_ITR_H
#define PYCACHED_TESTS_ITR_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

/*
 * How many python3 runs a test allows for every wanted pyc to be written
 * once: the daemon may take a __pycache__ away between CPython's mkdir and
 * open, and import then silently skips that pyc (FACTS.md).
 */
#define ITR_ROUNDS 10
/*
 * compileall does not swallow that error: every file whose directory the
 * daemon takes away in that window fails, often all of a run (FACTS.md).
 * Each run compiles everything again, so the bound is generous.
 */
#define ITR_COMPILE_ROUNDS 40

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

/* pycachectl --socket … ARGS (NULL-terminated); _ok fails on non-zero. */
struct hx_proc itr_ctl(struct itr *w, ...) __attribute__((sentinel));
struct hx_proc itr_ctl_ok(struct itr *w, ...) __attribute__((sentinel));

/* <prefix><root>/<rel_dir>/<stem>.<tag>.pyc: where relocation must put it. */
const char *itr_pyc(struct itr *w, const char *rel_dir, const char *stem);

/*
 * `python3 -v -c "import <modules>"` in the root until python3 reported
 * writing every rel_dir/__pycache__/<stem>.<tag>.pyc at least once, then
 * wait until the tree has no cache left. Fails after ITR_ROUNDS runs.
 */
void itr_import(struct itr *w, const char *rel_dir, const char *modules,
		const char *const *stems);
/* python3 ARGS… in the root with PYTHONPYCACHEPREFIX=<prefix>. */
struct hx_proc itr_python_prefixed(struct itr *w, ...) __attribute__((sentinel));

/* A pyc with python3's magic, flags 0 and this source mtime; parents made. */
void itr_plant_pyc(struct itr *w, const char *path, uint32_t mtime);
/* The source mtime in a pyc header; fails the test if unreadable. */
uint32_t itr_pyc_mtime(const char *path);

/* Copy the *.py files of a stdlib package to dst; how many. */
size_t itr_copy_stdlib_package(struct itr *w, const char *pkg, const char *dst);
/*
 * How many *.py in dir have no pyc at itr_pyc(rel_dir, stem). Fails the
 * test when one of them is missing although the compileall output
 * compiled_out does not report "Error compiling '<rel_dir>/<name>'": then
 * the daemon lost bytecode that was written.
 */
size_t itr_missing_pycs(struct itr *w, const char *dir, const char *rel_dir,
			const char *compiled_out);

/* eval "$(pycachectl env)" in sh gives PYTHONPYCACHEPREFIX=<prefix>. */
void itr_check_env_in_shell(struct itr *w);
/* line in $XDG_CONFIG_HOME/environment.d/ gives the same to systemd's
 * environment-d generator (skipped when it is not installed). */
void itr_check_env_in_environment_d(struct itr *w, const char *line);

#endif
