/*
 * Writes the scdoc source of pycachectl(1): the template named on the
 * command line, with its "@COMMANDS@" line replaced by one entry per row of
 * proto_commands[], the table that also drives pycachectl --help and the
 * daemon's dispatch, so the man page cannot drift from them. Build-time
 * tool; exits non-zero on any error.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define PLACEHOLDER "@COMMANDS@"

/* A word of capitals, such as PATH or COMMAND: a placeholder in a usage. */
static size_t placeholder_len(const char *s)
{
	size_t n = 0;

	while (isupper((unsigned char)s[n]))
		n++;
	if (n < 2 || isalnum((unsigned char)s[n]) || s[n] == '_')
		return 0;
	return n;
}

static bool is_placeholder(const char *usage, const char *word, size_t n)
{
	for (const char *p = usage; *p; p++)
		if ((p == usage || !isalnum((unsigned char)p[-1])) &&
		    placeholder_len(p) == n && strncmp(p, word, n) == 0)
			return true;
	return false;
}

/*
 * Text with scdoc's markup characters escaped, and the placeholders of the
 * command's usage underlined, as man pages set them.
 */
static void put_text(FILE *out, const char *text, const char *usage)
{
	const char *s = text;

	while (*s) {
		bool boundary = s == text || !isalnum((unsigned char)s[-1]);
		size_t n = boundary ? placeholder_len(s) : 0;

		if (n && is_placeholder(usage, s, n)) {
			fprintf(out, "_%.*s_", (int)n, s);
			s += n;
			continue;
		}
		if (*s == '*' || *s == '_' || *s == '\\')
			fputc('\\', out);
		fputc(*s++, out);
	}
}

static void put_commands(FILE *out)
{
	for (size_t i = 0; i < proto_commands_len; i++) {
		const struct proto_command *c = &proto_commands[i];

		fprintf(out, "*%s*", c->name);
		if (*c->usage) {
			fputc(' ', out);
			put_text(out, c->usage, c->usage);
		}
		fputs("\n\t", out);
		put_text(out, c->help, c->usage);
		fputs(".\n", out);
		if (c->details) {
			fputs("\n\t", out);
			put_text(out, c->details, c->usage);
			fputc('\n', out);
		}
		fputc('\n', out);
	}
}

int main(int argc, char **argv)
{
	char line[4096];
	bool done = false;
	FILE *in;

	if (argc != 2) {
		fprintf(stderr, "usage: %s TEMPLATE\n", argv[0]);
		return 2;
	}
	in = fopen(argv[1], "r");
	if (!in) {
		perror(argv[1]);
		return 1;
	}
	while (fgets(line, sizeof(line), in)) {
		if (!done && strcmp(line, PLACEHOLDER "\n") == 0) {
			put_commands(stdout);
			done = true;
		} else {
			fputs(line, stdout);
		}
	}
	if (ferror(in) || !done) {
		fprintf(stderr, "%s: %s\n", argv[1],
			ferror(in) ? "read error" : "no " PLACEHOLDER " line");
		fclose(in);
		return 1;
	}
	fclose(in);
	return fflush(stdout) == 0 ? 0 : 1;
}
