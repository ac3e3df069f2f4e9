/*
 * s3_xml.c — S3 response parsers (see s3_xml.h): listing pages, the few
 * XML fields multipart uploads need, and the header values backend_s3.c
 * takes from a response. Pure functions, no I/O, no allocation.
 */
#include "s3_xml.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *find(const char *s, const char *end, const char *needle)
{
	size_t n = strlen(needle);
	if (s >= end || (size_t)(end - s) < n)
		return NULL;
	return memmem(s, (size_t)(end - s), needle, n);
}

int s3_xml_text(const char *s, const char *end, const char *tag, char *out, size_t outlen)
{
	char open[64], close[64];
	if (!outlen)
		return -ENAMETOOLONG;
	out[0] = '\0';
	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	const char *a = find(s, end, open);
	if (!a)
		return 0;
	a += strlen(open);
	const char *z = find(a, end, close);
	if (!z)
		return 0;
	static const struct {
		const char *ent;
		char c;
	} ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
	size_t o = 0;
	for (const char *p = a; p < z; p++) {
		char c = *p;
		if (c == '&') {
			for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
				size_t el = strlen(ents[i].ent);
				if ((size_t)(z - p) >= el && !memcmp(p, ents[i].ent, el)) {
					c = ents[i].c;
					p += el - 1;
					break;
				}
			}
		}
		if (o + 1 >= outlen) {
			out[0] = '\0';
			return -ENAMETOOLONG;
		}
		out[o++] = c;
	}
	out[o] = '\0';
	return 1;
}

int s3_parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;
	if (len == 0 || len > 20)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		unsigned d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* the fixed-width digits of a date field */
static int digits(const char *s, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return 0;
}

static int to_time(int y, int mo, int d, int h, int mi, int s, int64_t *out)
{
	if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
	    s > 60)
		return -EINVAL;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
			.tm_hour = h, .tm_min = mi, .tm_sec = s};
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -EINVAL;
	*out = (int64_t)t;
	return 0;
}

int s3_parse_iso8601(const char *s, int64_t *out)
{
	int y, mo, d, h, mi, sec;
	/* YYYY-MM-DDTHH:MM:SS[.fff]Z */
	if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':')
		return -EINVAL;
	if (digits(s, 4, &y) || digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) ||
	    digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) || digits(s + 17, 2, &sec))
		return -EINVAL;
	const char *p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
		return -EINVAL;
	return to_time(y, mo, d, h, mi, sec, out);
}

