/*
 * sigv4.h — AWS Signature Version 4, the header-based flavour.
 *
 * This is what signs every real S3 request of backend_s3.c (libcurl's
 * CURLOPT_AWS_SIGV4 is deliberately not used, so that the signer that talks
 * to the server is the one unit-tested against AWS's published vectors).
 * HMAC and SHA-256 come from libcrypto (EVP). Pure functions, thread-safe.
 * Every function returns 0, -ENAMETOOLONG if an output buffer is too small,
 * or -EINVAL / -EIO. Secrets are never copied anywhere but the HMAC input.
 */
#ifndef ACMFS_TAPE_SIGV4_H
#define ACMFS_TAPE_SIGV4_H

#include <stddef.h>

struct sigv4_header {
	const char *name;  /* lower case */
	const char *value; /* already trimmed */
};

struct sigv4_request {
	const char *method;
	const char *canonical_uri;   /* URI-encoded path, e.g. "/bucket/packs/x.pack" */
	const char *canonical_query; /* encoded, sorted "a=1&b=2", or "" */
	const struct sigv4_header *headers; /* all are signed; any order */
	size_t nr_headers;
	const char *payload_hash;    /* lower-case hex SHA-256 or "UNSIGNED-PAYLOAD" */
};

struct sigv4_credentials {
	const char *access_key;
	const char *secret_key;
	const char *region;
	const char *service;
};

/* URI-encode per SigV4: unreserved A-Za-z0-9-._~ kept, '/' kept if
 * keep_slash, everything else %XX (upper-case hex). */
int sigv4_uri_encode(const char *in, int keep_slash, char *out, size_t outlen);
int sigv4_canonical_request(const struct sigv4_request *r, char *out, size_t outlen);
/* amz_date: "YYYYMMDDTHHMMSSZ" */
int sigv4_string_to_sign(const char *amz_date, const char *region, const char *service,
			 const char *canonical_request, char *out, size_t outlen);
int sigv4_signature(const char *secret_key, const char *amz_date, const char *region,
		    const char *service, const char *string_to_sign, char hex[65]);
/* The complete "Authorization" header value. */
int sigv4_authorization(const struct sigv4_request *r, const struct sigv4_credentials *c,
			const char *amz_date, char *out, size_t outlen);

#endif
