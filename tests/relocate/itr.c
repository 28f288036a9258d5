#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itr.h"

#define MAX_ARGS 24
#define PYC_PAYLOAD "planted by the test\n"
#define ENV_D_GENERATOR \
	"/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"

/* python3 -c CODE in the temp dir: its stdout without the newline. */
static const char *py_value(struct hx *h, const char *code)
{
	struct hx_proc p = hx_python(h, NULL, "-c", code, NULL);
	size_t n;

	if (p.status != 0)
		fail_msg("python3 -c '%s' exited %d:\n%s", code, p.status, p.err);
	n = strlen(p.out);
	while (n && p.out[n - 1] == '\n')
		p.out[--n] = '\0';
	return p.out;
}

void itr_init(struct itr *w, struct hx *h)
{
	w->h = h;
	w->root = hx_path(h, "proj");
	w->prefix = hx_path(h, "cache/pycached/prefix");
	hx_mkdirs(w->root);
	w->tag = py_value(h, "import sys; print(sys.implementation.cache_tag)");
	w->magic = py_value(h, "import importlib.util as u; "
			    "print(u.MAGIC_NUMBER.hex())");
}

void itr_world(struct itr *w, struct hx *h, const char *globals)
{
	itr_init(w, h);
	hx_config_roots(h, globals, (const char *)NULL);
	hx_start(h, NULL);
}

void itr_add_root(struct itr *w)
{
	itr_ctl_ok(w, "add", "--mode", "relocate", w->root, NULL);
}

void itr_start(struct itr *w, struct hx *h)
{
	itr_world(w, h, NULL);
	itr_add_root(w);
}

static struct hx_proc vctl(struct itr *w, va_list ap)
{
	const char *argv[MAX_ARGS];
	size_t n = 0;

	while (n < MAX_ARGS - 1 && (argv[n] = va_arg(ap, const char *)))
		n++;
	argv[n] = NULL;
	return hx_ctl(w->h, argv);
}

struct hx_proc itr_ctl(struct itr *w, ...)
{
	struct hx_proc p;
	va_list ap;

	va_start(ap, w);
	p = vctl(w, ap);
	va_end(ap);
	return p;
}

struct hx_proc itr_ctl_ok(struct itr *w, ...)
{
	struct hx_proc p;
	va_list ap;

	va_start(ap, w);
	p = vctl(w, ap);
	va_end(ap);
	if (p.status != 0) {
		hx_dump_log(w->h);
		fail_msg("pycachectl exited %d:\n%s%s", p.status, p.out, p.err);
	}
	return p;
}

void itr_make_big_pkg(struct itr *w, const char *const *modules,
		      unsigned lines)
{
	hx_mkdirs(hx_path(w->h, "%s/pkg", w->root));
	hx_write(hx_path(w->h, "%s/pkg/__init__.py", w->root), "%s", "");
	for (size_t i = 0; modules[i]; i++) {
		const char *path = hx_path(w->h, "%s/pkg/%s.py", w->root,
					   modules[i]);
		FILE *f = fopen(path, "we");

		if (!f)
			fail_msg("create %s: %s", path, strerror(errno));
		fprintf(f, "VALUE = %zu\n", i);
		for (unsigned l = 0; l < lines; l++)
			fprintf(f, "V%u = \"%u\" * %u\n", l, l, l % 7);
		if (ferror(f) | (fclose(f) != 0))
			fail_msg("write %s failed", path);
	}
}

void itr_make_pkg(struct itr *w, const char *const *modules)
{
	itr_make_big_pkg(w, modules, 0);
}

const char *itr_pyc(struct itr *w, const char *rel_dir, const char *stem)
{
	return hx_str(w->h, "%s%s/%s/%s.%s.pyc", w->prefix, w->root, rel_dir,
		      stem, w->tag);
}

/* Why python3 -v does not report writing rel_dir/<stem>'s pyc; NULL
 * when it does. */
static const char *unwritten(struct itr *w, const char *rel_dir,
			     const char *stem, const char *verbose_err)
{
	const char *cache_pyc = hx_str(w->h, "'%s/%s/__pycache__/%s.%s.pyc'",
				       w->root, rel_dir, stem, w->tag);

	if (strstr(verbose_err, hx_str(w->h, "# created %s", cache_pyc)))
		return NULL;
	/* Import swallows the error, -v still names it (FACTS.md). */
	if (strstr(verbose_err, hx_str(w->h, "# could not create %s",
				       cache_pyc)))
		return "python3 could not write it";
	return "python3 did not write it";
}

void itr_expect_relocated(struct itr *w, const char *rel_dir,
			  const char *const *stems, const char *verbose_err)
{
	const char *missing = "";

	for (size_t i = 0; stems[i]; i++) {
		const char *pyc = itr_pyc(w, rel_dir, stems[i]);
		const char *why = unwritten(w, rel_dir, stems[i], verbose_err);

		if (!why && !hx_is_reg(pyc))
			why = "python3 wrote it, the prefix has none";
		if (why)
			missing = hx_str(w->h, "%s\n  %s (%s)", missing, pyc,
					 why);
	}
	if (!*missing)
		return;
	hx_dump_log(w->h);
	fail_msg("not relocated:%s", missing);
}

void itr_import(struct itr *w, const char *rel_dir, const char *modules,
		const char *const *stems)
{
	const char *code = hx_str(w->h, "import %s", modules);
	struct hx_proc p = hx_python(w->h, w->root, "-v", "-c", code, NULL);

	if (p.status != 0)
		fail_msg("python3 -c '%s' exited %d:\n%s", code, p.status,
			 p.err);
	hx_expect_no_caches(w->root, HX_REMOVE_MS);
	itr_expect_relocated(w, rel_dir, stems, p.err);
}

