/*
 * sigv4.c — AWS Signature Version 4 (see sigv4.h).
 *
 * Steps, as AWS documents them: canonical request → string to sign →
 * signing key (HMAC chain over date, region, service, "aws4_request") →
 * signature. HMAC-SHA256 and SHA-256 through libcrypto's EVP_Q_mac and
 * EVP_Digest; nothing hand-written.
 */
#include "sigv4.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

static void hex(const unsigned char *b, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hmac(const void *key, size_t keylen, const void *msg, size_t msglen,
		unsigned char out[32])
{
	size_t n = 0;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, keylen, msg, msglen, out, 32, &n) ||
	    n != 32)
		return -EIO;
	return 0;
}

static int sha256_hex(const char *s, char out[65])
{
	unsigned char md[32];
	unsigned int n = 0;
	if (!EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL) || n != 32)
		return -EIO;
	hex(md, 32, out);
	return 0;
}

int sigv4_uri_encode(const char *in, int keep_slash, char *out, size_t outlen)
{
	static const char d[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			    (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' ||
			    *p == '~' || (keep_slash && *p == '/');
		if (o + (plain ? 1 : 3) >= outlen)
			return -ENAMETOOLONG;
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = d[*p >> 4];
			out[o++] = d[*p & 15];
		}
	}
	if (o >= outlen)
		return -ENAMETOOLONG;
	out[o] = '\0';
	return 0;
}

static int cmp_hdr(const void *a, const void *b)
{
	return strcmp(((const struct sigv4_header *)a)->name, ((const struct sigv4_header *)b)->name);
}

/* sorted copy of the headers; caller frees */
static struct sigv4_header *sorted_headers(const struct sigv4_request *r)
{
	struct sigv4_header *h = malloc((r->nr_headers + 1) * sizeof(*h));
	if (!h)
		return NULL;
	memcpy(h, r->headers, r->nr_headers * sizeof(*h));
	qsort(h, r->nr_headers, sizeof(*h), cmp_hdr);
	return h;
}

static int appendf(char *out, size_t outlen, size_t *o, const char *s)
{
	size_t n = strlen(s);
	if (*o + n >= outlen)
		return -ENAMETOOLONG;
	memcpy(out + *o, s, n + 1);
	*o += n;
	return 0;
}

static int signed_headers(const struct sigv4_header *h, size_t n, char *out, size_t outlen)
{
	size_t o = 0;
	int rc = 0;
	out[0] = '\0';
	for (size_t i = 0; i < n && !rc; i++) {
		if (i)
			rc = appendf(out, outlen, &o, ";");
		if (!rc)
			rc = appendf(out, outlen, &o, h[i].name);
	}
	return rc;
}

int sigv4_canonical_request(const struct sigv4_request *r, char *out, size_t outlen)
{
	struct sigv4_header *h = sorted_headers(r);
	char sh[1024];
	size_t o = 0;
	int rc;
	if (!h)
		return -ENOMEM;
	out[0] = '\0';
	rc = appendf(out, outlen, &o, r->method);
	if (!rc)
		rc = appendf(out, outlen, &o, "\n");
	if (!rc)
		rc = appendf(out, outlen, &o, r->canonical_uri);
	if (!rc)
		rc = appendf(out, outlen, &o, "\n");
	if (!rc)
		rc = appendf(out, outlen, &o, r->canonical_query ? r->canonical_query : "");
	if (!rc)
		rc = appendf(out, outlen, &o, "\n");
	for (size_t i = 0; i < r->nr_headers && !rc; i++) {
		rc = appendf(out, outlen, &o, h[i].name);
		if (!rc)
			rc = appendf(out, outlen, &o, ":");
		if (!rc)
			rc = appendf(out, outlen, &o, h[i].value);
		if (!rc)
			rc = appendf(out, outlen, &o, "\n");
	}
	if (!rc)
		rc = appendf(out, outlen, &o, "\n");
	if (!rc)
		rc = signed_headers(h, r->nr_headers, sh, sizeof(sh));
	if (!rc)
		rc = appendf(out, outlen, &o, sh);
	if (!rc)
		rc = appendf(out, outlen, &o, "\n");
	if (!rc)
		rc = appendf(out, outlen, &o, r->payload_hash);
	free(h);
	return rc;
}

int sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
			 const char *canonical_request, char *out, size_t outlen)
{
	char digest[65];
	if (strlen(amz_date) != 16)
		return -EINVAL;
	int rc = sha256_hex(canonical_request, digest);
	if (rc)
		return rc;
	int n = snprintf(out, outlen, "AWS4-HMAC-SHA256\n%s\n%.8s/%s/%s/aws4_request\n%s", amz_date,
			 amz_date, region, service, digest);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int sigv4_signature(const char *secret_key, const char *amz_date, const char *region,
		    const char *service, const char *string_to_sign, char out[65])
{
	char k0[256];
	unsigned char k[32], sig[32];
	int rc;
	int n = snprintf(k0, sizeof(k0), "AWS4%s", secret_key);
	if (n < 0 || (size_t)n >= sizeof(k0))
		return -ENAMETOOLONG;
	rc = hmac(k0, (size_t)n, amz_date, 8, k);
	if (!rc)
		rc = hmac(k, 32, region, strlen(region), k);
	if (!rc)
		rc = hmac(k, 32, service, strlen(service), k);
	if (!rc)
		rc = hmac(k, 32, "aws4_request", 12, k);
	if (!rc)
		rc = hmac(k, 32, string_to_sign, strlen(string_to_sign), sig);
	OPENSSL_cleanse(k0, sizeof(k0));
	OPENSSL_cleanse(k, sizeof(k));
	if (!rc)
		hex(sig, 32, out);
	return rc;
}

int sigv4_authorization(const struct sigv4_request *r, const struct sigv4_credentials *c,
			const char *amz_date, char *out, size_t outlen)
{
	char *creq = malloc(16384), sts[512], sig[65], sh[1024];
	struct sigv4_header *h = NULL;
	int rc;
	if (!creq)
		return -ENOMEM;
	rc = sigv4_canonical_request(r, creq, 16384);
	if (!rc)
		rc = sigv4_string_to_sign(amz_date, c->region, c->service, creq, sts, sizeof(sts));
	if (!rc)
		rc = sigv4_signature(c->secret_key, amz_date, c->region, c->service, sts, sig);
	if (!rc) {
		h = sorted_headers(r);
		rc = h ? signed_headers(h, r->nr_headers, sh, sizeof(sh)) : -ENOMEM;
	}
	if (!rc) {
		int n = snprintf(out, outlen,
				 "AWS4-HMAC-SHA256 Credential=%s/%.8s/%s/%s/aws4_request, "
				 "SignedHeaders=%s, Signature=%s",
				 c->access_key, amz_date, c->region, c->service, sh, sig);
		rc = n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
	}
	free(h);
	free(creq);
	return rc;
}
