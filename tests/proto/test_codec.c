/* Parsing and building varlink messages; UTF-8 checks and name escapes. */
#include <errno.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"

static struct json_object *parse_ok(const char *text)
{
	struct json_object *obj = NULL;

	assert_int_equal(proto_parse(text, strlen(text), &obj), 0);
	assert_non_null(obj);
	return obj;
}

static void parse_bad(const char *text, size_t len)
{
	struct json_object *obj = NULL;

	assert_int_equal(proto_parse(text, len, &obj), -EBADMSG);
	assert_null(obj);
}

static void test_parse_call(void **state)
{
	struct json_object *msg = parse_ok(
		"{\"method\":\"io.pycached.Control.Add\","
		"\"parameters\":{\"path\":\"/home/u/src\"},\"more\":true}");
	struct proto_call call;
	const char *path;

	assert_int_equal(proto_call_parse(msg, &call), 0);
	assert_int_equal(call.method, PROTO_ADD);
	assert_true(call.more);
	assert_false(call.oneway);
	assert_int_equal(proto_get_str(call.params, "path", &path), 0);
	assert_string_equal(path, "/home/u/src");
	json_object_put(msg);
}

static void test_unknown_method(void **state)
{
	struct json_object *msg = parse_ok("{\"method\":\"io.pycached.Control.Nope\"}");
	struct proto_call call;

	assert_int_equal(proto_call_parse(msg, &call), 0);
	assert_int_equal(call.method, PROTO_METHOD_NONE);
	assert_string_equal(call.method_name, "io.pycached.Control.Nope");
	/* Absent parameters read as an empty object. */
	assert_non_null(call.params);
	assert_int_equal(json_object_object_length(call.params), 0);
	json_object_put(msg);
}

