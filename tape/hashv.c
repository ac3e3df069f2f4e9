/*
 * hashv.c — batched SHA-256 checks (hashv.h): libipsec-mb's multi-buffer
 * HMAC-SHA-256 where it applies, OpenSSL's SHA-256 otherwise.
 */
#include "hashv.h"

#include "fault.h"
#include "format.h"
#include "log.h"

#include <string.h>

static void check_slow(unsigned n, const uint8_t *const data[], size_t len,
                       const uint8_t *const want[], bool ok[])
{
	for (unsigned i = 0; i < n; i++) {
		uint8_t h[32];
		ok[i] = !tape_sha256(data[i], len, h) && !memcmp(h, want[i], 32);
	}
}

#ifdef ACMFS_HAVE_IPSEC_MB
#include <pthread.h>
#include <stdlib.h>

#define NO_COMPAT_IMB_API_053
#include <intel-ipsec-mb.h>

#define BATCH    64           /* jobs in flight per call round (the state arrays below) */
/* after B0: the job API refuses messages of 65535 bytes or more (65534 runs) */
#define FAST_MAX (64 + 65534)

static const uint32_t sha256_iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static pthread_key_t mgr_key;
static bool fast_ok; /* the self-test passed; set once under init_once */
static bool refuse_all; /* ACMFS_FAULT_HASHV=refuse; set once under init_once */

static void mgr_free(void *m)
{
	free_mb_mgr(m);
}

static IMB_MGR *mgr_new(void)
{
	IMB_MGR *m = alloc_mb_mgr(0);
	IMB_ARCH arch;
	if (!m)
		return NULL;
	/* With SHA-NI, the SSE manager's SHA-256 runs two lanes of SHA-NI: full
	 * speed from two blocks on. The "best" (AVX-512) manager would run 16
	 * AVX-512 lanes instead, which a streaming read's batches of four
	 * never fill (measured: half OpenSSL's speed at four, 1.8x at 16). */
	if (imb_get_feature_flags() & IMB_FEATURE_SHANI)
		init_mb_mgr_sse(m);
	else
		init_mb_mgr_auto(m, &arch);
	if (imb_get_errno(m)) {
		free_mb_mgr(m);
		return NULL;
	}
	return m;
}

/* C(IV, want || padding of a 96-byte message), as the tag's big-endian bytes */
static void expected_tag(IMB_MGR *m, const uint8_t want[32], uint8_t out[32])
{
	uint8_t blk[64] = {0};
	uint32_t st[8];
	memcpy(blk, want, 32);
	blk[32] = 0x80;
	blk[62] = 0x03; /* 768 bits */
	IMB_SHA256_ONE_BLOCK(m, blk, st);
	for (int w = 0; w < 8; w++) { /* the state comes in host order */
		out[4 * w] = (uint8_t)(st[w] >> 24);
		out[4 * w + 1] = (uint8_t)(st[w] >> 16);
		out[4 * w + 2] = (uint8_t)(st[w] >> 8);
		out[4 * w + 3] = (uint8_t)st[w];
	}
}

/* a job came back: its block's verdict, if the library ran it */
static void job_done(IMB_MGR *m, const IMB_JOB *j, const uint8_t *const want[],
		     uint8_t (*tag)[32], bool ok[], bool done[])
{
	unsigned k = (unsigned)(uintptr_t)j->user_data;
	uint8_t exp[32];
	if (j->status != IMB_STATUS_COMPLETED || refuse_all)
		return;
	expected_tag(m, want[k], exp);
	ok[k] = !memcmp(exp, tag[k], 32);
	done[k] = true;
}