struct hx_proc itr_python_prefixed(struct itr *w, ...)
{
	const char *argv[MAX_ARGS] = {
		"env", hx_str(w->h, "PYTHONPYCACHEPREFIX=%s", w->prefix), "python3",
	};
	size_t n = 3;
	va_list ap;

	va_start(ap, w);
	while (n < MAX_ARGS - 1 && (argv[n] = va_arg(ap, const char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	return hx_run(w->h, w->root, argv);
}

static void put_le32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

void itr_plant_pyc_sized(struct itr *w, const char *path, uint32_t mtime,
			 uint32_t size)
{
	unsigned char head[16] = { 0 };
	const char *slash = strrchr(path, '/');
	FILE *f;

	for (int i = 0; i < 4; i++)
		if (sscanf(w->magic + 2 * i, "%2hhx", &head[i]) != 1)
			fail_msg("bad magic number '%s'", w->magic);
	put_le32(head + 8, mtime);
	put_le32(head + 12, size);
	hx_mkdirs(hx_str(w->h, "%.*s", (int)(slash - path), path));
	f = fopen(path, "we");
	if (!f || fwrite(head, 1, sizeof(head), f) != sizeof(head) ||
	    fputs(PYC_PAYLOAD, f) < 0 || fclose(f) != 0)
		fail_msg("cannot write %s", path);
}

void itr_plant_pyc(struct itr *w, const char *path, uint32_t mtime)
{
	itr_plant_pyc_sized(w, path, mtime, sizeof(PYC_PAYLOAD) - 1);
}

void itr_source_stamp(const char *path, uint32_t *mtime, uint32_t *size)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		fail_msg("lstat %s: %s", path, strerror(errno));
	/* CPython stores both modulo 2^32 (_pack_uint32). */
	*mtime = (uint32_t)st.st_mtime;
	if (size)
		*size = (uint32_t)st.st_size;
}

uint32_t itr_pyc_mtime(const char *path)
{
	unsigned char head[16];
	FILE *f = fopen(path, "re");
	uint32_t v = 0;

	if (!f || fread(head, 1, sizeof(head), f) != sizeof(head))
		fail_msg("cannot read the header of %s", path);
	fclose(f);
	for (int i = 3; i >= 0; i--)
		v = v << 8 | head[8 + i];
	return v;
}

static bool is_py(const char *name)
{
	size_t n = strlen(name);

	return n > 3 && strcmp(name + n - 3, ".py") == 0;
}

size_t itr_copy_stdlib_package(struct itr *w, const char *pkg, const char *dst)
{
	const char *src = py_value(w->h, hx_str(w->h, "import importlib.util, os; "
				   "print(os.path.dirname(importlib.util."
				   "find_spec('%s').origin))", pkg));
	struct hx_proc p;
	size_t n = 0;
	struct dirent *de;
	DIR *d;

	hx_mkdirs(dst);
	p = hx_run(w->h, NULL, (const char *const[]){ "sh", "-c",
		   "cp -- \"$0\"/*.py \"$1\"/", src, dst, NULL });
	if (p.status != 0)
		fail_msg("cannot copy %s: %s", src, p.err);
	d = opendir(dst);
	if (!d)
		fail_msg("opendir %s: %s", dst, strerror(errno));
	while ((de = readdir(d)))
		n += is_py(de->d_name);
	closedir(d);
	if (n < 2)
		fail_msg("%s has only %zu modules", src, n);
	return n;
}

size_t itr_missing_pycs(struct itr *w, const char *dir, const char *rel_dir)
{
	struct dirent *de;
	size_t missing = 0;
	DIR *d = opendir(dir);

	if (!d)
		fail_msg("opendir %s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		const char *stem;

		if (!is_py(de->d_name))
			continue;
		stem = hx_str(w->h, "%.*s", (int)strlen(de->d_name) - 3, de->d_name);
		if (hx_is_reg(itr_pyc(w, rel_dir, stem)))
			continue;
		missing++;
		print_message("no pyc of %s/%s at %s\n", rel_dir, de->d_name,
			      itr_pyc(w, rel_dir, stem));
	}
	closedir(d);
	return missing;
}

void itr_check_env_in_shell(struct itr *w)
{
	const char *ctl = getenv("PYCACHECTL_BIN");
	struct hx_proc p;

	if (!ctl)
		fail_msg("PYCACHECTL_BIN is not set: run through meson test");
	p = hx_run(w->h, NULL, (const char *const[]){ "sh", "-c",
		   "eval \"$(\"$0\" --socket \"$1\" env)\" && "
		   "printf %s \"$PYTHONPYCACHEPREFIX\"",
		   ctl, hx_socket_path(w->h), NULL });
	assert_int_equal(p.status, 0);
	assert_string_equal(p.out, w->prefix);
}

void itr_check_env_in_environment_d(struct itr *w, const char *line)
{
	const char *conf = hx_path(w->h, "config/environment.d/60-pycached.conf");
	struct hx_proc p;

	if (access(ENV_D_GENERATOR, X_OK) < 0) {
		print_message("no %s: environment.d line not checked\n",
			      ENV_D_GENERATOR);
		return;
	}
	hx_mkdirs(hx_path(w->h, "config/environment.d"));
	hx_write(conf, "%s", line);
	/* It reads $XDG_CONFIG_HOME/environment.d/, the harness's. */
	p = hx_run(w->h, NULL, (const char *const[]){ ENV_D_GENERATOR, NULL });
	assert_int_equal(p.status, 0);
	if (!strstr(p.out, hx_str(w->h, "PYTHONPYCACHEPREFIX=%s\n", w->prefix)))
		fail_msg("systemd's generator did not take %s:\n%s", line, p.out);
}
