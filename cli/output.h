/*
 * pycachectl's human output: one printer per reply shape. Names are printed
 * with control characters escaped as \xNN so that a file name cannot move
 * the cursor or split a line. Errors go to stderr, results to stdout.
 */
#ifndef PYCACHED_CLI_OUTPUT_H
#define PYCACHED_CLI_OUTPUT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct json_object;
struct proto_reply;

/* The reply's parameters as JSON: pretty on a terminal, else one line. */
void out_json(struct json_object *params);
void out_name(FILE *f, const char *name);
/* The same for text of several lines (errors, reasons): newlines stay. */
void out_text(FILE *f, const char *text);

void out_add(struct json_object *params);
void out_status(struct json_object *params);
void out_sweep(struct json_object *params);
/* systemd: the environment.d(5) line instead of the shell's export.
 * -EINVAL (said on stderr) when the path cannot be written that way. */
int out_env(struct json_object *params, bool systemd);
void out_prune(struct json_object *params);

/* One message on stderr explaining an error reply. */
void out_error(const char *prog, const struct proto_reply *reply);

/* "1.5 MiB", "2h 3m": for tests and the printers above. */
void out_size(char *buf, size_t len, uint64_t bytes);
void out_duration(char *buf, size_t len, uint64_t sec);

#endif