int s3_parse_http_date(const char *s, int64_t *out)
{
	static const char mons[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	int d, y, h, mi, sec;
	while (*s == ' ')
		s++;
	/* "Wed, 25 Nov 2026 12:00:00 GMT" (RFC 7231 IMF-fixdate) */
	if (strlen(s) < 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' ||
	    s[16] != ' ' || s[19] != ':' || s[22] != ':' || strncmp(s + 25, " GMT", 4) != 0)
		return -EINVAL;
	for (const char *p = s + 29; *p; p++)
		if (*p != ' ' && *p != '\t')
			return -EINVAL;
	if (digits(s + 5, 2, &d) || digits(s + 12, 4, &y) || digits(s + 17, 2, &h) ||
	    digits(s + 20, 2, &mi) || digits(s + 23, 2, &sec))
		return -EINVAL;
	int mo = 0;
	for (int i = 0; i < 12; i++)
		if (!strncmp(s + 8, mons + 3 * i, 3))
			mo = i + 1;
	if (!mo)
		return -EINVAL;
	return to_time(y, mo, d, h, mi, sec, out);
}

int s3_parse_content_range(const char *s, uint64_t *first, uint64_t *last, uint64_t *total)
{
	while (*s == ' ')
		s++;
	if (strncasecmp(s, "bytes ", 6) != 0)
		return -EINVAL;
	s += 6;
	size_t a = strspn(s, "0123456789");
	if (s[a] != '-' || s3_parse_u64(s, a, first))
		return -EINVAL;
	s += a + 1;
	size_t b = strspn(s, "0123456789");
	if (s[b] != '/' || s3_parse_u64(s, b, last) || *last < *first)
		return -EINVAL;
	s += b + 1;
	size_t c = strspn(s, "0123456789");
	if (c == 0 && *s == '*') {
		*total = UINT64_MAX;
		c = 1;
	} else if (s3_parse_u64(s, c, total) || *total <= *last) {
		return -EINVAL;
	}
	for (s += c; *s; s++)
		if (*s != ' ' && *s != '\t')
			return -EINVAL;
	return 0;
}

static int bad(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

int s3_list_parse(const char *xml, size_t len, const char *pool_prefix, tape_list_cb cb, void *arg,
		  struct s3_list_page *pg, char *why, size_t whylen)
{
	const char *end = xml + len;
	size_t plen = strlen(pool_prefix);
	int rc;
	memset(pg, 0, sizeof(*pg));
	if (whylen)
		why[0] = '\0';
	/* the whole text is parsed by length; a NUL would hide the rest */
	if (memchr(xml, 0, len))
		return bad(why, whylen, "listing holds a NUL byte");
	if (!find(xml, end, "<ListBucketResult"))
		return bad(why, whylen, "not a ListBucketResult");
	/* the page's own fields, before its entries: outside any <Contents> */
	char trunc[16];
	const char *head_end = find(xml, end, "<Contents>");
	const char *tail = head_end;
	if (tail) { /* after the last </Contents> */
		const char *t = tail;
		while ((t = find(t, end, "</Contents>")))
			tail = t += 11;
	}
	/* IsTruncated and NextContinuationToken may come before or after the
	 * entries (S3 puts them before; others after): look outside them */
	rc = s3_xml_text(xml, head_end ? head_end : end, "IsTruncated", trunc, sizeof(trunc));
	if (rc == 0 && tail)
		rc = s3_xml_text(tail, end, "IsTruncated", trunc, sizeof(trunc));
	if (rc != 1)
		return bad(why, whylen, "listing without IsTruncated");
	if (!strcmp(trunc, "true"))
		pg->truncated = 1;
	else if (strcmp(trunc, "false") != 0)
		return bad(why, whylen, "IsTruncated is '%s'", trunc);
	if (pg->truncated) {
		rc = s3_xml_text(xml, head_end ? head_end : end, "NextContinuationToken", pg->token,
				 sizeof(pg->token));
		if (rc == 0 && tail)
			rc = s3_xml_text(tail, end, "NextContinuationToken", pg->token,
					 sizeof(pg->token));
		if (rc < 0)
			return bad(why, whylen, "NextContinuationToken longer than %zu bytes",
				   sizeof(pg->token) - 1);
		if (rc == 0 || !pg->token[0])
			return bad(why, whylen, "truncated listing without a NextContinuationToken");
	}

	for (const char *c = head_end; c; c = find(c, end, "<Contents>")) {
		const char *ce = find(c, end, "</Contents>");
		if (!ce)
			return bad(why, whylen, "<Contents> without </Contents>");
		char k[1100], sz[32], lm[64];
		struct tape_obj_info oi;
		memset(&oi, 0, sizeof(oi));
		pg->nr_keys++;
		rc = s3_xml_text(c, ce, "Key", k, sizeof(k));
		if (rc < 0) { /* longer than S3 allows: not a key the pool wrote */
			c = ce + 11;
			continue;
		}
		if (rc == 0 || !k[0])
			return bad(why, whylen, "<Contents> without a Key");
		if (s3_xml_text(c, ce, "Size", sz, sizeof(sz)) != 1 ||
		    s3_parse_u64(sz, strlen(sz), &oi.size_bytes))
			return bad(why, whylen, "key %.300s: no valid Size", k);
		if (s3_xml_text(c, ce, "LastModified", lm, sizeof(lm)) != 1 ||
		    s3_parse_iso8601(lm, &oi.mtime))
			return bad(why, whylen, "key %.300s: no valid LastModified", k);
		c = ce + 11;
		/* not the pool's (the server ignored the prefix), or longer than
		 * any key the pool writes: skip, never truncate */
		if (strncmp(k, pool_prefix, plen) != 0 || !k[plen] || strlen(k + plen) >= sizeof(oi.key))
			continue;
		memcpy(oi.key, k + plen, strlen(k + plen) + 1);
		rc = cb(arg, &oi);
		if (rc)
			return rc;
	}
	return 0;
}
