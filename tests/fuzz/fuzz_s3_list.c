/*
 * fuzz_s3_list.c — libFuzzer target for the S3 response parsers of
 * tape/s3_xml.h: s3_list_parse (a ListObjectsV2 page, exactly as
 * backend_s3.c's s3_list hands it over), s3_xml_text, and the header value
 * parsers s3_parse_u64 / s3_parse_content_range / s3_parse_http_date /
 * s3_parse_iso8601.
 *
 * Input: one flag byte, then the response body. Flag bits 0-1 pick the
 * pool prefix ("", "p/", "acm/pool/", "x"); bit 2 makes the callback stop
 * the listing at its second entry (it returns 7); bit 3 also feeds the body,
 * as one NUL-terminated string, to the header parsers and s3_xml_text.
 *
 * Oracle: no crash, no out-of-bounds access (the body is an exact-size heap
 * copy, not NUL-terminated: the parser must go by its length); the result is
 * 0, -EBADMSG with a reason, or the callback's 7; every entry handed to the
 * callback has a non-empty, terminated key that fits tape_obj_info.key, and
 * appears (after the prefix) in the body — never a truncated or invented
 * key; a truncated page that parses carries a non-empty token; a parsed
 * number prints back as itself, a Content-Range is ordered, a date is not
 * before 1970.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "s3_xml.h"

struct cbs {
	const char *body;
	size_t len;
	int stop;
	unsigned calls;
};

static int on_entry(void *arg, const struct tape_obj_info *oi)
{
	struct cbs *c = arg;
	size_t kl = strnlen(oi->key, sizeof(oi->key));
	CHECK(kl > 0 && kl < sizeof(oi->key), "key of %zu bytes", kl);
	/* keys without entities appear verbatim in the body */
	if (!strpbrk(oi->key, "&<>\"'"))
		CHECK(memmem(c->body, c->len, oi->key, kl) != NULL, "key '%s' not in the body",
		      oi->key);
	c->calls++;
	return c->stop && c->calls == 2 ? 7 : 0;
}

static void fuzz_values(const char *s)
{
	uint64_t v, a, b, t;
	int64_t tm;
	size_t n = strlen(s);
	if (s3_parse_u64(s, n, &v) == 0) {
		char re[32];
		snprintf(re, sizeof(re), "%" PRIu64, v);
		const char *p = s;
		while (*p == '0' && p[1])
			p++;
		CHECK(!strcmp(re, p), "u64 '%s' parsed as %s", s, re);
	}
	if (s3_parse_content_range(s, &a, &b, &t) == 0)
		CHECK(a <= b && b < t, "range %" PRIu64 "-%" PRIu64 "/%" PRIu64 " from '%s'", a, b, t,
		      s);
	if (s3_parse_http_date(s, &tm) == 0)
		CHECK(tm >= 0, "http date %" PRId64, tm);
	if (s3_parse_iso8601(s, &tm) == 0)
		CHECK(tm >= 0, "iso date %" PRId64, tm);
	char out[64];
	int rc = s3_xml_text(s, s + n, "Key", out, sizeof(out));
	CHECK(rc == 0 || rc == 1 || rc == -ENAMETOOLONG, "xml_text rc %d", rc);
	CHECK(memchr(out, 0, sizeof(out)), "xml_text left no NUL");
	if (rc == -ENAMETOOLONG)
		CHECK(out[0] == 0, "a cut text handed out");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const prefixes[] = {"", "p/", "acm/pool/", "x"};
	if (size < 1)
		return 0;
	size_t len = size - 1;
	char *body = malloc(len ? len : 1); /* exact size, no terminator */
	if (!body)
		return 0;
	memcpy(body, data + 1, len);
	struct cbs c = {.body = body, .len = len, .stop = data[0] & 4};
	struct s3_list_page pg;
	char why[200];
	int rc = s3_list_parse(body, len, prefixes[data[0] & 3], on_entry, &c, &pg, why,
			       sizeof(why));
	CHECK(rc == 0 || rc == -EBADMSG || (rc == 7 && c.stop), "rc %d", rc);
	CHECK(memchr(why, 0, sizeof(why)), "why unterminated");
	if (rc == -EBADMSG)
		CHECK(why[0], "-EBADMSG without a reason");
	CHECK(c.calls <= pg.nr_keys, "%u entries of %zu", c.calls, pg.nr_keys);
	if (rc == 0 && pg.truncated)
		CHECK(pg.token[0] && memchr(pg.token, 0, sizeof(pg.token)), "truncated, no token");
	if (data[0] & 8) {
		char *s = malloc(len + 1);
		if (s) {
			memcpy(s, body, len);
			s[len] = 0;
			fuzz_values(s);
			free(s);
		}
	}
	free(body);
	return 0;
}
