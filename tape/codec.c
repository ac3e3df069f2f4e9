/*
 * codec.c — block names, zstd, AES-256-GCM and the config object (codec.h,
 * docs/tape-format.md "Version 2").
 *
 * Every AES-GCM key encrypts one message or copies of one grain (keys are
 * derived from a random pack id, a random manifest salt, a random KDF salt,
 * or the block's name), so fixed zero nonces are safe where the format uses
 * them and a block's random nonce only has to separate the few uploads of
 * the same grain. Secrets are wiped with OPENSSL_cleanse.
 */
#include "codec.h"
#include "format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <zstd.h>

static const uint8_t zero_nonce[TAPE_NONCE_BYTES];

static int hmac(const uint8_t key[32], const void *a, size_t alen, const void *b, size_t blen,
		uint8_t out[32])
{
	unsigned int n = 32;
	uint8_t buf[64 + 32];
	if (!b || !blen)
		return HMAC(EVP_sha256(), key, 32, a, alen, out, &n) && n == 32 ? 0 : -EIO;
	/* the short two-part messages (label or name plus flags) */
	if (alen + blen > sizeof(buf))
		return -EINVAL;
	memcpy(buf, a, alen);
	memcpy(buf + alen, b, blen);
	int rc = HMAC(EVP_sha256(), key, 32, buf, alen + blen, out, &n) && n == 32 ? 0 : -EIO;
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

static void derive_subkeys(struct tape_codec *c)
{
	hmac(c->mk, "acmfs v2 name", 13, NULL, 0, c->kn);
	hmac(c->mk, "acmfs v2 block", 14, NULL, 0, c->kb);
	hmac(c->mk, "acmfs v2 index", 14, NULL, 0, c->ki);
	hmac(c->mk, "acmfs v2 manifest", 17, NULL, 0, c->km);
}

void tape_codec_v1(struct tape_codec *c)
{
	memset(c, 0, sizeof(*c));
	c->version = 1;
}

void tape_codec_wipe(struct tape_codec *c)
{
	OPENSSL_cleanse(c->mk, sizeof(c->mk));
	OPENSSL_cleanse(c->kn, sizeof(c->kn));
	OPENSSL_cleanse(c->kb, sizeof(c->kb));
	OPENSSL_cleanse(c->ki, sizeof(c->ki));
	OPENSSL_cleanse(c->km, sizeof(c->km));
}

void tape_coder_fini(struct tape_coder *k)
{
	EVP_CIPHER_CTX_free(k->ev);
	ZSTD_freeCCtx(k->zc);
	ZSTD_freeDCtx(k->zd);
	if (k->tmp)
		OPENSSL_cleanse(k->tmp, k->tmp_cap);
	free(k->tmp);
	memset(k, 0, sizeof(*k));
}

static int coder_tmp(struct tape_coder *k, size_t len)
{
	if (k->tmp_cap >= len)
		return 0;
	uint8_t *n = malloc(len);
	if (!n)
		return -ENOMEM;
	if (k->tmp)
		OPENSSL_cleanse(k->tmp, k->tmp_cap);
	free(k->tmp);
	k->tmp = n;
	k->tmp_cap = len;
	return 0;
}

static EVP_CIPHER_CTX *coder_ev(struct tape_coder *k)
{
	if (!k->ev)
		k->ev = EVP_CIPHER_CTX_new();
	return k->ev;
}

/* ---- AEAD ---- */

static int gcm(EVP_CIPHER_CTX *ev, int enc, const uint8_t key[32], const uint8_t nonce[12],
	       const struct tape_aad *aad, int naad, const uint8_t *in, size_t len, uint8_t *out,
	       uint8_t tag[16])
{
	int n, rc = -EIO;
	if (!ev || len > INT32_MAX)
		return -ENOMEM;
	/* the cipher is set once per context; each block only re-keys it
	 * (setting the cipher again costs a provider lookup and context
	 * rebuild: 15 % of AES-GCM's time on 64 KiB blocks, measured) */
	if (!EVP_CIPHER_CTX_get0_cipher(ev) &&
	    !EVP_CipherInit_ex(ev, EVP_aes_256_gcm(), NULL, NULL, NULL, enc))
		goto out;
	if (!EVP_CipherInit_ex(ev, NULL, NULL, key, nonce, enc))
		goto out;
	for (int i = 0; i < naad; i++)
		if (aad[i].len && !EVP_CipherUpdate(ev, NULL, &n, aad[i].p, (int)aad[i].len))
			goto out;
	if (len && !EVP_CipherUpdate(ev, out, &n, in, (int)len))
		goto out;
	if (enc) {
		if (EVP_CipherFinal_ex(ev, out + len, &n) &&
		    EVP_CIPHER_CTX_ctrl(ev, EVP_CTRL_GCM_GET_TAG, 16, tag))
			rc = 0;
	} else {
		if (EVP_CIPHER_CTX_ctrl(ev, EVP_CTRL_GCM_SET_TAG, 16, tag) &&
		    EVP_CipherFinal_ex(ev, out + len, &n) > 0)
			rc = 0;
	}
out:
	return rc;
}

/* one-shot with a context of its own (indexes, bodies, config: rare) */
static int gcm_once(int enc, const uint8_t key[32], const struct tape_aad *aad, int naad,
		    uint8_t *buf, size_t len, uint8_t tag[16])
{
	EVP_CIPHER_CTX *ev = EVP_CIPHER_CTX_new();
	int rc = gcm(ev, enc, key, zero_nonce, aad, naad, buf, len, buf, tag);
	EVP_CIPHER_CTX_free(ev);
	return rc;
}

static int keyed_once(int enc, const uint8_t base[32], const uint8_t *what, size_t wlen,
		      const struct tape_aad *aad, int naad, uint8_t *buf, size_t len,
		      uint8_t tag[16])
{
	uint8_t key[32];
	int rc = hmac(base, what, wlen, NULL, 0, key);
	if (!rc)
		rc = gcm_once(enc, key, aad, naad, buf, len, tag);
	OPENSSL_cleanse(key, sizeof(key));
	return rc;
}

int tape_index_seal(const struct tape_codec *c, const uint8_t pack_id[16], uint8_t *buf,
		    size_t len, const struct tape_aad *aad, int naad, uint8_t tag[16])
{
	return keyed_once(1, c->ki, pack_id, 16, aad, naad, buf, len, tag);
}

int tape_index_open(const struct tape_codec *c, const uint8_t pack_id[16], uint8_t *buf,
		    size_t len, const struct tape_aad *aad, int naad, const uint8_t tag[16])
{
	uint8_t t[16];
	memcpy(t, tag, 16);
	return keyed_once(0, c->ki, pack_id, 16, aad, naad, buf, len, t);
}

int tape_body_seal(const struct tape_codec *c, const uint8_t salt[16], uint8_t *buf, size_t len,
		   const struct tape_aad *aad, int naad, uint8_t tag[16])
{
	return keyed_once(1, c->km, salt, 16, aad, naad, buf, len, tag);
}

int tape_body_open(const struct tape_codec *c, const uint8_t salt[16], uint8_t *buf, size_t len,
		   const struct tape_aad *aad, int naad, const uint8_t tag[16])
{
	uint8_t t[16];
	memcpy(t, tag, 16);
	return keyed_once(0, c->km, salt, 16, aad, naad, buf, len, t);
}

/* ---- blocks ---- */

int tape_codec_name(const struct tape_codec *c, const void *raw, size_t len, uint8_t out[32])
{
	if (!c->encrypted)
		return tape_sha256(raw, len, out);
	return hmac(c->kn, raw, len, NULL, 0, out);
}

static int raw_shift(uint32_t rawlen)
{
	if (rawlen < TAPE_GRAIN_MIN || rawlen > TAPE_GRAIN_MAX || (rawlen & (rawlen - 1)))
		return -1;
	return __builtin_ctz(rawlen);
}

/* A look before the full attempt: a block none of whose three 2 KiB
 * samples (start, middle, end) shrinks at zstd's fastest level is stored
 * raw untried (random, encrypted or already compressed data: the full
 * attempt costs a quarter of an encrypted upload's CPU on such data, the
 * samples a tenth of it). On a copy of /usr the samples turned down 4 % of
 * the blocks and the pool grew by 0.2 %. Small grains are always tried. */
#define PROBE_BYTES 2048
static bool worth_compressing(ZSTD_CCtx *zc, const uint8_t *raw, uint32_t rawlen)
{
	uint8_t out[PROBE_BYTES];
	if (rawlen < 8 * PROBE_BYTES)
		return true;
	const size_t at[3] = {0, rawlen / 2 - PROBE_BYTES / 2, rawlen - PROBE_BYTES};
	for (int i = 0; i < 3; i++) {
		size_t n = ZSTD_compressCCtx(zc, out, PROBE_BYTES - PROBE_BYTES / 32, raw + at[i],
					     PROBE_BYTES, 1);
		if (!ZSTD_isError(n))
			return true; /* it fits the room of a 1/32 saving */
	}
	return false;
}

int tape_block_seal(const struct tape_codec *c, struct tape_coder *k, const uint8_t name[32],
		    const void *raw, uint32_t rawlen, uint8_t *out, uint32_t *outlen,
		    uint32_t *flags)
{
	int shift = raw_shift(rawlen);
	if (shift < 0 || c->version != 2)
		return -EINVAL;
	const uint8_t *body = raw;
	size_t blen = rawlen;
	uint32_t fl = (uint32_t)shift << TAPE_BLK_RAWSHIFT;
	/* compressed into the nonce's place onward when encrypted (then
	 * encrypted in place), straight into out when plain */
	uint8_t *zdst = c->encrypted ? out + TAPE_NONCE_BYTES : out;
	if (c->zlevel > 0) {
		if (!k->zc && !(k->zc = ZSTD_createCCtx()))
			return -ENOMEM;
	}
	if (c->zlevel > 0 && worth_compressing(k->zc, raw, rawlen)) {
		/* worth it only if it saves 1/32: a near-random block stays raw */
		size_t cap = rawlen - rawlen / 32;
		size_t n = ZSTD_compressCCtx(k->zc, zdst, cap, raw, rawlen, c->zlevel);
		if (!ZSTD_isError(n) && n < cap) {
			body = zdst;
			blen = n;
			fl |= TAPE_BLK_ZSTD;
		}
	}
	if (!c->encrypted) {
		if (body != out)
			memcpy(out, body, blen);
		*outlen = (uint32_t)blen;
		*flags = fl;
		return 0;
	}
	fl |= TAPE_BLK_ENCRYPTED;
	uint8_t key[32], ad[8];
	if (RAND_bytes(out, TAPE_NONCE_BYTES) != 1)
		return -EIO;
	int rc = hmac(c->kb, name, 32, NULL, 0, key);
	tape_put_le32(ad, fl);
	tape_put_le32(ad + 4, rawlen);
	struct tape_aad a = {ad, 8};
	if (!rc)
		rc = gcm(coder_ev(k), 1, key, out, &a, 1, body, blen, out + TAPE_NONCE_BYTES,
			 out + TAPE_NONCE_BYTES + blen);
	OPENSSL_cleanse(key, sizeof(key));
	if (rc)
		return rc;
	*outlen = (uint32_t)(blen + TAPE_BLOCK_OVERHEAD);
	*flags = fl;
	return 0;
}

int tape_block_open(const struct tape_codec *c, struct tape_coder *k, const uint8_t name[32],
		    uint32_t flags, const uint8_t *in, uint32_t inlen, uint8_t *out,
		    uint32_t rawlen)
{
	int shift = raw_shift(rawlen);
	uint32_t want_enc = c->encrypted ? TAPE_BLK_ENCRYPTED : 0;
	if (shift < 0 || c->version != 2 || (flags >> TAPE_BLK_RAWSHIFT) != (uint32_t)shift ||
	    (flags & TAPE_BLK_ENCRYPTED) != want_enc ||
	    (flags & ~(TAPE_BLK_ZSTD | TAPE_BLK_ENCRYPTED | (0xffu << TAPE_BLK_RAWSHIFT))))
		return -EIO;
	const uint8_t *body = in;
	size_t blen = inlen;
	bool z = flags & TAPE_BLK_ZSTD;
	int rc;
	if (c->encrypted) {
		if (inlen < TAPE_BLOCK_OVERHEAD)
			return -EIO;
		blen = inlen - TAPE_BLOCK_OVERHEAD;
		if (blen > rawlen)
			return -EIO;
		uint8_t *dst = out;
		if (z) {
			rc = coder_tmp(k, rawlen);
			if (rc)
				return rc;
			dst = k->tmp;
		}
		uint8_t key[32], ad[8], tag[16];
		rc = hmac(c->kb, name, 32, NULL, 0, key);
		tape_put_le32(ad, flags);
		tape_put_le32(ad + 4, rawlen);
		memcpy(tag, in + inlen - TAPE_TAG_BYTES, 16);
		struct tape_aad a = {ad, 8};
		if (!rc)
			rc = gcm(coder_ev(k), 0, key, in, &a, 1, in + TAPE_NONCE_BYTES, blen, dst,
				 tag);
		OPENSSL_cleanse(key, sizeof(key));
		if (rc) { /* GCM wrote the bytes before it checked the tag */
			OPENSSL_cleanse(dst, blen);
			return -EIO;
		}
		body = dst;
	}
	if (z) {
		if (!k->zd && !(k->zd = ZSTD_createDCtx()))
			return -ENOMEM;
		/* exactly one frame, of exactly the raw length */
		if (ZSTD_findFrameCompressedSize(body, blen) != blen ||
		    ZSTD_getFrameContentSize(body, blen) != rawlen)
			return -EIO;
		size_t n = ZSTD_decompressDCtx(k->zd, out, rawlen, body, blen);
		if (ZSTD_isError(n) || n != rawlen)
			goto fail;
	} else if (blen != rawlen) {
		return -EIO;
	} else if (body != out) {
		memcpy(out, body, rawlen);
	}
	if (!c->encrypted) {
		uint8_t h[32];
		if (tape_sha256(out, rawlen, h) || memcmp(h, name, 32))
			goto fail;
	}
	return 0;
fail: /* never leave bytes that did not pass their check */
	OPENSSL_cleanse(out, rawlen);
	return -EIO;
}

int tape_block_verify(const struct tape_codec *c, struct tape_coder *k, const uint8_t name[32],
		      uint32_t flags, const uint8_t *in, uint32_t inlen, uint32_t rawlen)
{
	uint8_t *out = malloc(rawlen), h[32];
	if (!out)
		return -ENOMEM;
	int rc = tape_block_open(c, k, name, flags, in, inlen, out, rawlen);
	if (!rc && c->encrypted && (tape_codec_name(c, out, rawlen, h) || memcmp(h, name, 32)))
		rc = -EIO;
	OPENSSL_cleanse(out, rawlen);
	free(out);
	return rc;
}

/* ---- config ---- */

static int kdf_ok(const struct tape_kdf *k)
{
	/* N r 128 bytes of memory: at most 1 GiB, whatever a config claims */
	return k->log2n >= 10 && k->log2n <= 22 && k->r >= 1 && k->r <= 32 && k->p >= 1 &&
	       k->p <= 16 && (128ull << k->log2n) * k->r <= (1ull << 30) &&
	       k->log2n < 16u * k->r; /* scrypt's own rule: N < 2^(128 r / 8) */
}

static int kek_derive(const char *pass, size_t passlen, const uint8_t salt[32],
		      const struct tape_kdf *k, uint8_t kek[32])
{
	uint64_t mem = (128ull << k->log2n) * k->r * 2 + (128ull * k->r * k->p) + (1u << 20);
	if (!EVP_PBE_scrypt(pass, passlen, salt, 32, 1ull << k->log2n, k->r, k->p, mem, kek, 32))
		return -ENOMEM;
	return 0;
}

/* bytes [0, 72) and the checksum; the wrap is the caller's */
static void config_header(const struct tape_codec *c, const uint8_t salt[32], uint8_t out[152])
{
	memset(out, 0, TAPE_CONFIG_BYTES);
	memcpy(out, TAPE_CONFIG_MAGIC, 8);
	tape_put_le32(out + 8, 2);
	tape_put_le32(out + 12, c->encrypted ? 1 : 0);
	memcpy(out + 16, c->pool_id, 16);
	if (c->encrypted) {
		tape_put_le32(out + 32, 1);
		out[36] = c->kdf.log2n;
		out[37] = c->kdf.r;
		out[38] = c->kdf.p;
		memcpy(out + 40, salt, 32);
	}
}

static int config_wrap(const struct tape_codec *c, const char *pass, size_t passlen,
		       uint8_t out[TAPE_CONFIG_BYTES])
{
	uint8_t salt[32] = {0}, kek[32];
	int rc = 0;
	if (c->encrypted) {
		if (!pass || !passlen || passlen > TAPE_PASS_MAX)
			return -EINVAL;
		if (RAND_bytes(salt, 32) != 1)
			return -EIO;
	}
	config_header(c, salt, out);
	if (c->encrypted) {
		rc = kek_derive(pass, passlen, salt, &c->kdf, kek);
		struct tape_aad a = {out, 72};
		memcpy(out + 72, c->mk, 32);
		if (!rc)
			rc = gcm_once(1, kek, &a, 1, out + 72, 32, out + 104);
		OPENSSL_cleanse(kek, sizeof(kek));
		if (rc) {
			OPENSSL_cleanse(out + 72, 48);
			return rc;
		}
	}
	return tape_sha256(out, 120, out + 120);
}

int tape_config_create(struct tape_codec *c, const char *pass, size_t passlen,
		       const struct tape_kdf *kdf, uint8_t out[TAPE_CONFIG_BYTES])
{
	memset(c, 0, sizeof(*c));
	c->version = 2;
	c->encrypted = pass != NULL;
	c->kdf = kdf ? *kdf : (struct tape_kdf){15, 8, 1};
	if (c->encrypted && !kdf_ok(&c->kdf))
		return -EINVAL;
	if (RAND_bytes(c->pool_id, 16) != 1 || (c->encrypted && RAND_bytes(c->mk, 32) != 1))
		return -EIO;
	if (c->encrypted)
		derive_subkeys(c);
	int rc = config_wrap(c, pass, passlen, out);
	if (rc)
		tape_codec_wipe(c);
	return rc;
}

int tape_config_rewrap(const struct tape_codec *c, const char *pass, size_t passlen,
		       uint8_t out[TAPE_CONFIG_BYTES])
{
	if (c->version != 2 || !c->encrypted)
		return -EINVAL;
	return config_wrap(c, pass, passlen, out);
}

int tape_config_open(const uint8_t *buf, size_t len, const char *pass, size_t passlen,
		     struct tape_codec *c)
{
	uint8_t sha[32];
	memset(c, 0, sizeof(*c));
	if (len != TAPE_CONFIG_BYTES || memcmp(buf, TAPE_CONFIG_MAGIC, 8))
		return -EBADMSG;
	if (tape_get_le32(buf + 8) != 2)
		return -EPROTONOSUPPORT;
	if (tape_sha256(buf, 120, sha) || memcmp(sha, buf + 120, 32))
		return -EBADMSG;
	uint32_t flags = tape_get_le32(buf + 12);
	if (flags & ~1u || buf[39])
		return -EBADMSG;
	c->version = 2;
	c->encrypted = flags & 1;
	memcpy(c->pool_id, buf + 16, 16);
	if (!c->encrypted) {
		for (int i = 32; i < 120; i++)
			if (buf[i])
				return -EBADMSG;
		return 0;
	}
	if (tape_get_le32(buf + 32) != 1)
		return -EPROTONOSUPPORT;
	c->kdf = (struct tape_kdf){buf[36], buf[37], buf[38]};
	if (!kdf_ok(&c->kdf))
		return -EBADMSG;
	if (!pass)
		return -ENOKEY;
	uint8_t kek[32], wrapped[32], tag[16];
	int rc = kek_derive(pass, passlen, buf + 40, &c->kdf, kek);
	memcpy(wrapped, buf + 72, 32);
	memcpy(tag, buf + 104, 16);
	struct tape_aad a = {buf, 72};
	if (!rc)
		rc = gcm_once(0, kek, &a, 1, wrapped, 32, tag) ? -EACCES : 0;
	OPENSSL_cleanse(kek, sizeof(kek));
	if (!rc) {
		memcpy(c->mk, wrapped, 32);
		derive_subkeys(c);
	}
	OPENSSL_cleanse(wrapped, sizeof(wrapped));
	return rc;
}

/* ---- passphrase files ---- */

int tape_pass_read(const char *path, char **pass, size_t *passlen, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, errlen, "key file %s: %s", path, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (st.st_mode & 077) ||
	    st.st_uid != geteuid()) {
		close(fd);
		snprintf(err, errlen, "key file %s must be a regular file of mode 0600 owned by "
				      "this user", path);
		return -EPERM;
	}
	char *buf = malloc(TAPE_PASS_MAX + 2);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	size_t n = 0;
	for (;;) {
		ssize_t r = read(fd, buf + n, TAPE_PASS_MAX + 2 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == TAPE_PASS_MAX + 2)
			break;
	}
	close(fd);
	if (n && buf[n - 1] == '\n')
		n--;
	if (n == 0 || n > TAPE_PASS_MAX) {
		tape_pass_free(buf, TAPE_PASS_MAX + 2);
		snprintf(err, errlen, "key file %s must hold a passphrase of 1..%u bytes", path,
			 TAPE_PASS_MAX);
		return -EINVAL;
	}
	OPENSSL_cleanse(buf + n, TAPE_PASS_MAX + 2 - n);
	*pass = buf;
	*passlen = n;
	return 0;
}

void tape_pass_free(char *pass, size_t passlen)
{
	if (!pass)
		return;
	OPENSSL_cleanse(pass, passlen);
	free(pass);
}
