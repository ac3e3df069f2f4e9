/*
 * fuzz_pack.c — libFuzzer target for the pack decoders (tape/format.h):
 * tape_pack_header_decode, tape_pack_trailer_decode, tape_pack_index_decode,
 * tape_pack_entry_find and tape_pack_key_parse.
 *
 * Input: one flag byte, then a whole pack object. Flag bit 0: the harness
 * rewrites the trailer's index hash (when the trailer's geometry fits the
 * object) so mutated indexes reach the entry checks. Flag bit 1: the object
 * is also fed to tape_pack_key_parse as a string. Flag bit 2: the trailer is
 * also decoded against the object size claimed by the first 8 bytes (a
 * listing or HEAD that lies). The pieces are handed to
 * the decoders exactly as tape/pool.c cuts them (trailer = last 64 bytes,
 * index = [index_off, index_off + 48 N)), each in an exact-size heap copy.
 *
 * Oracle: no crash, no out-of-bounds access; failures are -EBADMSG or
 * -EPROTONOSUPPORT; an accepted trailer is bounded (object <=
 * TAPE_PACK_MAX_BYTES, N <= TAPE_PACK_MAX_BLOCKS and <= the data bytes); a decoded index is sorted, non-overlapping, inside
 * [32, index_off), every entry is found by its offset, and re-encoding the
 * index and trailer gives back the same bytes.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "format.h"
#include "fuzz_common.h"

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);
	if (b && n)
		memcpy(b, p, n);
	return b;
}

static void fuzz_index(uint8_t *obj, size_t len, bool fix)
{
	uint8_t *tr = obj + len - TAPE_PACK_TRAILER_BYTES;
	uint32_t nr = fz_le32(tr + 12);
	uint64_t ioff = fz_le64(tr + 16);
	unsigned __int128 end = (unsigned __int128)ioff + (uint64_t)nr * TAPE_PACK_ENTRY_BYTES +
				TAPE_PACK_TRAILER_BYTES;
	if (fix && end == len)
		tape_sha256(obj + ioff, (size_t)nr * TAPE_PACK_ENTRY_BYTES, tr + 24);

	uint8_t *trc = dup_exact(tr, TAPE_PACK_TRAILER_BYTES);
	struct tape_pack_trailer t;
	if (!trc)
		return;
	memset(&t, 0, sizeof(t));
	int rc = tape_pack_trailer_decode(trc, TAPE_PACK_TRAILER_BYTES, len, &t);
	if (rc) {
		CHECK(rc == -EBADMSG || rc == -EPROTONOSUPPORT, "trailer rc %d", rc);
		free(trc);
		return;
	}
	size_t ilen = (size_t)t.index_len;
	CHECK(ilen == (size_t)t.nr_blocks * TAPE_PACK_ENTRY_BYTES + (t.flags ? 16 : 0),
	      "index length %zu for %u blocks", ilen, t.nr_blocks);
	/* bounded before the caller allocates the index (tape/pool.c) */
	CHECK(t.nr_blocks <= TAPE_PACK_MAX_BLOCKS && len <= TAPE_PACK_MAX_BYTES &&
		      t.nr_blocks <= t.index_off - TAPE_PACK_HEADER_BYTES,
	      "trailer claims %u blocks at %llu accepted", t.nr_blocks,
	      (unsigned long long)t.index_off);
	CHECK(t.index_off >= TAPE_PACK_HEADER_BYTES &&
		      (unsigned __int128)t.index_off + ilen + TAPE_PACK_TRAILER_BYTES == len,
	      "trailer geometry accepted: index_off %llu nr %u len %zu",
	      (unsigned long long)t.index_off, t.nr_blocks, len);

	uint8_t *ib = dup_exact(obj + t.index_off, ilen);
	struct tape_pack_entry *e = malloc((t.nr_blocks ? t.nr_blocks : 1) * sizeof(*e));
	if (!ib || !e)
		goto out;
	/* an encrypted index needs the pool's key: the plain decoder refuses it */
	rc = tape_pack_index_decode(ib, ilen, &t, e);
	CHECK(!rc || !t.flags || rc == -EBADMSG, "encrypted index rc %d", rc);
	if (rc) {
		CHECK(rc == -EBADMSG, "index rc %d", rc);
		goto out;
	}
	uint64_t next = TAPE_PACK_HEADER_BYTES;
	for (uint32_t i = 0; i < t.nr_blocks; i++) {
		uint32_t shift = e[i].flags >> TAPE_BLK_RAWSHIFT;
		CHECK(t.version == 1 ? e[i].len > 0 && e[i].len <= TAPE_GRAIN_MAX && e[i].flags == 0
				     : e[i].len > 0 && shift >= 12 && shift <= 24 &&
					       e[i].len <= (1u << shift) + TAPE_BLOCK_OVERHEAD &&
					       !(e[i].flags & TAPE_BLK_ENCRYPTED),
		      "entry %u len %u flags %u", i, e[i].len, e[i].flags);
		CHECK(e[i].off >= next && e[i].off <= t.index_off &&
			      e[i].len <= t.index_off - e[i].off,
		      "entry %u at %llu+%u overlaps or leaves [32,%llu)", i,
		      (unsigned long long)e[i].off, e[i].len, (unsigned long long)t.index_off);
		next = e[i].off + e[i].len;
		CHECK(tape_pack_entry_find(e, t.nr_blocks, e[i].off) == (long)i, "find(%u)", i);
		CHECK(tape_pack_entry_find(e, t.nr_blocks, e[i].off + 1) < 0 || e[i].len == 1,
		      "find hits inside a block");
	}
	/* canonical: the same index and trailer bytes come back */
	uint8_t *re = malloc(ilen ? ilen : 1);
	uint8_t rt[TAPE_PACK_TRAILER_BYTES];
	if (re && t.version == 1) {
		tape_pack_index_encode(e, t.nr_blocks, re);
		CHECK(!memcmp(re, ib, ilen), "index does not re-encode identically");
		CHECK(tape_pack_trailer_encode(rt, t.nr_blocks, t.index_off, re, ilen) == 0,
		      "trailer encode");
		CHECK(!memcmp(rt, trc, TAPE_PACK_TRAILER_BYTES),
		      "trailer does not re-encode identically");
	} else if (t.version == 2) { /* a plain version 2 pack's tail */
		struct tape_codec c;
		uint8_t id[16] = {0};
		uint8_t *tail = malloc(ilen + TAPE_PACK_TRAILER_BYTES);
		tape_codec_v1(&c);
		c.version = 2;
		long n = tail ? tape_pack_finish(&c, id, e, t.nr_blocks, t.index_off, tail) : -1;
		CHECK(!tail || n == (long)(ilen + TAPE_PACK_TRAILER_BYTES), "finish %ld", n);
		CHECK(!tail || (!memcmp(tail, ib, ilen) &&
				!memcmp(tail + ilen, trc, TAPE_PACK_TRAILER_BYTES)),
		      "version 2 index/trailer do not re-encode identically");
		free(tail);
	}
	free(re);
