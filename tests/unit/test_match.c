/* Unit tests of daemon/match.c: bytecode names and exclude globs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "match.h"

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static void test_bytecode_positive(void **state)
{
	static const char *const names[] = {
		"m.cpython-311.pyc",
		"m.cpython-311.opt-1.pyc",
		"m.cpython-311.opt-2.pyc",
		"m.cpython-311-pytest-8.0.0.pyc",
		"m.pypy310.pyc",
		"m.cpython-311.pyc.140234",
		"m.pyc.1",
		"m.pyc",
		"x.pyo",
		"x.pyc",
		"__init__.cpython-312.pyc",
		"..pyc",          /* odd, but its stem "." is not empty */
		"a b.pyc",
		"m.pyc.pyc",
		"m.py.pyc",
	};

	for (size_t i = 0; i < N_ELEMS(names); i++) {
		if (!match_bytecode_name(names[i]))
			fail_msg("'%s' should be bytecode", names[i]);
	}
}

static void test_bytecode_negative(void **state)
{
	static const char *const names[] = {
		".pyc",
		".pyo",
		".pyc.123",   /* a temporary of a stemless name */
		"m.pyc.",
		"m.pyc.12a",
		"m.pyc.a12",
		"m.pyc.-1",
		"m.pyc.+1",
		"m.pyc.1 ",
		"m.pyo.123",  /* CPython never writes .pyo temporaries */
		"m.nbi",
		"m.nbc",
		"m.cpython-311.nbi",
		"notes.txt",
		"m.PYC",
		"m.Pyc",
		"m.pyc~",
		"m.pyc.swp",
		"",
		"m.py",
		"pyc",
		"mpyc",
		"m_pyc",
		"m.pyc.\xd9\xa3",  /* Arabic-Indic digit three: not ASCII */
		"123",
		".123",
		"m.pycx",
		"m.pyd",
	};

	for (size_t i = 0; i < N_ELEMS(names); i++) {
		if (match_bytecode_name(names[i]))
			fail_msg("'%s' should not be bytecode", names[i]);
	}
}

static void test_exclude_globs(void **state)
{
	static const char *const globs[] = { "build", "*.egg-info", "data?",
					     "[Tt]mp" };
	static const char *const yes[] = { "build", "pkg.egg-info", ".egg-info",
					   "data1", "tmp", "Tmp" };
	static const char *const no[] = { "builds", "Build", "pkg.egg-info2",
					  "data", "data12", "temp", "" };

	for (size_t i = 0; i < N_ELEMS(yes); i++) {
		if (!match_exclude(globs, N_ELEMS(globs), yes[i]))
			fail_msg("'%s' should be excluded", yes[i]);
	}
	for (size_t i = 0; i < N_ELEMS(no); i++) {
		if (match_exclude(globs, N_ELEMS(globs), no[i]))
			fail_msg("'%s' should not be excluded", no[i]);
	}
}

static void test_exclude_edges(void **state)
{
	static const char *const star[] = { "*" };
	static const char *const dots[] = { ".*" };

	assert_false(match_exclude(NULL, 0, "anything"));
	assert_true(match_exclude(star, 1, "x"));
	/* flags 0: a leading dot is matched by '*' like any other byte. */
	assert_true(match_exclude(star, 1, ".hidden"));
	assert_true(match_exclude(dots, 1, ".venv"));
	assert_false(match_exclude(dots, 1, "venv"));
}

/*
 * match_exclude() compares a glob without special characters with
 * strcmp(): it must say what fnmatch(3) says, for every glob and name.
 * Names and globs are drawn from a small alphabet that has the special
 * characters, a dot, a backslash and a byte over 0x7f.
 */
static void test_exclude_agrees_with_fnmatch(void **state)
{
	static const char alphabet[] = "ab.*?[]\\!-\xe9";
	unsigned seed = 20261207;
	char glob[6], name[6];

	for (int round = 0; round < 200000; round++) {
		const char *const one[] = { glob };
		size_t gl = 1 + rand_r(&seed) % 5, nl = 1 + rand_r(&seed) % 5;

		for (size_t i = 0; i < gl; i++)
			glob[i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
		glob[gl] = '\0';
		/* Often the name is the glob itself, or a prefix of it. */
		if (rand_r(&seed) % 3 == 0) {
			memcpy(name, glob, gl + 1);
			name[nl < gl ? nl : gl] = '\0';
		} else {
			for (size_t i = 0; i < nl; i++)
				name[i] = alphabet[rand_r(&seed) %
						   (sizeof(alphabet) - 1)];
			name[nl] = '\0';
		}
		if (match_exclude(one, 1, name) != (fnmatch(glob, name, 0) == 0))
			fail_msg("glob '%s', name '%s': fnmatch says %d", glob, name,
				 fnmatch(glob, name, 0));
	}
}

static void test_builtin_excludes(void **state)
{
	static const char *const expected[] = { ".git", ".hg", ".svn", ".tox",
						".nox", ".direnv",
						"node_modules" };

	assert_int_equal(match_builtin_excludes_len, N_ELEMS(expected));
	for (size_t i = 0; i < N_ELEMS(expected); i++) {
		assert_true(match_exclude(match_builtin_excludes,
					  match_builtin_excludes_len,
					  expected[i]));
	}
	assert_false(match_exclude(match_builtin_excludes,
				   match_builtin_excludes_len, "src"));
	assert_false(match_exclude(match_builtin_excludes,
				   match_builtin_excludes_len, PYCACHE_NAME));
	/* The fast check says what the globs say. */
	for (size_t i = 0; i < N_ELEMS(expected); i++)
		assert_true(match_builtin_exclude(expected[i]));
	static const char *const others[] = { "src", "n", ".", ".gi", ".gitx",
					      "node_module", "nodE_modules",
					      PYCACHE_NAME, ".venv" };
	for (size_t i = 0; i < N_ELEMS(others); i++)
		assert_int_equal(match_builtin_exclude(others[i]),
				 match_exclude(match_builtin_excludes,
					       match_builtin_excludes_len,
					       others[i]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_bytecode_positive),
		cmocka_unit_test(test_bytecode_negative),
		cmocka_unit_test(test_exclude_globs),
		cmocka_unit_test(test_exclude_edges),
		cmocka_unit_test(test_exclude_agrees_with_fnmatch),
		cmocka_unit_test(test_builtin_excludes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
