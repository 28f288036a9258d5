#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto.h"

/*
 * The logger is process-wide by nature (stderr is): this is the one piece of
 * file-scope state both binaries share.
 */
static struct {
	const char *prog;
	enum log_level level;
	bool journal;
	bool color;
} log_state = { "pycached", LOG_LEVEL_INFO, false, false };

static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

void log_init(const char *prog)
{
	int saved = errno;

	log_state.prog = prog;
	log_state.journal = stderr_is_journal();
	log_state.color = !log_state.journal && isatty(STDERR_FILENO) &&
			  !getenv("NO_COLOR");
	errno = saved;
}

void log_set_level(enum log_level level)
{
	log_state.level = level;
}

enum log_level log_get_level(void)
{
	return log_state.level;
}

int log_level_parse(const char *s, enum log_level *out)
{
	static const struct {
		const char *name;
		enum log_level level;
	} names[] = {
		{ "error", LOG_LEVEL_ERROR }, { "warning", LOG_LEVEL_WARN },
		{ "warn", LOG_LEVEL_WARN },   { "info", LOG_LEVEL_INFO },
		{ "debug", LOG_LEVEL_DEBUG },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return -EINVAL;
}

static const char *level_word(enum log_level level)
{
	switch (level) {
	case LOG_LEVEL_ERROR:
		return "error";
	case LOG_LEVEL_WARN:
		return "warning";
	case LOG_LEVEL_INFO:
		return "info";
	case LOG_LEVEL_DEBUG:
		return "debug";
	}
	return "log";
}

static const char *level_color(enum log_level level)
{
	switch (level) {
	case LOG_LEVEL_ERROR:
		return "\033[1;31m";
	case LOG_LEVEL_WARN:
		return "\033[1;33m";
	case LOG_LEVEL_INFO:
		return "\033[1m";
	case LOG_LEVEL_DEBUG:
		return "\033[2m";
	}
	return "";
}

/*
 * File names are the user's bytes: a newline in one must not forge a log
 * line, nor an escape sequence (C0 or C1) repaint a terminal, and one byte
 * that is not UTF-8 makes journalctl show the whole message as a blob.
 * Such bytes are written \xNN, as proto.h escapes names and pycachectl
 * prints them (proto_escape()); the rest, backslashes included, is kept.
 * Out of memory: still one line, with every doubtful byte a '?'.
 */
static void log_blank(char *text)
{
	for (unsigned char *p = (unsigned char *)text; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			*p = '?';
}

LOG_FORMAT(3, 0)
static void vlog_suffix(enum log_level level, const char *suffix,
			const char *fmt, va_list ap)
{
	char small[2048], *text = small, *line;
	int saved = errno, n;
	va_list again;

	if (level > log_state.level)
		return;
	/* Deep paths pass PATH_MAX: a record is printed whole, not cut. */
	va_copy(again, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	if (n >= (int)sizeof(small) && (text = malloc((size_t)n + 1)))
		vsnprintf(text, (size_t)n + 1, fmt, again);
	va_end(again);
	if (!text)
		text = small;
	line = proto_escape(text, PROTO_ESC_CONTROLS);
	if (!line)
		log_blank(text);
	/* One fprintf per line keeps lines whole in the journal. */
	if (log_state.journal)
		fprintf(stderr, "<%d>%s%s\n", (int)level, line ? line : text,
			suffix);
	else if (log_state.color)
		fprintf(stderr, "%s: %s%s\033[0m: %s%s\n", log_state.prog,
			level_color(level), level_word(level),
			line ? line : text, suffix);
	else
		fprintf(stderr, "%s: %s: %s%s\n", log_state.prog,
			level_word(level), line ? line : text, suffix);
	free(line);
	if (text != small)
		free(text);
	errno = saved;
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap)
{
	vlog_suffix(level, "", fmt, ap);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog_suffix(level, "", fmt, ap);
	va_end(ap);
}

void log_errno(int err, const char *fmt, ...)
{
	char suffix[256];
	va_list ap;

	snprintf(suffix, sizeof(suffix), ": %s", strerror(err < 0 ? -err : err));
	va_start(ap, fmt);
	vlog_suffix(LOG_LEVEL_ERROR, suffix, fmt, ap);
	va_end(ap);
}
