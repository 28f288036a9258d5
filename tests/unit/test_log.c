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
	static char text[8192];
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
	assert_non_null(strstr(text, "/r/__pycache__\\x0apycached: error: "
				     "forged\\x1b[2J"));
}

/* Not UTF-8, or a C1 control (CSI as U+009B): escaped byte by byte. */
static void test_invalid_utf8_and_c1_escaped(void **state)
{
	const char *text;

	(void)state;
	text = capture("/r/bad\xff\xfe/csi\xc2\x9b""31m/cut\xc3/__pycache__");
	assert_non_null(strstr(text, "/r/bad\\xff\\xfe/csi\\xc2\\x9b31m/"
				     "cut\\xc3/__pycache__: it contains"));
}

/* Past PATH_MAX, a record is still whole: nothing cut at a buffer's end. */
static void test_long_record_whole(void **state)
{
	static char name[6000];
	const char *text;

	(void)state;
	memset(name, 'a', sizeof(name) - 1);
	text = capture(name);
	assert_non_null(strstr(text, "aaaa: it contains a FIFO\n"));
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
		cmocka_unit_test(test_invalid_utf8_and_c1_escaped),
		cmocka_unit_test(test_long_record_whole),
	};

	unsetenv("JOURNAL_STREAM");
	unsetenv("NO_COLOR");
	log_init("pycached");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
