#include "oom-alloc.h"

#include <errno.h>
#include <stdlib.h>

struct oom_state oom;

__attribute__((noinline)) void oom_injected(void)
{
	__asm__ volatile("");
}

void oom_arm(unsigned long fail_at)
{
	oom.calls = 0;
	oom.failed = false;
	oom.fail_at = fail_at;
	oom.armed = true;
}

void oom_disarm(void)
{
	oom.armed = false;
}

void *oom_count(void *p)
{
	oom.live += p != NULL;
	return p;
}

#if HAVE_ALLOC_FAILURES
static bool fails(void)
{
	if (!oom.armed || oom.exempt || ++oom.calls != oom.fail_at)
		return false;
	oom.failed = true;
	oom_injected();
	errno = ENOMEM;
	return true;
}

void *malloc(size_t size)
{
	return fails() ? NULL : oom_count(__libc_malloc(size));
}

void *calloc(size_t n, size_t size)
{
	return fails() ? NULL : oom_count(__libc_calloc(n, size));
}

void *realloc(void *p, size_t size)
{
	void *q;

	if (fails())
		return NULL;
	q = __libc_realloc(p, size);
	if (!p)
		oom_count(q);
	else if (!q && size == 0)
		oom.live--;  /* glibc's realloc(p, 0) frees p */
	return q;
}

void free(void *p)
{
	oom.live -= p != NULL;
	__libc_free(p);
}
#endif
