/*
 * test_tape_codec.c — tape/format.c: pack header/index/trailer and manifest
 * round trips, every corruption (magic, version, checksum, truncation,
 * bounds), block naming and keys, zero-grain detection; tape/hashv.c's
 * batched SHA-256 checks against OpenSSL's digests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"
#include "hashv.h"

/* ---- packs ---- */

struct pack_fixture {
	uint8_t buf[4096];
	size_t len;
	struct tape_pack_entry e[3];
	uint64_t index_off;
};

static void pack_build(struct pack_fixture *f)
{
	uint8_t id[16];
	memset(id, 0xab, sizeof(id));
	memset(f->buf, 0, sizeof(f->buf));
	tape_pack_header_encode(f->buf, id, NULL);
	size_t off = TAPE_PACK_HEADER_BYTES;
	for (int i = 0; i < 3; i++) {
		memset(f->buf + off, 'a' + i, 100);
		tape_sha256(f->buf + off, 100, f->e[i].hash);
		f->e[i].off = off;
		f->e[i].len = 100;
		f->e[i].flags = 0;
		off += 100;
	}
	f->index_off = off;
	tape_pack_index_encode(f->e, 3, f->buf + off);
	assert_int_equal(tape_pack_trailer_encode(f->buf + off + 3 * TAPE_PACK_ENTRY_BYTES, 3, off,
						  f->buf + off, 3 * TAPE_PACK_ENTRY_BYTES),
			 0);
	f->len = off + 3 * TAPE_PACK_ENTRY_BYTES + TAPE_PACK_TRAILER_BYTES;
}

static int pack_decode(const struct pack_fixture *f, size_t len, struct tape_pack_entry *out)
{
	struct tape_pack_trailer t;
	uint8_t id[16];
	int rc = tape_pack_header_decode(f->buf, len, id);
	if (rc)
		return rc;
	if (len < TAPE_PACK_TRAILER_BYTES)
		return -EBADMSG;
	rc = tape_pack_trailer_decode(f->buf + len - TAPE_PACK_TRAILER_BYTES,
				      TAPE_PACK_TRAILER_BYTES, len, &t);
	if (rc)
		return rc;
	return tape_pack_index_decode(f->buf + t.index_off, (size_t)t.nr_blocks * TAPE_PACK_ENTRY_BYTES,
				      &t, out);
}

static void test_pack_roundtrip(void **state)
{
	(void)state;
	struct pack_fixture f;
	struct tape_pack_entry out[3];
	pack_build(&f);
	assert_int_equal(pack_decode(&f, f.len, out), 0);
	assert_memory_equal(out, f.e, sizeof(out));
	assert_int_equal(tape_pack_entry_find(out, 3, f.e[1].off), 1);
	assert_int_equal(tape_pack_entry_find(out, 3, f.e[1].off + 1), -1);
}

static void test_pack_corruption(void **state)
{
	(void)state;
	struct pack_fixture f;
	struct tape_pack_entry out[3];

	pack_build(&f); /* header magic */
	f.buf[0] ^= 1;
	assert_int_equal(pack_decode(&f, f.len, out), -EBADMSG);

	pack_build(&f); /* header version */
	f.buf[8] = 3; /* versions 1 and 2 are known */
	assert_int_equal(pack_decode(&f, f.len, out), -EPROTONOSUPPORT);

	pack_build(&f); /* trailer magic */
	f.buf[f.len - TAPE_PACK_TRAILER_BYTES] ^= 1;
	assert_int_equal(pack_decode(&f, f.len, out), -EBADMSG);

	pack_build(&f); /* trailer version */
	f.buf[f.len - TAPE_PACK_TRAILER_BYTES + 8] = 9;
	assert_int_equal(pack_decode(&f, f.len, out), -EPROTONOSUPPORT);

	pack_build(&f); /* index checksum: flip a byte of an entry */
	f.buf[f.index_off + 5] ^= 1;
	assert_int_equal(pack_decode(&f, f.len, out), -EBADMSG);

	pack_build(&f); /* trailer checksum */
	f.buf[f.len - TAPE_PACK_TRAILER_BYTES + 30] ^= 1;
	assert_int_equal(pack_decode(&f, f.len, out), -EBADMSG);

	pack_build(&f); /* truncated: sizes no longer add up */
	assert_int_equal(pack_decode(&f, f.len - 1, out), -EBADMSG);
	assert_int_equal(pack_decode(&f, 10, out), -EBADMSG);

	pack_build(&f); /* reserved bytes */
	f.buf[f.len - 1] = 1;
	assert_int_equal(pack_decode(&f, f.len, out), -EBADMSG);

	/* an entry pointing past the index, with a valid checksum */
	pack_build(&f);
	f.e[2].len = 5000;
	tape_pack_index_encode(f.e, 3, f.buf + f.index_off);
	tape_pack_trailer_encode(f.buf + f.index_off + 3 * TAPE_PACK_ENTRY_BYTES, 3, f.index_off,
				 f.buf + f.index_off, 3 * TAPE_PACK_ENTRY_BYTES);
	assert_int_equal(pack_decode(&f, f.len, out), -EBADMSG);

	/* entries out of order (overlapping), valid checksum */
	pack_build(&f);
	f.e[1].off = f.e[0].off;
	tape_pack_index_encode(f.e, 3, f.buf + f.index_off);
	tape_pack_trailer_encode(f.buf + f.index_off + 3 * TAPE_PACK_ENTRY_BYTES, 3, f.index_off,
				 f.buf + f.index_off, 3 * TAPE_PACK_ENTRY_BYTES);
	assert_int_equal(pack_decode(&f, f.len, out), -EBADMSG);
}

