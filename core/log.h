/*
 * log.h — the daemon's one log sink (stderr, or syslog-like file via fd).
 *
 * Lines look like "2026-11-25 12:00:00 acmfs[pid] warn: <prefix>: message".
 * Never pass credentials. Thread-safe (one write(2) per line).
 */
#ifndef ACMFS_LOG_H
#define ACMFS_LOG_H

#include "util.h"

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level lvl);
void log_msg(enum log_level lvl, const char *prefix, const char *fmt, ...) ACM_PRINTF(3, 4);

#define log_err(...) log_msg(LOG_LVL_ERR, LOG_PREFIX, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, LOG_PREFIX, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, LOG_PREFIX, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, LOG_PREFIX, __VA_ARGS__)

#endif
