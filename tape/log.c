/*
 * log.c — tape tier log sink (see log.h). Thread-safe: the sink pointer is
 * atomic and each message is formatted into a stack buffer first.
 */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

static _Atomic(tape_log_sink) sink_fn;

void tape_log_set_sink(tape_log_sink sink)
{
	atomic_store(&sink_fn, sink);
}

void tape_log(int level, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tape_log_sink s = atomic_load(&sink_fn);
	if (s) {
		s(level, msg);
		return;
	}
	static int verbose = -1;
	if (verbose < 0)
		verbose = getenv("ACMFS_TAPE_DEBUG") != NULL;
	if (level <= TAPE_LOG_WARN || verbose)
		fprintf(stderr, "acmfs-tape: %s\n", msg);
}
