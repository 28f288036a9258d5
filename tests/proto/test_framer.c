/* The NUL framer: split and merged reads, the size limit. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

static void feed_str(struct proto_framer *f, const char *s)
{
	assert_int_equal(proto_framer_feed(f, s, strlen(s) + 1), 0);
}

static void expect_msg(struct proto_framer *f, const char *want)
{
	const char *msg;
	size_t len;

	assert_int_equal(proto_framer_next(f, &msg, &len), 1);
	assert_int_equal(len, strlen(want));
	assert_string_equal(msg, want);
}

static void test_one_message(void **state)
{
	struct proto_framer f;
	const char *msg;
	size_t len;

	proto_framer_init(&f, 64);
	assert_false(proto_framer_has_message(&f));
	feed_str(&f, "{}");
	assert_true(proto_framer_has_message(&f));
	expect_msg(&f, "{}");
	assert_int_equal(proto_framer_next(&f, &msg, &len), 0);
	assert_int_equal(proto_framer_pending(&f), 0);
	proto_framer_finish(&f);
}

static void test_split_bytewise(void **state)
{
	static const char two[] = "{\"a\":1}\0{\"b\":2}";   /* + final NUL */
	struct proto_framer f;

	proto_framer_init(&f, 64);
	for (size_t i = 0; i < sizeof(two); i++) {
		assert_int_equal(proto_framer_feed(&f, two + i, 1), 0);
		if (i == 7)
			expect_msg(&f, "{\"a\":1}");
		else if (i < sizeof(two) - 1)
			assert_false(proto_framer_has_message(&f));
	}
	expect_msg(&f, "{\"b\":2}");
	proto_framer_finish(&f);
}

static void test_merged(void **state)
{
	static const char three[] = "1\0" "22\0" "333\0" "44";
	struct proto_framer f;

	proto_framer_init(&f, 64);
	assert_int_equal(proto_framer_feed(&f, three, sizeof(three) - 1), 0);
	expect_msg(&f, "1");
	expect_msg(&f, "22");
	expect_msg(&f, "333");
	assert_false(proto_framer_has_message(&f));
	assert_int_equal(proto_framer_pending(&f), 2);
	assert_int_equal(proto_framer_feed(&f, "4\0", 2), 0);
	expect_msg(&f, "444");
	proto_framer_finish(&f);
}

static void test_empty_message(void **state)
{
	struct proto_framer f;

	proto_framer_init(&f, 8);
	assert_int_equal(proto_framer_feed(&f, "\0", 1), 0);
	expect_msg(&f, "");
	proto_framer_finish(&f);
}

static void test_exactly_at_limit(void **state)
{
	char *big = malloc(PROTO_REQUEST_MAX + 1);
	struct proto_framer f;
	const char *msg;
	size_t len;

	memset(big, 'x', PROTO_REQUEST_MAX);
	big[PROTO_REQUEST_MAX] = '\0';
	proto_framer_init(&f, PROTO_REQUEST_MAX);
	/* In two halves, the NUL arriving alone. */
	assert_int_equal(proto_framer_feed(&f, big, 1000), 0);
	assert_int_equal(proto_framer_feed(&f, big + 1000,
					   PROTO_REQUEST_MAX - 1000), 0);
	assert_int_equal(proto_framer_pending(&f), PROTO_REQUEST_MAX);
	assert_int_equal(proto_framer_feed(&f, "", 1), 0);
	assert_int_equal(proto_framer_next(&f, &msg, &len), 1);
	assert_int_equal(len, PROTO_REQUEST_MAX);
	proto_framer_finish(&f);
	free(big);
}

static void test_over_limit_before_nul(void **state)
{
	char *big = calloc(1, PROTO_REQUEST_MAX + 1);
	struct proto_framer f;

	memset(big, 'x', PROTO_REQUEST_MAX + 1);
	proto_framer_init(&f, PROTO_REQUEST_MAX);
	assert_int_equal(proto_framer_feed(&f, big, PROTO_REQUEST_MAX), 0);
	/* One byte more and no NUL yet: refused now, not after the NUL. */
	assert_int_equal(proto_framer_feed(&f, "x", 1), -EMSGSIZE);
	assert_int_equal(proto_framer_feed(&f, "", 1), -EMSGSIZE);
	assert_false(proto_framer_has_message(&f));
	proto_framer_finish(&f);
	free(big);
}

static void test_over_limit_merged(void **state)
{
	static const char data[] = "ok\0" "toolong\0";
	struct proto_framer f;

	proto_framer_init(&f, 4);
	/* The bad message sits behind a good one in the same read. */
	assert_int_equal(proto_framer_feed(&f, data, sizeof(data) - 1),
			 -EMSGSIZE);
	assert_false(proto_framer_has_message(&f));
	assert_int_equal(proto_framer_feed(&f, "a\0", 2), -EMSGSIZE);
	proto_framer_finish(&f);
}

static void test_many_small_reuse_buffer(void **state)
{
	struct proto_framer f;

	proto_framer_init(&f, 16);
	for (int i = 0; i < 10000; i++) {
		feed_str(&f, "abc");
		expect_msg(&f, "abc");
	}
	/* Compaction keeps the buffer at its first size. */
	assert_true(f.cap <= 4096);
	proto_framer_finish(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_message),
		cmocka_unit_test(test_split_bytewise),
		cmocka_unit_test(test_merged),
		cmocka_unit_test(test_empty_message),
		cmocka_unit_test(test_exactly_at_limit),
		cmocka_unit_test(test_over_limit_before_nul),
		cmocka_unit_test(test_over_limit_merged),
		cmocka_unit_test(test_many_small_reuse_buffer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
