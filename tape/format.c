/*
 * format.c — pack and manifest codecs (see format.h, docs/tape-format.md).
 *
 * Pure functions: no I/O, no locks, no global state. Decoders trust nothing
 * (lengths are checked before any field is read, checksums before any field
 * is used) and fail with -EBADMSG, -EPROTONOSUPPORT or -ENOMEM.
 */
#include "format.h"
#include "codec.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

void tape_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

void tape_put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void tape_put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

uint16_t tape_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t tape_get_le32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

uint64_t tape_get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

int tape_sha256(const void *buf, size_t len, uint8_t out[32])
{
	unsigned int n = 0;
	if (!EVP_Digest(buf, len, out, &n, EVP_sha256(), NULL) || n != 32)
		return -EIO;
	return 0;
}

void tape_hex(const uint8_t *bin, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[bin[i] >> 4];
		out[2 * i + 1] = digits[bin[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int tape_unhex(const char *hex, size_t len, uint8_t *out)
{
	for (size_t i = 0; i < len; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

int tape_is_zero(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	if (len == 0)
		return 1;
	/* word-wise scan; fast for the common non-zero case (fails early) */
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		if (w)
			return 0;
	}
	for (; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

int tape_pack_key(const uint8_t id[16], char *out, size_t outlen)
{
	char hex[33];
	tape_hex(id, 16, hex);
	int n = snprintf(out, outlen, "packs/%s.pack", hex);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int tape_pack_key_parse(const char *key, uint8_t id[16])
{
	const char *p = strrchr(key, '/');
	p = p ? p + 1 : key;
	if (strlen(p) != 32 + 5 || strcmp(p + 32, ".pack") != 0)
		return -EINVAL;
	return tape_unhex(p, 16, id);
}

int tape_volume_name_ok(const char *volume)
{
	size_t n = volume ? strlen(volume) : 0;
	if (n == 0 || n > TAPE_NAME_MAX || volume[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = volume[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int tape_manifest_key(const char *volume, uint64_t version, const uint8_t rnd[8], char *out,
		      size_t outlen)
{
	char hex[17];
	if (!tape_volume_name_ok(volume))
		return -EINVAL;
	tape_hex(rnd, 8, hex);
	int n = snprintf(out, outlen, "manifests/%s/%020" PRIu64 "-%s.mf", volume, version, hex);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

/* ---- packs ---- */

static unsigned codec_version(const struct tape_codec *c)
{
	return c ? c->version : 1;
}

static uint32_t codec_flags(const struct tape_codec *c)
{
	return c && c->version == 2 && c->encrypted ? 1u : 0u;
}

size_t tape_pack_start(uint8_t *out, const uint8_t id[16], const struct tape_codec *c)
{
	tape_pack_header_encode(out, id, c);
	memset(out + TAPE_PACK_HEADER_BYTES, 0, TAPE_PACK_DATA_OFF - TAPE_PACK_HEADER_BYTES);
	return TAPE_PACK_DATA_OFF;
}

void tape_pack_header_encode(uint8_t out[TAPE_PACK_HEADER_BYTES], const uint8_t id[16],
			     const struct tape_codec *c)
{
	memset(out, 0, TAPE_PACK_HEADER_BYTES);
	memcpy(out, TAPE_PACK_MAGIC, 8);
	tape_put_le32(out + 8, codec_version(c));
	tape_put_le32(out + 12, codec_flags(c));
	memcpy(out + 16, id, 16);
}

int tape_pack_header_decode(const uint8_t *buf, size_t len, uint8_t id[16])
{
	if (len < TAPE_PACK_HEADER_BYTES || memcmp(buf, TAPE_PACK_MAGIC, 8) != 0)
		return -EBADMSG;
	uint32_t v = tape_get_le32(buf + 8), fl = tape_get_le32(buf + 12);
	if (v != 1 && v != 2)
		return -EPROTONOSUPPORT;
	if (v == 1 ? fl != 0 : (fl & ~1u) != 0)
		return -EBADMSG;
	memcpy(id, buf + 16, 16);
	return 0;
}

size_t tape_pack_index_bytes(const struct tape_codec *c, uint32_t nr)
{
	return (size_t)nr * TAPE_PACK_ENTRY_BYTES + (codec_flags(c) ? TAPE_TAG_BYTES : 0);
}

uint32_t tape_pack_max_blocks(const struct tape_codec *c, uint64_t data_bytes, uint32_t grain)
{
	uint64_t n = data_bytes / grain ? data_bytes / grain : 1;
	if (codec_version(c) == 2)
		n *= 8; /* compressed blocks are smaller */
	return n > TAPE_PACK_MAX_BLOCKS ? TAPE_PACK_MAX_BLOCKS : (uint32_t)n;
}

static void trailer_put(uint8_t *out, unsigned version, uint32_t flags, uint32_t nr,
			uint64_t index_off)
{
	memset(out, 0, TAPE_PACK_TRAILER_BYTES);
	memcpy(out, TAPE_PACK_END_MAGIC, 8);
	tape_put_le32(out + 8, version);
	tape_put_le32(out + 12, nr);
	tape_put_le64(out + 16, index_off);
	tape_put_le32(out + 56, flags);
}

/* the authenticated data of an encrypted index: header, N, I */
static void index_aad(const uint8_t id[16], const struct tape_codec *c, uint32_t nr,
		      uint64_t index_off, uint8_t ad[44])
{
	tape_pack_header_encode(ad, id, c);
	tape_put_le32(ad + 32, nr);
	tape_put_le64(ad + 36, index_off);
}

long tape_pack_finish(const struct tape_codec *c, const uint8_t id[16],
		      const struct tape_pack_entry *e, uint32_t nr, uint64_t index_off,
		      uint8_t *out)
{
	size_t plain = (size_t)nr * TAPE_PACK_ENTRY_BYTES, ilen = tape_pack_index_bytes(c, nr);
	int rc;
	tape_pack_index_encode(e, nr, out);
	if (codec_flags(c)) {
		uint8_t ad[44];
		index_aad(id, c, nr, index_off, ad);
		struct tape_aad a = {ad, sizeof(ad)};
		rc = tape_index_seal(c, id, out, plain, &a, 1, out + plain);
		if (rc)
			return rc;
	}
	trailer_put(out + ilen, codec_version(c), codec_flags(c), nr, index_off);
	rc = tape_sha256(out, ilen, out + ilen + 24);
	if (rc)
		return rc;
	return (long)(ilen + TAPE_PACK_TRAILER_BYTES);
}

/* the stored index bytes: their length and the trailer's checksum */
static int index_sha_check(const uint8_t *buf, size_t len, const struct tape_pack_trailer *t)
{
	uint8_t sha[32];
	if (len != t->index_len)
		return -EBADMSG;
	int rc = tape_sha256(buf, len, sha);
	if (rc)
		return rc;
	return memcmp(sha, t->index_sha, 32) ? -EBADMSG : 0;
}

int tape_pack_index_read(const struct tape_codec *c, const uint8_t id[16], uint8_t *buf,
			 size_t len, const struct tape_pack_trailer *t,
			 struct tape_pack_entry *out)
{
	if (t->version != codec_version(c) || t->flags != codec_flags(c))
		return -EBADMSG;
	int rc = index_sha_check(buf, len, t);
	if (rc)
		return rc;
	size_t plain = (size_t)t->nr_blocks * TAPE_PACK_ENTRY_BYTES;
	if (t->flags) {
		uint8_t ad[44];
		index_aad(id, c, t->nr_blocks, t->index_off, ad);
		struct tape_aad a = {ad, sizeof(ad)};
		if (tape_index_open(c, id, buf, plain, &a, 1, buf + plain))
			return -EBADMSG;
	}
	return tape_pack_index_parse(buf, t, out);
}

void tape_pack_index_encode(const struct tape_pack_entry *e, uint32_t nr, uint8_t *out)
{
	for (uint32_t i = 0; i < nr; i++) {
		uint8_t *p = out + (size_t)i * TAPE_PACK_ENTRY_BYTES;
		memcpy(p, e[i].hash, 32);
		tape_put_le64(p + 32, e[i].off);
		tape_put_le32(p + 40, e[i].len);
		tape_put_le32(p + 44, e[i].flags);
	}
}

int tape_pack_trailer_encode(uint8_t out[TAPE_PACK_TRAILER_BYTES], uint32_t nr_blocks,
			     uint64_t index_off, const uint8_t *index, size_t index_len)
{
	trailer_put(out, 1, 0, nr_blocks, index_off);
	return tape_sha256(index, index_len, out + 24);
}

int tape_pack_trailer_decode(const uint8_t *buf, size_t len, uint64_t obj_bytes,
			     struct tape_pack_trailer *t)
{
	if (len < TAPE_PACK_TRAILER_BYTES || memcmp(buf, TAPE_PACK_END_MAGIC, 8) != 0)
		return -EBADMSG;
	t->version = tape_get_le32(buf + 8);
	if (t->version != 1 && t->version != 2)
		return -EPROTONOSUPPORT;
	t->flags = tape_get_le32(buf + 56);
	if (tape_get_le32(buf + 60) || (t->version == 1 ? t->flags != 0 : (t->flags & ~1u)))
		return -EBADMSG;
	t->nr_blocks = tape_get_le32(buf + 12);
	t->index_off = tape_get_le64(buf + 16);
	memcpy(t->index_sha, buf + 24, 32);
	uint64_t index_len = (uint64_t)t->nr_blocks * TAPE_PACK_ENTRY_BYTES + (t->flags ? 16 : 0);
	t->index_len = index_len;
	/* bounded before anyone allocates 48 N bytes: no larger pack than a
	 * writer makes, no more entries than it holds, and at least one byte of
	 * data per entry (blocks do not overlap) */
	if (obj_bytes > TAPE_PACK_MAX_BYTES || t->nr_blocks > TAPE_PACK_MAX_BLOCKS ||
	    t->index_off < TAPE_PACK_HEADER_BYTES || t->index_off > TAPE_MAX_PACK_OFF ||
	    t->nr_blocks > t->index_off - TAPE_PACK_HEADER_BYTES ||
	    t->index_off + index_len + TAPE_PACK_TRAILER_BYTES != obj_bytes)
		return -EBADMSG;
	return 0;
}

int tape_pack_index_decode(const uint8_t *buf, size_t len, const struct tape_pack_trailer *t,
			   struct tape_pack_entry *out)
{
	if (t->flags)
		return -EBADMSG; /* sealed: tape_pack_index_read */
	int rc = index_sha_check(buf, len, t);
	return rc ? rc : tape_pack_index_parse(buf, t, out);
}

int tape_pack_index_parse(const uint8_t *buf, const struct tape_pack_trailer *t,
			  struct tape_pack_entry *out)
{
	uint64_t next = TAPE_PACK_HEADER_BYTES;
	const uint32_t known = TAPE_BLK_ZSTD | TAPE_BLK_ENCRYPTED | (0xffu << TAPE_BLK_RAWSHIFT);
	for (uint32_t i = 0; i < t->nr_blocks; i++) {
		const uint8_t *p = buf + (size_t)i * TAPE_PACK_ENTRY_BYTES;
		memcpy(out[i].hash, p, 32);
		out[i].off = tape_get_le64(p + 32);
		out[i].len = tape_get_le32(p + 40);
		out[i].flags = tape_get_le32(p + 44);
		bool flags_ok;
		if (t->version == 1) {
			flags_ok = out[i].flags == 0 && out[i].len <= TAPE_GRAIN_MAX;
		} else {
			uint32_t shift = out[i].flags >> TAPE_BLK_RAWSHIFT;
			flags_ok = !(out[i].flags & ~known) && shift >= 12 && shift <= 24 &&
				   !!(out[i].flags & TAPE_BLK_ENCRYPTED) == !!(t->flags & 1) &&
				   out[i].len <= (1u << shift) + TAPE_BLOCK_OVERHEAD;
		}
		/* written so that no sum can wrap around */
		if (!flags_ok || out[i].len == 0 || out[i].off < next ||
		    out[i].off > t->index_off || out[i].len > t->index_off - out[i].off)
			return -EBADMSG;
		next = out[i].off + out[i].len;
	}
	return 0;
}

long tape_pack_entry_find(const struct tape_pack_entry *e, uint32_t nr, uint64_t off)
{
	uint32_t lo = 0, hi = nr;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (e[mid].off == off)
			return (long)mid;
		if (e[mid].off < off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* ---- manifests ---- */

static uint64_t fixed_bytes(unsigned version)
{
	return version == 2 ? TAPE_MANIFEST_FIXED2 : TAPE_MANIFEST_FIXED;
}

static uint64_t manifest_header_bytes(const struct tape_manifest *m, unsigned version)
{
	return fixed_bytes(version) + strlen(m->volume) + strlen(m->host) + strlen(m->parent);
}

static uint64_t manifest_body_bytes(uint32_t nr_packs, uint64_t nr_grains)
{
	return 16ull * nr_packs + (uint64_t)TAPE_REF_BYTES * nr_grains;
}

uint64_t tape_manifest_bytes(const struct tape_manifest *m)
{
	unsigned v = m->fmt ? m->fmt : 1;
	return manifest_header_bytes(m, v) + manifest_body_bytes(m->nr_packs, m->nr_grains) +
	       (v == 2 && (m->flags & 1) ? TAPE_TAG_BYTES : 0) + 32;
}

int tape_manifest_encode(const struct tape_manifest *m, const struct tape_codec *c,
			 const char *key, uint8_t **out, size_t *outlen)
{
	unsigned v = codec_version(c);
	bool enc = codec_flags(c);
	size_t lv = strlen(m->volume), lh = strlen(m->host), lp = strlen(m->parent);
	if (lv > TAPE_NAME_MAX || lh >= TAPE_KEY_MAX || lp >= TAPE_KEY_MAX)
		return -ENAMETOOLONG;
	if (enc && !key)
		return -EINVAL;
	uint64_t hdr = manifest_header_bytes(m, v);
	uint64_t body = manifest_body_bytes(m->nr_packs, m->nr_grains);
	uint64_t total = hdr + body + (enc ? TAPE_TAG_BYTES : 0) + 32;
	uint8_t *buf = malloc(total);
	if (!buf)
		return -ENOMEM;
	uint8_t *p = buf;
	memcpy(p, TAPE_MANIFEST_MAGIC, 8);
	tape_put_le32(p + 8, v);
	tape_put_le32(p + 12, (uint32_t)hdr);
	tape_put_le64(p + 16, m->size_bytes);
	tape_put_le32(p + 24, m->grain_bytes);
	tape_put_le32(p + 28, m->nr_packs);
	tape_put_le64(p + 32, m->nr_grains);
	tape_put_le64(p + 40, m->version);
	tape_put_le64(p + 48, (uint64_t)m->date);
	tape_put_le64(p + 56, m->blocks_total);
	tape_put_le16(p + 64, (uint16_t)lv);
	tape_put_le16(p + 66, (uint16_t)lh);
	tape_put_le16(p + 68, (uint16_t)lp);
	tape_put_le16(p + 70, enc ? 1 : 0);
	if (v == 2) {
		memcpy(p + 72, c->pool_id, 16);
		memset(p + 88, 0, 16);
		if (enc && RAND_bytes(p + 88, 16) != 1) {
			free(buf);
			return -EIO;
		}
	}
	p += fixed_bytes(v);
	memcpy(p, m->volume, lv);
	p += lv;
	memcpy(p, m->host, lh);
	p += lh;
	memcpy(p, m->parent, lp);
	p += lp;
	if (m->nr_packs)
		memcpy(p, m->packs, 16ull * m->nr_packs);
	p += 16ull * m->nr_packs;
	for (uint64_t g = 0; g < m->nr_grains; g++, p += TAPE_REF_BYTES) {
		const struct tape_ref *r = &m->refs[g];
		tape_put_le32(p, r->pack);
		tape_put_le32(p + 4, r->len);
		tape_put_le64(p + 8, r->off);
		memcpy(p + 16, r->prefix, 8);
	}
	int rc = 0;
	if (enc) {
		struct tape_aad a[2] = {{key, strlen(key)}, {buf, hdr}};
		rc = tape_body_seal(c, buf + 88, buf + hdr, body, a, 2, p);
		p += TAPE_TAG_BYTES;
	}
	if (!rc)
		rc = tape_sha256(buf, total - 32, p);
	if (rc) {
		free(buf);
		return rc;
	}
	*out = buf;
	*outlen = total;
	return 0;
}

static void copy_str(char *dst, const uint8_t *src, size_t n)
{
	memcpy(dst, src, n);
	dst[n] = '\0';
}

int tape_manifest_header_check(const uint8_t *buf, size_t len, uint64_t *total)
{
	if (len < TAPE_MANIFEST_FIXED || memcmp(buf, TAPE_MANIFEST_MAGIC, 8) != 0)
		return -EBADMSG;
	uint32_t v = tape_get_le32(buf + 8);
	if (v != 1 && v != 2)
		return -EPROTONOSUPPORT;
	if (len < fixed_bytes(v))
		return -EBADMSG;
	uint32_t hdr = tape_get_le32(buf + 12);
	uint64_t size = tape_get_le64(buf + 16);
	uint32_t grain = tape_get_le32(buf + 24);
	uint32_t nr_packs = tape_get_le32(buf + 28);
	uint64_t nr_grains = tape_get_le64(buf + 32);
	uint64_t blocks = tape_get_le64(buf + 56);
	uint16_t lv = tape_get_le16(buf + 64), lh = tape_get_le16(buf + 66),
		 lp = tape_get_le16(buf + 68), flags = tape_get_le16(buf + 70);
	if ((v == 1 ? flags != 0 : (flags & ~1u) != 0) || lv == 0 || lv > TAPE_NAME_MAX ||
	    lh >= TAPE_KEY_MAX || lp >= TAPE_KEY_MAX ||
	    hdr != fixed_bytes(v) + (uint32_t)lv + lh + lp)
		return -EBADMSG;
	/* a plain manifest has no salt */
	if (v == 2 && !(flags & 1) && !tape_is_zero(buf + 88, 16))
		return -EBADMSG;
	/* the engine's geometry: anything else would divide by zero or by a
	 * grain no volume can have, or index past a volume's end */
	if (grain < TAPE_GRAIN_MIN || grain > TAPE_GRAIN_MAX || (grain & (grain - 1)) ||
	    size == 0 || size > TAPE_VOLUME_MAX)
		return -EBADMSG;
	/* size / grain, rounded up, without the sum that could wrap */
	if (nr_grains != size / grain + (size % grain != 0) ||
	    nr_grains > TAPE_MANIFEST_MAX_GRAINS)
		return -EBADMSG;
	/* every pack of the table holds a stored grain (writers list used
	 * packs only), and there are no more stored grains than grains */
	if (blocks > nr_grains || nr_packs > blocks)
		return -EBADMSG;
	/* no sum can wrap: every term is bounded above */
	*total = (uint64_t)hdr + manifest_body_bytes(nr_packs, nr_grains) +
		 ((flags & 1) ? TAPE_TAG_BYTES : 0) + 32;
	return 0;
}

int tape_manifest_decode(uint8_t *buf, size_t len, const struct tape_codec *c, const char *key,
			 struct tape_manifest *m)
{
	uint8_t sha[32];
	uint64_t want;
	int rc;
	memset(m, 0, sizeof(*m));
	if (len < TAPE_MANIFEST_FIXED + 32)
		return -EBADMSG;
	rc = tape_manifest_header_check(buf, len, &want);
	if (rc)
		return rc;
	if (want != len)
		return -EBADMSG;
	rc = tape_sha256(buf, len - 32, sha);
	if (rc)
		return rc;
	if (memcmp(sha, buf + len - 32, 32) != 0)
		return -EBADMSG;
	uint32_t v = tape_get_le32(buf + 8);
	uint16_t flags = tape_get_le16(buf + 70);
	/* a pool holds manifests of its own version only: a version 1 one in
	 * a version 2 pool would be an unauthenticated substitute */
	if (v != codec_version(c))
		return v > codec_version(c) ? -EPROTONOSUPPORT : -EBADMSG;
	if (v == 2 && ((flags & 1) != codec_flags(c) || memcmp(buf + 72, c->pool_id, 16)))
		return -EBADMSG;
	uint32_t hdr = tape_get_le32(buf + 12);
	m->fmt = v;
	m->flags = flags;
	m->size_bytes = tape_get_le64(buf + 16);
	m->grain_bytes = tape_get_le32(buf + 24);
	m->nr_packs = tape_get_le32(buf + 28);
	m->nr_grains = tape_get_le64(buf + 32);
	m->version = tape_get_le64(buf + 40);
	m->date = (int64_t)tape_get_le64(buf + 48);
	m->blocks_total = tape_get_le64(buf + 56);
	if (v == 2)
		memcpy(m->pool_id, buf + 72, 16);
	uint16_t lv = tape_get_le16(buf + 64), lh = tape_get_le16(buf + 66),
		 lp = tape_get_le16(buf + 68);
	uint64_t fixed = fixed_bytes(v);
	/* names hold no NUL: one encoding per manifest (the lengths are in bounds now) */
	if (memchr(buf + fixed, 0, (size_t)lv + lh + lp))
		return -EBADMSG;
	const uint8_t *p = buf + fixed;
	copy_str(m->volume, p, lv);
	copy_str(m->host, p + lv, lh);
	copy_str(m->parent, p + lv + lh, lp);
	if (!tape_volume_name_ok(m->volume))
		return -EBADMSG;
	if (flags & 1) {
		if (!key)
			return -EINVAL;
		uint64_t body = manifest_body_bytes(m->nr_packs, m->nr_grains);
		struct tape_aad a[2] = {{key, strlen(key)}, {buf, hdr}};
		if (tape_body_open(c, buf + 88, buf + hdr, body, a, 2, buf + hdr + body))
			return -EBADMSG;
	}
	p = buf + hdr;
	m->packs = malloc(m->nr_packs ? 16ull * m->nr_packs : 1);
	m->refs = malloc(m->nr_grains * sizeof(*m->refs));
	if (!m->packs || !m->refs) {
		rc = -ENOMEM;
		goto out_free;
	}
	memcpy(m->packs, p, 16ull * m->nr_packs);
	p += 16ull * m->nr_packs;
	uint64_t nz = 0;
	for (uint64_t g = 0; g < m->nr_grains; g++, p += TAPE_REF_BYTES) {
		struct tape_ref *r = &m->refs[g];
		r->pack = tape_get_le32(p);
		r->len = tape_get_le32(p + 4);
		r->off = tape_get_le64(p + 8);
		memcpy(r->prefix, p + 16, 8);
		if (r->pack == TAPE_ZERO_PACK) {
			if (r->len || r->off || !tape_is_zero(r->prefix, 8)) {
				rc = -EBADMSG;
				goto out_free;
			}
			continue;
		}
		bool len_ok = v == 1 ? r->len == m->grain_bytes
				     : r->len > 0 && r->len <= m->grain_bytes + TAPE_BLOCK_OVERHEAD;
		if (r->pack >= m->nr_packs || !len_ok || r->off < TAPE_PACK_HEADER_BYTES ||
		    r->off >= TAPE_MAX_PACK_OFF) {
			rc = -EBADMSG;
			goto out_free;
		}
		nz++;
	}
	if (nz != m->blocks_total) {
		rc = -EBADMSG;
		goto out_free;
	}
	return 0;
out_free:
	tape_manifest_release(m);
	return rc;
}

void tape_manifest_release(struct tape_manifest *m)
{
	free(m->packs);
	free(m->refs);
	m->packs = NULL;
	m->refs = NULL;
}
