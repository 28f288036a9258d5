/*
 * The control protocol between pycachectl and pycached: varlink, compiled
 * into both binaries. This header is the specification; PROTO_IDL in
 * proto.c is the same interface in varlink's IDL. Pure code, no I/O except
 * the help printers; any thread, no shared state.
 *
 * Memory: every allocation is checked; functions return 0 or -ENOMEM (or
 * another -errno) and never abort.
 *
 * FRAMING
 *   A connection carries a sequence of messages, each one JSON object in
 *   UTF-8 followed by one NUL byte. A message is at most PROTO_REQUEST_MAX
 *   bytes (the daemon's limit, the NUL not counted) from the client and
 *   PROTO_REPLY_MAX bytes from the daemon. The receiver rejects a message as
 *   soon as it has buffered more than the limit without a NUL: it never
 *   buffers more to find out. The daemon then sends an error and closes.
 *
 * CALLS
 *   {"method": "io.pycached.Control.Add", "parameters": {...},
 *    "more": true?, "oneway": true?}
 *   is answered by {"parameters": {...}} or
 *   {"error": "io.pycached.Control.NoSuchRoot", "parameters": {...}}.
 *   Requests on one connection are answered in order, one at a time. With
 *   "more", Add may first send progress replies carrying "continues": true;
 *   the last reply has no "continues". With "oneway" no reply is sent.
 *   Unknown parameter names are rejected (InvalidParameter).
 *
 * FILE NAMES
 *   Paths in requests must be absolute, valid UTF-8 and free of NUL: the
 *   CLI refuses other paths before sending; the daemon checks again.
 *   Names the daemon reports come from the file system and are bytes: every
 *   byte that is not part of a valid UTF-8 sequence is replaced by the four
 *   characters \xNN (NN: two lowercase hex digits); everything else,
 *   backslashes included, is passed through. The escape is for display: a
 *   name that really contains "\x" followed by two hex digits reads the same
 *   as an escaped one, which is accepted as vanishingly rare.
 *
 * INTERFACE io.pycached.Control (see PROTO_IDL for the types)
 *   Add(path, mode?)  -> (root: Root)          after the crawl and first sweep
 *   Remove(path)      -> (path)
 *   List()            -> (roots: []string)
 *   Status()          -> (version, pid, started, uptime_sec, mode,
 *                         config_file?, cache_dir?, cache_bytes?, watches,
 *                         max_watches, overflows, rescans, last_reload?,
 *                         roots: []Root)
 *   Sweep(paths?)     -> (roots: []SweepResult)
 *   Reload()          -> ()
 *   Env()             -> (pycache_prefix?, reason?)
 *   Prune()           -> (cache_dir, files_removed, bytes_removed,
 *                         dirs_removed, files_left, bytes_left)
 *                        bytecode in the cache directory whose source is
 *                        gone, then empty directories; the cache directory
 *                        is opened read-only (never created) when no root
 *                        relocates, and is walked on the daemon's loop
 *   Errors: NoSuchRoot(path), InvalidPath(path, reason),
 *   AlreadyAdded(path, origin), RootOverlap(path, other),
 *   ConfigRoot(path, file, line), ConfigError(errors),
 *   Failed(errno, message), RequestTooLarge(max), InvalidRequest(reason),
 *   NoCacheDir(path?, reason): Prune has no usable cache directory,
 *   CacheDirNotClaimed(path): it has no CACHEDIR.TAG, so pycached did not
 *   create it empty and deletes nothing there.
 *
 * INTERFACE org.varlink.service (for varlinkctl)
 *   GetInfo() -> (vendor, product, version, url, interfaces: []string)
 *   GetInterfaceDescription(interface) -> (description)
 *   Errors used: InterfaceNotFound(interface), MethodNotFound(method),
 *   InvalidParameter(parameter).
 */
#ifndef PYCACHED_PROTO_H
#define PYCACHED_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct json_object;

#define PROTO_INTERFACE "io.pycached.Control"
#define PROTO_SERVICE "org.varlink.service"

#define PROTO_REQUEST_MAX (64 * 1024)
#define PROTO_REPLY_MAX (4 * 1024 * 1024)

