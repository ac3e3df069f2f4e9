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
#include <string.h>

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
