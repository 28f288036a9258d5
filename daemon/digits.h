/*
 * Decimal digits without snprintf(), for names built on hot paths (a
 * watch's magic link, a reap's temporary name): vfprintf costs about a
 * thousand instructions a call. Any thread.
 */
#ifndef PYCACHED_DIGITS_H
#define PYCACHED_DIGITS_H

#include <stdint.h>

/* Write v in decimal at out (room for 20 characters), no NUL: the end. */
static inline char *put_decimal(char *out, uint64_t v)
{
	char digits[20];
	int n = 0;

	do {
		digits[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n > 0)
		*out++ = digits[--n];
	return out;
}

#endif
