/*
 * backend_s3.c — a pool in an S3 bucket (s3://bucket[/prefix]), via libcurl.
 *
 * Requests are signed with tape/sigv4.c (header auth; x-amz-content-sha256
 * is always sent, some servers, s3rver among them, require it). A PUT's body
 * is sent as UNSIGNED-PAYLOAD with a signed x-amz-checksum-crc32 header:
 * S3 recomputes the CRC and refuses the object (400 BadDigest) if the bytes
 * changed on the way, so a pack is checked end to end when it is stored.
 * ISA-L computes that CRC at ~25 GB/s; signing the payload's SHA-256
 * instead would cost a second SHA-256 pass over every pack (each block is
 * already hashed once for its name), about as much CPU as the upload's own
 * hashing, and guard against nothing more on plain http, where responses
 * are not signed anyway (use https against anyone on the path). Options: endpoint=URL (default
 * https://s3.REGION.amazonaws.com), region= (us-east-1), path_style=1,
 * credentials=/path (a 0600 file of access_key_id=… secret_access_key=…
 * [session_token=…]; otherwise AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN), ca=/pem, timeout_s= (stall timeout, 30),
 * retries= (8), retry_s= (total retry budget, 120), multipart_mb= (64: an
 * object larger than this goes up as a multipart upload in parts of this
 * size, 5..5120; see s3_put_multipart). TLS peer and host verification are
 * always on.
 *
 * Responses are untrusted: listing pages are parsed by s3_xml.c (strict,
 * fuzzed), Content-Length and Last-Modified are taken only if they parse
 * whole (a HEAD without them fails), and a 206's Content-Range must be the
 * range asked for before a byte of it is stored.
 *
 * Concurrency: easy handles come from a pool (one per concurrent request) and
 * share DNS, TLS sessions and the connection cache through a CURLSH whose
 * locks are per data type. Transient failures (timeouts, resets, 5xx, 429,
 * SlowDown, truncated bodies) are retried with capped exponential backoff and
 * jitter, bounded in count and total time.
 *
 * Errors: 404 → -ENOENT, 403 → -EACCES, other 4xx → -EINVAL, transient
 * (5xx, 408, 429, SlowDown, RequestTimeout, BadDigest) exhausted →
 * -EIO/-ETIMEDOUT. The raw cause (curl code, HTTP status, S3
 * error code) is logged once here; credentials are never logged or placed in
 * an error string.
 */
#include "backend.h"
#include "format.h"
#include "log.h"
#include "s3_xml.h"
#include "sigv4.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/crc.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define S3_MAX_HANDLES 32
#define S3_PART_MIN (5ull << 20)	  /* S3: every part but the last */
#define S3_PART_MAX (5ull << 30)
#define S3_MAX_PARTS 10000

struct s3_backend {
	struct tape_backend base;
	/* immutable after open */
	char scheme_host[512]; /* "http://127.0.0.1:9000" or "https://bucket.s3..." */
	char host[256];	       /* Host header value */
	char bucket[64];
	char prefix[256];      /* "" or "dir/sub/" */
	char region[64];
	int path_style;
	int tls;		/* https endpoint */
	char ca[512];
	char access_key[128];
	char secret_key[128];
	char *session_token;
	long timeout_s;
	int retries;
	long retry_ms;
	uint64_t part_bytes;	/* multipart above this size, in parts of it */

	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t lock;
	CURL *idle[S3_MAX_HANDLES]; /* protected by lock */
	int nr_idle;
};