/* Error names, without the interface prefix: build with PROTO_ERR(). */
#define PROTO_ERR(name) PROTO_INTERFACE "." name
#define PROTO_E_NO_SUCH_ROOT PROTO_ERR("NoSuchRoot")
#define PROTO_E_INVALID_PATH PROTO_ERR("InvalidPath")
#define PROTO_E_ALREADY_ADDED PROTO_ERR("AlreadyAdded")
#define PROTO_E_ROOT_OVERLAP PROTO_ERR("RootOverlap")
#define PROTO_E_CONFIG_ROOT PROTO_ERR("ConfigRoot")
#define PROTO_E_CONFIG_ERROR PROTO_ERR("ConfigError")
#define PROTO_E_FAILED PROTO_ERR("Failed")
#define PROTO_E_TOO_LARGE PROTO_ERR("RequestTooLarge")
#define PROTO_E_INVALID_REQUEST PROTO_ERR("InvalidRequest")
#define PROTO_E_NO_CACHE_DIR PROTO_ERR("NoCacheDir")
#define PROTO_E_CACHE_DIR_NOT_CLAIMED PROTO_ERR("CacheDirNotClaimed")
#define PROTO_E_INTERFACE_NOT_FOUND PROTO_SERVICE ".InterfaceNotFound"
#define PROTO_E_METHOD_NOT_FOUND PROTO_SERVICE ".MethodNotFound"
#define PROTO_E_INVALID_PARAMETER PROTO_SERVICE ".InvalidParameter"

/* Every method the daemon answers; indexes proto_methods[]. */
enum proto_method {
	PROTO_ADD,
	PROTO_REMOVE,
	PROTO_LIST,
	PROTO_STATUS,
	PROTO_SWEEP,
	PROTO_RELOAD,
	PROTO_ENV,
	PROTO_PRUNE,
	PROTO_GET_INFO,
	PROTO_GET_INTERFACE_DESCRIPTION,
	PROTO_METHOD_COUNT,
	PROTO_METHOD_NONE = -1,   /* a command served by the CLI alone */
};

/* Full method names ("io.pycached.Control.Add"), indexed by the enum. */
extern const char *const proto_methods[PROTO_METHOD_COUNT];

/* The method's enum, or PROTO_METHOD_NONE when it is unknown. */
enum proto_method proto_method_lookup(const char *name);

/*
 * The command table: it drives pycachectl's parsing and help and, through
 * `method`, the daemon's dispatch (one handler per enum proto_method).
 */
struct proto_command {
	const char *name;          /* "add" */
	const char *usage;         /* arguments after the name, or "" */
	const char *help;          /* one line, no final period */
	const char *details;       /* a paragraph for `help COMMAND`, or NULL */
	enum proto_method method;
};

extern const struct proto_command proto_commands[];
extern const size_t proto_commands_len;

const struct proto_command *proto_command_find(const char *name);

/* pycachectl's --help text, and `help NAME`'s: -ENOENT for an unknown NAME. */
void proto_print_help(FILE *out, const char *prog);
int proto_print_command_help(FILE *out, const char *prog, const char *name);

/* The varlink IDL of PROTO_INTERFACE or PROTO_SERVICE, or NULL. */
const char *proto_interface_description(const char *interface);

/*
 * Incremental framer: feed it bytes as they arrive, in any split; take out
 * complete messages. Embedded in its owner.
 */
struct proto_framer {
	char *buf;
	size_t len;      /* bytes held */
	size_t cap;
	size_t start;    /* first byte not yet handed out */
	size_t tail;     /* bytes after the last NUL: the incomplete message */
	size_t max;      /* message limit, the NUL not counted */
	bool failed;     /* a message went over max: the stream is unusable */
};

void proto_framer_init(struct proto_framer *f, size_t max);
void proto_framer_finish(struct proto_framer *f);
/*
 * Buffer len bytes. -EMSGSIZE when any message in the data would exceed
 * the limit (nothing is buffered then, and the framer stays in error: the
 * connection must be dropped), -ENOMEM.
 */
int proto_framer_feed(struct proto_framer *f, const void *data, size_t len);
/*
 * Next complete message: 1 with *msg (NUL-terminated, borrowed until the
 * next feed) and *len (the NUL not counted), or 0 when there is none yet.
 */
