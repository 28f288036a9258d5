#include <fnmatch.h>
#include <string.h>

#include "match.h"

const char *const match_builtin_excludes[] = {
	".git", ".hg", ".svn", ".tox", ".nox", ".direnv", "node_modules",
};
const size_t match_builtin_excludes_len =
	sizeof(match_builtin_excludes) / sizeof(match_builtin_excludes[0]);

static bool ends_with(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);

	return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/* The length of a trailing run of ASCII digits (isdigit is locale-bound). */
static size_t digit_tail(const char *s, size_t len)
{
	size_t n = 0;

	while (n < len && s[len - n - 1] >= '0' && s[len - n - 1] <= '9')
		n++;
	return n;
}

bool match_bytecode_name(const char *name)
{
	size_t len = strlen(name);
	size_t digits = digit_tail(name, len);

	/*
	 * "<name>.pyc.<digits>" is the temporary CPython's _write_atomic
	 * renames into place: strip the digits and judge the final name.
	 */
	if (digits > 0) {
		if (digits == len || name[len - digits - 1] != '.')
			return false;
		len -= digits + 1;
		return len > 4 && ends_with(name, len, ".pyc");
	}
	/* len > 4: ".pyc" alone has no stem. */
	return len > 4 &&
	       (ends_with(name, len, ".pyc") || ends_with(name, len, ".pyo"));
}

bool match_builtin_exclude(const char *name)
{
	/* All but node_modules start with a dot: most names stop here. */
	if (name[0] != '.' && name[0] != 'n')
		return false;
	for (size_t i = 0; i < match_builtin_excludes_len; i++)
		if (!strcmp(match_builtin_excludes[i], name))
			return true;
	return false;
}

/*
 * Called for every directory a crawl meets, once per glob: the built-in
 * excludes are plain names, and fnmatch() costs ten times a strcmp(). A
 * glob without a special character matches exactly itself.
 */
bool match_exclude(const char *const *globs, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		const char *g = globs[i];

		if (g[strcspn(g, "*?[\\")] == '\0' ? !strcmp(g, name)
						   : fnmatch(g, name, 0) == 0)
			return true;
	}
	return false;
}
