/*
 * Fuzz target: the control protocol's framer and decoder, as the daemon's
 * server uses them. The input is a client's byte stream and where it is
 * split into reads:
 *
 *   byte 0   bits 0-3: n, the number of chunk specs; bit 4: lazy (take
 *            messages out only once everything is fed: the framer allows
 *            it, the server never does it)
 *   byte 1   the rest of the stream is fed in pieces of this many bytes
 *            (0: in one piece)
 *   n specs  two bytes each: size, the next size bytes of the stream; repeat,
 *            fed once when < 128, else (repeat - 127) * 16 times, so that
 *            a short input reaches the 64 KiB limit
 *   stream   the bytes the client sends
 *
 * Every piece goes through proto_framer_feed() and every complete message
 * through the checks of server.c's dispatch(), in its order (UTF-8,
 * proto_parse(), proto_call_parse(), the method table); the first message
 * the server would refuse ends the connection, as it does there. The server
 * code itself is not linked: it needs a daemon, a watcher and a socket, and
 * between its read callback and these functions it only holds bytes and
 * writes replies (tests/integration/test_control.c drives that part).
 *
 * Checked, beyond no sanitizer report: the framer hands out exactly the
 * NUL-terminated messages of the stream, none longer than
 * PROTO_REQUEST_MAX, and refuses the piece that makes a message longer
 * than that (with every later one) before holding it; it never holds more
 * than the limit plus one piece; proto_utf8_valid() agrees with a
 * decoder written here; a decoded call has a method of the table, named
 * exactly, or is refused with an error reply that the client can read
 * back; a decoded call encoded again (proto_call_new(), proto_serialize())
 * decodes to the same method, flags and parameters. A broken expectation
 * prints "FUZZ FINDING: …" and aborts. PYCACHED_FUZZ_TRACE=1 prints what
 * happens to each piece and message.
 */
#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What one input may feed in all: a few messages at the limit. */
#define STREAM_MAX (4 * PROTO_REQUEST_MAX)

/* The model's byte loops guide nothing and cost most of the time. */
#ifdef __clang__
#define NO_COVERAGE __attribute__((no_sanitize("coverage")))
#else
#define NO_COVERAGE
#endif

static bool tracing;

__attribute__((format(printf, 1, 2)))
static void trace(const char *fmt, ...)
{
	va_list ap;

	if (!tracing)
		return;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

__attribute__((format(printf, 1, 2), noreturn))
static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\nFUZZ FINDING: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* --- UTF-8, independently: RFC 3629 by code point --------------------- */

NO_COVERAGE
static bool ref_utf8_valid(const uint8_t *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		uint32_t cp, min;
		size_t n;

		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0)
			n = 2, cp = s[i] & 0x1f, min = 0x80;
		else if ((s[i] & 0xf0) == 0xe0)
			n = 3, cp = s[i] & 0x0f, min = 0x800;
		else if ((s[i] & 0xf8) == 0xf0)
			n = 4, cp = s[i] & 0x07, min = 0x10000;
		else
			return false;
		if (len - i < n)
			return false;
		for (size_t k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n;
	}
	return true;
}

/* --- what the client sent, and what the framer must make of it --------- */

struct session {
	struct proto_framer f;
	uint8_t *sent;        /* every byte the framer accepted */
	size_t n_sent;
	size_t taken;         /* sent[] up to here came out as messages */
	size_t tail;          /* bytes after the last NUL in sent[] */
	bool refused;         /* the framer refused a piece: dropped */
	bool dropped;         /* the server ended the connection */
	unsigned messages;
};

/* Would a message in these bytes, after tail ones, pass the limit? */
NO_COVERAGE
static bool over_limit(size_t tail, const uint8_t *p, size_t len, size_t *out)
{
	for (size_t i = 0; i < len; i++) {
		tail = p[i] ? tail + 1 : 0;
		if (tail > PROTO_REQUEST_MAX)
			return true;
	}
	*out = tail;
	return false;
}

