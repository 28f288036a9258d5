#include "proto.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

/* ---- framer ---------------------------------------------------------- */

void proto_framer_init(struct proto_framer *f, size_t max)
{
	*f = (struct proto_framer){ .max = max };
}

void proto_framer_finish(struct proto_framer *f)
{
	free(f->buf);
	*f = (struct proto_framer){ 0 };
}

/*
 * Check every message boundary in data before copying anything, so that an
 * oversized message is refused without ever being held.
 */
static int framer_check(const struct proto_framer *f, const char *data,
			size_t len, size_t *new_tail)
{
	size_t tail = f->tail;
	const char *p = data, *end = data + len;

	while (p < end) {
		const char *nul = memchr(p, '\0', (size_t)(end - p));
		size_t n = (size_t)((nul ? nul : end) - p);

		if (tail + n > f->max)
			return -EMSGSIZE;
		if (!nul) {
			tail += n;
			break;
		}
		tail = 0;
		p = nul + 1;
	}
	*new_tail = tail;
	return 0;
}

static int framer_reserve(struct proto_framer *f, size_t extra)
{
	size_t need, cap;
	char *buf;

	/* Messages already handed out may still be borrowed: only feed moves. */
	if (f->start > 0) {
		memmove(f->buf, f->buf + f->start, f->len - f->start);
		f->len -= f->start;
		f->start = 0;
	}
	need = f->len + extra;
	if (need <= f->cap)
		return 0;
	cap = f->cap ? f->cap : 4096;
	while (cap < need)
		cap *= 2;
	buf = realloc(f->buf, cap);
	if (!buf)
		return -ENOMEM;
	f->buf = buf;
	f->cap = cap;
	return 0;
}

int proto_framer_feed(struct proto_framer *f, const void *data, size_t len)
{
	size_t tail;
	int r;

	if (f->failed)
		return -EMSGSIZE;
	r = framer_check(f, data, len, &tail);
	if (r < 0) {
		f->failed = true;
		return r;
	}
	r = framer_reserve(f, len);
	if (r < 0)
		return r;
	memcpy(f->buf + f->len, data, len);
	f->len += len;
	f->tail = tail;
	return 0;
}

bool proto_framer_has_message(const struct proto_framer *f)
{
	return !f->failed && f->len - f->start > f->tail;
}

size_t proto_framer_pending(const struct proto_framer *f)
{
	return f->tail;
}

int proto_framer_next(struct proto_framer *f, const char **msg, size_t *len)
{
	const char *p, *nul;

	if (!proto_framer_has_message(f))
		return 0;
	p = f->buf + f->start;
	nul = memchr(p, '\0', f->len - f->start - f->tail);
	*msg = p;
	*len = (size_t)(nul - p);
	f->start += *len + 1;
	return 1;
}

/* ---- UTF-8 and names --------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (n < len)
		return 0;
	/* The second byte's range rules out overlongs, surrogates, > U+10FFFF. */
	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

size_t proto_utf8_seq(const char *s, size_t len)
{
	return utf8_seq((const unsigned char *)s, len);
}

bool proto_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;

	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq(p + i, len - i);

		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* Is the sequence s[0..n) (n from proto_utf8_seq, 0: invalid) kept? */
static bool escape_keeps(const unsigned char *s, size_t n, unsigned flags)
{
	if (n == 0)
		return false;
	if (!(flags & PROTO_ESC_CONTROLS))
		return true;
	if (n == 1)
		return (s[0] >= 0x20 && s[0] != 0x7f) ||
		       (s[0] == '\n' && (flags & PROTO_ESC_KEEP_NL));
	return !(s[0] == 0xc2 && s[1] < 0xa0);   /* C1: U+0080..U+009F */
}

char *proto_escape(const char *text, unsigned flags)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)text;
	size_t len = strlen(text), o = 0;
	char *out = malloc(len * 4 + 1);

	if (!out)
		return NULL;
	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq(p + i, len - i);

		if (escape_keeps(p + i, n, flags)) {
			memcpy(out + o, p + i, n);
			o += n;
			i += n;
			continue;
		}
		for (size_t end = i + (n ? n : 1); i < end; i++) {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[p[i] >> 4];
			out[o++] = hex[p[i] & 0xf];
		}
	}
	out[o] = '\0';
	return out;
}

char *proto_name_escape(const char *name)
{
	return proto_escape(name, 0);
}

/* ---- codec ------------------------------------------------------------- */

