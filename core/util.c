/*
 * util.c — see util.h. Nothing here knows about volumes or FUSE.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

bool util_name_valid(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > ACM_NAME_MAX || !isalnum((unsigned char)name[0]))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return false;
	}
	return true;
}

int util_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		uint64_t d;
		if (*s < '0' || *s > '9')
			return -EINVAL;
		d = (uint64_t)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int util_parse_size(const char *s, uint64_t *out)
{
	char num[32];
	size_t n = 0;
	uint64_t v, mul = 1;
	int rc;

	while (s[n] >= '0' && s[n] <= '9') {
		if (n + 1 >= sizeof(num))
			return -ERANGE;
		num[n] = s[n];
		n++;
	}
	num[n] = 0;
	if (n == 0)
		return -EINVAL;
	rc = util_parse_u64(num, UINT64_MAX, &v);
	if (rc)
		return rc;
	s += n;
	switch (*s) {
	case 0:
		break;
	case 'k': case 'K': mul = ACM_KiB; s++; break;
	case 'm': case 'M': mul = ACM_MiB; s++; break;
	case 'g': case 'G': mul = ACM_GiB; s++; break;
	case 't': case 'T': mul = ACM_GiB * 1024; s++; break;
	default:
		return -EINVAL;
	}
	if (mul > 1) {
		if (!strcmp(s, "iB") || !strcmp(s, "B"))
			s += strlen(s);
	}
	if (*s)
		return -EINVAL;
	if (v && mul > UINT64_MAX / v)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

int64_t util_now(void)
{
	return (int64_t)time(NULL);
}

void util_fmt_iso(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void util_fmt_acm(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y/%m/%d %H:%M:%S", &tm);
}

int util_parse_date(const char *s, int64_t *out)
{
	static const char *const fmts[] = {
		"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y/%m/%d_%H:%M:%S",
		"%Y/%m/%d_%H:%M", "%Y-%m-%d_%H:%M:%S", "%Y-%m-%d", "%Y/%m/%d",
	};

	for (size_t i = 0; i < ACM_ARRAY_SIZE(fmts); i++) {
		struct tm tm;
		const char *end;

		memset(&tm, 0, sizeof(tm));
		end = strptime(s, fmts[i], &tm);
		if (end && !*end) {
			*out = (int64_t)timegm(&tm);
			return 0;
		}
	}
	return -EINVAL;
}

void util_fmt_size(uint64_t bytes, char *buf, size_t len)
{
	if (bytes >= ACM_GiB)
		snprintf(buf, len, "%.1f Gbyte", (double)bytes / (double)ACM_GiB);
	else
		snprintf(buf, len, "%.1f Mbyte", (double)bytes / (double)ACM_MiB);
}

uint64_t bitmap_next(const _Atomic uint64_t *bm, uint64_t nbits, uint64_t from)
{
	while (from < nbits) {
		uint64_t w = atomic_load_explicit(&bm[from / 64], memory_order_acquire);

		w >>= from % 64;
		if (w) {
			from += (uint64_t)__builtin_ctzll(w);
			return from < nbits ? from : nbits;
		}
		from = (from / 64 + 1) * 64;
	}
	return nbits;
}

uint64_t bitmap_count(const _Atomic uint64_t *bm, uint64_t nbits)
{
	uint64_t n = 0;

	for (size_t i = 0; i < bitmap_words(nbits); i++) {
		uint64_t w = atomic_load_explicit(&bm[i], memory_order_relaxed);
		if ((i + 1) * 64 > nbits && nbits % 64)
			w &= (1ULL << (nbits % 64)) - 1; /* bits past nbits do not count */
		n += (uint64_t)__builtin_popcountll(w);
	}
	return n;
}

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
					  crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* slicing-by-8 CRC32C (Castagnoli), the checksum of our on-disk maps */
uint32_t util_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		v ^= crc;
		crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^
		      crc_table[5][(v >> 16) & 0xff] ^ crc_table[4][(v >> 24) & 0xff] ^
		      crc_table[3][(v >> 32) & 0xff] ^ crc_table[2][(v >> 40) & 0xff] ^
		      crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