/* ---- manifests ---- */

static void manifest_build(struct tape_manifest *m, uint64_t nr_grains)
{
	memset(m, 0, sizeof(*m));
	strcpy(m->volume, "db01");
	strcpy(m->host, "host-a");
	strcpy(m->parent, "manifests/db01/00000000000000000006-0011223344556677.mf");
	m->version = 7;
	m->grain_bytes = 65536;
	m->size_bytes = nr_grains * 65536 - 100;
	m->date = 1700000000;
	m->nr_grains = nr_grains;
	m->nr_packs = 2;
	m->packs = calloc(2, 16);
	memset(m->packs[0], 1, 16);
	memset(m->packs[1], 2, 16);
	m->refs = calloc(nr_grains, sizeof(*m->refs));
	for (uint64_t g = 0; g < nr_grains; g++) {
		struct tape_ref *r = &m->refs[g];
		if (g % 3 == 0) {
			r->pack = TAPE_ZERO_PACK;
			continue;
		}
		r->pack = (uint32_t)(g & 1);
		r->len = 65536;
		r->off = TAPE_PACK_HEADER_BYTES + g * 65536;
		memset(r->prefix, (int)g, 8);
		m->blocks_total++;
	}
}

static void test_manifest_roundtrip(void **state)
{
	(void)state;
	struct tape_manifest m, d;
	uint8_t *buf;
	size_t len;
	manifest_build(&m, 10);
	assert_int_equal(tape_manifest_encode(&m, NULL, NULL, &buf, &len), 0);
	assert_int_equal(len, tape_manifest_bytes(&m));
	/* the budget: 24 bytes per grain plus a small header */
	assert_true(len <= 72 + 4 + 6 + 55 + 2 * 16 + 10 * 24 + 32);
	assert_int_equal(tape_manifest_decode(buf, len, NULL, NULL, &d), 0);
	assert_string_equal(d.volume, m.volume);
	assert_string_equal(d.host, m.host);
	assert_string_equal(d.parent, m.parent);
	assert_int_equal(d.version, 7);
	assert_int_equal(d.size_bytes, m.size_bytes);
	assert_int_equal(d.grain_bytes, 65536);
	assert_int_equal(d.date, 1700000000);
	assert_int_equal(d.nr_grains, 10);
	assert_int_equal(d.blocks_total, m.blocks_total);
	assert_int_equal(d.nr_packs, 2);
	assert_memory_equal(d.packs, m.packs, 32);
	assert_memory_equal(d.refs, m.refs, 10 * sizeof(*m.refs));
	tape_manifest_release(&d);
	free(buf);
	tape_manifest_release(&m);
}

/* re-seal after a deliberate field change, so only the field check can catch it */
static void reseal(uint8_t *buf, size_t len)
{
	tape_sha256(buf, len - 32, buf + len - 32);
}

