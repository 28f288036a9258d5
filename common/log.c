#include "log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

LOG_FORMAT(3, 0)
static void vlog_suffix(enum log_level level, const char *suffix,
			const char *fmt, va_list ap)
{
	char buf[2048];
	int saved = errno;

	if (level > log_state.level)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* File names are the user's bytes: a newline in one must not forge a
	 * log line, nor an escape sequence repaint a terminal. */
	for (char *p = buf; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	/* One fprintf per line keeps lines whole in the journal. */
	if (log_state.journal)
		fprintf(stderr, "<%d>%s%s\n", (int)level, buf, suffix);
	else if (log_state.color)
		fprintf(stderr, "%s: %s%s\033[0m: %s%s\n", log_state.prog,
			level_color(level), level_word(level), buf, suffix);
	else
		fprintf(stderr, "%s: %s: %s%s\n", log_state.prog,
			level_word(level), buf, suffix);
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
