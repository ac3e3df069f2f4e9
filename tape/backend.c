/*
 * backend.c — pool URL dispatch and option parsing shared by the backends.
 *
 * "file:///abs/dir" → backend_file, "s3://bucket[/prefix]" → backend_s3,
 * "mem:" → a fresh in-memory backend (tests). Errors: -EINVAL for an unknown
 * scheme or malformed URL, otherwise what the backend returns.
 */
#include "backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t tape_iov_store(const struct iovec *iov, int iovcnt, size_t pos, const void *src, size_t n)
{
	const uint8_t *s = src;
	size_t done = 0;
	for (int i = 0; i < iovcnt && done < n; i++) {
		if (pos >= iov[i].iov_len) {
			pos -= iov[i].iov_len;
			continue;
		}
		size_t k = iov[i].iov_len - pos;
		if (k > n - done)
			k = n - done;
		memcpy((uint8_t *)iov[i].iov_base + pos, s + done, k);
		done += k;
		pos = 0;
	}
	return done;
}

ssize_t tape_getv(struct tape_backend *be, const char *key, uint64_t off, const struct iovec *iov,
		  int iovcnt, tape_progress_cb progress, void *arg)
{
	if (be->ops->getv)
		return be->ops->getv(be, key, off, iov, iovcnt, progress, arg);
	size_t len = 0;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (!len)
		return 0;
	uint8_t *buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	ssize_t n = be->ops->get(be, key, off, buf, len);
	if (n > 0) {
		tape_iov_store(iov, iovcnt, 0, buf, (size_t)n);
		if (progress)
			progress(arg, (size_t)n);
	}
	free(buf);
	return n;
}

int tape_opt_get(const char *opts, const char *key, char *val, size_t vallen)
{
	size_t klen = strlen(key);
	const char *p = opts;
	while (p && *p) {
		while (*p == ' ' || *p == '\t')
			p++;
		const char *end = p + strcspn(p, " \t");
		if ((size_t)(end - p) > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
			size_t n = (size_t)(end - p) - klen - 1;
			if (n >= vallen)
				return -ENAMETOOLONG;
			memcpy(val, p + klen + 1, n);
			val[n] = '\0';
			return 1;
		}
		p = end;
	}
	return 0;
}

int tape_backend_open(const char *url, const char *opts, struct tape_backend **out, char *err,
		      size_t errlen)
{
	if (strncmp(url, "file://", 7) == 0) {
		if (url[7] != '/') {
			snprintf(err, errlen, "file:// URL needs an absolute path");
			return -EINVAL;
		}
		return tape_backend_file_open(url + 7, out, err, errlen);
	}
	if (strncmp(url, "s3://", 5) == 0)
		return tape_backend_s3_open(url + 5, opts ? opts : "", out, err, errlen);
	if (strcmp(url, "mem:") == 0) {
		*out = tape_backend_mem_new();
		if (!*out) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		return 0;
	}
	snprintf(err, errlen, "unknown pool URL scheme (want file:// or s3://)");
	return -EINVAL;
}
