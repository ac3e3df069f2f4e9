/*
 * log.h — the tape tier's one log sink.
 *
 * Messages go to a sink the daemon may replace (tape_log_set_sink); the
 * default writes warnings and errors to stderr as "acmfs-tape: ...".
 * Never pass a credential, a signed header or a full request to it.
 */
#ifndef ACMFS_TAPE_LOG_H
#define ACMFS_TAPE_LOG_H

enum { TAPE_LOG_ERR = 3, TAPE_LOG_WARN = 4, TAPE_LOG_INFO = 6, TAPE_LOG_DEBUG = 7 };

typedef void (*tape_log_sink)(int level, const char *msg);

void tape_log_set_sink(tape_log_sink sink);
void tape_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
