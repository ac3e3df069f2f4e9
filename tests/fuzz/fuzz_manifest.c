/*
 * fuzz_manifest.c — libFuzzer target for tape_manifest_decode() (tape/format.h).
 *
 * Input: one flag byte, then a manifest object. With flag bit 0 set the
 * harness rewrites the trailing SHA-256 so that mutated manifests get past
 * the checksum and exercise the field checks behind it (anyone who can write
 * to a bucket can do the same: the hash is not a MAC).
 *
 * Oracle: decode never crashes or reads out of bounds; a manifest it
 * accepts has the engine's geometry (grain a power of two in 4 KiB..16 MiB,
 * size <= 64 TiB, G <= 2^30, P <= stored grains <= G) and passed
 * tape_manifest_header_check, which announced exactly its length; a failure is
 * -EBADMSG, -EPROTONOSUPPORT or -ENOMEM and leaves no allocation; a success
 * describes a usable image (docs/tape-format.md): nr_grains grains of
 * grain_bytes cover exactly size_bytes, every reference is a zero grain or
 * lies in a pack of the table, blocks_total counts the stored grains, the
 * volume name is valid; re-encoding succeeds and decodes to the same
 * manifest. With ACMFS_FUZZ_STRICT=1 the re-encoding must also be
 * byte-identical to the input (a canonical encoding).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "format.h"
#include "fuzz_common.h"

static bool strict;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *s = getenv("ACMFS_FUZZ_STRICT");
	strict = s && s[0] == '1';
	return 0;
}

static void check_manifest(const struct tape_manifest *m)
{
	CHECK(tape_volume_name_ok(m->volume), "volume name '%s'", m->volume);
	CHECK(memchr(m->host, 0, sizeof(m->host)) && memchr(m->parent, 0, sizeof(m->parent)),
	      "unterminated host/parent");
	CHECK(m->grain_bytes > 0 && m->size_bytes > 0, "empty geometry");
	/* the engine's geometry (format.h bounds): nothing else may decode */
	CHECK(m->grain_bytes >= TAPE_GRAIN_MIN && m->grain_bytes <= TAPE_GRAIN_MAX &&
		      !(m->grain_bytes & (m->grain_bytes - 1)),
	      "grain %u accepted", m->grain_bytes);
	CHECK(m->size_bytes <= TAPE_VOLUME_MAX, "size %llu accepted",
	      (unsigned long long)m->size_bytes);
	CHECK(m->nr_grains <= TAPE_MANIFEST_MAX_GRAINS && m->blocks_total <= m->nr_grains &&
		      m->nr_packs <= m->blocks_total,
	      "counts accepted: %llu grains, %llu stored, %u packs",
	      (unsigned long long)m->nr_grains, (unsigned long long)m->blocks_total, m->nr_packs);
	/* the grains cover the volume exactly: no reference is missing for any
	 * byte below size_bytes (tape/image.c indexes refs[off / grain]) */
	unsigned __int128 covered = (unsigned __int128)m->nr_grains * m->grain_bytes;
	CHECK(covered >= m->size_bytes,
	      "nr_grains %llu x grain %u = %llu bytes does not cover size_bytes %llu",
	      (unsigned long long)m->nr_grains, m->grain_bytes,
	      (unsigned long long)(uint64_t)covered, (unsigned long long)m->size_bytes);
	CHECK(m->nr_grains == 0 || covered - m->grain_bytes < m->size_bytes,
	      "more grains than the volume needs");
	uint64_t nz = 0;
	for (uint64_t g = 0; g < m->nr_grains; g++) {
		const struct tape_ref *r = &m->refs[g];
		if (r->pack == TAPE_ZERO_PACK) {
			CHECK(r->len == 0 && r->off == 0, "zero grain %llu with a block",
			      (unsigned long long)g);
			continue;
		}
		nz++;
		CHECK(r->pack < m->nr_packs, "grain %llu: pack %u of %u", (unsigned long long)g,
		      r->pack, m->nr_packs);
		CHECK(m->fmt == 1 ? r->len == m->grain_bytes
				  : r->len > 0 && r->len <= m->grain_bytes + TAPE_BLOCK_OVERHEAD,
		      "grain %llu: len %u", (unsigned long long)g, r->len);
		CHECK(r->off >= TAPE_PACK_HEADER_BYTES && r->off < TAPE_MAX_PACK_OFF,
		      "grain %llu: off %llu", (unsigned long long)g, (unsigned long long)r->off);
	}
	CHECK(nz == m->blocks_total, "blocks_total %llu, counted %llu",
	      (unsigned long long)m->blocks_total, (unsigned long long)nz);
}