static struct s3_backend *s3(struct tape_backend *be)
{
	return (struct s3_backend *)be;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *arg)
{
	(void)h;
	(void)access;
	pthread_mutex_lock(&((struct s3_backend *)arg)->share_locks[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	(void)h;
	pthread_mutex_unlock(&((struct s3_backend *)arg)->share_locks[data]);
}

static CURL *handle_get(struct s3_backend *b)
{
	CURL *h = NULL;
	pthread_mutex_lock(&b->lock);
	if (b->nr_idle)
		h = b->idle[--b->nr_idle];
	pthread_mutex_unlock(&b->lock);
	if (h)
		curl_easy_reset(h);
	else
		h = curl_easy_init();
	return h;
}

static void handle_put(struct s3_backend *b, CURL *h)
{
	pthread_mutex_lock(&b->lock);
	if (b->nr_idle < S3_MAX_HANDLES) {
		b->idle[b->nr_idle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&b->lock);
	if (h)
		curl_easy_cleanup(h);
}

/* ---- one HTTP exchange ---- */

struct s3_req {
	const char *method;
	const char *key;	/* object key relative to the pool, or NULL (bucket) */
	const char *query;	/* canonical query or "" */
	const uint8_t *body;	/* PUT payload (UNSIGNED-PAYLOAD + CRC) or POST body (signed) */
	size_t body_len;
	const char *checksum_algo; /* x-amz-checksum-algorithm (CreateMultipartUpload) */
	const char *content_type;  /* POST */
	int ranged;
	uint64_t off;		/* range */
	size_t len;
	/* response */
	const struct iovec *iov; /* GET destination, or NULL */
	int iovcnt;
	size_t out_cap;
	tape_progress_cb progress; /* getv: bytes [0, got) are in place */
	void *parg;
	size_t base;		/* got when this attempt started (a retry resumes) */
	uint8_t *dyn;		/* growing body (list, errors) */
	size_t dyn_len, dyn_cap, dyn_max;
	int dyn_over;		/* the body was longer than dyn_max (cut) */
	size_t got;
	uint64_t skip;		/* bytes to drop when a Range was ignored */
	long status;
	CURL *h;
	uint64_t content_length;
	int have_cl;
	int64_t last_modified;
	int have_lm;
	char etag[128];		/* ETag of the response ("" if none or too long) */
	char crange[96];	/* Content-Range of the response */
	int range_checked;	/* a 206's Content-Range was checked */
	int bad_range;		/* ... and did not match the request */
	size_t put_pos;
};

/* A 206 must carry exactly the range asked for (from where this attempt
 * resumes), or its bytes would land at the wrong offsets. */
static int range_ok(const struct s3_req *r)
{
	uint64_t first, last, total;
	if (s3_parse_content_range(r->crange, &first, &last, &total))
		return 0;
	return first == r->off + r->base && last <= r->off + r->len - 1;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nmemb, take = n;
	const char *p = ptr;
	if (!r->status)
		curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->iov && r->status >= 200 && r->status < 300) {
		if (r->ranged && r->status == 206 && !r->range_checked) {
			r->range_checked = 1;
			if (!range_ok(r)) {
				r->bad_range = 1;
				return 0; /* aborts the transfer before a byte is stored */
			}
		}
		if (r->ranged && r->status == 200 && r->skip) { /* Range ignored */
			size_t s = r->skip < take ? (size_t)r->skip : take;
			r->skip -= s;
			p += s;
			take -= s;
		}
		size_t room = r->out_cap - r->got;
		if (take > room)
			take = room; /* more than asked: drop the rest */
		tape_iov_store(r->iov, r->iovcnt, r->got, p, take);
		r->got += take;
		if (take && r->progress)
			r->progress(r->parg, r->got);
		return n;
	}
	/* error bodies and listings */
	if (r->dyn_len + take > r->dyn_max) {
		take = r->dyn_max > r->dyn_len ? r->dyn_max - r->dyn_len : 0;
		r->dyn_over = 1;
	}
	if (r->dyn_len + take + 1 > r->dyn_cap) {
		size_t cap = r->dyn_cap ? r->dyn_cap : 4096;
		while (cap < r->dyn_len + take + 1)
			cap *= 2;
		uint8_t *nb = realloc(r->dyn, cap);
		if (!nb)
			return 0; /* aborts the transfer */
		r->dyn = nb;
		r->dyn_cap = cap;
	}
	memcpy(r->dyn + r->dyn_len, p, take);
	r->dyn_len += take;
	r->dyn[r->dyn_len] = '\0';
	return n;
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nmemb;
	if (n > r->body_len - r->put_pos)
		n = r->body_len - r->put_pos;
	if (n)
		memcpy(buf, r->body + r->put_pos, n);
	r->put_pos += n;
	return n;
}

static int on_seek(void *arg, curl_off_t off, int origin)
{
	struct s3_req *r = arg;
	if (origin != SEEK_SET || off < 0 || (size_t)off > r->body_len)
		return CURL_SEEKFUNC_FAIL;
	r->put_pos = (size_t)off;
	return CURL_SEEKFUNC_OK;
}

static size_t on_header(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nmemb;
	char line[256];
	size_t l = n < sizeof(line) - 1 ? n : sizeof(line) - 1;
	memcpy(line, buf, l);
	line[l] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	if (n > sizeof(line) - 1 && strncmp(line, "HTTP/", 5) != 0)
		return n; /* longer than any header we use: a cut value would parse wrong */
	/* values are untrusted: taken only if they parse whole (a line longer
	 * than the buffer is cut, and then does not) */
	char *v = strchr(line, ':');
	if (v) {
		v++;
		while (*v == ' ' || *v == '\t')
			v++;
		size_t vl = strlen(v);
		while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
			v[--vl] = '\0';
	}
	if (strncmp(line, "HTTP/", 5) == 0) { /* a new response (after 100 or redirects) */
		r->have_cl = 0;
		r->have_lm = 0;
		r->status = 0;
		r->etag[0] = '\0';
		r->crange[0] = '\0';
	} else if (strncasecmp(line, "content-length:", 15) == 0) {
		r->have_cl = s3_parse_u64(v, strlen(v), &r->content_length) == 0 &&
			     r->content_length <= (1ull << 62);
	} else if (strncasecmp(line, "last-modified:", 14) == 0) {
		r->have_lm = s3_parse_http_date(v, &r->last_modified) == 0;
	} else if (strncasecmp(line, "etag:", 5) == 0) {
		if (strlen(v) < sizeof(r->etag))
			snprintf(r->etag, sizeof(r->etag), "%s", v);
	} else if (strncasecmp(line, "content-range:", 14) == 0) {
		if (strlen(v) < sizeof(r->crange))
			snprintf(r->crange, sizeof(r->crange), "%s", v);
	}
	return n;
}

static void amz_now(char out[17])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* x-amz-checksum-crc32: base64 of the big-endian CRC-32 (the gzip/zlib one) */
static void s3_crc32_b64(const uint8_t *buf, size_t len, char out[16])
{
	uint32_t c = crc32_gzip_refl(0, buf, len);
	unsigned char be[4] = {c >> 24, c >> 16, c >> 8, c};

	EVP_EncodeBlock((unsigned char *)out, be, 4);
}

/* path part of the URL, already encoded; also the canonical URI */
static int build_path(struct s3_backend *b, const char *key, char *out, size_t outlen)
{
	char raw[1024], enc[3072];
	int n;
	if (key)
		n = snprintf(raw, sizeof(raw), "%s%s", b->prefix, key);
	else
		n = 0, raw[0] = '\0';
	if (n < 0 || (size_t)n >= sizeof(raw))
		return -ENAMETOOLONG;
	int rc = sigv4_uri_encode(raw, 1, enc, sizeof(enc));
	if (rc)
		return rc;
	if (b->path_style)
		n = snprintf(out, outlen, "/%s%s%s", b->bucket, key ? "/" : "", enc);
	else
		n = snprintf(out, outlen, "/%s", enc);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

enum { TRY_OK, TRY_RETRY, TRY_FAIL };

/* One attempt. Returns TRY_*; *err gets the errno for a final failure. */
static int s3_attempt(struct s3_backend *b, struct s3_req *r, int *err, char *why, size_t whylen)
{
	char path[3200], url[4096], amz_date[17], payload_hash[65], auth[1024];
	char h_host[300], h_sha[100], h_date[64], h_range[80], h_crc[64], h_algo[64], h_ct[80];
	char *h_tok = NULL;
	struct curl_slist *hdrs = NULL;
	int rc, ret = TRY_FAIL;
	CURL *h = handle_get(b);
	if (!h) {
		*err = -ENOMEM;
		return TRY_FAIL;
	}
	r->h = h;
	r->status = 0;
	if (!r->ranged)
		r->got = 0;
	r->base = r->got; /* a ranged GET resumes after what earlier attempts stored */
	r->dyn_len = 0;
	r->dyn_over = 0;
	r->have_cl = 0;
	r->have_lm = 0;
	r->etag[0] = '\0';
	r->crange[0] = '\0';
	r->range_checked = 0;
	r->bad_range = 0;
	r->put_pos = 0;
	r->skip = r->ranged ? r->off + r->got : 0;

	rc = build_path(b, r->key, path, sizeof(path));
	if (rc) {
		*err = rc;
		goto out_handle;
	}
	snprintf(url, sizeof(url), "%s%s%s%s", b->scheme_host, path, *r->query ? "?" : "",
		 r->query);
	amz_now(amz_date);
	char crc_b64[16] = "";
	int is_post = strcmp(r->method, "POST") == 0;
	if (r->body && is_post) { /* small XML: its SHA-256 is signed */
		uint8_t sha[32];
		if (tape_sha256(r->body, r->body_len, sha)) {
			*err = -EIO;
			goto out_handle;
		}
		tape_hex(sha, 32, payload_hash);
	} else if (r->body) {
		snprintf(payload_hash, sizeof(payload_hash), "UNSIGNED-PAYLOAD");
		s3_crc32_b64(r->body, r->body_len, crc_b64);
	} else {
		/* SHA-256 of the empty payload */
		snprintf(payload_hash, sizeof(payload_hash), "%s",
			 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	}
	struct sigv4_header sh[6] = {
		{"host", b->host},
		{"x-amz-content-sha256", payload_hash},
		{"x-amz-date", amz_date},
	};
	size_t nr_sh = 3;
	if (*crc_b64)
		sh[nr_sh++] = (struct sigv4_header){"x-amz-checksum-crc32", crc_b64};
	if (r->checksum_algo)
		sh[nr_sh++] = (struct sigv4_header){"x-amz-checksum-algorithm", r->checksum_algo};
	if (b->session_token)
		sh[nr_sh++] = (struct sigv4_header){"x-amz-security-token", b->session_token};
	struct sigv4_request sr = {
		.method = r->method,
		.canonical_uri = path,
		.canonical_query = r->query,
		.headers = sh,
		.nr_headers = nr_sh,
		.payload_hash = payload_hash,
	};
	struct sigv4_credentials cr = {b->access_key, b->secret_key, b->region, "s3"};
	rc = sigv4_authorization(&sr, &cr, amz_date, auth, sizeof(auth));
	if (rc) {
		*err = rc;
		goto out_handle;
	}
	char h_auth[1100];
	snprintf(h_auth, sizeof(h_auth), "Authorization: %s", auth);
	OPENSSL_cleanse(auth, sizeof(auth));
	snprintf(h_host, sizeof(h_host), "Host: %s", b->host);
	snprintf(h_sha, sizeof(h_sha), "x-amz-content-sha256: %s", payload_hash);
	snprintf(h_date, sizeof(h_date), "x-amz-date: %s", amz_date);
	hdrs = curl_slist_append(hdrs, h_host);
	hdrs = curl_slist_append(hdrs, h_sha);
	hdrs = curl_slist_append(hdrs, h_date);
	hdrs = curl_slist_append(hdrs, h_auth);
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (*crc_b64) {
		snprintf(h_crc, sizeof(h_crc), "x-amz-checksum-crc32: %s", crc_b64);
		hdrs = curl_slist_append(hdrs, h_crc);
	}
	if (r->checksum_algo) {
		snprintf(h_algo, sizeof(h_algo), "x-amz-checksum-algorithm: %s", r->checksum_algo);
		hdrs = curl_slist_append(hdrs, h_algo);
	}
	if (is_post) {
		snprintf(h_ct, sizeof(h_ct), "Content-Type: %s",
			 r->content_type ? r->content_type : "application/octet-stream");
		hdrs = curl_slist_append(hdrs, h_ct);
	}
	if (b->session_token) {
		size_t tl = strlen(b->session_token) + 32;
		h_tok = malloc(tl);
		if (h_tok) {
			snprintf(h_tok, tl, "x-amz-security-token: %s", b->session_token);
			hdrs = curl_slist_append(hdrs, h_tok);
		}
	}
	if (r->ranged) {
		snprintf(h_range, sizeof(h_range), "Range: bytes=%llu-%llu",
			 (unsigned long long)(r->off + r->got),
			 (unsigned long long)(r->off + r->len - 1));
		hdrs = curl_slist_append(hdrs, h_range);
	}
	OPENSSL_cleanse(h_auth, sizeof(h_auth));
	if (!hdrs) {
		*err = -ENOMEM;
		goto out_handle;
	}

	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_SHARE, b->share);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (*b->ca)
		curl_easy_setopt(h, CURLOPT_CAINFO, b->ca);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, b->timeout_s);
	if (r->ranged) /* fewer, larger callbacks for bulk reads */
		curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	if (strcmp(r->method, "PUT") == 0) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, r);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
	} else if (is_post) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, r);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
	} else if (strcmp(r->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (strcmp(r->method, "DELETE") == 0) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
	}

	atomic_fetch_add(&b->base.requests, 1);
	CURLcode cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	if (r->bad_range) {
		snprintf(why, whylen, "GET %s: answered with range '%.60s', not the one asked for",
			 r->key, r->crange);
		*err = -EIO;
		goto out_hdrs;
	}
	if (cc != CURLE_OK) {
		snprintf(why, whylen, "%s %s: %s", r->method, r->key ? r->key : "(bucket)",
			 curl_easy_strerror(cc));
		switch (cc) {
		case CURLE_OPERATION_TIMEDOUT:
			*err = -ETIMEDOUT;
			ret = TRY_RETRY;
			break;
		case CURLE_COULDNT_CONNECT:
		case CURLE_SEND_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_GOT_NOTHING:
		case CURLE_PARTIAL_FILE:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_HTTP2:
		case CURLE_HTTP2_STREAM:
		case CURLE_SSL_CONNECT_ERROR:
			*err = -EIO;
			ret = TRY_RETRY;
			break;
		case CURLE_PEER_FAILED_VERIFICATION:
			*err = -EACCES;
			break;
		case CURLE_OUT_OF_MEMORY:
		case CURLE_WRITE_ERROR:
			*err = -ENOMEM;
			break;
		default:
			*err = -EIO;
			break;
		}
		goto out_hdrs;
	}
	long st = r->status;
	if (st >= 200 && st < 300) {
		if (r->iov && strcmp(r->method, "GET") == 0) {
			/* truncated body: retry (from where it stopped) */
			size_t want = r->len;
			if (r->have_cl && st == 206 && r->content_length < want - r->base)
				want = r->base + (size_t)r->content_length; /* object ends earlier */
			if (r->have_cl && st == 200) {
				uint64_t avail = r->content_length > r->off ? r->content_length - r->off
									    : 0;
				if (avail < want)
					want = (size_t)avail;
			}
			if (r->got < want) {
				snprintf(why, whylen, "GET %s: short body (%zu of %zu)", r->key, r->got,
					 want);
				*err = -EIO;
				ret = TRY_RETRY;
				goto out_hdrs;
			}
		}
		ret = TRY_OK;
		goto out_hdrs;
	}
	/* S3 error: extract <Code> for the log */
	char code[64] = "";
	if (r->dyn) {
		const char *c = strstr((char *)r->dyn, "<Code>");
		if (c) {
			c += 6;
			size_t cl = strcspn(c, "<");
			if (cl >= sizeof(code))
				cl = sizeof(code) - 1;
			memcpy(code, c, cl);
			code[cl] = '\0';
		}
	}
	snprintf(why, whylen, "%s %s: HTTP %ld %s", r->method, r->key ? r->key : "(bucket)", st, code);
	if (st == 404) {
		*err = -ENOENT;
	} else if (st == 416) { /* nothing (more) at that offset */
		r->got = r->base;
		ret = TRY_OK;
	} else if (st == 403) {
		*err = -EACCES;
	} else if (st >= 500 || st == 429 || st == 408 || strcmp(code, "SlowDown") == 0 ||
		   strcmp(code, "RequestTimeout") == 0 || strcmp(code, "BadDigest") == 0) {
		/* BadDigest: the body changed on the way (its CRC did not match) */
		*err = -EIO;
		ret = TRY_RETRY;
	} else {
		*err = -EINVAL;
	}
out_hdrs:
	curl_slist_free_all(hdrs);
	free(h_tok);
out_handle:
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	handle_put(b, h);
	return ret;
}

