/*
 * test_util.c — core/util.c: names, sizes, numbers, dates, bitmaps, CRC32C,
 * zero detection, whole-file I/O and the capped text buffer; core/iomem.c's
 * direct-I/O buffers.
 *
 * Pure functions are checked against literal expected values (never against a
 * second call of the code under test); CRC32C against the published check value
 * and a bit-at-a-time reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iomem.h"
#include "util.h"

/* ---- names ---- */

static void test_name_valid(void **state)
{
	char n64[65], n65[66];

	(void)state;
	assert_true(util_name_valid("db"));
	assert_true(util_name_valid("a"));
	assert_true(util_name_valid("0"));
	assert_true(util_name_valid("Db-01_x.y"));
	assert_true(util_name_valid("a.."));	/* dots allowed after the first char */
	assert_true(util_name_valid("a-"));

	memset(n64, 'a', 64);
	n64[64] = 0;
	assert_true(util_name_valid(n64));
	memset(n65, 'a', 65);
	n65[65] = 0;
	assert_false(util_name_valid(n65));

	assert_false(util_name_valid(""));
	assert_false(util_name_valid("."));
	assert_false(util_name_valid(".."));
	assert_false(util_name_valid(".db"));
	assert_false(util_name_valid("-db"));
	assert_false(util_name_valid("_db"));
	assert_false(util_name_valid("a/b"));
	assert_false(util_name_valid("/"));
	assert_false(util_name_valid("../x"));
	assert_false(util_name_valid("a b"));
	assert_false(util_name_valid("a\tb"));
	assert_false(util_name_valid("a\nb"));
	assert_false(util_name_valid("a=b"));
	assert_false(util_name_valid("a%b"));
	assert_false(util_name_valid("a\"b"));
	assert_false(util_name_valid("caf\xc3\xa9")); /* non-ASCII bytes */
	assert_false(util_name_valid("\xc3\xa9"));
	assert_false(util_name_valid("a\x7f"));
}

/* ---- sizes and numbers ---- */

static void test_parse_size_ok(void **state)
{
	static const struct {
		const char *s;
		uint64_t want;
	} ok[] = {
		{ "0", 0 },
		{ "4096", 4096 },
		{ "0004K", 4096 },
		{ "1k", 1024 },
		{ "1K", 1024 },
		{ "1KB", 1024 },
		{ "1KiB", 1024 },
		{ "64M", 64ULL << 20 },
		{ "64m", 64ULL << 20 },
		{ "64MB", 64ULL << 20 },
		{ "64MiB", 64ULL << 20 },
		{ "1G", 1ULL << 30 },
		{ "1g", 1ULL << 30 },
		{ "3GiB", 3ULL << 30 },
		{ "1T", 1ULL << 40 },
		{ "2TB", 2ULL << 40 },
		{ "64T", 64ULL << 40 },
		{ "17592186044415M", 17592186044415ULL << 20 }, /* 2^64 - 1 MiB */
		{ "18446744073709551609", 18446744073709551609ULL },
	};
	uint64_t v;

	(void)state;
	for (size_t i = 0; i < ACM_ARRAY_SIZE(ok); i++) {
		v = 12345;
		int rc = util_parse_size(ok[i].s, &v);
		if (rc || v != ok[i].want)
			fail_msg("util_parse_size(\"%s\") = %d, %llu; want 0, %llu", ok[i].s, rc,
				 (unsigned long long)v, (unsigned long long)ok[i].want);
	}
}