/* The error reply and drop of server.c: it must build and read back. */
static void refuse(struct session *s, const char *error, const char *key,
		   const char *value)
{
	struct json_object *params = json_object_new_object(), *msg, *back;
	struct proto_reply reply;
	size_t len;
	char *buf;
	int r = 0;

	if (key && !strcmp(key, "max"))
		r |= proto_add_i64(params, key, PROTO_REQUEST_MAX);
	else if (key)
		r |= proto_add_name(params, key, value);
	if (r < 0 || proto_error_new(error, params, &msg) < 0)
		fail("cannot build the %s reply", error);
	if (proto_serialize(msg, PROTO_REPLY_MAX, &buf, &len) < 0)
		fail("cannot serialize the %s reply", error);
	json_object_put(msg);
	if (strlen(buf) != len - 1 || proto_parse(buf, len - 1, &back) < 0 ||
	    proto_reply_parse(back, &reply) < 0 || !reply.error ||
	    strcmp(reply.error, error) != 0)
		fail("the %s reply does not read back: %s", error, buf);
	trace("  -> %s, dropped", buf);
	json_object_put(back);
	free(buf);
	s->dropped = true;
}

static void feed(struct session *s, const uint8_t *p, size_t len)
{
	size_t tail;
	bool over = s->refused || over_limit(s->tail, p, len, &tail);
	int r;

	/* on_read() never feeds an empty read (nread 0 returns at once). */
	if (len == 0 || s->dropped || s->n_sent + len > STREAM_MAX)
		return;
	r = proto_framer_feed(&s->f, p, len);
	trace("feed %zu bytes after %zu: %d", len, s->n_sent, r);
	if (over != (r == -EMSGSIZE) || (r < 0 && r != -EMSGSIZE))
		fail("feeding %zu bytes after %zu (a message of %zu so far): "
		     "%d, expected %d", len, s->n_sent, s->tail, r,
		     over ? -EMSGSIZE : 0);
	if (over) {
		s->refused = true;
		if (proto_framer_feed(&s->f, "", 1) != -EMSGSIZE)
			fail("the framer took bytes again after refusing some");
		refuse(s, PROTO_E_TOO_LARGE, "max", NULL);
		return;
	}
	memcpy(s->sent + s->n_sent, p, len);
	s->n_sent += len;
	s->tail = tail;
	if (proto_framer_pending(&s->f) != s->tail)
		fail("the framer holds %zu bytes of a message, not %zu",
		     proto_framer_pending(&s->f), s->tail);
	/* The server takes every message before it reads again. */
	if (s->taken + s->tail == s->n_sent - len &&
	    s->f.len - s->f.start > PROTO_REQUEST_MAX + len)
		fail("the framer holds %zu bytes after a piece of %zu",
		     s->f.len - s->f.start, len);
}

/* --- one message, as dispatch() in server.c takes it -------------------- */

/* Encode the call again and decode that: the same call must come back. */
static void check_roundtrip(const struct proto_call *call)
{
	struct json_object *msg, *back;
	struct proto_call again;
	size_t len;
	char *buf;
	int r;

	if (proto_call_new(call->method_name, json_object_get(call->params),
			   call->more, &msg) < 0)
		fail("proto_call_new failed");
	r = proto_serialize(msg, PROTO_REQUEST_MAX, &buf, &len);
	json_object_put(msg);
	if (r == -EMSGSIZE)
		return;   /* the text grew past the limit: legitimately refused */
	if (r < 0)
		fail("proto_serialize: %s", strerror(-r));
	if (strlen(buf) != len - 1)
		fail("an encoded call has a NUL inside: it cannot be framed");
	if (proto_parse(buf, len - 1, &back) < 0 ||
	    proto_call_parse(back, &again) < 0)
		fail("an encoded call does not decode: %s", buf);
	if (strcmp(again.method_name, call->method_name) != 0 ||
	    again.method != call->method || again.more != call->more ||
	    again.oneway || !json_object_equal(again.params, call->params))
		fail("an encoded call decodes differently: %s", buf);
	json_object_put(back);
	free(buf);
}

static void check_call(struct json_object *msg, const struct proto_call *call)
{
	struct json_object *m;

	if (!call->method_name || !call->params ||
	    !json_object_is_type(call->params, json_type_object))
		fail("a decoded call without a method name or parameters");
	if (call->method == PROTO_METHOD_NONE)
		return;
	if (call->method < 0 || call->method >= PROTO_METHOD_COUNT ||
	    strcmp(proto_methods[call->method], call->method_name) != 0)
		fail("method '%s' decoded as %d", call->method_name,
		     (int)call->method);
	/* The JSON string, not only its C string up to a "\u0000". */
	if (!json_object_object_get_ex(msg, "method", &m) ||
	    (size_t)json_object_get_string_len(m) != strlen(call->method_name))
		fail("method '%s' followed by a NUL and more decoded as %s",
		     call->method_name, proto_methods[call->method]);
}