static long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Runs a request with retries. Returns 0 or -errno (logged once). */
static int s3_do(struct s3_backend *b, struct s3_req *r)
{
	char why[512] = "";
	long start = now_ms(), delay = 100;
	int err = 0;
	if (!r->dyn_max)
		r->dyn_max = 64 * 1024;
	for (int attempt = 0;; attempt++) {
		err = 0;
		int t = s3_attempt(b, r, &err, why, sizeof(why));
		if (t == TRY_OK)
			return 0;
		if (t == TRY_FAIL)
			break;
		if (attempt >= b->retries || now_ms() - start + delay > b->retry_ms) {
			tape_log(TAPE_LOG_ERR, "s3: giving up after %d attempts: %s", attempt + 1,
				 why);
			return err;
		}
		tape_log(TAPE_LOG_INFO, "s3: retrying (%s)", why);
		unsigned int rnd = 0;
		RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
		long sleep_ms = delay / 2 + (long)(rnd % (unsigned)(delay / 2 + 1));
		struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
		delay = delay * 2 > 5000 ? 5000 : delay * 2;
	}
	if (err != -ENOENT)
		tape_log(TAPE_LOG_ERR, "s3: %s", why);
	return err;
}

/* ---- methods ---- */

static int s3_put_multipart(struct s3_backend *b, const char *key, const uint8_t *buf,
			    size_t len);

