/*
 * s3_xml.h — the S3 response parsers of backend_s3.c (internal to tape/).
 *
 * Split out so that tests/fuzz/fuzz_s3_list.c drives the very functions the
 * backend uses. Responses are untrusted input: a listing is parsed from its
 * exact length (a NUL inside refuses it), every field that a caller relies
 * on is required and bounded, and anything that does not fit is -EBADMSG
 * with a one-line reason in `why` — never a truncated key, a wrapped size or
 * a listing silently cut short (gc takes "not listed" for "not there").
 */
#ifndef ACMFS_TAPE_S3_XML_H
#define ACMFS_TAPE_S3_XML_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define S3_TOKEN_MAX 1024 /* continuation tokens, upload ids (with the NUL) */

/* Text of the first <tag>…</tag> in [s, end), entities decoded, into out.
 * Returns 1, 0 if absent (or the closing tag is missing), -ENAMETOOLONG if
 * the text does not fit outlen (out is then empty). */
int s3_xml_text(const char *s, const char *end, const char *tag, char *out, size_t outlen);

/* Strict unsigned decimal (1..20 digits, no sign, no overflow). 0 / -EINVAL. */
int s3_parse_u64(const char *s, size_t len, uint64_t *out);

/* RFC 3339 as S3 lists it ("2026-11-25T12:00:00.000Z"), or the HTTP date of
 * a Last-Modified header ("Wed, 25 Nov 2026 12:00:00 GMT"). 0 / -EINVAL. */
int s3_parse_iso8601(const char *s, int64_t *out);
int s3_parse_http_date(const char *s, int64_t *out);

/* "bytes A-B/T" (T may be "*"); 0 / -EINVAL. */
int s3_parse_content_range(const char *s, uint64_t *first, uint64_t *last, uint64_t *total);

struct s3_list_page {
	int truncated;		  /* IsTruncated was true */
	char token[S3_TOKEN_MAX]; /* NextContinuationToken when truncated */
	size_t nr_keys;		  /* <Contents> entries seen */
};

/* One ListObjectsV2 page: calls cb for every <Contents> whose key starts
 * with pool_prefix (which is stripped; keys that do not fit
 * tape_obj_info.key cannot be the pool's and are skipped). Each entry needs
 * a Key, a Size and a LastModified that parse. Returns 0, cb's non-zero
 * value, or -EBADMSG (why says what). */
int s3_list_parse(const char *xml, size_t len, const char *pool_prefix, tape_list_cb cb, void *arg,
		  struct s3_list_page *pg, char *why, size_t whylen);

#endif