int util_pread_full(enum io_class c, int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = io_pread(c, fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			memset(p, 0, len);
			return 0;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int util_pwrite_full(enum io_class c, int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t n = io_pwrite(c, fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

#define UTIL_IOV_BATCH 64 /* segments per pwritev */

int util_pwritev_full(enum io_class c, int fd, const struct iovec *iov, int cnt, uint64_t off)
{
	struct iovec cur[UTIL_IOV_BATCH];
	size_t seg = 0; /* bytes of iov[i] already written */
	int i = 0;

	for (;;) {
		while (i < cnt && seg == iov[i].iov_len) { /* done or empty segments */
			i++;
			seg = 0;
		}
		if (i == cnt)
			break;
		int n = io_iov_at(iov, cnt, i, seg, cur, UTIL_IOV_BATCH);
		ssize_t w = io_pwritev(c, fd, cur, n, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		off += (uint64_t)w;
		io_iov_skip(iov, &i, &seg, (size_t)w);
	}
	return 0;
}

int util_fsync_dir(enum io_class c, const char *path)
{
	char tmp[PATH_MAX];
	int fd, rc = 0;

	snprintf(tmp, sizeof(tmp), "%s", path);
	fd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (io_fsync(c, fd))
		rc = -errno;
	close(fd);
	return rc;
}

int util_write_file_atomic(enum io_class c, const char *path, const void *buf, size_t len)
{
	char tmp[PATH_MAX];
	int fd, rc;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = util_pwrite_full(c, fd, buf, len, 0);
	if (!rc && io_fsync(c, fd))
		rc = -errno;
	close(fd);
	if (!rc && io_rename(c, tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	return util_fsync_dir(c, path);
}

int util_read_file(enum io_class c, const char *path, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf;
	int rc;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st)) {
		rc = -errno;
		goto out_close;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto out_close;
	}
	rc = util_pread_full(c, fd, buf, (size_t)st.st_size, 0);
	if (rc) {
		free(buf);
		goto out_close;
	}
	buf[st.st_size] = 0;
	*out = buf;
	if (len)
		*len = (size_t)st.st_size;
out_close:
	close(fd);
	return rc;
}

int util_mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

bool util_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	/* word-at-a-time head check, then memcmp against itself shifted */
	if (len == 0)
		return true;
	if (p[0])
		return false;
	return memcmp(p, p + 1, len - 1) == 0;
}

const char *util_errname(int err)
{
	switch (err < 0 ? -err : err) {
	case 0: return "OK";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EIO: return "EIO";
	case E2BIG: return "E2BIG";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ERANGE: return "ERANGE";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case ECANCELED: return "ECANCELED";
	case ENOTSUP: return "ENOTSUP";
	case EROFS: return "EROFS";
	case ENXIO: return "ENXIO";
	case EAGAIN: return "EAGAIN";
	default: return "ERRNO";
	}
}

void sbuf_init(struct sbuf *sb, size_t max)
{
	memset(sb, 0, sizeof(*sb));
	sb->max = max;
}

void sbuf_release(struct sbuf *sb)
{
	free(sb->buf);
	memset(sb, 0, sizeof(*sb));
}

static bool sbuf_grow(struct sbuf *sb, size_t extra)
{
	size_t want = sb->len + extra + 1;
	char *nb;

	if (sb->oom)
		return false;
	if (want > sb->max) {
		sb->oom = true;
		return false;
	}
	if (want <= sb->cap)
		return true;
	size_t cap = sb->cap ? sb->cap : 256;
	while (cap < want)
		cap *= 2;
	if (cap > sb->max)
		cap = sb->max;
	nb = realloc(sb->buf, cap);
	if (!nb) {
		sb->oom = true;
		return false;
	}
	sb->buf = nb;
	sb->cap = cap;
	return true;
}

void sbuf_add(struct sbuf *sb, const char *s, size_t len)
{
	if (!sbuf_grow(sb, len))
		return;
	memcpy(sb->buf + sb->len, s, len);
	sb->len += len;
	sb->buf[sb->len] = 0;
}

void sbuf_addf(struct sbuf *sb, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || !sbuf_grow(sb, (size_t)n))
		return;
	va_start(ap, fmt);
	vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
}

void sbuf_add_json_str(struct sbuf *sb, const char *s)
{
	sbuf_add(sb, "\"", 1);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			sbuf_addf(sb, "\\%c", c);
		else if (c < 0x20)
			sbuf_addf(sb, "\\u%04x", c);
		else
			sbuf_add(sb, (const char *)&c, 1);
	}
	sbuf_add(sb, "\"", 1);
}