static int s3_put(struct tape_backend *be, const char *key, const void *buf, size_t len)
{
	if (len > s3(be)->part_bytes)
		return s3_put_multipart(s3(be), key, buf, len);
	struct s3_req r = {.method = "PUT", .key = key, .query = "", .body = buf, .body_len = len};
	int rc = s3_do(s3(be), &r);
	free(r.dyn);
	return rc;
}

static ssize_t s3_getv(struct tape_backend *be, const char *key, uint64_t off,
		       const struct iovec *iov, int iovcnt, tape_progress_cb progress, void *arg)
{
	size_t len = 0;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (!len)
		return 0;
	struct s3_req r = {.method = "GET",
			   .key = key,
			   .query = "",
			   .ranged = 1,
			   .off = off,
			   .len = len,
			   .iov = iov,
			   .iovcnt = iovcnt,
			   .out_cap = len,
			   .progress = progress,
			   .parg = arg};
	int rc = s3_do(s3(be), &r);
	free(r.dyn);
	return rc ? rc : (ssize_t)r.got;
}


static ssize_t s3_get(struct tape_backend *be, const char *key, uint64_t off, void *buf,
		  size_t len)
{
	return s3_getv(be, key, off, &(struct iovec){buf, len}, 1, NULL, NULL);
}