/* one round of at most BATCH blocks through m */
static void check_round(IMB_MGR *m, unsigned n, const uint8_t *const data[], size_t len,
                        const uint8_t *const want[], bool ok[])
{
	uint32_t inner[BATCH][8];
	uint8_t tag[BATCH][32];
	bool done[BATCH] = {false};
	IMB_JOB *j;

	for (unsigned i = 0; i < n; i++) {
		IMB_SHA256_ONE_BLOCK(m, data[i], inner[i]);
		j = IMB_GET_NEXT_JOB(m);
		memset(j, 0, sizeof(*j));
		j->cipher_mode = IMB_CIPHER_NULL;
		j->cipher_direction = IMB_DIR_ENCRYPT;
		j->chain_order = IMB_ORDER_HASH_CIPHER;
		j->hash_alg = IMB_AUTH_HMAC_SHA_256;
		j->src = data[i];
		j->hash_start_src_offset_in_bytes = 64;
		j->msg_len_to_hash_in_bytes = len - 64;
		j->u.HMAC._hashed_auth_key_xor_ipad = (const uint8_t *)inner[i];
		j->u.HMAC._hashed_auth_key_xor_opad = (const uint8_t *)sha256_iv;
		j->auth_tag_output = tag[i];
		j->auth_tag_output_len_in_bytes = 32;
		j->user_data = (void *)(uintptr_t)i;
		for (j = IMB_SUBMIT_JOB(m); j; j = IMB_GET_COMPLETED_JOB(m))
			job_done(m, j, want, tag, ok, done);
	}
	while ((j = IMB_FLUSH_JOB(m)))
		job_done(m, j, want, tag, ok, done);
	/* a job the library refused: the slow way, never a guess */
	for (unsigned i = 0; i < n; i++)
		if (!done[i])
			check_slow(1, &data[i], len, &want[i], &ok[i]);
}

/* The fast path must agree with OpenSSL on intact and damaged blocks before
 * it is used: a library whose state layout differed would fail every block
 * (or, worse, pass damaged ones). */
static bool self_test(void)
{
	enum { LEN = 65536, N = 3 };
	uint8_t *buf = malloc((size_t)LEN * N);
	IMB_MGR *m = mgr_new();
	bool pass = buf && m;
	if (pass) {
		const uint8_t *data[N];
		uint8_t sum[N][32];
		const uint8_t *want[N];
		bool ok[N];
		for (size_t i = 0; i < (size_t)LEN * N; i++)
			buf[i] = (uint8_t)(i * 2654435761u >> 13);
		for (int i = 0; i < N; i++) {
			data[i] = buf + (size_t)i * LEN;
			pass &= !tape_sha256(data[i], LEN, sum[i]);
			want[i] = sum[i];
		}
		buf[LEN + 1000] ^= 1; /* block 1 damaged after its digest */
		check_round(m, N, data, LEN, want, ok);
		pass &= ok[0] && !ok[1] && ok[2];
	}
	if (m)
		free_mb_mgr(m);
	free(buf);
	return pass;
}

static void init(void)
{
	if (pthread_key_create(&mgr_key, mgr_free))
		return;
	enum fault_hashv fh = fault_hashv();
	refuse_all = fh == FAULT_HASHV_REFUSE;
	fast_ok = self_test() && fh != FAULT_HASHV_SELFTEST;
	if (!fast_ok)
		tape_log(TAPE_LOG_WARN, "libipsec-mb failed its SHA-256 self-test: "
		                        "verifying blocks with OpenSSL");
}

bool tape_sha256_check_fast(size_t len)
{
	pthread_once(&init_once, init);
	return fast_ok && len > 64 && len <= FAST_MAX;
}

void tape_sha256_check(unsigned n, const uint8_t *const data[], size_t len,
                       const uint8_t *const want[], bool ok[])
{
	IMB_MGR *m = NULL;
	if (n > 1 && tape_sha256_check_fast(len)) {
		m = pthread_getspecific(mgr_key);
		if (!m && (m = mgr_new()) && pthread_setspecific(mgr_key, m)) {
			free_mb_mgr(m);
			m = NULL;
		}
	}
	if (!m) {
		check_slow(n, data, len, want, ok);
		return;
	}
	for (unsigned i = 0; i < n; i += BATCH)
		check_round(m, n - i < BATCH ? n - i : BATCH, data + i, len, want + i, ok + i);
}

#else /* no libipsec-mb */

bool tape_sha256_check_fast(size_t len)
{
	(void)len;
	return false;
}

void tape_sha256_check(unsigned n, const uint8_t *const data[], size_t len,
                       const uint8_t *const want[], bool ok[])
{
	check_slow(n, data, len, want, ok);
}

#endif