static void unknown_method(struct session *s, const char *method)
{
	const char *dot = strrchr(method, '.');
	char *iface = strndup(method, dot ? (size_t)(dot - method) : 0);

	if (!iface)
		fail("out of memory");
	if (!strcmp(iface, PROTO_INTERFACE) || !strcmp(iface, PROTO_SERVICE))
		refuse(s, PROTO_E_METHOD_NOT_FOUND, "method", method);
	else
		refuse(s, PROTO_E_INTERFACE_NOT_FOUND, "interface", iface);
	free(iface);
}

static void dispatch(struct session *s, const char *text, size_t len)
{
	struct json_object *msg = NULL;
	struct proto_call call;
	bool utf8 = proto_utf8_valid(text, len);

	if (utf8 != ref_utf8_valid((const uint8_t *)text, len))
		fail("proto_utf8_valid() says %d of a message, wrongly", utf8);
	if (!utf8) {
		refuse(s, PROTO_E_INVALID_REQUEST, "reason", "not UTF-8");
		return;
	}
	if (proto_parse(text, len, &msg) < 0) {
		if (msg)
			fail("proto_parse failed and left an object");
		refuse(s, PROTO_E_INVALID_REQUEST, "reason", "not a call");
		return;
	}
	if (!json_object_is_type(msg, json_type_object))
		fail("proto_parse gave something else than an object");
	if (proto_call_parse(msg, &call) < 0) {
		refuse(s, PROTO_E_INVALID_REQUEST, "reason", "not a call");
	} else {
		check_call(msg, &call);
		check_roundtrip(&call);
		trace("  call %s (%d)", call.method_name, (int)call.method);
		if (call.method == PROTO_METHOD_NONE)
			unknown_method(s, call.method_name);
	}
	json_object_put(msg);
}

/* Take out every complete message, checking each against sent[]. */
static void take(struct session *s)
{
	const char *msg;
	size_t len;

	while (!s->dropped && proto_framer_next(&s->f, &msg, &len) == 1) {
		const uint8_t *want = s->sent + s->taken;
		const uint8_t *nul = memchr(want, '\0', s->n_sent - s->taken);

		if (!nul || (size_t)(nul - want) != len || len > PROTO_REQUEST_MAX ||
		    memcmp(msg, want, len) != 0 || msg[len] != '\0')
			fail("message %u (%zu bytes) is not what was sent",
			     s->messages, len);
		s->taken += len + 1;
		s->messages++;
		trace("message %u, %zu bytes: %.60s%s", s->messages, len, msg,
		      len > 60 ? "…" : "");
		dispatch(s, msg, len);
	}
	/* Complete messages sent but not taken: more than the tail is left. */
	if (!s->dropped && s->n_sent - s->taken > s->tail)
		fail("a complete message stays in the framer");
	if (s->refused && proto_framer_has_message(&s->f))
		fail("a refused framer still offers a message");
}

/* --- the input ---------------------------------------------------------- */

static size_t times(unsigned repeat)
{
	return repeat < 128 ? 1 : (repeat - 127) * 16;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t sent[STREAM_MAX];
	struct session s = { .sent = sent };
	unsigned n = size > 0 ? data[0] & 15 : 0;
	bool lazy = size > 0 && (data[0] & 16);
	size_t piece = size > 1 ? data[1] : 0;
	const uint8_t *specs = data + (size > 2 ? 2 : size);
	const uint8_t *p, *end = data + size;

	tracing = getenv("PYCACHED_FUZZ_TRACE") != NULL;
	if (size < 2 + 2 * (size_t)n)
		return 0;
	proto_framer_init(&s.f, PROTO_REQUEST_MAX);
	p = specs + 2 * n;
	for (unsigned i = 0; i < n; i++) {
		size_t len = specs[2 * i];

		if (len > (size_t)(end - p))
			len = (size_t)(end - p);
		for (size_t k = times(specs[2 * i + 1]); k > 0; k--) {
			feed(&s, p, len);
			if (!lazy)
				take(&s);
		}
		p += len;
	}
	while (p < end) {
		size_t len = piece && piece < (size_t)(end - p) ? piece :
			     (size_t)(end - p);

		feed(&s, p, len);
		if (!lazy)
			take(&s);
		p += len;
	}
	take(&s);
	proto_framer_finish(&s.f);
	return 0;
}