static int s3_head(struct tape_backend *be, const char *key, struct tape_obj_info *oi)
{
	struct s3_req r = {.method = "HEAD", .key = key, .query = ""};
	int rc = s3_do(s3(be), &r);
	free(r.dyn);
	if (rc)
		return rc;
	/* the size and time of an object come from these headers only */
	if (!r.have_cl || !r.have_lm) {
		tape_log(TAPE_LOG_ERR, "s3: HEAD %s: no valid %s header", key,
			 r.have_cl ? "Last-Modified" : "Content-Length");
		return -EIO;
	}
	snprintf(oi->key, sizeof(oi->key), "%s", key);
	oi->size_bytes = r.content_length;
	oi->mtime = r.last_modified;
	return 0;
}

static int s3_del(struct tape_backend *be, const char *key)
{
	struct tape_obj_info oi;
	int rc = s3_head(be, key, &oi); /* S3 answers 204 for absent keys */
	if (rc)
		return rc;
	struct s3_req r = {.method = "DELETE", .key = key, .query = ""};
	rc = s3_do(s3(be), &r);
	free(r.dyn);
	return rc;
}

static int s3_list(struct tape_backend *be, const char *prefix, tape_list_cb cb, void *arg)
{
	struct s3_backend *b = s3(be);
	char full[600], enc_prefix[1800], enc_token[3 * S3_TOKEN_MAX + 1], query[5000];
	char token[S3_TOKEN_MAX] = "", why[400];
	struct s3_list_page pg;
	int rc = 0;
	int n = snprintf(full, sizeof(full), "%s%s", b->prefix, prefix);
	if (n < 0 || (size_t)n >= sizeof(full))
		return -ENAMETOOLONG;
	rc = sigv4_uri_encode(full, 0, enc_prefix, sizeof(enc_prefix));
	if (rc)
		return rc;
	for (;;) {
		if (*token) {
			rc = sigv4_uri_encode(token, 0, enc_token, sizeof(enc_token));
			if (rc)
				return rc;
			snprintf(query, sizeof(query), "continuation-token=%s&list-type=2&prefix=%s",
				 enc_token, enc_prefix);
		} else {
			snprintf(query, sizeof(query), "list-type=2&prefix=%s", enc_prefix);
		}
		struct s3_req r = {.method = "GET", .key = NULL, .query = query,
				   .dyn_max = 64u << 20};
		rc = s3_do(b, &r);
		if (rc) {
			free(r.dyn);
			return rc;
		}
		/* a page cut short, or one that does not parse, would look like
		 * the end of the listing: gc takes "not listed" for "gone" */
		if (r.dyn_over) {
			snprintf(why, sizeof(why), "page over %zu bytes", r.dyn_max);
			rc = -EBADMSG;
		} else {
			rc = s3_list_parse(r.dyn ? (const char *)r.dyn : "", r.dyn_len, b->prefix, cb,
					   arg, &pg, why, sizeof(why));
			if (!rc && pg.truncated && !strcmp(pg.token, token)) {
				snprintf(why, sizeof(why), "the same continuation token twice");
				rc = -EBADMSG;
			}
		}
		free(r.dyn);
		if (rc == -EBADMSG)
			tape_log(TAPE_LOG_ERR, "s3: listing %s refused: %s", full, why);
		if (rc || !pg.truncated)
			return rc;
		memcpy(token, pg.token, sizeof(token));
	}
}

