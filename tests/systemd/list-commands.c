/*
 * What the completions must offer, from the command table of
 * common/proto.h: without arguments, every command name, one per line;
 * with "options", one "NAME --option" line per option in a usage string.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "proto.h"

static void print_options(const struct proto_command *c)
{
	for (const char *p = strstr(c->usage, "--"); p; p = strstr(p + 2, "--")) {
		size_t n = 2;

		while (isalnum((unsigned char)p[n]) || p[n] == '-')
			n++;
		printf("%s %.*s\n", c->name, (int)n, p);
	}
}

int main(int argc, char **argv)
{
	int options = argc > 1 && strcmp(argv[1], "options") == 0;

	for (size_t i = 0; i < proto_commands_len; i++) {
		if (options)
			print_options(&proto_commands[i]);
		else
			puts(proto_commands[i].name);
	}
	return fflush(stdout) == 0 ? 0 : 1;
}
