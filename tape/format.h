/*
 * format.h — on-object layouts of the tape tier: packs and manifests.
 *
 * This header is the manual for tape/format.c. It converts between the
 * fixed-width little-endian bytes stored in a pool (docs/tape-format.md) and
 * in-core structs; it does no I/O, takes no locks and allocates only in the
 * decoders that say so. Every decoder checks magic, version, lengths and
 * checksum and returns -EBADMSG (corrupt), -EPROTONOSUPPORT (unknown
 * version) or -ENOMEM; nothing is trusted before it has been checked.
 *
 * Object keys (relative to the pool prefix):
 *   packs/<32 hex pack id>.pack
 *   manifests/<volume>/<version, 20 digits>-<16 hex random>.mf
 */
#ifndef ACMFS_TAPE_FORMAT_H
#define ACMFS_TAPE_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define TAPE_PACK_MAGIC	    "ACMFSPAK"
#define TAPE_PACK_END_MAGIC "ACMFSEND"
#define TAPE_MANIFEST_MAGIC "ACMFSMAN"
#define TAPE_FORMAT_VERSION 1u /* version 1; version 2: codec.h */

#define TAPE_PACK_HEADER_BYTES	32u
/* where a writer puts a pack's first block (zeros before it): with blocks of
 * whole 4 KiB pages the data area is page aligned, so readers can fetch
 * blocks with direct I/O; readers follow the index and accept any offset */
#define TAPE_PACK_DATA_OFF	4096u
#define TAPE_PACK_TRAILER_BYTES 64u
#define TAPE_PACK_ENTRY_BYTES	48u
#define TAPE_MANIFEST_FIXED	72u /* fixed part of the manifest header (version 1) */
#define TAPE_MANIFEST_FIXED2	104u /* version 2: pool id and salt added */
#define TAPE_REF_BYTES		24u /* one grain reference in a manifest */
#define TAPE_MAX_PACK_OFF	(1ull << 40)
#define TAPE_NAME_MAX		128u /* volume names */
#define TAPE_KEY_MAX		256u /* object keys, manifest keys, host names */
#define TAPE_ZERO_PACK		UINT32_MAX /* tape_ref.pack of an all-zero grain */

/*
 * Bounds on what a bucket may claim. Pool contents are untrusted input: every
 * size, count and offset read from an object is checked against these before
 * it is used for an allocation, a division or an index, so that a hostile or
 * damaged object costs an error for that object, never a crash or a huge
 * allocation. They are the engine's own limits (core/cmd.c: grain a power of
 * two from 4 KiB to 16 MiB, volumes up to 64 TiB; pool.c: pack_mb <= 4096).
 */
#define TAPE_GRAIN_MIN		(4u << 10)
#define TAPE_GRAIN_MAX		(16u << 20)
#define TAPE_VOLUME_MAX		(64ull << 40)
/* grains of one manifest: 64 TiB at the default 64 KiB grain; 24 GiB of
 * references, what the writer itself had to hold in memory */
#define TAPE_MANIFEST_MAX_GRAINS (1ull << 30)
/* largest manifest header: fixed part, volume, host and parent names */
#define TAPE_MANIFEST_HDR_MAX	(TAPE_MANIFEST_FIXED2 + TAPE_NAME_MAX + 2 * (TAPE_KEY_MAX - 1))
/* pack table entries <= stored grains <= grains (writers list used packs only) */
#define TAPE_MANIFEST_MAX_BYTES                                                           \
	((uint64_t)TAPE_MANIFEST_HDR_MAX + (16ull + TAPE_REF_BYTES) * TAPE_MANIFEST_MAX_GRAINS + 48)
/* block data of the largest pack a writer makes (pack_mb=4096) */
#define TAPE_PACK_MAX_DATA	(4096ull << 20)
/* its blocks, at the smallest grain: 1 Mi entries, a 48 MiB index */
#define TAPE_PACK_MAX_BLOCKS	((uint32_t)(TAPE_PACK_MAX_DATA / TAPE_GRAIN_MIN))
#define TAPE_PACK_MAX_BYTES                                                               \
	(TAPE_PACK_DATA_OFF + TAPE_PACK_MAX_DATA +                                        \
	 (uint64_t)TAPE_PACK_ENTRY_BYTES * TAPE_PACK_MAX_BLOCKS + 16 + TAPE_PACK_TRAILER_BYTES)
