/* The command table, the help it drives and the IDL it must agree with. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

static void test_every_command_documented(void **state)
{
	for (size_t i = 0; i < proto_commands_len; i++) {
		const struct proto_command *c = &proto_commands[i];
		size_t n;

		assert_non_null(c->name);
		assert_non_null(c->usage);
		assert_non_null(c->help);
		n = strlen(c->help);
		assert_true(n > 10 && n < 60);
		assert_true(c->help[n - 1] != '.');
		assert_true(c->method >= PROTO_METHOD_NONE &&
			    c->method < PROTO_METHOD_COUNT);
		assert_ptr_equal(proto_command_find(c->name), c);
	}
}

static void test_names_unique(void **state)
{
	for (size_t i = 0; i < proto_commands_len; i++)
		for (size_t j = i + 1; j < proto_commands_len; j++)
			assert_string_not_equal(proto_commands[i].name,
						proto_commands[j].name);
	for (int i = 0; i < PROTO_METHOD_COUNT; i++) {
		assert_non_null(proto_methods[i]);
		assert_int_equal(proto_method_lookup(proto_methods[i]), i);
	}
	assert_int_equal(proto_method_lookup("io.pycached.Control"),
			 PROTO_METHOD_NONE);
	assert_null(proto_command_find("nope"));
}

/* Every method of our interface is reachable from some command. */
static void test_methods_have_commands(void **state)
{
	for (int m = PROTO_ADD; m < PROTO_GET_INFO; m++) {
		bool found = false;

		for (size_t i = 0; i < proto_commands_len; i++)
			found |= proto_commands[i].method == (enum proto_method)m;
		assert_true(found);
	}
}

static char *capture_help(int (*fn)(FILE *, const char *), const char *arg,
			  int *ret)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	assert_non_null(f);
	*ret = fn(f, arg);
	fclose(f);
	return text;
}

static int print_help(FILE *f, const char *prog)
{
	proto_print_help(f, prog);
	return 0;
}

static int print_add(FILE *f, const char *name)
{
	return proto_print_command_help(f, "pycachectl", name);
}

static void test_help_lists_commands(void **state)
{
	int r;
	char *text = capture_help(print_help, "pycachectl", &r);

	assert_non_null(strstr(text, "Usage: pycachectl"));
	for (size_t i = 0; i < proto_commands_len; i++) {
		char line[128];

		snprintf(line, sizeof(line), "\n  %s", proto_commands[i].name);
		assert_non_null(strstr(text, line));
		assert_non_null(strstr(text, proto_commands[i].help));
	}
	assert_non_null(strstr(text, "--socket PATH"));
	assert_non_null(strstr(text, "3 the daemon is not running"));
	free(text);
}

static void test_command_help(void **state)
{
	int r;
	char *text = capture_help(print_add, "add", &r);

	assert_int_equal(r, 0);
	assert_non_null(strstr(text, "Usage: pycachectl add [--mode "));
	free(text);
	text = capture_help(print_add, "frobnicate", &r);
	assert_int_equal(r, -ENOENT);
	assert_string_equal(text, "");
	free(text);
}

static void test_idl_matches_tables(void **state)
{
	const char *idl = proto_interface_description(PROTO_INTERFACE);
	static const char *const errors[] = {
		PROTO_E_NO_SUCH_ROOT, PROTO_E_INVALID_PATH,
		PROTO_E_ALREADY_ADDED, PROTO_E_ROOT_OVERLAP,
		PROTO_E_CONFIG_ROOT, PROTO_E_CONFIG_ERROR, PROTO_E_FAILED,
		PROTO_E_TOO_LARGE, PROTO_E_INVALID_REQUEST,
		PROTO_E_NO_CACHE_DIR, PROTO_E_CACHE_DIR_NOT_CLAIMED,
	};
	char want[128];

	assert_non_null(idl);
	assert_non_null(strstr(idl, "\ninterface io.pycached.Control\n"));
	for (int m = 0; m < PROTO_METHOD_COUNT; m++) {
		const char *name = strrchr(proto_methods[m], '.') + 1;
		const char *text = proto_interface_description(
			m < PROTO_GET_INFO ? PROTO_INTERFACE : PROTO_SERVICE);

		snprintf(want, sizeof(want), "\nmethod %s(", name);
		assert_non_null(strstr(text, want));
	}
	for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
		snprintf(want, sizeof(want), "\nerror %s (",
			 strrchr(errors[i], '.') + 1);
		assert_non_null(strstr(idl, want));
	}
	assert_null(proto_interface_description("org.example.Nope"));
}

/* The interface's methods come first: the IDL test above relies on it. */
static void test_prune_in_tables(void **state)
{
	const struct proto_command *c = proto_command_find("prune");

	assert_non_null(c);
	assert_int_equal(c->method, PROTO_PRUNE);
	assert_string_equal(c->usage, "");
	assert_true(PROTO_PRUNE < PROTO_GET_INFO);
	assert_int_equal(proto_method_lookup("io.pycached.Control.Prune"),
			 PROTO_PRUNE);
	assert_non_null(c->details);
	assert_non_null(strstr(c->details, "CACHEDIR.TAG"));
}

/* Every field of the reply, in the IDL that varlinkctl shows. */
static void test_prune_idl(void **state)
{
	const char *idl = proto_interface_description(PROTO_INTERFACE);
	static const char *const fields[] = {
		"cache_dir: string", "files_removed: int", "bytes_removed: int",
		"dirs_removed: int", "files_left: int", "bytes_left: int",
	};
	const char *m = strstr(idl, "\nmethod Prune() -> (\n");
	const char *end;

	assert_non_null(m);
	end = strstr(m, "\n)\n");
	assert_non_null(end);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		const char *f = strstr(m, fields[i]);

		assert_non_null(f);
		assert_true(f < end);
	}
	assert_non_null(strstr(idl, "\nerror NoCacheDir (path: ?string, "
			       "reason: string)\n"));
	assert_non_null(strstr(idl, "\nerror CacheDirNotClaimed (path: "
			       "string)\n"));
}

/* env's help says what each of its two lines is for. */
static void test_env_help(void **state)
{
	int r;
	char *text = capture_help(print_add, "env", &r);

	const char *details = proto_command_find("env")->details;

	assert_int_equal(r, 0);
	assert_non_null(strstr(text, "Usage: pycachectl env [--systemd]\n"));
	free(text);
	/* The details, not the wrapped text: a line may break anywhere. */
	assert_non_null(strstr(details, "export PYTHONPYCACHEPREFIX="));
	assert_non_null(strstr(details, "With --systemd, prints "
			       "PYTHONPYCACHEPREFIX=... for a file in "
			       "~/.config/environment.d/"));
	assert_non_null(strstr(details, "safety net"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_every_command_documented),
		cmocka_unit_test(test_names_unique),
		cmocka_unit_test(test_methods_have_commands),
		cmocka_unit_test(test_help_lists_commands),
		cmocka_unit_test(test_command_help),
		cmocka_unit_test(test_idl_matches_tables),
		cmocka_unit_test(test_prune_in_tables),
		cmocka_unit_test(test_prune_idl),
		cmocka_unit_test(test_env_help),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