static void test_manifest_corruption(void **state)
{
	(void)state;
	struct tape_manifest m, d;
	uint8_t *buf, *copy;
	size_t len;
	manifest_build(&m, 10);
	assert_int_equal(tape_manifest_encode(&m, NULL, NULL, &buf, &len), 0);
	copy = malloc(len);

	memcpy(copy, buf, len); /* magic */
	copy[1] ^= 1;
	assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EBADMSG);

	memcpy(copy, buf, len); /* version */
	copy[8] = 3; /* versions 1 and 2 are known */
	assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EPROTONOSUPPORT);

	for (size_t i = 12; i < len; i += 7) { /* any flipped byte fails the checksum */
		memcpy(copy, buf, len);
		copy[i] ^= 0x10;
		assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EBADMSG);
	}

	for (size_t l = 0; l < len; l += 13) /* truncation */
		assert_int_equal(tape_manifest_decode(buf, l, NULL, NULL, &d), -EBADMSG);
	assert_int_equal(tape_manifest_decode(buf, len - 1, NULL, NULL, &d), -EBADMSG);

	size_t refs_at = len - 32 - 10 * 24;
	memcpy(copy, buf, len); /* pack index out of the table */
	tape_put_le32(copy + refs_at + 24, 5);
	reseal(copy, len);
	assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EBADMSG);

	memcpy(copy, buf, len); /* block length != grain */
	tape_put_le32(copy + refs_at + 24 + 4, 100);
	reseal(copy, len);
	assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EBADMSG);

	memcpy(copy, buf, len); /* blocks_total disagrees */
	tape_put_le64(copy + 56, 1);
	reseal(copy, len);
	assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EBADMSG);

	memcpy(copy, buf, len); /* nr_grains disagrees with size */
	tape_put_le64(copy + 16, 65536);
	reseal(copy, len);
	assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EBADMSG);

	memcpy(copy, buf, len); /* header length field */
	tape_put_le32(copy + 12, 71);
	reseal(copy, len);
	assert_int_equal(tape_manifest_decode(copy, len, NULL, NULL, &d), -EBADMSG);

	free(copy);
	free(buf);
	tape_manifest_release(&m);
}

/* ---- naming ---- */

static void test_block_naming(void **state)
{
	(void)state;
	uint8_t h[32], id[16], id2[16];
	char hex[65], key[128];
	/* SHA-256("abc"), FIPS 180-2 example */
	assert_int_equal(tape_sha256("abc", 3, h), 0);
	tape_hex(h, 32, hex);
	assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	for (int i = 0; i < 16; i++)
		id[i] = (uint8_t)(i * 17);
	assert_int_equal(tape_pack_key(id, key, sizeof(key)), 0);
	assert_string_equal(key, "packs/00112233445566778899aabbccddeeff.pack");
	assert_int_equal(tape_pack_key_parse(key, id2), 0);
	assert_memory_equal(id, id2, 16);
	assert_int_equal(tape_pack_key_parse("packs/0011.pack", id2), -EINVAL);
	assert_int_equal(tape_pack_key_parse("packs/zz112233445566778899aabbccddeeff.pack", id2),
			 -EINVAL);
	uint8_t rnd[8] = {0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3};
	assert_int_equal(tape_manifest_key("db01", 42, rnd, key, sizeof(key)), 0);
	assert_string_equal(key, "manifests/db01/00000000000000000042-deadbeef00010203.mf");
	assert_int_equal(tape_manifest_key("../x", 1, rnd, key, sizeof(key)), -EINVAL);
	assert_int_equal(tape_manifest_key("a/b", 1, rnd, key, sizeof(key)), -EINVAL);
	assert_int_equal(tape_manifest_key("db01", 1, rnd, key, 20), -ENAMETOOLONG);
	assert_false(tape_volume_name_ok(""));
	assert_false(tape_volume_name_ok(".hidden"));
	assert_true(tape_volume_name_ok("vol_1.a-b"));
}

static void test_zero_detection(void **state)
{
	(void)state;
	uint8_t *b = calloc(1, 65536 + 3);
	assert_true(tape_is_zero(b, 65536 + 3));
	b[65536 + 2] = 1; /* tail byte */
	assert_false(tape_is_zero(b, 65536 + 3));
	b[65536 + 2] = 0;
	b[0] = 1;
	assert_false(tape_is_zero(b, 65536));
	b[0] = 0;
	b[4097] = 0x80;
	assert_false(tape_is_zero(b, 65536));
	assert_true(tape_is_zero(b, 0));
	free(b);
}

static void test_le_helpers(void **state)
{
	(void)state;
	uint8_t b[8];
	tape_put_le64(b, 0x0102030405060708ull);
	assert_int_equal(b[0], 8);
	assert_int_equal(b[7], 1);
	assert_int_equal(tape_get_le64(b), 0x0102030405060708ull);
	tape_put_le32(b, 0xa1b2c3d4u);
	assert_int_equal(b[0], 0xd4);
	assert_int_equal(tape_get_le32(b), 0xa1b2c3d4u);
	tape_put_le16(b, 0xbeef);
	assert_int_equal(tape_get_le16(b), 0xbeef);
}

/* ---- batched SHA-256 checks (hashv.c) ---- */

/* n blocks of len bytes, pseudo-random; want[i] = OpenSSL's digest */
struct hv_fixture {
	unsigned n;
	size_t len;
	uint8_t *buf;
	const uint8_t **data, **want;
	uint8_t (*sum)[32];
	bool *ok;
};