/* a stored block of version 2: the grain plus nonce and tag */
#define TAPE_BLOCK_MAX		(TAPE_GRAIN_MAX + 28u)

/* One block inside a pack (pack index entry). */
struct tape_pack_entry {
	uint8_t hash[32]; /* SHA-256 of the block's content */
	uint64_t off;	  /* byte offset of the block in the pack object */
	uint32_t len;	  /* stored length */
	uint32_t flags;	  /* 0 = raw in version 1; TAPE_BLK_* in version 2 */
};

struct tape_pack_trailer {
	uint32_t version;   /* 1 or 2 */
	uint32_t flags;	    /* version 2: bit 0 = encrypted */
	uint32_t nr_blocks;
	uint64_t index_off;
	uint64_t index_len; /* stored index bytes: 48 N, + 16 if encrypted */
	uint8_t index_sha[32];
};

/* One grain of a manifest; exactly the 24 stored bytes, decoded. */
struct tape_ref {
	uint32_t pack;	    /* index into the manifest's pack table, TAPE_ZERO_PACK = zero grain */
	uint32_t len;	    /* stored block length */
	uint64_t off;	    /* offset of the block in its pack */
	uint8_t prefix[8];  /* first 8 bytes of the block's name (cross-check) */
};

struct tape_manifest {
	unsigned fmt;		   /* pool format version it was decoded from */
	uint16_t flags;		   /* version 2: bit 0 = body encrypted */
	char volume[TAPE_NAME_MAX + 1];
	char host[TAPE_KEY_MAX];
	char parent[TAPE_KEY_MAX];
	uint64_t version;
	uint64_t size_bytes;
	uint32_t grain_bytes;
	int64_t date;
	uint64_t nr_grains;
	uint64_t blocks_total;	   /* non-zero grains */
	uint32_t nr_packs;
	uint8_t pool_id[16];	   /* version 2: the pool it belongs to */
	uint8_t (*packs)[16];	   /* pack table: ids, owned (malloc) */
	struct tape_ref *refs;	   /* nr_grains entries, owned (malloc) */
};

/* little-endian helpers */
void tape_put_le16(uint8_t *p, uint16_t v);
void tape_put_le32(uint8_t *p, uint32_t v);
void tape_put_le64(uint8_t *p, uint64_t v);
uint16_t tape_get_le16(const uint8_t *p);
uint32_t tape_get_le32(const uint8_t *p);
uint64_t tape_get_le64(const uint8_t *p);

/* SHA-256 through libcrypto (EVP). Returns 0 or -ENOMEM/-EIO. */
int tape_sha256(const void *buf, size_t len, uint8_t out[32]);
void tape_hex(const uint8_t *bin, size_t len, char *out); /* out: 2*len+1 */
int tape_unhex(const char *hex, size_t len, uint8_t *out);

/* 1 if the buffer is all zero bytes (such grains are never stored). */
int tape_is_zero(const void *buf, size_t len);

/* Keys. Return 0 or -ENAMETOOLONG / -EINVAL. */
int tape_pack_key(const uint8_t id[16], char *out, size_t outlen);
int tape_pack_key_parse(const char *key, uint8_t id[16]); /* "packs/<hex>.pack" */
int tape_manifest_key(const char *volume, uint64_t version, const uint8_t rnd[8], char *out,
		      size_t outlen);
/* Volume names: 1..128 chars of [A-Za-z0-9._-], not starting with '.'. */
int tape_volume_name_ok(const char *volume);

struct tape_codec;

/* Packs. The header and trailer encoders write exactly their fixed size.
 * c says the pool's version and whether it is encrypted (NULL: version 1). */
void tape_pack_header_encode(uint8_t out[TAPE_PACK_HEADER_BYTES], const uint8_t id[16],
			     const struct tape_codec *c);
/* A new pack's first TAPE_PACK_DATA_OFF bytes into out: the header, then
 * zeros; returns the offset of its first block (TAPE_PACK_DATA_OFF). */