out:
	free(ib);
	free(e);
	free(trc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t id[16];

	if (size < 1)
		return 0;
	size_t len = size - 1;
	uint8_t *obj = dup_exact(data + 1, len);
	if (!obj)
		return 0;

	uint8_t *hdr = dup_exact(obj, len < TAPE_PACK_HEADER_BYTES ? len : TAPE_PACK_HEADER_BYTES);
	if (hdr) {
		int rc = tape_pack_header_decode(hdr, len < TAPE_PACK_HEADER_BYTES ? len
										: TAPE_PACK_HEADER_BYTES,
						 id);
		CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTONOSUPPORT, "header rc %d", rc);
		if (rc == 0) {
			uint8_t re[TAPE_PACK_HEADER_BYTES];
			struct tape_codec c;
			tape_codec_v1(&c);
			c.version = fz_le32(hdr + 8);
			c.encrypted = fz_le32(hdr + 12) & 1;
			tape_pack_header_encode(re, id, &c);
			CHECK(!memcmp(re, hdr, TAPE_PACK_HEADER_BYTES),
			      "header does not re-encode identically");
		}
		free(hdr);
	}
	/* the trailer decoder also guards against short buffers */
	if (len < TAPE_PACK_TRAILER_BYTES) {
		struct tape_pack_trailer t;
		CHECK(tape_pack_trailer_decode(obj, len, len, &t) == -EBADMSG, "short trailer");
	} else {
		fuzz_index(obj, len, data[0] & 1);
	}
	/* bit 2: a listing or HEAD that lies about the object's size; the
	 * first 8 bytes are the size it claims for this trailer */
	if ((data[0] & 4) && len >= TAPE_PACK_TRAILER_BYTES + 8) {
		struct tape_pack_trailer t;
		uint64_t claimed = fz_le64(obj);
		int rc = tape_pack_trailer_decode(obj + len - TAPE_PACK_TRAILER_BYTES,
						  TAPE_PACK_TRAILER_BYTES, claimed, &t);
		CHECK(rc == 0 || rc == -EBADMSG || rc == -EPROTONOSUPPORT, "claimed rc %d", rc);
		if (rc == 0)
			CHECK(claimed <= TAPE_PACK_MAX_BYTES && t.nr_blocks <= TAPE_PACK_MAX_BLOCKS &&
				      t.index_off + (uint64_t)t.nr_blocks * TAPE_PACK_ENTRY_BYTES +
						      TAPE_PACK_TRAILER_BYTES ==
					      claimed,
			      "claimed size %llu accepted with %u blocks",
			      (unsigned long long)claimed, t.nr_blocks);
	}
	if (data[0] & 2) {
		char *s = malloc(len + 1);
		if (s) {
			memcpy(s, obj, len);
			s[len] = 0;
			if (tape_pack_key_parse(s, id) == 0) {
				char key[TAPE_KEY_MAX];
				CHECK(tape_pack_key(id, key, sizeof(key)) == 0, "pack key");
				const char *tail = strrchr(s, '/');
				tail = tail ? tail + 1 : s;
				CHECK(!strcmp(key + 6, tail), "key '%s' parsed from '%s'", key, s);
			}
			free(s);
		}
	}
	free(obj);
	return 0;
}