/* ---- multipart upload (objects over multipart_mb=) ----
 *
 * CreateMultipartUpload (with x-amz-checksum-algorithm: CRC32), one
 * UploadPart per part — signed and CRC-checked exactly as a single PUT, each
 * with s3_do's retries — then CompleteMultipartUpload listing every part's
 * ETag and CRC. The object appears only at Complete, so the put stays
 * atomic; any failure aborts the upload (AbortMultipartUpload), so no parts
 * are left behind to be billed. Parts go one after another: the pool's
 * threads already keep several packs in flight. */

static void mp_abort(struct s3_backend *b, const char *key, const char *enc_id)
{
	char q[3 * S3_TOKEN_MAX + 16];
	snprintf(q, sizeof(q), "uploadId=%s", enc_id);
	struct s3_req r = {.method = "DELETE", .key = key, .query = q};
	int rc = s3_do(b, &r);
	free(r.dyn);
	if (rc && rc != -ENOENT)
		tape_log(TAPE_LOG_WARN,
			 "s3: %s: aborting the multipart upload failed (%s): its parts stay "
			 "until the bucket's lifecycle rule removes them",
			 key, strerror(-rc));
}

/* <Error> in a 2xx body (Complete may answer 200 and fail later) */
static int body_error(const struct s3_req *r, char *code, size_t codelen)
{
	const char *x = r->dyn ? (const char *)r->dyn : "";
	const char *e = x + r->dyn_len;
	code[0] = '\0';
	if (!memmem(x, r->dyn_len, "<Error>", 7))
		return 0;
	if (s3_xml_text(x, e, "Code", code, codelen) != 1)
		snprintf(code, codelen, "?");
	return 1;
}

static int s3_put_multipart(struct s3_backend *b, const char *key, const uint8_t *buf, size_t len)
{
	char id[S3_TOKEN_MAX], enc_id[3 * S3_TOKEN_MAX + 1], q[3 * S3_TOKEN_MAX + 64], code[64];
	uint64_t part = b->part_bytes;
	if ((len + part - 1) / part > S3_MAX_PARTS) /* more parts than S3 takes: larger ones */
		part = ((len + S3_MAX_PARTS - 1) / S3_MAX_PARTS + (1u << 20) - 1) & ~((1ull << 20) - 1);
	uint32_t nparts = (uint32_t)((len + part - 1) / part);
	char (*etags)[128] = calloc(nparts, sizeof(*etags));
	char (*crcs)[16] = calloc(nparts, sizeof(*crcs));
	char *xml = NULL;
	int rc;
	if (!etags || !crcs) {
		rc = -ENOMEM;
		goto out_free;
	}

	struct s3_req cr = {.method = "POST", .key = key, .query = "uploads=",
			    .checksum_algo = "CRC32"};
	rc = s3_do(b, &cr);
	if (!rc) {
		const char *x = cr.dyn ? (const char *)cr.dyn : "";
		int t = s3_xml_text(x, x + cr.dyn_len, "UploadId", id, sizeof(id));
		if (t != 1 || !*id || cr.dyn_over) {
			tape_log(TAPE_LOG_ERR, "s3: POST %s?uploads: no usable UploadId", key);
			rc = -EIO;
		}
	}
	free(cr.dyn);
	if (rc)
		goto out_free;
	rc = sigv4_uri_encode(id, 0, enc_id, sizeof(enc_id));
	if (rc)
		goto out_abort;

	for (uint32_t i = 0; i < nparts; i++) {
		size_t off = (size_t)i * part, plen = len - off < part ? len - off : (size_t)part;
		snprintf(q, sizeof(q), "partNumber=%u&uploadId=%s", i + 1, enc_id);
		struct s3_req r = {.method = "PUT", .key = key, .query = q, .body = buf + off,
				   .body_len = plen};
		rc = s3_do(b, &r);
		free(r.dyn);
		if (!rc && (!*r.etag || strpbrk(r.etag, "<>&"))) {
			tape_log(TAPE_LOG_ERR, "s3: PUT %s part %u: no usable ETag", key, i + 1);
			rc = -EIO;
		}
		if (rc)
			goto out_abort;
		memcpy(etags[i], r.etag, sizeof(etags[i]));
		s3_crc32_b64(buf + off, plen, crcs[i]);
	}

	size_t cap = 64 + (size_t)nparts * (sizeof(etags[0]) + sizeof(crcs[0]) + 96), xl = 0;
	xml = malloc(cap);
	if (!xml) {
		rc = -ENOMEM;
		goto out_abort;
	}
	xl += (size_t)snprintf(xml + xl, cap - xl, "<CompleteMultipartUpload>");
	for (uint32_t i = 0; i < nparts; i++)
		xl += (size_t)snprintf(xml + xl, cap - xl,
				       "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag>"
				       "<ChecksumCRC32>%s</ChecksumCRC32></Part>",
				       i + 1, etags[i], crcs[i]);
	xl += (size_t)snprintf(xml + xl, cap - xl, "</CompleteMultipartUpload>");
	snprintf(q, sizeof(q), "uploadId=%s", enc_id);
	for (int attempt = 0;; attempt++) {
		struct s3_req r = {.method = "POST", .key = key, .query = q,
				   .body = (const uint8_t *)xml, .body_len = xl,
				   .content_type = "application/xml"};
		rc = s3_do(b, &r);
		int in_body = !rc && body_error(&r, code, sizeof(code));
		int done = !rc && !in_body && r.dyn &&
			   memmem(r.dyn, r.dyn_len, "<CompleteMultipartUploadResult", 30);
		free(r.dyn);
		if (done)
			break;
		if (rc == -ENOENT && attempt) {
			/* NoSuchUpload after a retry: an earlier attempt may have
			 * completed it, its answer lost. The object says. */
			struct tape_obj_info oi;
			if (!b->base.ops->head(&b->base, key, &oi) && oi.size_bytes == len) {
				rc = 0;
				goto out_free;
			}
		}
		if (!rc) {
			tape_log(TAPE_LOG_WARN, "s3: POST %s?uploadId: %s", key,
				 in_body ? code : "no CompleteMultipartUploadResult");
			rc = -EIO;
			if (in_body && attempt < 3 &&
			    (!strcmp(code, "InternalError") || !strcmp(code, "SlowDown"))) {
				struct timespec ts = {0, 500000000L};
				nanosleep(&ts, NULL);
				continue;
			}
		}
		goto out_abort;
	}
	goto out_free;
out_abort:
	mp_abort(b, key, enc_id);
out_free:
	free(xml);
	free(etags);
	free(crcs);
	return rc;
}