static void check_same(const struct tape_manifest *a, const struct tape_manifest *b)
{
	CHECK(!strcmp(a->volume, b->volume) && !strcmp(a->host, b->host) &&
		      !strcmp(a->parent, b->parent),
	      "strings differ after re-encoding");
	CHECK(a->version == b->version && a->size_bytes == b->size_bytes &&
		      a->grain_bytes == b->grain_bytes && a->date == b->date &&
		      a->nr_grains == b->nr_grains && a->blocks_total == b->blocks_total &&
		      a->nr_packs == b->nr_packs,
	      "fields differ after re-encoding");
	CHECK(!a->nr_packs || !memcmp(a->packs, b->packs, 16ull * a->nr_packs), "pack table differs");
	for (uint64_t g = 0; g < a->nr_grains; g++) {
		const struct tape_ref *x = &a->refs[g], *y = &b->refs[g];
		CHECK(x->pack == y->pack && x->len == y->len && x->off == y->off &&
			      !memcmp(x->prefix, y->prefix, 8),
		      "ref %llu differs", (unsigned long long)g);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tape_manifest m, m2;
	uint8_t *buf, *enc = NULL;
	size_t len, enclen = 0;
	int rc;

	if (size < 1)
		return 0;
	len = size - 1;
	/* an exact-size heap copy so ASan sees any read past the object */
	buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, len);
	if ((data[0] & 1) && len >= 32)
		tape_sha256(buf, len - 32, buf + len - 32);

	/* the header check a reader runs before sizing its buffer (tape/pool.c)
	 * must agree with the full decode: accepting a manifest implies its
	 * header passed and announced exactly its length */
	uint64_t total = 0;
	int hrc = tape_manifest_header_check(buf, len, &total);
	CHECK(hrc == 0 || hrc == -EBADMSG || hrc == -EPROTONOSUPPORT, "header rc %d", hrc);
	CHECK(hrc || total <= TAPE_MANIFEST_MAX_BYTES, "header announces %llu bytes",
	      (unsigned long long)total);

	/* flag bit 1: as a plain version 2 pool (pool id zero) reads it, bit 2:
	 * as an encrypted one with fixed keys (a mutated body fails its tag);
	 * else as version 1 */
	struct tape_codec codec;
	const struct tape_codec *c = NULL;
	const char *key = "manifests/v/00000000000000000001-0000000000000000.mf";
	tape_codec_v1(&codec);
	if (data[0] & 6) {
		codec.version = 2;
		codec.encrypted = data[0] & 4;
		memset(codec.km, 7, sizeof(codec.km));
		c = &codec;
	}
	rc = tape_manifest_decode(buf, len, c, key, &m);
	CHECK(rc || (hrc == 0 && total == len), "decoded, but the header check said %d / %llu",
	      hrc, (unsigned long long)total);
	if (rc) {
		CHECK(rc == -EBADMSG || rc == -EPROTONOSUPPORT || rc == -ENOMEM, "rc %d", rc);
		CHECK(!m.packs && !m.refs, "failed decode left allocations");
		goto out;
	}
	check_manifest(&m);
	rc = tape_manifest_encode(&m, c, key, &enc, &enclen);
	CHECK(rc == 0, "re-encoding a decoded manifest fails: %d", rc);
	CHECK(enclen == tape_manifest_bytes(&m), "encoded %zu, predicted %llu", enclen,
	      (unsigned long long)tape_manifest_bytes(&m));
	if (strict && !codec.encrypted) /* an encrypted body gets a new salt */
		CHECK(enclen == len && !memcmp(enc, buf, len),
		      "non-canonical manifest accepted (re-encodes to %zu bytes of %zu)", enclen, len);
	rc = tape_manifest_decode(enc, enclen, c, key, &m2);
	CHECK(rc == 0, "re-encoded manifest does not decode: %d", rc);
	check_same(&m, &m2);
	tape_manifest_release(&m2);
	tape_manifest_release(&m);
out:
	free(enc);
	free(buf);
	return 0;
}