static void test_parse_size_bad(void **state)
{
	static const char *const junk[] = {
		"", "K", "-1", "+1", " 1", "1 ", "1 K", "1.5G", "1X", "1B", "1Kb", "1kib",
		"1KiBB", "1KK", "1iB", "0x10", "1e3", "12abc", "1P", "1E",
	};
	static const char *const range[] = {
		"18446744073709551616",		       /* 2^64 */
		"99999999999999999999",
		"17592186044416M",		       /* 2^64 exactly */
		"16777216T",			       /* 2^64 */
		"17179869184G",			       /* 2^64 */
		"1000000000000000000000000000000000", /* longer than the digit buffer */
	};
	uint64_t v = 777;

	(void)state;
	for (size_t i = 0; i < ACM_ARRAY_SIZE(junk); i++) {
		int rc = util_parse_size(junk[i], &v);
		if (rc != -EINVAL)
			fail_msg("util_parse_size(\"%s\") = %d, want -EINVAL", junk[i], rc);
	}
	for (size_t i = 0; i < ACM_ARRAY_SIZE(range); i++) {
		int rc = util_parse_size(range[i], &v);
		if (rc != -ERANGE)
			fail_msg("util_parse_size(\"%s\") = %d, want -ERANGE", range[i], rc);
	}
	assert_int_equal(v, 777); /* never written on failure */
}

