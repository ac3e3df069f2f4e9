/*
 * hashv.h — checking blocks against their SHA-256 digests, many at a time.
 *
 * A tape image read verifies every block it returns. With OpenSSL (SHA-NI,
 * one message at a time, 1.6 GB/s here) that was about 70 % of the daemon's
 * CPU reading a file:// image. libipsec-mb hashes several messages at once
 * (multi-buffer: the rounds of independent messages interleaved), about
 * twice as fast on this machine (two SHA-NI lanes), but its SHA-256 jobs refuse messages of
 * 65536 bytes or more, and the default grain is exactly that. A check does
 * not need the digest, only whether it equals the expected one, and that
 * fits the library's limit:
 *
 *   Let S be the SHA-256 compression C of the block's first 64 bytes B0 from
 *   the standard IV (IMB_SHA256_ONE_BLOCK). An HMAC-SHA-256 job with inner
 *   state S, outer state IV, over the rest R of the block computes
 *   inner = SHA-256(B0 || R) (an HMAC's inner hash counts the 64-byte block
 *   before its message in the length) and returns
 *   tag = C(IV, inner || 0x80 || 0 ... || 768 as 64-bit big endian).
 *   The block is intact iff tag equals C(IV, want || the same padding), one
 *   more single-block compression: equal tags with inner != want would be a
 *   collision of SHA-256's compression function.
 *
 * Blocks of 65 to 65598 bytes take that path, in batches; other sizes,
 * builds without libipsec-mb (ACMFS_HAVE_IPSEC_MB unset) and a library that
 * fails the self-test at first use take OpenSSL's SHA-256. Both give the
 * same answers (tests/unit/test_tape_codec.c compares them). Thread safe:
 * each thread has its own multi-buffer manager, freed when it exits.
 */
#ifndef ACMFS_TAPE_HASHV_H
#define ACMFS_TAPE_HASHV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ok[i] = SHA-256 of data[i] (len bytes) equals want[i] (32 bytes), i < n */
void tape_sha256_check(unsigned n, const uint8_t *const data[], size_t len,
                       const uint8_t *const want[], bool ok[]);
/* whether blocks of len bytes take the multi-buffer path (tests, logs) */
bool tape_sha256_check_fast(size_t len);

#endif
