/*
 * One small logging API for both binaries. Messages go to stderr; under
 * journald (JOURNAL_STREAM matches stderr) each line carries a <N> priority
 * prefix and nothing else, on a TTY the level is coloured. Every function
 * preserves errno. Single-threaded: call from the loop thread only.
 */
#ifndef PYCACHED_LOG_H
#define PYCACHED_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_LEVEL_ERROR = 3,
	LOG_LEVEL_WARN = 4,
	LOG_LEVEL_INFO = 6,
	LOG_LEVEL_DEBUG = 7,
};

#define LOG_FORMAT(a, b) __attribute__((format(printf, a, b)))

/* Decide journal/TTY/plain once, from the environment and stderr. */
void log_init(const char *prog);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parse "error", "warning", "info", "debug"; 0 or -EINVAL. */
int log_level_parse(const char *s, enum log_level *out);

void log_msg(enum log_level level, const char *fmt, ...) LOG_FORMAT(2, 3);
void log_vmsg(enum log_level level, const char *fmt, va_list ap) LOG_FORMAT(2, 0);
/* Appends ": strerror(-err)"; err is a negative errno. */
void log_errno(int err, const char *fmt, ...) LOG_FORMAT(2, 3);

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
