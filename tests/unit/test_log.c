/*
 * The logger: one message is one line, whatever bytes a file name brings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Log through a temporary file standing in for stderr; return its text. */
static char *capture(const char *name)
{
	FILE *tmp = tmpfile();
	int saved = dup(STDERR_FILENO);
	static char text[4096];
	size_t n;

	assert_non_null(tmp);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
	log_warn("skipped %s: it contains a FIFO", name);
	fflush(stderr);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	rewind(tmp);
	n = fread(text, 1, sizeof(text) - 1, tmp);
	text[n] = '\0';
	fclose(tmp);
	return text;
}

static void test_control_bytes_cannot_forge_lines(void **state)
{
	const char *text;

	(void)state;
	text = capture("/r/__pycache__\npycached: error: forged\033[2J");
	/* Exactly one line, ending with the message's own newline. */
	assert_ptr_equal(strchr(text, '\n'), text + strlen(text) - 1);
	assert_null(strchr(text, '\033'));
	assert_non_null(strstr(text, "/r/__pycache__?pycached: error: forged?[2J"));
}

static void test_plain_and_utf8_names_unchanged(void **state)
{
	const char *text;

	(void)state;
	text = capture("/r/caf\xc3\xa9/__pycache__");
	assert_non_null(strstr(text, "/r/caf\xc3\xa9/__pycache__: it contains"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_control_bytes_cannot_forge_lines),
		cmocka_unit_test(test_plain_and_utf8_names_unchanged),
	};

	unsetenv("JOURNAL_STREAM");
	unsetenv("NO_COLOR");
	log_init("pycached");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
