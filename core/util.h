/*
 * util.h — small helpers shared by the engine: names, sizes, time, bitmaps,
 * CRC32C, whole-buffer I/O.
 *
 * Pure functions unless noted; no allocation except where a function says it
 * returns a malloc'd buffer. Errors: 0 or negative errno.
 */
#ifndef ACMFS_UTIL_H
#define ACMFS_UTIL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fault.h"

#define ACM_NAME_MAX 64
#define ACM_KiB 1024ULL
#define ACM_MiB (1024ULL * 1024)
#define ACM_GiB (1024ULL * 1024 * 1024)

#define ACM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ACM_MUST_USE __attribute__((warn_unused_result))
#define ACM_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* [A-Za-z0-9][A-Za-z0-9._-]{0,63} */
bool util_name_valid(const char *name);
/* "64M", "4096", "1G" → bytes; K/M/G/T (binary, optional trailing B/iB).
 * -EINVAL on junk, -ERANGE on overflow. */
int util_parse_size(const char *s, uint64_t *out) ACM_MUST_USE;
/* decimal, no sign, no junk, ≤ max */
int util_parse_u64(const char *s, uint64_t max, uint64_t *out) ACM_MUST_USE;

int64_t util_now(void);			   /* unix seconds */
/* "2026-11-25T12:00:00Z" */
void util_fmt_iso(int64_t t, char *buf, size_t len);
/* "2026/11/25 12:00:00" (ACM table style, UTC) */
void util_fmt_acm(int64_t t, char *buf, size_t len);
/* accepts ISO (2026-11-25T12:00:00Z), ACM style with '_' for the blank
 * (2026/11/25_12:00[:00], since ctl words have no blanks), or a day
 * (2026-11-25, 2026/11/25: its start); UTC → unix seconds */
int util_parse_date(const char *s, int64_t *out) ACM_MUST_USE;
/* "1.0 Gbyte" / "64.0 Mbyte" */
void util_fmt_size(uint64_t bytes, char *buf, size_t len);

/* Bitmaps of atomic 64-bit words, LSB first. */
static inline size_t bitmap_words(uint64_t nbits)
{
	return (size_t)((nbits + 63) / 64);
}
static inline bool bitmap_test(const _Atomic uint64_t *bm, uint64_t i)
{
	return (atomic_load_explicit(&bm[i / 64], memory_order_acquire) >> (i % 64)) & 1;
}
static inline void bitmap_set(_Atomic uint64_t *bm, uint64_t i)
{
	atomic_fetch_or_explicit(&bm[i / 64], 1ULL << (i % 64), memory_order_acq_rel);
}
/* returns whether the bit was set */
static inline bool bitmap_clear(_Atomic uint64_t *bm, uint64_t i)
{
	uint64_t m = 1ULL << (i % 64);
	return atomic_fetch_and_explicit(&bm[i / 64], ~m, memory_order_acq_rel) & m;
}
/* first set bit ≥ from, or nbits */
uint64_t bitmap_next(const _Atomic uint64_t *bm, uint64_t nbits, uint64_t from);
uint64_t bitmap_count(const _Atomic uint64_t *bm, uint64_t nbits);

uint32_t util_crc32c(uint32_t crc, const void *buf, size_t len);

/* Loop until all bytes are done; short reads past EOF fill zeros. */
int util_pread_full(enum io_class c, int fd, void *buf, size_t len, uint64_t off) ACM_MUST_USE;
int util_pwrite_full(enum io_class c, int fd, const void *buf, size_t len, uint64_t off) ACM_MUST_USE;
/* the same for the segments of iov, written to the file one after another */
int util_pwritev_full(enum io_class c, int fd, const struct iovec *iov, int cnt,
		      uint64_t off) ACM_MUST_USE;
/* write a whole file atomically: tmp + fsync + rename + dir fsync */
int util_write_file_atomic(enum io_class c, const char *path, const void *buf, size_t len) ACM_MUST_USE;
/* read a whole small file into a malloc'd NUL-terminated buffer */
int util_read_file(enum io_class c, const char *path, char **out, size_t *len) ACM_MUST_USE;
/* fsync the directory holding path, through the fault layer (class c) */
int util_fsync_dir(enum io_class c, const char *path);
int util_mkdir_p(const char *path, mode_t mode);
bool util_is_zero(const void *buf, size_t len);
const char *util_errname(int err); /* "EINVAL" for 22 (positive or negative) */

/* A growable text buffer with a hard cap; `oom` sticks once the cap or malloc fails. */
struct sbuf {
	char *buf;
	size_t len, cap, max;
	bool oom;
};
void sbuf_init(struct sbuf *sb, size_t max);
void sbuf_release(struct sbuf *sb);
void sbuf_addf(struct sbuf *sb, const char *fmt, ...) ACM_PRINTF(2, 3);
void sbuf_add(struct sbuf *sb, const char *s, size_t len);
/* JSON string literal with quotes */
void sbuf_add_json_str(struct sbuf *sb, const char *s);

#endif