int proto_parse(const char *text, size_t len, struct json_object **out)
{
	struct json_tokener *tok;
	struct json_object *obj;
	int r = 0;

	/* json-c's own check lets overlongs and surrogates through. */
	if (len > INT32_MAX || !proto_utf8_valid(text, len))
		return -EBADMSG;
	tok = json_tokener_new();
	if (!tok)
		return -ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
				    JSON_TOKENER_VALIDATE_UTF8);
	/* json-c 0.16 has no error code for a failed allocation: it stops
	 * where it failed, and only malloc's errno tells it from bad input. */
	errno = 0;
	obj = json_tokener_parse_ex(tok, text, (int)len);
	if (!obj && errno == ENOMEM) {
		r = -ENOMEM;
	} else if (!obj || json_tokener_get_error(tok) != json_tokener_success ||
		   json_tokener_get_parse_end(tok) != len ||
		   !json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		r = -EBADMSG;
	} else {
		*out = obj;
	}
	json_tokener_free(tok);
	return r;
}

static int get_bool_field(struct json_object *v, bool *out)
{
	if (!json_object_is_type(v, json_type_boolean))
		return -EBADMSG;
	*out = json_object_get_boolean(v);
	return 0;
}

/* An absent or null "parameters" reads as {}. */
static struct json_object *empty_params(struct json_object *msg)
{
	struct json_object *p = json_object_new_object();

	/* Owned by msg from here on, so the borrowed pointer stays valid. */
	if (p && json_object_object_add(msg, "parameters", p) < 0) {
		json_object_put(p);
		p = NULL;
	}
	return p;
}

static int params_field(struct json_object *msg, struct json_object *v,
			struct json_object **out)
{
	if (json_object_is_type(v, json_type_object)) {
		*out = v;
		return 0;
	}
	if (v && !json_object_is_type(v, json_type_null))
		return -EBADMSG;
	*out = empty_params(msg);
	return *out ? 0 : -ENOMEM;
}

int proto_call_parse(struct json_object *msg, struct proto_call *call)
{
	struct json_object *params = NULL;
	int r = 0;

	*call = (struct proto_call){ .method = PROTO_METHOD_NONE };
	json_object_object_foreach(msg, key, v) {
		if (strcmp(key, "method") == 0) {
			if (!json_object_is_type(v, json_type_string))
				return -EBADMSG;
			call->method_name = json_object_get_string(v);
			/* "Add\u0000…" is not Add: a name with a NUL is none. */
			if ((size_t)json_object_get_string_len(v) !=
			    strlen(call->method_name))
				return -EBADMSG;
		} else if (strcmp(key, "parameters") == 0) {
			params = v;
		} else if (strcmp(key, "more") == 0) {
			r = get_bool_field(v, &call->more);
		} else if (strcmp(key, "oneway") == 0) {
			r = get_bool_field(v, &call->oneway);
		} else {
			return -EBADMSG;
		}
		if (r < 0)
			return r;
	}
	if (!call->method_name)
		return -EBADMSG;
	/* params_field may add a key to msg: not inside the foreach. */
	r = params_field(msg, params, &call->params);
	if (r < 0)
		return r;
	call->method = proto_method_lookup(call->method_name);
	return 0;
}

int proto_reply_parse(struct json_object *msg, struct proto_reply *reply)
{
	struct json_object *params = NULL, *v;

	*reply = (struct proto_reply){ 0 };
	if (json_object_object_get_ex(msg, "error", &v)) {
		if (!json_object_is_type(v, json_type_string))
			return -EBADMSG;
		reply->error = json_object_get_string(v);
	}
	if (json_object_object_get_ex(msg, "continues", &v) &&
	    get_bool_field(v, &reply->continues) < 0)
		return -EBADMSG;
	json_object_object_get_ex(msg, "parameters", &params);
	/* Unknown keys are tolerated: a newer daemon may send more. */
	return params_field(msg, params, &reply->params);
}

static int message_new(struct json_object *params, struct json_object **out)
{
	struct json_object *msg = json_object_new_object();

	if (!params)
		params = json_object_new_object();
	if (proto_add(msg, "parameters", params) < 0) {
		json_object_put(msg);
		return -ENOMEM;
	}
	*out = msg;
	return 0;
}

int proto_call_new(const char *method, struct json_object *params, bool more,
		   struct json_object **out)
{
	struct json_object *msg;
	int r = message_new(params, &msg);