static void s3_close(struct tape_backend *be)
{
	struct s3_backend *b = s3(be);
	for (int i = 0; i < b->nr_idle; i++)
		curl_easy_cleanup(b->idle[i]);
	if (b->share)
		curl_share_cleanup(b->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&b->share_locks[i]);
	pthread_mutex_destroy(&b->lock);
	OPENSSL_cleanse(b->secret_key, sizeof(b->secret_key));
	if (b->session_token) {
		OPENSSL_cleanse(b->session_token, strlen(b->session_token));
		free(b->session_token);
	}
	free(b);
}

static const struct tape_backend_ops s3_ops = {
	.name = "s3",
	.put = s3_put,
	.get = s3_get,
	.getv = s3_getv,
	.head = s3_head,
	.list = s3_list,
	.del = s3_del,
	.close = s3_close,
};

/* ---- open ---- */

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
	return s;
}

static int load_credentials_file(struct s3_backend *b, const char *path, char *err, size_t errlen)
{
	struct stat st;
	char line[4096];
	int rc = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "credentials file %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (st.st_mode & 077) ||
	    st.st_uid != geteuid()) {
		close(fd);
		snprintf(err, errlen, "credentials file %s must be a regular file of mode 0600 owned "
				      "by the daemon's user",
			 path);
		return -EPERM;
	}
	FILE *f = fdopen(fd, "r");
	if (!f) {
		close(fd);
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		char *eq = strchr(line, '=');
		if (!eq || line[0] == '#')
			continue;
		*eq = '\0';
		char *k = trim(line), *v = trim(eq + 1);
		if (!strcmp(k, "access_key_id") || !strcmp(k, "aws_access_key_id"))
			snprintf(b->access_key, sizeof(b->access_key), "%s", v);
		else if (!strcmp(k, "secret_access_key") || !strcmp(k, "aws_secret_access_key"))
			snprintf(b->secret_key, sizeof(b->secret_key), "%s", v);
		else if (!strcmp(k, "session_token") || !strcmp(k, "aws_session_token")) {
			free(b->session_token);
			b->session_token = strdup(v);
		}
	}
	OPENSSL_cleanse(line, sizeof(line));
	fclose(f);
	if (!*b->access_key || !*b->secret_key) {
		snprintf(err, errlen, "credentials file %s lacks access_key_id or secret_access_key",
			 path);
		rc = -EINVAL;
	}
	return rc;
}

static int opt_long(const char *opts, const char *key, long def, long *out)
{
	char v[32];
	int rc = tape_opt_get(opts, key, v, sizeof(v));
	if (rc < 0)
		return rc;
	if (!rc) {
		*out = def;
		return 0;
	}
	char *end;
	long x = strtol(v, &end, 10);
	if (*end || end == v || x < 0)
		return -EINVAL;
	*out = x;
	return 0;
}