static void test_invalid_json(void **state)
{
	static const char *bad[] = {
		"", "{", "{\"method\":}", "[1,2]", "\"str\"", "42",
		"{\"a\":1} trailing", "{\"a\":1}{\"b\":2}",
		"{\"a\":1,}", "nul", "{\"a\":01}",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		parse_bad(bad[i], strlen(bad[i]));
}

static void test_invalid_utf8(void **state)
{
	static const char latin1[] = "{\"method\":\"x\",\"parameters\":"
				     "{\"path\":\"/caf\xe9\"}}";
	static const char overlong[] = "{\"a\":\"\xc0\xaf\"}";
	static const char surrogate[] = "{\"a\":\"\xed\xa0\x80\"}";

	parse_bad(latin1, strlen(latin1));
	parse_bad(overlong, strlen(overlong));
	parse_bad(surrogate, strlen(surrogate));
	json_object_put(parse_ok("{\"a\":\"caf\xc3\xa9 \xf0\x9f\x90\x8d\"}"));
}

static void call_bad(const char *text)
{
	struct json_object *msg = parse_ok(text);
	struct proto_call call;

	assert_int_equal(proto_call_parse(msg, &call), -EBADMSG);
	json_object_put(msg);
}

static void test_call_shape(void **state)
{
	call_bad("{}");
	call_bad("{\"method\":1}");
	call_bad("{\"method\":\"a.B\",\"parameters\":[]}");
	call_bad("{\"method\":\"a.B\",\"more\":1}");
	call_bad("{\"method\":\"a.B\",\"oneway\":\"yes\"}");
	call_bad("{\"method\":\"a.B\",\"extra\":true}");
}

static void test_null_parameters(void **state)
{
	struct json_object *msg = parse_ok(
		"{\"method\":\"org.varlink.service.GetInfo\",\"parameters\":null}");
	struct proto_call call;

	assert_int_equal(proto_call_parse(msg, &call), 0);
	assert_int_equal(call.method, PROTO_GET_INFO);
	assert_true(json_object_is_type(call.params, json_type_object));
	json_object_put(msg);
}

static struct json_object *roundtrip(struct json_object *msg)
{
	struct json_object *back;
	size_t len;
	char *buf;

	assert_int_equal(proto_serialize(msg, PROTO_REPLY_MAX, &buf, &len), 0);
	assert_int_equal(buf[len - 1], '\0');
	assert_int_equal(strlen(buf), len - 1);
	assert_int_equal(proto_parse(buf, len - 1, &back), 0);
	free(buf);
	json_object_put(msg);
	return back;
}

static void test_reply_roundtrip(void **state)
{
	struct json_object *params = json_object_new_object(), *msg;
	struct proto_reply reply;
	uint64_t n;
	int r = 0;

	r |= proto_add_u64(params, "big", UINT64_MAX);
	r |= proto_add_str(params, "absent", NULL);
	assert_int_equal(r, 0);
	assert_int_equal(proto_reply_new(params, true, &msg), 0);
	msg = roundtrip(msg);
	assert_int_equal(proto_reply_parse(msg, &reply), 0);
	assert_null(reply.error);
	assert_true(reply.continues);
	assert_int_equal(proto_get_u64(reply.params, "big", &n), 0);
	assert_true(n == UINT64_MAX);
	assert_int_equal(proto_get_u64(reply.params, "absent", &n), -ENOENT);
	json_object_put(msg);
}

static void test_error_roundtrip(void **state)
{
	struct json_object *params = json_object_new_object(), *msg;
	struct proto_reply reply;
	const char *s;

	assert_int_equal(proto_add_str(params, "path", "/x"), 0);
	assert_int_equal(proto_error_new(PROTO_E_NO_SUCH_ROOT, params, &msg), 0);
	msg = roundtrip(msg);
	assert_int_equal(proto_reply_parse(msg, &reply), 0);
	assert_string_equal(reply.error, "io.pycached.Control.NoSuchRoot");
	assert_false(reply.continues);
	assert_int_equal(proto_get_str(reply.params, "path", &s), 0);
	assert_int_equal(proto_get_bool(reply.params, "path", &(bool){ 0 }),
			 -EINVAL);
	json_object_put(msg);
}

static void test_call_new(void **state)
{
	struct json_object *msg;
	struct proto_call call;

	assert_int_equal(proto_call_new(proto_methods[PROTO_LIST], NULL, false,
					&msg), 0);
	msg = roundtrip(msg);
	assert_int_equal(proto_call_parse(msg, &call), 0);
	assert_int_equal(call.method, PROTO_LIST);
	json_object_put(msg);
}

static void test_serialize_limit(void **state)
{
	struct json_object *params = json_object_new_object(), *msg;
	char *buf = NULL;
	size_t len;

	assert_int_equal(proto_add_str(params, "s", "0123456789"), 0);
	assert_int_equal(proto_reply_new(params, false, &msg), 0);
	assert_int_equal(proto_serialize(msg, 20, &buf, &len), -EMSGSIZE);
	assert_null(buf);
	json_object_put(msg);
}

static void test_utf8_valid(void **state)
{
	assert_true(proto_utf8_valid("", 0));
	assert_true(proto_utf8_valid("plain/ascii", 11));
	assert_true(proto_utf8_valid("\xc3\xa9\xe2\x82\xac\xf4\x8f\xbf\xbf", 9));
	assert_false(proto_utf8_valid("\xff", 1));
	assert_false(proto_utf8_valid("\xe2\x82", 2));           /* truncated */
	assert_false(proto_utf8_valid("\xe0\x80\x80", 3));       /* overlong */
	assert_false(proto_utf8_valid("\xed\xb0\x80", 3));       /* surrogate */
	assert_false(proto_utf8_valid("\xf4\x90\x80\x80", 4));   /* > U+10FFFF */
	assert_false(proto_utf8_valid("\xc3\x28", 2));
}

static void expect_escape(const char *in, const char *want)
{
	char *out = proto_name_escape(in);

	assert_non_null(out);
	assert_string_equal(out, want);
	assert_true(proto_utf8_valid(out, strlen(out)));
	free(out);
}

static void test_name_escape(void **state)
{
	expect_escape("/home/u/src", "/home/u/src");
	expect_escape("/caf\xc3\xa9", "/caf\xc3\xa9");
	expect_escape("/caf\xe9", "/caf\\xe9");
	expect_escape("a\xe2\x82z", "a\\xe2\\x82z");
	expect_escape("\xed\xa0\x80", "\\xed\\xa0\\x80");
	expect_escape("back\\slash", "back\\slash");
	expect_escape("\xff\xfe", "\\xff\\xfe");
}

static void test_add_name_is_valid_json(void **state)
{
	struct json_object *params = json_object_new_object(), *msg, *arr;
	struct proto_reply reply;
	const char *s;

	arr = json_object_new_array();
	assert_int_equal(proto_append_name(arr, "/x/\x80\n"), 0);
	assert_int_equal(proto_add(params, "names", arr), 0);
	assert_int_equal(proto_add_name(params, "path", "/p\xc0"), 0);
	assert_int_equal(proto_reply_new(params, false, &msg), 0);
	/* Escaped names survive the strict, UTF-8-validating parser. */
	msg = roundtrip(msg);
	assert_int_equal(proto_reply_parse(msg, &reply), 0);
	assert_int_equal(proto_get_str(reply.params, "path", &s), 0);
	assert_string_equal(s, "/p\\xc0");
	arr = json_object_object_get(reply.params, "names");
	assert_string_equal(json_object_get_string(
				    json_object_array_get_idx(arr, 0)),
			    "/x/\\x80\n");
	json_object_put(msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_call),
		cmocka_unit_test(test_unknown_method),
		cmocka_unit_test(test_invalid_json),
		cmocka_unit_test(test_invalid_utf8),
		cmocka_unit_test(test_call_shape),
		cmocka_unit_test(test_null_parameters),
		cmocka_unit_test(test_reply_roundtrip),
		cmocka_unit_test(test_error_roundtrip),
		cmocka_unit_test(test_call_new),
		cmocka_unit_test(test_serialize_limit),
		cmocka_unit_test(test_utf8_valid),
		cmocka_unit_test(test_name_escape),
		cmocka_unit_test(test_add_name_is_valid_json),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