int proto_framer_next(struct proto_framer *f, const char **msg, size_t *len);
/* True when a complete message is waiting. */
bool proto_framer_has_message(const struct proto_framer *f);
/* Bytes of an incomplete message held. */
size_t proto_framer_pending(const struct proto_framer *f);

/*
 * Parse one message's text: a JSON object, strictly, in valid UTF-8, with
 * nothing after it. *out is a new reference. -EBADMSG, -ENOMEM.
 */
int proto_parse(const char *text, size_t len, struct json_object **out);

/* A parsed call; every pointer borrows from the message object. */
struct proto_call {
	const char *method_name;
	enum proto_method method;      /* PROTO_METHOD_NONE if unknown */
	struct json_object *params;    /* an object, never NULL */
	bool more;
	bool oneway;
};

/*
 * Check a call's shape: "method" a string, "parameters" absent or an
 * object, "more"/"oneway" booleans, nothing else. -EBADMSG otherwise. An
 * unknown method is not an error here (call->method says it).
 */
int proto_call_parse(struct json_object *msg, struct proto_call *call);

/* A parsed reply; pointers borrow from the message object. */
struct proto_reply {
	const char *error;             /* NULL on success */
	struct json_object *params;    /* an object, never NULL */
	bool continues;
};

int proto_reply_parse(struct json_object *msg, struct proto_reply *reply);

/*
 * Build messages. params is taken over (NULL means {}), also on failure.
 * *out is a new object; -ENOMEM.
 */
int proto_call_new(const char *method, struct json_object *params, bool more,
		   struct json_object **out);
int proto_reply_new(struct json_object *params, bool continues,
		    struct json_object **out);
int proto_error_new(const char *error, struct json_object *params,
		    struct json_object **out);

/*
 * Serialize msg with its NUL terminator into a new buffer (*len counts the
 * NUL). -EMSGSIZE when the text is longer than max, -ENOMEM.
 */
int proto_serialize(struct json_object *msg, size_t max, char **out,
		    size_t *len);

/*
 * Builders that fold allocation failure into one status: each returns 0 or
 * -ENOMEM, so a sequence can be checked once with `r |= ...`. val is taken
 * over in every case. Strings must be UTF-8; names from the file system go
 * through proto_add_name(). A NULL string adds nothing (optional fields).
 */
int proto_add(struct json_object *obj, const char *key, struct json_object *val);
int proto_add_str(struct json_object *obj, const char *key, const char *s);
int proto_add_name(struct json_object *obj, const char *key, const char *name);
int proto_add_u64(struct json_object *obj, const char *key, uint64_t v);
int proto_add_i64(struct json_object *obj, const char *key, int64_t v);
int proto_add_bool(struct json_object *obj, const char *key, bool v);
int proto_append(struct json_object *array, struct json_object *val);
int proto_append_name(struct json_object *array, const char *name);

/* Getters: 0, -ENOENT when absent, -EINVAL on the wrong type. */
int proto_get_str(struct json_object *obj, const char *key, const char **out);
int proto_get_u64(struct json_object *obj, const char *key, uint64_t *out);
int proto_get_i64(struct json_object *obj, const char *key, int64_t *out);
int proto_get_bool(struct json_object *obj, const char *key, bool *out);

/* True when s[0..len) is valid UTF-8 (RFC 3629: no overlongs, surrogates). */
bool proto_utf8_valid(const char *s, size_t len);
/* Length of the valid UTF-8 sequence starting s (len > 0 bytes), or 0. */
size_t proto_utf8_seq(const char *s, size_t len);
/* The file-name escape described above; caller frees. NULL on ENOMEM. */
char *proto_name_escape(const char *name);
/*
 * The same escape, and with PROTO_ESC_CONTROLS also of C0 controls, DEL
 * and C1 controls (U+0080..U+009F), for text a terminal or the journal
 * shows; PROTO_ESC_KEEP_NL keeps newlines then. Caller frees; NULL on
 * ENOMEM.
 */
#define PROTO_ESC_CONTROLS 0x1u
#define PROTO_ESC_KEEP_NL 0x2u
char *proto_escape(const char *text, unsigned flags);

#endif