size_t tape_pack_start(uint8_t *out, const uint8_t id[16], const struct tape_codec *c);
/* Stored index bytes of a pack of nr blocks in the pool of c. */
size_t tape_pack_index_bytes(const struct tape_codec *c, uint32_t nr);
/* Most blocks a writer puts in a pack of data_bytes of blocks of grain. */
uint32_t tape_pack_max_blocks(const struct tape_codec *c, uint64_t data_bytes, uint32_t grain);
/* Writes the index of e[nr] (sealed in encrypted pools) and the trailer at
 * out (room for tape_pack_index_bytes + 64); index_off is where out lies in
 * the pack. Returns the bytes written or -errno. */
long tape_pack_finish(const struct tape_codec *c, const uint8_t id[16],
		      const struct tape_pack_entry *e, uint32_t nr, uint64_t index_off,
		      uint8_t *out);
/* Checks the stored index bytes (buf, modified in place when encrypted)
 * against the trailer, opens them and fills out[t->nr_blocks]; the pack's
 * version and flags must be the pool's. */
int tape_pack_index_read(const struct tape_codec *c, const uint8_t id[16], uint8_t *buf,
			 size_t len, const struct tape_pack_trailer *t,
			 struct tape_pack_entry *out);
int tape_pack_header_decode(const uint8_t *buf, size_t len, uint8_t id[16]);
/* Encodes nr entries (sorted by offset) to out (nr * 48 bytes) and the
 * trailer that describes them. */
void tape_pack_index_encode(const struct tape_pack_entry *e, uint32_t nr, uint8_t *out);
int tape_pack_trailer_encode(uint8_t out[TAPE_PACK_TRAILER_BYTES], uint32_t nr_blocks,
			     uint64_t index_off, const uint8_t *index, size_t index_len);
/* Checks the trailer against the object size: obj_bytes <= TAPE_PACK_MAX_BYTES,
 * N <= TAPE_PACK_MAX_BLOCKS and no more entries than the data area [32, I)
 * has bytes, I + 48 N + 64 = obj_bytes. Only then may a caller allocate
 * 48 N bytes for the index. */
int tape_pack_trailer_decode(const uint8_t *buf, size_t len, uint64_t obj_bytes,
			     struct tape_pack_trailer *t);
/* Checks the index bytes against the trailer (checksum, order, bounds, block
 * lengths 1..TAPE_GRAIN_MAX) and fills out[t->nr_blocks]. */
int tape_pack_index_decode(const uint8_t *buf, size_t len, const struct tape_pack_trailer *t,
			   struct tape_pack_entry *out);
/* Checks and fills out[t->nr_blocks] from plain index bytes (either version). */
int tape_pack_index_parse(const uint8_t *buf, const struct tape_pack_trailer *t,
			  struct tape_pack_entry *out);
/* Binary search by offset; -1 if absent. */
long tape_pack_entry_find(const struct tape_pack_entry *e, uint32_t nr, uint64_t off);

/* Manifests. encode allocates *out (free()), decode fills m (release with
 * tape_manifest_release). */
uint64_t tape_manifest_bytes(const struct tape_manifest *m);
/* Checks a manifest's header (no checksum: the rest may not be here yet) and
 * returns the object length it implies, in *total: magic, version, name
 * lengths and H; grain_bytes a power of two in [TAPE_GRAIN_MIN,
 * TAPE_GRAIN_MAX]; 0 < size_bytes <= TAPE_VOLUME_MAX; G = ceil(size / grain)
 * <= TAPE_MANIFEST_MAX_GRAINS; blocks_total <= G; P <= blocks_total. len may
 * be short of the whole object but must hold the fixed part (72 bytes).
 * -EBADMSG / -EPROTONOSUPPORT. A reader calls it before it allocates room
 * for the whole object (tape/pool.c). */
int tape_manifest_header_check(const uint8_t *buf, size_t len, uint64_t *total);
/* c: the pool's codec (NULL = version 1); key: the object key the manifest is
 * stored under (authenticated in version 2 pools). decode modifies buf. A
 * manifest of another version than the pool's is refused: -EPROTONOSUPPORT
 * for a newer one, -EBADMSG otherwise (and for another pool's). */
int tape_manifest_encode(const struct tape_manifest *m, const struct tape_codec *c,
			 const char *key, uint8_t **out, size_t *outlen);
int tape_manifest_decode(uint8_t *buf, size_t len, const struct tape_codec *c, const char *key,
			 struct tape_manifest *m);
void tape_manifest_release(struct tape_manifest *m);

#endif