	if (r < 0)
		return r;
	r |= proto_add_str(msg, "method", method);
	if (more)
		r |= proto_add_bool(msg, "more", true);
	if (r < 0) {
		json_object_put(msg);
		return r;
	}
	*out = msg;
	return 0;
}

int proto_reply_new(struct json_object *params, bool continues,
		    struct json_object **out)
{
	struct json_object *msg;
	int r = message_new(params, &msg);

	if (r < 0)
		return r;
	if (continues && proto_add_bool(msg, "continues", true) < 0) {
		json_object_put(msg);
		return -ENOMEM;
	}
	*out = msg;
	return 0;
}

int proto_error_new(const char *error, struct json_object *params,
		    struct json_object **out)
{
	struct json_object *msg;
	int r = message_new(params, &msg);

	if (r < 0)
		return r;
	if (proto_add_str(msg, "error", error) < 0) {
		json_object_put(msg);
		return -ENOMEM;
	}
	*out = msg;
	return 0;
}

int proto_serialize(struct json_object *msg, size_t max, char **out,
		    size_t *len)
{
	size_t n;
	const char *s;
	char *buf;

	/* json-c 0.16 drops what it could not append to its buffer and
	 * returns the rest, invalid JSON: only malloc's errno tells. */
	errno = 0;
	s = json_object_to_json_string_length(
		msg, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
	if (!s || errno == ENOMEM)
		return -ENOMEM;
	if (n > max)
		return -EMSGSIZE;
	buf = malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, s, n + 1);   /* the string's own NUL is the terminator */
	*out = buf;
	*len = n + 1;
	return 0;
}

/* ---- builders and getters -------------------------------------------- */

int proto_add(struct json_object *obj, const char *key, struct json_object *val)
{
	if (!obj || !val || json_object_object_add(obj, key, val) < 0) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

int proto_add_str(struct json_object *obj, const char *key, const char *s)
{
	if (!s)
		return 0;
	return proto_add(obj, key, json_object_new_string(s));
}

int proto_add_name(struct json_object *obj, const char *key, const char *name)
{
	char *esc;
	int r;

	if (!name)
		return 0;
	esc = proto_name_escape(name);
	if (!esc) {
		proto_add(obj, key, NULL);
		return -ENOMEM;
	}
	r = proto_add_str(obj, key, esc);
	free(esc);
	return r;
}

int proto_add_u64(struct json_object *obj, const char *key, uint64_t v)
{
	return proto_add(obj, key, json_object_new_uint64(v));
}

int proto_add_i64(struct json_object *obj, const char *key, int64_t v)
{
	return proto_add(obj, key, json_object_new_int64(v));
}

int proto_add_bool(struct json_object *obj, const char *key, bool v)
{
	return proto_add(obj, key, json_object_new_boolean(v));
}

int proto_append(struct json_object *array, struct json_object *val)
{
	if (!array || !val || json_object_array_add(array, val) < 0) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

int proto_append_name(struct json_object *array, const char *name)
{
	char *esc = proto_name_escape(name);
	int r;

	if (!esc)
		return -ENOMEM;
	r = proto_append(array, json_object_new_string(esc));
	free(esc);
	return r;
}

static int get_typed(struct json_object *obj, const char *key,
		     enum json_type type, struct json_object **v)
{
	if (!json_object_object_get_ex(obj, key, v) ||
	    json_object_is_type(*v, json_type_null))
		return -ENOENT;
	return json_object_is_type(*v, type) ? 0 : -EINVAL;
}

int proto_get_str(struct json_object *obj, const char *key, const char **out)
{
	struct json_object *v;
	int r = get_typed(obj, key, json_type_string, &v);

	if (r == 0)
		*out = json_object_get_string(v);
	return r;
}

int proto_get_u64(struct json_object *obj, const char *key, uint64_t *out)
{
	struct json_object *v;
	int r = get_typed(obj, key, json_type_int, &v);

	if (r == 0)
		*out = json_object_get_uint64(v);
	return r;
}

int proto_get_i64(struct json_object *obj, const char *key, int64_t *out)
{
	struct json_object *v;
	int r = get_typed(obj, key, json_type_int, &v);

	if (r == 0)
		*out = json_object_get_int64(v);
	return r;
}

int proto_get_bool(struct json_object *obj, const char *key, bool *out)
{
	struct json_object *v;
	int r = get_typed(obj, key, json_type_boolean, &v);

	if (r == 0)
		*out = json_object_get_boolean(v);
	return r;
}