static void test_parse_u64(void **state)
{
	uint64_t v = 5;

	(void)state;
	assert_int_equal(util_parse_u64("0", 10, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(util_parse_u64("366", 366, &v), 0);
	assert_int_equal(v, 366);
	assert_int_equal(util_parse_u64("007", 366, &v), 0);
	assert_int_equal(v, 7);
	v = 5;
	assert_int_equal(util_parse_u64("367", 366, &v), -ERANGE);
	assert_int_equal(util_parse_u64("4294967296", UINT32_MAX, &v), -ERANGE);
	assert_int_equal(util_parse_u64("99999999999999999999", UINT64_MAX, &v), -ERANGE);
	assert_int_equal(util_parse_u64("", 10, &v), -EINVAL);
	assert_int_equal(util_parse_u64("-1", 10, &v), -EINVAL);
	assert_int_equal(util_parse_u64("+1", 10, &v), -EINVAL);
	assert_int_equal(util_parse_u64(" 1", 10, &v), -EINVAL);
	assert_int_equal(util_parse_u64("1 ", 10, &v), -EINVAL);
	assert_int_equal(util_parse_u64("1a", 10, &v), -EINVAL);
	assert_int_equal(util_parse_u64("0x1", 10, &v), -EINVAL);
	assert_int_equal(v, 5);
	assert_int_equal(util_parse_u64("4294967295", UINT32_MAX, &v), 0);
	assert_int_equal(v, UINT32_MAX);
	assert_int_equal(util_parse_u64("18446744073709551609", UINT64_MAX, &v), 0);
	assert_true(v == 18446744073709551609ULL);
}

/* the largest values parse (an overflow guard that assumed the digit 9
 * once rejected …610 to …615) */
static void test_parse_u64_max(void **state)
{
	uint64_t v = 0;

	(void)state;
	assert_int_equal(util_parse_u64("18446744073709551615", UINT64_MAX, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(util_parse_u64("18446744073709551616", UINT64_MAX, &v), -ERANGE);
}

/* ---- dates ---- */

static void test_parse_date(void **state)
{
	static const struct {
		const char *s;
		int64_t want;
	} ok[] = {
		{ "2026-11-25T12:00:00Z", 1795608000 },
		{ "2026-11-25T12:00:00", 1795608000 },
		{ "2026/11/25_12:00:00", 1795608000 },
		{ "2026/11/25_12:00", 1795608000 },
		{ "2026-11-25_12:00:00", 1795608000 },
		{ "2026-11-25", 1795564800 },
		{ "2026/11/25", 1795564800 },
		{ "2026-11-25T12:34:56Z", 1795608000 + 34 * 60 + 56 },
		{ "1970-01-01", 0 },
	};
	static const char *const bad[] = {
		"", "yesterday", "2026-13-01", "2026-11-32", "2026-11-25T25:00:00Z",
		"2026-11-25T12:00:00Zjunk", "2026-11-25x", "25.11.2026", "2026-11",
		"2026/11/25 12:00:00", /* ACM tables print a space; ctl words cannot hold one */
		"2026-11-25T12:00",
	};
	int64_t t;

	(void)state;
	for (size_t i = 0; i < ACM_ARRAY_SIZE(ok); i++) {
		t = -1;
		int rc = util_parse_date(ok[i].s, &t);
		if (rc || t != ok[i].want)
			fail_msg("util_parse_date(\"%s\") = %d, %lld; want %lld", ok[i].s, rc,
				 (long long)t, (long long)ok[i].want);
	}
	for (size_t i = 0; i < ACM_ARRAY_SIZE(bad); i++) {
		t = 42;
		int rc = util_parse_date(bad[i], &t);
		if (rc != -EINVAL || t != 42)
			fail_msg("util_parse_date(\"%s\") = %d, want -EINVAL and no write", bad[i],
				 rc);
	}
}

static void test_fmt(void **state)
{
	char buf[64];
	int64_t t;

	(void)state;
	util_fmt_iso(1795608000, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-25T12:00:00Z");
	util_fmt_acm(1795608000 + 61, buf, sizeof(buf));
	assert_string_equal(buf, "2026/11/25 12:01:01");
	/* what the tables print can be written back (with '_' for the space) */
	util_fmt_iso(1795608000 + 3599, buf, sizeof(buf));
	assert_int_equal(util_parse_date(buf, &t), 0);
	assert_int_equal(t, 1795608000 + 3599);

	util_fmt_size(ACM_GiB, buf, sizeof(buf));
	assert_string_equal(buf, "1.0 Gbyte");
	util_fmt_size(64 * ACM_MiB, buf, sizeof(buf));
	assert_string_equal(buf, "64.0 Mbyte");
	util_fmt_size(8 * ACM_MiB, buf, sizeof(buf));
	assert_string_equal(buf, "8.0 Mbyte");
	util_fmt_size(ACM_GiB + ACM_GiB / 2, buf, sizeof(buf));
	assert_string_equal(buf, "1.5 Gbyte");
	util_fmt_size(ACM_GiB - ACM_MiB, buf, sizeof(buf));
	assert_string_equal(buf, "1023.0 Mbyte");

	assert_string_equal(util_errname(-EINVAL), "EINVAL");
	assert_string_equal(util_errname(EINVAL), "EINVAL");
	assert_string_equal(util_errname(-ENOSPC), "ENOSPC");
	assert_string_equal(util_errname(-E2BIG), "E2BIG");
	assert_string_equal(util_errname(-EBUSY), "EBUSY");
	assert_string_equal(util_errname(-ENOENT), "ENOENT");
	assert_string_equal(util_errname(0), "OK");
}

/* ---- bitmaps ---- */

static void test_bitmap(void **state)
{
	_Atomic uint64_t bm[4];
	const uint64_t nbits = 200;

	(void)state;
	assert_int_equal(bitmap_words(0), 0);
	assert_int_equal(bitmap_words(1), 1);
	assert_int_equal(bitmap_words(64), 1);
	assert_int_equal(bitmap_words(65), 2);
	for (size_t i = 0; i < 4; i++)
		atomic_init(&bm[i], 0);

	assert_int_equal(bitmap_next(bm, nbits, 0), nbits);
	assert_int_equal(bitmap_count(bm, nbits), 0);

	bitmap_set(bm, 0);
	bitmap_set(bm, 63);
	bitmap_set(bm, 64);
	bitmap_set(bm, 130);
	bitmap_set(bm, 199);
	assert_true(bitmap_test(bm, 63));
	assert_false(bitmap_test(bm, 62));
	assert_int_equal(bitmap_count(bm, nbits), 5);

	assert_int_equal(bitmap_next(bm, nbits, 0), 0);
	assert_int_equal(bitmap_next(bm, nbits, 1), 63);
	assert_int_equal(bitmap_next(bm, nbits, 63), 63);
	assert_int_equal(bitmap_next(bm, nbits, 64), 64);
	assert_int_equal(bitmap_next(bm, nbits, 65), 130);
	assert_int_equal(bitmap_next(bm, nbits, 131), 199);
	assert_int_equal(bitmap_next(bm, nbits, 199), 199);
	assert_int_equal(bitmap_next(bm, nbits, 200), nbits);
	assert_int_equal(bitmap_next(bm, nbits, 5000), nbits);
	/* a bit past nbits is never returned */
	assert_int_equal(bitmap_next(bm, 150, 131), 150);

	/* full walk visits exactly the set bits */
	uint64_t seen = 0, last = 0;
	for (uint64_t g = bitmap_next(bm, nbits, 0); g < nbits; g = bitmap_next(bm, nbits, g + 1)) {
		seen++;
		last = g;
	}
	assert_int_equal(seen, 5);
	assert_int_equal(last, 199);

	assert_true(bitmap_clear(bm, 63));
	assert_false(bitmap_clear(bm, 63)); /* reports whether it was set */
	assert_false(bitmap_clear(bm, 62));
	assert_false(bitmap_test(bm, 63));
	assert_true(bitmap_test(bm, 64)); /* neighbours untouched */
	assert_true(bitmap_test(bm, 0));
	assert_int_equal(bitmap_count(bm, nbits), 4);
	assert_int_equal(bitmap_next(bm, nbits, 1), 64);

	/* every bit of a word */
	for (size_t i = 0; i < 4; i++)
		atomic_store(&bm[i], 0);
	for (uint64_t i = 0; i < 256; i++)
		bitmap_set(bm, i);
	assert_int_equal(bitmap_count(bm, 256), 256);
	for (uint64_t i = 0; i < 256; i++)
		assert_int_equal(bitmap_next(bm, 256, i), i);
}

/* ---- CRC32C ---- */

static uint32_t crc32c_ref(uint32_t crc, const unsigned char *p, size_t len)
{
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return ~crc;
}

static void test_crc32c(void **state)
{
	unsigned char buf[1100];
	uint32_t seed = 12345;

	(void)state;
	assert_int_equal(util_crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(util_crc32c(0, "", 0), 0);
	/* chaining over pieces equals one pass */
	assert_int_equal(util_crc32c(util_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
	/* 32 zero bytes: RFC 3720 B.4 */
	memset(buf, 0, 32);
	assert_int_equal(util_crc32c(0, buf, 32), 0x8A9136AAu);
	memset(buf, 0xff, 32);
	assert_int_equal(util_crc32c(0, buf, 32), 0x62A8AB43u);

	for (size_t i = 0; i < sizeof(buf); i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (unsigned char)(seed >> 16);
	}
	/* every length 0..40 and odd starts: the slicing-by-8 path and the tail agree */
	for (size_t start = 0; start < 9; start++)
		for (size_t len = 0; len <= 40; len++)
			assert_int_equal(util_crc32c(0, buf + start, len),
					 crc32c_ref(0, buf + start, len));
	assert_int_equal(util_crc32c(0, buf + 3, 1091), crc32c_ref(0, buf + 3, 1091));
	assert_int_equal(util_crc32c(0xdeadbeef, buf, 100), crc32c_ref(0xdeadbeef, buf, 100));
}

/* ---- zero detection ---- */

static void test_is_zero(void **state)
{
	unsigned char buf[4097];

	(void)state;
	memset(buf, 0, sizeof(buf));
	assert_true(util_is_zero(buf, 0));
	assert_true(util_is_zero(buf, 1));
	assert_true(util_is_zero(buf, sizeof(buf)));
	buf[0] = 1;
	assert_false(util_is_zero(buf, 1));
	assert_false(util_is_zero(buf, sizeof(buf)));
	assert_true(util_is_zero(buf + 1, sizeof(buf) - 1));
	buf[0] = 0;
	buf[4096] = 0x80;
	assert_false(util_is_zero(buf, sizeof(buf)));
	assert_true(util_is_zero(buf, 4096));
	buf[4096] = 0;
	buf[2000] = 1;
	assert_false(util_is_zero(buf, sizeof(buf)));
	buf[2000] = 0;
	/* a constant non-zero pattern is not zero (the self-compare trick) */
	memset(buf, 7, sizeof(buf));
	assert_false(util_is_zero(buf, sizeof(buf)));
}

/* ---- sbuf ---- */

static void test_sbuf_basic(void **state)
{
	struct sbuf sb;

	(void)state;
	sbuf_init(&sb, 1 << 20);
	assert_false(sb.oom);
	assert_int_equal(sb.len, 0);
	sbuf_add(&sb, "abc", 3);
	sbuf_addf(&sb, "-%d-%s", 42, "x");
	assert_string_equal(sb.buf, "abc-42-x");
	assert_int_equal(sb.len, 8);
	sbuf_add(&sb, "", 0);
	assert_int_equal(sb.len, 8);
	/* growth past the first allocation keeps content */
	for (int i = 0; i < 1000; i++)
		sbuf_addf(&sb, "%04d", i);
	assert_int_equal(sb.len, 8 + 4000);
	assert_memory_equal(sb.buf + 8, "000000010002", 12);
	assert_memory_equal(sb.buf + 8 + 3996, "0999", 4);
	assert_int_equal(sb.buf[sb.len], 0);
	assert_false(sb.oom);
	sbuf_release(&sb);
	assert_null(sb.buf);
	assert_int_equal(sb.len, 0);
}

static void test_sbuf_cap(void **state)
{
	struct sbuf sb;

	(void)state;
	sbuf_init(&sb, 16);
	sbuf_add(&sb, "0123456789", 10);
	assert_false(sb.oom);
	sbuf_add(&sb, "abcde", 5); /* 15 bytes + NUL = 16: fits exactly */
	assert_false(sb.oom);
	assert_string_equal(sb.buf, "0123456789abcde");
	assert_true(sb.cap <= 16);
	sbuf_add(&sb, "X", 1); /* would need 17 */
	assert_true(sb.oom);
	assert_int_equal(sb.len, 15);
	assert_string_equal(sb.buf, "0123456789abcde");
	assert_true(sb.cap <= 16);
	sbuf_release(&sb);

	/* oom sticks: once refused, even a small add is refused */
	sbuf_init(&sb, 16);
	sbuf_add(&sb, "0123456789", 10);
	sbuf_addf(&sb, "%s", "this is far too long for the cap");
	assert_true(sb.oom);
	assert_int_equal(sb.len, 10);
	assert_string_equal(sb.buf, "0123456789");
	sbuf_add(&sb, "a", 1);
	sbuf_addf(&sb, "b");
	assert_int_equal(sb.len, 10);
	assert_string_equal(sb.buf, "0123456789");
	assert_true(sb.oom);
	assert_true(sb.cap <= 16);
	sbuf_release(&sb);

	/* a cap that is not a power of two: the allocation never exceeds it */
	sbuf_init(&sb, 1000);
	for (int i = 0; i < 200; i++)
		sbuf_add(&sb, "abcde", 5);
	assert_true(sb.oom);
	assert_true(sb.len < 1000);
	assert_true(sb.cap <= 1000);
	assert_int_equal(sb.len % 5, 0);
	assert_int_equal(strlen(sb.buf), sb.len);
	sbuf_release(&sb);

	/* the first add alone over the cap */
	sbuf_init(&sb, 8);
	sbuf_addf(&sb, "%s", "123456789");
	assert_true(sb.oom);
	assert_int_equal(sb.len, 0);
	sbuf_release(&sb);
}

static void test_sbuf_json(void **state)
{
	struct sbuf sb;

	(void)state;
	sbuf_init(&sb, 4096);
	sbuf_add_json_str(&sb, "plain");
	assert_string_equal(sb.buf, "\"plain\"");
	sbuf_release(&sb);

	sbuf_init(&sb, 4096);
	sbuf_add_json_str(&sb, "");
	assert_string_equal(sb.buf, "\"\"");
	sbuf_release(&sb);

	sbuf_init(&sb, 4096);
	sbuf_add_json_str(&sb, "a\"b\\c/d\ne\tf\rg\x01h\x1fi\x7fj\xc3\xa9");
	assert_string_equal(sb.buf,
			    "\"a\\\"b\\\\c/d\\u000ae\\u0009f\\u000dg\\u0001h\\u001fi\x7fj\xc3\xa9\"");
	sbuf_release(&sb);
}

/* ---- files ---- */

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static void test_files(void **state)
{
	char dir[] = "/tmp/acmfs-ut-util-XXXXXX", path[PATH_MAX], *buf = NULL;
	unsigned char data[5000], back[6000];
	size_t len = 0;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 7 + 1);

	snprintf(path, sizeof(path), "%s/a/b/c", dir);
	assert_int_equal(util_mkdir_p(path, 0700), 0);
	assert_int_equal(util_mkdir_p(path, 0700), 0); /* exists: fine */
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));

	snprintf(path, sizeof(path), "%s/f", dir);
	assert_int_equal(util_write_file_atomic(IO_STORE, path, data, sizeof(data)), 0);
	assert_int_equal(util_read_file(IO_STORE, path, &buf, &len), 0);
	assert_int_equal(len, sizeof(data));
	assert_memory_equal(buf, data, sizeof(data));
	assert_int_equal(buf[len], 0);
	free(buf);
	/* replace: the new content, no tmp left behind */
	assert_int_equal(util_write_file_atomic(IO_STORE, path, "xy", 2), 0);
	assert_int_equal(util_read_file(IO_STORE, path, &buf, &len), 0);
	assert_int_equal(len, 2);
	assert_string_equal(buf, "xy");
	free(buf);
	snprintf(path, sizeof(path), "%s/f.tmp", dir);
	assert_int_equal(access(path, F_OK), -1);

	snprintf(path, sizeof(path), "%s/nonexistent", dir);
	assert_int_equal(util_read_file(IO_STORE, path, &buf, &len), -ENOENT);

	/* pread past EOF fills zeros */
	snprintf(path, sizeof(path), "%s/g", dir);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(util_pwrite_full(IO_STORE, fd, data, 100, 10), 0);
	memset(back, 0xee, sizeof(back));
	assert_int_equal(util_pread_full(IO_STORE, fd, back, 300, 0), 0);
	assert_true(util_is_zero(back, 10));
	assert_memory_equal(back + 10, data, 100);
	assert_true(util_is_zero(back + 110, 190));
	assert_int_equal(back[300], 0xee);
	close(fd);

	assert_int_equal(nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS), 0);
}

/* ---- direct-I/O memory (iomem.c) ---- */

/* AnonHugePages (KiB) of the mapping holding p, from /proc/self/smaps; -1 if
 * not found */
static long huge_kib_at(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0;
	long kib = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = (uintptr_t)p >= lo && (uintptr_t)p < hi;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

static bool thp_madvise_works(void)
{
	char buf[128] = "";
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	if (!f)
		return false;
	bool ok = fgets(buf, sizeof(buf), f) && !strstr(buf, "[never]");
	fclose(f);
	return ok;
}

static void test_iomem_alloc(void **state)
{
	(void)state;
	/* small: page aligned, zero-filled, writable */
	uint8_t *a = iomem_alloc(5000);
	assert_non_null(a);
	assert_int_equal((uintptr_t)a % 4096, 0);
	for (size_t i = 0; i < 8192; i++)
		assert_int_equal(a[i], 0);
	memset(a, 0xa5, 8192); /* rounded up to two pages */
	iomem_free(a, 5000);

	/* large: chunk aligned, and huge pages where the kernel has them */
	size_t len = 3 * (size_t)IOMEM_CHUNK + 12345;
	uint8_t *b = iomem_alloc(len);
	assert_non_null(b);
	assert_int_equal((uintptr_t)b % IOMEM_CHUNK, 0);
	assert_int_equal(b[len - 1], 0);
	memset(b, 1, len);
	if (thp_madvise_works())
		assert_true(huge_kib_at(b) >= (long)(IOMEM_CHUNK / 1024));
	iomem_free(b, len);

	iomem_free(NULL, 0);
	errno = 0;
	assert_null(iomem_alloc(0));
	assert_int_equal(errno, EINVAL);
}

static void test_iomem_slab(void **state)
{
	(void)state;
	struct iomem_slab s;
	enum { N = 100, OBJ = 65536 };
	uint8_t *o[N];

	assert_int_equal(iomem_slab_init(&s, 0), -EINVAL);
	assert_int_equal(iomem_slab_init(&s, OBJ), 0);
	for (int i = 0; i < N; i++) {
		o[i] = iomem_slab_get(&s);
		assert_non_null(o[i]);
		assert_int_equal((uintptr_t)o[i] % 4096, 0);
		/* inside one huge page: one disk segment */
		assert_int_equal((uintptr_t)o[i] / IOMEM_CHUNK, ((uintptr_t)o[i] + OBJ - 1) / IOMEM_CHUNK);
		memset(o[i], i, OBJ);
	}
	/* distinct objects: nobody wrote over another */
	for (int i = 0; i < N; i++)
		assert_int_equal(o[i][OBJ - 1], (uint8_t)i);
	assert_int_equal(s.nr_chunks, (N * OBJ + IOMEM_CHUNK - 1) / IOMEM_CHUNK);
	if (thp_madvise_works())
		assert_true(huge_kib_at(o[0]) >= (long)(IOMEM_CHUNK / 1024));
	/* what is put back comes out again before new memory is mapped */
	iomem_slab_put(&s, o[7]);
	iomem_slab_put(&s, o[42]);
	size_t chunks = s.nr_chunks;
	uint8_t *x = iomem_slab_get(&s), *y = iomem_slab_get(&s);
	assert_true((x == o[42] && y == o[7]) || (x == o[7] && y == o[42]));
	assert_int_equal(s.nr_chunks, chunks);
	iomem_slab_release(&s);
	assert_int_equal(s.nr_chunks, 0);

	/* an object larger than a chunk, and an odd size rounded to pages */
	assert_int_equal(iomem_slab_init(&s, 4u << 20), 0);
	uint8_t *big = iomem_slab_get(&s);
	assert_non_null(big);
	memset(big, 3, 4u << 20);
	iomem_slab_release(&s);
	assert_int_equal(iomem_slab_init(&s, 1000), 0);
	assert_int_equal(s.obj_bytes, 4096);
	uint8_t *p1 = iomem_slab_get(&s), *p2 = iomem_slab_get(&s);
	assert_int_equal(p2 - p1, 4096);
	iomem_slab_release(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_parse_size_ok),
		cmocka_unit_test(test_parse_size_bad),
		cmocka_unit_test(test_parse_u64),
		cmocka_unit_test(test_parse_u64_max),
		cmocka_unit_test(test_parse_date),
		cmocka_unit_test(test_fmt),
		cmocka_unit_test(test_bitmap),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_is_zero),
		cmocka_unit_test(test_sbuf_basic),
		cmocka_unit_test(test_sbuf_cap),
		cmocka_unit_test(test_sbuf_json),
		cmocka_unit_test(test_files),
		cmocka_unit_test(test_iomem_alloc),
		cmocka_unit_test(test_iomem_slab),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