static void hv_make(struct hv_fixture *f, unsigned n, size_t len, uint32_t seed)
{
	f->n = n;
	f->len = len;
	f->buf = malloc(n * len + 1);
	f->data = calloc(n + 1, sizeof(*f->data));
	f->want = calloc(n + 1, sizeof(*f->want));
	f->sum = calloc(n + 1, sizeof(*f->sum));
	f->ok = calloc(n + 1, sizeof(*f->ok));
	assert_non_null(f->buf);
	assert_non_null(f->ok);
	for (size_t i = 0; i < n * len; i++) {
		seed = seed * 1103515245u + 12345u;
		f->buf[i] = (uint8_t)(seed >> 16);
	}
	for (unsigned i = 0; i < n; i++) {
		f->data[i] = f->buf + i * len;
		assert_int_equal(tape_sha256(f->data[i], len, f->sum[i]), 0);
		f->want[i] = f->sum[i];
	}
}

static void hv_free(struct hv_fixture *f)
{
	free(f->buf);
	free(f->data);
	free(f->want);
	free(f->sum);
	free(f->ok);
}

static void test_sha256_check_sizes(void **state)
{
	(void)state;
	/* around the fast path's bounds (65..65598 bytes), the default grain,
	 * grains beyond it, one block, a batch larger than one round */
	static const struct {
		unsigned n;
		size_t len;
	} c[] = {{8, 64}, {8, 65}, {8, 4096}, {8, 65536}, {3, 65598}, {3, 65599}, {3, 65600},
		 {2, 131072}, {1, 65536}, {150, 65536}, {5, 1000}};
	for (size_t t = 0; t < sizeof(c) / sizeof(c[0]); t++) {
		struct hv_fixture f;
		hv_make(&f, c[t].n, c[t].len, (uint32_t)t + 1);
		memset(f.ok, 0, f.n);
		tape_sha256_check(f.n, f.data, f.len, f.want, f.ok);
		for (unsigned i = 0; i < f.n; i++)
			assert_true(f.ok[i]);
		/* damage every third block: in its first 64 bytes (the part the
		 * fast path hashes separately), its last byte, or its middle */
		for (unsigned i = 0; i < f.n; i += 3) {
			size_t at = (i / 3) % 3 == 0 ? 5 : (i / 3) % 3 == 1 ? f.len - 1 : f.len / 2;
			f.buf[i * f.len + at] ^= 0x40;
		}
		tape_sha256_check(f.n, f.data, f.len, f.want, f.ok);
		for (unsigned i = 0; i < f.n; i++)
			assert_int_equal(f.ok[i], i % 3 != 0);
		hv_free(&f);
	}
	tape_sha256_check(0, NULL, 65536, NULL, NULL); /* nothing to do */
}

static void test_sha256_check_wrong_digest(void **state)
{
	(void)state;
	struct hv_fixture f;
	hv_make(&f, 6, 65536, 99);
	/* intact blocks, expected digests off by one bit each, or swapped */
	f.sum[1][31] ^= 1;
	f.sum[3][0] ^= 0x80;
	f.want[4] = f.sum[5];
	tape_sha256_check(f.n, f.data, f.len, f.want, f.ok);
	assert_true(f.ok[0]);
	assert_false(f.ok[1]);
	assert_true(f.ok[2]);
	assert_false(f.ok[3]);
	assert_false(f.ok[4]);
	assert_true(f.ok[5]);
	hv_free(&f);
}

static void test_sha256_check_fast_path(void **state)
{
	(void)state;
#ifdef ACMFS_HAVE_IPSEC_MB
	/* built with libipsec-mb: the default grain takes the fast path (its
	 * self-test passed), or the tests above only tested OpenSSL. This file
	 * also runs under ACMFS_FAULT_HASHV (tests/unit/meson.build): =selftest
	 * must leave the fast path off (OpenSSL for every block), =refuse keeps
	 * it on with every job refused (the per-block fallback); the tests above
	 * then check that the verdicts stay exact. */
	const char *mode = getenv("ACMFS_FAULT_HASHV");
	bool fast = !mode || strcmp(mode, "selftest");
	assert_int_equal(tape_sha256_check_fast(65536), fast);
	assert_int_equal(tape_sha256_check_fast(65598), fast);
	assert_false(tape_sha256_check_fast(65599));
	assert_false(tape_sha256_check_fast(64));
#else
	assert_false(tape_sha256_check_fast(65536));
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pack_roundtrip),	   cmocka_unit_test(test_pack_corruption),
		cmocka_unit_test(test_manifest_roundtrip), cmocka_unit_test(test_manifest_corruption),
		cmocka_unit_test(test_block_naming),	   cmocka_unit_test(test_zero_detection),
		cmocka_unit_test(test_le_helpers),
		cmocka_unit_test(test_sha256_check_sizes),
		cmocka_unit_test(test_sha256_check_wrong_digest),
		cmocka_unit_test(test_sha256_check_fast_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
