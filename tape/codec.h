/*
 * codec.h — what a pool does to bytes before they leave the site: block
 * names, compression, encryption and authentication (pool format version
 * 2, docs/tape-format.md "Version 2"), and the pool's config object that
 * holds its parameters and its wrapped master key.
 *
 * A `struct tape_codec` is a pool's, immutable once opened and shared by
 * every thread; a `struct tape_coder` holds one thread's scratch (cipher
 * and zstd contexts) and is never shared. Nothing here does I/O or takes a
 * lock. Keys live only in a codec; tape_codec_wipe clears them, and no
 * function logs or returns key material.
 *
 * Version 1 codecs name blocks with SHA-256 and store them raw; their
 * packs and manifests are handled by format.c alone (no seal or open).
 */
#ifndef ACMFS_TAPE_CODEC_H
#define ACMFS_TAPE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TAPE_CONFIG_KEY	  "config"
#define TAPE_CONFIG_MAGIC "ACMFSCFG"
#define TAPE_CONFIG_BYTES 152u
#define TAPE_TAG_BYTES	  16u
#define TAPE_NONCE_BYTES  12u
/* what sealing adds to a block at most: nonce and tag */
#define TAPE_BLOCK_OVERHEAD (TAPE_NONCE_BYTES + TAPE_TAG_BYTES)
#define TAPE_PASS_MAX	  1024u

/* index entry flags (version 2) */
#define TAPE_BLK_ZSTD	   0x1u
#define TAPE_BLK_ENCRYPTED 0x2u
#define TAPE_BLK_RAWSHIFT  8 /* bits 8..15: log2 of the raw length */

struct tape_kdf {
	uint8_t log2n, r, p; /* scrypt; defaults 15, 8, 1 */
};

struct tape_codec {
	unsigned version;   /* 1 or 2 */
	bool encrypted;	    /* version 2 only */
	int zlevel;	    /* zstd level for writes, 0 = no compression */
	uint8_t pool_id[16];/* version 2: the config's */
	struct tape_kdf kdf;
	uint8_t mk[32];	    /* master key (encrypted pools) */
	uint8_t kn[32], kb[32], ki[32], km[32];
};

/* One thread's contexts; zero-initialise, tape_coder_fini when done. */
struct tape_coder {
	void *ev;      /* EVP_CIPHER_CTX */
	void *zc, *zd; /* ZSTD_CCtx, ZSTD_DCtx */
	uint8_t *tmp;  /* scratch of tmp_cap bytes */
	size_t tmp_cap;
};
void tape_coder_fini(struct tape_coder *k);

/* A version 1 codec (SHA-256 names, raw blocks). */
void tape_codec_v1(struct tape_codec *c);
/* Clears every key. */
void tape_codec_wipe(struct tape_codec *c);

/* ---- config object ---- */

/* A new pool: random pool id and (with pass) random master key wrapped by
 * scrypt(pass); out receives the config object. kdf NULL = defaults. */
int tape_config_create(struct tape_codec *c, const char *pass, size_t passlen,
		       const struct tape_kdf *kdf, uint8_t out[TAPE_CONFIG_BYTES]);
/* Checks and opens a config: -EBADMSG (damaged), -EPROTONOSUPPORT,
 * -ENOKEY (encrypted, no pass given), -EACCES (wrong passphrase). c gets the
 * pool's parameters and keys; zlevel is left to the caller. */
int tape_config_open(const uint8_t *buf, size_t len, const char *pass, size_t passlen,
		     struct tape_codec *c);
/* The same pool, its master key wrapped by a new passphrase (new salt). */
int tape_config_rewrap(const struct tape_codec *c, const char *pass, size_t passlen,
		       uint8_t out[TAPE_CONFIG_BYTES]);

/* Reads a passphrase file: a regular file of mode 0600 (no group or other
 * bits) owned by this process's user, 1..TAPE_PASS_MAX bytes, one trailing
 * newline dropped. *pass is malloc'd: wipe and free with tape_pass_free.
 * err gets a reason naming the path, never the content. */
int tape_pass_read(const char *path, char **pass, size_t *passlen, char *err, size_t errlen);
void tape_pass_free(char *pass, size_t passlen);

/* ---- blocks ---- */

/* A block's name: SHA-256 (version 1, plain version 2) or the keyed HMAC. */
int tape_codec_name(const struct tape_codec *c, const void *raw, size_t len, uint8_t out[32]);
/* Version 2: compresses (if the codec says so and it pays) and encrypts
 * (encrypted pools) raw[rawlen] into out (room for rawlen +
 * TAPE_BLOCK_OVERHEAD). *outlen and *flags are the index entry's. */
int tape_block_seal(const struct tape_codec *c, struct tape_coder *k, const uint8_t name[32],
		    const void *raw, uint32_t rawlen, uint8_t *out, uint32_t *outlen,
		    uint32_t *flags);
/* Version 2: the inverse, into out[rawlen]; checks the flags against the
 * pool and rawlen, the tag (encrypted) or the SHA-256 name (plain), and the
 * exact decompressed length. -EIO on any mismatch, never partial bytes. */
int tape_block_open(const struct tape_codec *c, struct tape_coder *k, const uint8_t name[32],
		    uint32_t flags, const uint8_t *in, uint32_t inlen, uint8_t *out,
		    uint32_t rawlen);
/* Full check of a stored block of a version 2 pool without keeping the
 * bytes: opens it and (encrypted) also recomputes its name. */
int tape_block_verify(const struct tape_codec *c, struct tape_coder *k, const uint8_t name[32],
		      uint32_t flags, const uint8_t *in, uint32_t inlen, uint32_t rawlen);

/* ---- pack indexes and manifest bodies (encrypted version 2 pools) ---- */

/* In place: buf[len] becomes ciphertext, tag[16] is written / checked.
 * aad: the parts of the authenticated data, concatenated. -EIO on a bad tag. */
struct tape_aad {
	const void *p;
	size_t len;
};
int tape_index_seal(const struct tape_codec *c, const uint8_t pack_id[16], uint8_t *buf,
		    size_t len, const struct tape_aad *aad, int naad, uint8_t tag[16]);
int tape_index_open(const struct tape_codec *c, const uint8_t pack_id[16], uint8_t *buf,
		    size_t len, const struct tape_aad *aad, int naad, const uint8_t tag[16]);
int tape_body_seal(const struct tape_codec *c, const uint8_t salt[16], uint8_t *buf, size_t len,
		   const struct tape_aad *aad, int naad, uint8_t tag[16]);
int tape_body_open(const struct tape_codec *c, const uint8_t salt[16], uint8_t *buf, size_t len,
		   const struct tape_aad *aad, int naad, const uint8_t tag[16]);

#endif