int tape_backend_s3_open(const char *bucket_and_prefix, const char *opts, struct tape_backend **out,
			 char *err, size_t errlen)
{
	char endpoint[512], v[600];
	long ps, retries, timeout, retry_s, mp_mb;
	int rc;
	pthread_once(&curl_once, curl_init_once);
	struct s3_backend *b = calloc(1, sizeof(*b));
	if (!b) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	b->base.ops = &s3_ops;
	pthread_mutex_init(&b->lock, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&b->share_locks[i], NULL);

	/* bucket[/prefix] */
	size_t bl = strcspn(bucket_and_prefix, "/");
	if (bl == 0 || bl >= sizeof(b->bucket)) {
		snprintf(err, errlen, "s3 URL needs a bucket name (s3://bucket/prefix)");
		rc = -EINVAL;
		goto out_free;
	}
	memcpy(b->bucket, bucket_and_prefix, bl);
	const char *pfx = bucket_and_prefix + bl;
	while (*pfx == '/')
		pfx++;
	size_t pl = strlen(pfx);
	while (pl && pfx[pl - 1] == '/')
		pl--;
	if (pl + 2 >= sizeof(b->prefix)) {
		snprintf(err, errlen, "s3 prefix too long");
		rc = -ENAMETOOLONG;
		goto out_free;
	}
	if (pl) {
		memcpy(b->prefix, pfx, pl);
		b->prefix[pl] = '/';
	}

	if (tape_opt_get(opts, "region", b->region, sizeof(b->region)) <= 0)
		snprintf(b->region, sizeof(b->region), "us-east-1");
	if (opt_long(opts, "path_style", 0, &ps) || opt_long(opts, "retries", 8, &retries) ||
	    opt_long(opts, "timeout_s", 30, &timeout) || opt_long(opts, "retry_s", 120, &retry_s) ||
	    opt_long(opts, "multipart_mb", 64, &mp_mb) || (uint64_t)mp_mb < S3_PART_MIN >> 20 ||
	    (uint64_t)mp_mb > S3_PART_MAX >> 20) {
		snprintf(err, errlen, "bad s3 option (path_style, retries, timeout_s, retry_s, "
				      "multipart_mb 5..5120)");
		rc = -EINVAL;
		goto out_free;
	}
	b->part_bytes = (uint64_t)mp_mb << 20;
	b->path_style = ps != 0;
	b->retries = (int)retries;
	b->timeout_s = timeout ? timeout : 30;
	b->retry_ms = retry_s * 1000;
	if (tape_opt_get(opts, "ca", b->ca, sizeof(b->ca)) < 0) {
		snprintf(err, errlen, "ca path too long");
		rc = -ENAMETOOLONG;
		goto out_free;
	}
	rc = tape_opt_get(opts, "endpoint", endpoint, sizeof(endpoint));
	if (rc < 0) {
		snprintf(err, errlen, "endpoint too long");
		goto out_free;
	}
	if (!rc)
		snprintf(endpoint, sizeof(endpoint), "https://s3.%s.amazonaws.com", b->region);
	const char *hp = strstr(endpoint, "://");
	if (!hp || (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8))) {
		snprintf(err, errlen, "endpoint must be http://host[:port] or https://host[:port]");
		rc = -EINVAL;
		goto out_free;
	}
	hp += 3;
	size_t hl = strcspn(hp, "/");
	if (hl == 0 || hl + bl + 2 >= sizeof(b->host)) {
		snprintf(err, errlen, "bad endpoint host");
		rc = -EINVAL;
		goto out_free;
	}
	int scheme_len = (int)(hp - endpoint);
	if (b->path_style) {
		snprintf(b->host, sizeof(b->host), "%.*s", (int)hl, hp);
	} else {
		snprintf(b->host, sizeof(b->host), "%s.%.*s", b->bucket, (int)hl, hp);
	}
	snprintf(b->scheme_host, sizeof(b->scheme_host), "%.*s%s", scheme_len, endpoint, b->host);
	b->tls = strncmp(endpoint, "https://", 8) == 0;

	rc = tape_opt_get(opts, "credentials", v, sizeof(v));
	if (rc > 0) {
		rc = load_credentials_file(b, v, err, errlen);
		if (rc)
			goto out_free;
	} else {
		const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY"),
			   *tok = getenv("AWS_SESSION_TOKEN");
		if (!ak || !sk || !*ak || !*sk) {
			snprintf(err, errlen, "no S3 credentials: set AWS_ACCESS_KEY_ID and "
					      "AWS_SECRET_ACCESS_KEY or the pool option credentials=");
			rc = -EACCES;
			goto out_free;
		}
		if (strlen(ak) >= sizeof(b->access_key) || strlen(sk) >= sizeof(b->secret_key)) {
			snprintf(err, errlen, "S3 credentials too long");
			rc = -EINVAL;
			goto out_free;
		}
		snprintf(b->access_key, sizeof(b->access_key), "%s", ak);
		snprintf(b->secret_key, sizeof(b->secret_key), "%s", sk);
		if (tok && *tok)
			b->session_token = strdup(tok);
	}

	b->share = curl_share_init();
	if (!b->share) {
		snprintf(err, errlen, "curl_share_init failed");
		rc = -ENOMEM;
		goto out_free;
	}
	curl_share_setopt(b->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(b->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(b->share, CURLSHOPT_USERDATA, b);
	curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(b->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	*out = &b->base;
	return 0;
out_free:
	s3_close(&b->base);
	return rc;
}
