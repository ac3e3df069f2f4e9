/*
 * test_tape_hostile.c — bucket contents are untrusted input (issue 16).
 *
 * Crafted packs and manifests are put into an in-memory pool and read back
 * through the real decode paths (pool_pack_index_fetch, pool_refresh,
 * pool_manifest_load, the tier's image_open): every claim that does not fit
 * the engine's geometry must be an error for that object (-EBADMSG), never a
 * crash, a division by zero or a huge allocation. The S3 listing parser
 * (tape/s3_xml.c, the one backend_s3.c uses) gets hostile pages: a page that
 * does not parse completely fails the listing instead of ending it early.
 *
 * "No huge allocation" is checked by linking this test with
 * -Wl,--wrap=malloc,calloc,realloc (tests/unit/meson.build): every malloc,
 * calloc and realloc of the tape code goes through the wrappers below, which
 * refuse (NULL) and record any request above a limit while a check is armed.
 * A decoder that trusted a claim would then fail with -ENOMEM, or the
 * recorded size would show it; the wrappers forward to the real allocator
 * otherwise (so ASan and valgrind still see every block).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "format.h"
#include "pool.h"
#include "s3_xml.h"
#include "tier.h"

/* ---- allocation guard ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t sz);
void *__wrap_realloc(void *p, size_t n);

static size_t guard_limit; /* 0 = off */
static size_t guard_largest;
static unsigned guard_refused;

static bool guard_ok(size_t n)
{
	if (!guard_limit)
		return true;
	if (n > guard_largest)
		guard_largest = n;
	if (n > guard_limit) {
		guard_refused++;
		return false;
	}
	return true;
}

void *__wrap_malloc(size_t n)
{
	return guard_ok(n) ? __real_malloc(n) : NULL;
}

void *__wrap_calloc(size_t n, size_t sz)
{
	if (sz && n > SIZE_MAX / sz) {
		guard_ok(SIZE_MAX);
		return __real_calloc(n, sz); /* NULL, ENOMEM */
	}
	return guard_ok(n * sz) ? __real_calloc(n, sz) : NULL;
}

void *__wrap_realloc(void *p, size_t n)
{
	return guard_ok(n) ? __real_realloc(p, n) : NULL;
}

static void guard_arm(size_t limit)
{
	guard_largest = 0;
	guard_refused = 0;
	guard_limit = limit;
}

/* disarms and asserts that nothing above the limit was asked for */
static void guard_check(void)
{
	size_t largest = guard_largest;
	unsigned refused = guard_refused;
	guard_limit = 0;
	if (refused)
		fail_msg("%u allocations above the limit (largest %zu bytes)", refused, largest);
}

#define SMALL_ALLOC (1u << 20) /* what reading one small hostile object may cost */

/* ---- fixture ---- */

struct ctx {
	struct tape_backend *be;
	struct tier_pool *p;
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	char err[128];
	c->be = tape_backend_mem_new();
	assert_int_equal(tape_pool_open_backend(c->be, "pack_kb=256 threads=2 cache_mb=1 readahead_mb=1",
						&c->p, err, sizeof(err)),
			 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	tape_tier_ops.pool_close(c->p);
	free(c);
	return 0;
}

static void put(struct ctx *c, const char *key, const void *buf, size_t len)
{
	assert_int_equal(c->be->ops->put(c->be, key, buf, len), 0);
}

/* ---- packs ---- */

#define BLK 4096u

/* A valid pack of nr blocks of BLK bytes; *len gets its size. */
static uint8_t *pack_make(const uint8_t id[16], uint32_t nr, size_t *len)
{
	size_t ioff = TAPE_PACK_DATA_OFF + (size_t)nr * BLK;
	size_t total = ioff + (size_t)nr * TAPE_PACK_ENTRY_BYTES + TAPE_PACK_TRAILER_BYTES;
	uint8_t *b = calloc(1, total);
	struct tape_pack_entry *e = calloc(nr + 1, sizeof(*e));
	assert_non_null(b);
	tape_pack_start(b, id, NULL);
	for (uint32_t i = 0; i < nr; i++) {
		uint8_t *blk = b + TAPE_PACK_DATA_OFF + (size_t)i * BLK;
		memset(blk, 'a' + (int)i, BLK);
		blk[0] = id[0];
		tape_sha256(blk, BLK, e[i].hash);
		e[i].off = TAPE_PACK_DATA_OFF + (uint64_t)i * BLK;
		e[i].len = BLK;
	}
	tape_pack_index_encode(e, nr, b + ioff);
	assert_int_equal(tape_pack_trailer_encode(b + total - TAPE_PACK_TRAILER_BYTES, nr, ioff,
						  b + ioff, (size_t)nr * TAPE_PACK_ENTRY_BYTES),
			 0);
	free(e);
	*len = total;
	return b;
}

/* A pack object of len bytes whose trailer claims nr blocks at index_off
 * (zeros elsewhere; the index hash covers whatever is there). */
static uint8_t *pack_claim(size_t len, uint32_t nr, uint64_t index_off)
{
	uint8_t *b = calloc(1, len);
	uint8_t id[16] = {0x42};
	assert_non_null(b);
	tape_pack_start(b, id, NULL);
	uint8_t *tr = b + len - TAPE_PACK_TRAILER_BYTES;
	memcpy(tr, TAPE_PACK_END_MAGIC, 8);
	tape_put_le32(tr + 8, TAPE_FORMAT_VERSION);
	tape_put_le32(tr + 12, nr);
	tape_put_le64(tr + 16, index_off);
	return b;
}

static int fetch(struct ctx *c, const char *key, uint64_t claimed_size)
{
	struct tape_pack_entry *e = NULL;
	uint32_t nr = 0;
	guard_arm(SMALL_ALLOC);
	int rc = pool_pack_index_fetch(c->p, key, claimed_size, &e, &nr);
	guard_check();
	free(e);
	return rc;
}

static void test_pack_index_claims(void **state)
{
	struct ctx *c = *state;
	uint8_t id[16] = {1, 2, 3};
	char key[64];
	size_t len;
	struct tape_mem_stats st0, st1;

	tape_pack_key(id, key, sizeof(key));
	uint8_t *good = pack_make(id, 3, &len);
	put(c, key, good, len);
	assert_int_equal(fetch(c, key, len), 0);

	/* a listing (or HEAD) claiming ~200 GB for it: refused before any GET */
	tape_mem_stats_get(c->be, &st0);
	assert_int_equal(fetch(c, key, 200ull << 30), -EBADMSG);
	/* just over the largest pack a writer makes */
	assert_int_equal(fetch(c, key, TAPE_PACK_MAX_BYTES + 1), -EBADMSG);
	tape_mem_stats_get(c->be, &st1);
	assert_int_equal(st1.gets, st0.gets);
	/* too short to be a pack */
	assert_int_equal(fetch(c, key, 10), -EBADMSG);
	free(good);

	/* the reviewers' case: N = 2^32 - 1 entries, I + 48 N + 64 = the size
	 * the listing reports (a sparse file, a lying server): ~200 GB index */
	uint64_t ioff = TAPE_PACK_DATA_OFF;
	uint64_t huge = ioff + 48ull * UINT32_MAX + TAPE_PACK_TRAILER_BYTES;
	assert_int_equal(fetch(c, key, huge), -EBADMSG);

	/* the same within the largest pack: more entries than the largest pack
	 * holds, the trailer read from a real object */
	uint32_t n = TAPE_PACK_MAX_BLOCKS + 1;
	size_t l = TAPE_PACK_DATA_OFF + (size_t)n * TAPE_PACK_ENTRY_BYTES + TAPE_PACK_TRAILER_BYTES;
	uint8_t *b = pack_claim(l, n, TAPE_PACK_DATA_OFF);
	put(c, key, b, l);
	free(b);
	assert_int_equal(fetch(c, key, l), -EBADMSG);

	/* more entries than the data area has bytes (each block is >= 1 byte) */
	n = 20000;
	l = 64 + (size_t)n * TAPE_PACK_ENTRY_BYTES + TAPE_PACK_TRAILER_BYTES;
	b = pack_claim(l, n, 64);
	put(c, key, b, l);
	free(b);
	assert_int_equal(fetch(c, key, l), -EBADMSG);

	/* index offset inside the header, and N x 48 + I + 64 != size */
	l = 8192;
	b = pack_claim(l, 1, 16);
	put(c, key, b, l);
	free(b);
	assert_int_equal(fetch(c, key, l), -EBADMSG);
	b = pack_claim(l, 3, TAPE_PACK_DATA_OFF);
	put(c, key, b, l);
	free(b);
	assert_int_equal(fetch(c, key, l), -EBADMSG);

	/* a block longer than the largest grain, with a valid index hash */
	good = pack_make(id, 2, &len);
	size_t io = TAPE_PACK_DATA_OFF + 2 * BLK;
	struct tape_pack_entry e[2];
	struct tape_pack_trailer t;
	assert_int_equal(tape_pack_trailer_decode(good + len - 64, 64, len, &t), 0);
	assert_int_equal(tape_pack_index_decode(good + io, 2 * TAPE_PACK_ENTRY_BYTES, &t, e), 0);
	tape_put_le32(good + io + 48 + 40, TAPE_GRAIN_MAX + 1);
	tape_pack_trailer_encode(good + len - 64, 2, io, good + io, 2 * TAPE_PACK_ENTRY_BYTES);
	put(c, key, good, len);
	assert_int_equal(fetch(c, key, len), -EBADMSG);
	free(good);
}

/* One hostile pack among good ones: refresh skips it, indexes the others. */
static void test_refresh_skips_bad_pack(void **state)
{
	struct ctx *c = *state;
	uint8_t id1[16] = {0x11}, id2[16] = {0x22}, id3[16] = {0x33};
	char k1[64], k2[64], k3[64];
	size_t len;
	tape_pack_key(id1, k1, sizeof(k1));
	tape_pack_key(id2, k2, sizeof(k2));
	tape_pack_key(id3, k3, sizeof(k3));
	uint8_t *a = pack_make(id1, 2, &len);
	put(c, k1, a, len);
	free(a);
	a = pack_make(id3, 1, &len);
	put(c, k3, a, len);
	free(a);
	uint32_t n = 1000000; /* ~48 MB index claimed in a 48 MB object of zeros */
	size_t l = 64 + (size_t)n * TAPE_PACK_ENTRY_BYTES + TAPE_PACK_TRAILER_BYTES;
	uint8_t *b = pack_claim(l, n, 64);
	put(c, k2, b, l);
	free(b);

	guard_arm(SMALL_ALLOC);
	int rc = pool_refresh(c->p);
	guard_check();
	assert_int_equal(rc, 0);
	pthread_mutex_lock(&c->p->lock);
	long n1 = pool_pack_find_locked(c->p, id1), n2 = pool_pack_find_locked(c->p, id2),
	     n3 = pool_pack_find_locked(c->p, id3);
	assert_true(n1 >= 0 && n3 >= 0);
	assert_int_equal(c->p->packs[n1].nr_ents, 2);
	assert_int_equal(c->p->packs[n3].nr_ents, 1);
	assert_true(n2 < 0 || !c->p->packs[n2].indexed);
	pthread_mutex_unlock(&c->p->lock);
}

/* ---- manifests ---- */

static uint8_t *manifest_make(uint64_t nr_grains, uint32_t grain, size_t *len)
{
	struct tape_manifest m;
	uint8_t *buf;
	memset(&m, 0, sizeof(m));
	strcpy(m.volume, "db");
	strcpy(m.host, "host-a");
	m.version = 3;
	m.grain_bytes = grain;
	m.size_bytes = nr_grains * grain;
	m.date = 1700000000;
	m.nr_grains = nr_grains;
	m.nr_packs = 1;
	m.packs = calloc(1, 16);
	m.refs = calloc(nr_grains, sizeof(*m.refs));
	for (uint64_t g = 0; g < nr_grains; g++) {
		if (g % 2) {
			m.refs[g].pack = TAPE_ZERO_PACK;
			continue;
		}
		m.refs[g].len = grain;
		m.refs[g].off = TAPE_PACK_DATA_OFF + g * grain;
		m.blocks_total++;
	}
	assert_int_equal(tape_manifest_encode(&m, NULL, NULL, &buf, len), 0);
	tape_manifest_release(&m);
	return buf;
}

static void reseal(uint8_t *buf, size_t len)
{
	tape_sha256(buf, len - 32, buf + len - 32);
}

static int load(struct ctx *c, const char *key)
{
	struct tape_manifest m;
	guard_arm(SMALL_ALLOC);
	int rc = pool_manifest_load(c->p, key, &m, NULL);
	guard_check();
	if (!rc)
		tape_manifest_release(&m);
	return rc;
}

/* put a copy of base with one field changed (and the checksum fixed) */
static int load_patched(struct ctx *c, const uint8_t *base, size_t len, size_t off, int width,
			uint64_t v)
{
	const char *key = "manifests/db/00000000000000000003-0000000000000001.mf";
	uint8_t *b = malloc(len);
	memcpy(b, base, len);
	if (width == 2)
		tape_put_le16(b + off, (uint16_t)v);
	else if (width == 4)
		tape_put_le32(b + off, (uint32_t)v);
	else
		tape_put_le64(b + off, v);
	reseal(b, len);
	put(c, key, b, len);
	free(b);
	return load(c, key);
}

enum { M_SIZE = 16, M_GRAIN = 24, M_PACKS = 28, M_GRAINS = 32, M_BLOCKS = 56 };

static void test_manifest_geometry(void **state)
{
	struct ctx *c = *state;
	size_t len;
	uint8_t *m = manifest_make(8, 65536, &len);

	assert_int_equal(load_patched(c, m, len, M_GRAIN, 4, 65536), 0); /* unchanged: loads */

	/* grains the engine never makes: > 64 MiB (divided by zero during
	 * import), zero, not a power of two, below 4 KiB, above 16 MiB */
	assert_int_equal(load_patched(c, m, len, M_GRAIN, 4, 128u << 20), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_GRAIN, 4, 0x80000000u), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_GRAIN, 4, 0), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_GRAIN, 4, 65536 + 4096), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_GRAIN, 4, 2048), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_GRAIN, 4, 32u << 20), -EBADMSG);

	/* size beyond the engine's largest volume; zero size */
	assert_int_equal(load_patched(c, m, len, M_SIZE, 8, (64ull << 40) + 65536), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_SIZE, 8, 0), -EBADMSG);
	/* G inconsistent with size / grain */
	assert_int_equal(load_patched(c, m, len, M_GRAINS, 8, 9), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_GRAINS, 8, UINT64_MAX / 24), -EBADMSG);
	/* pack table longer than the stored grains, or absurdly long */
	assert_int_equal(load_patched(c, m, len, M_PACKS, 4, 5), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, M_PACKS, 4, UINT32_MAX), -EBADMSG);
	/* more stored grains than grains */
	assert_int_equal(load_patched(c, m, len, M_BLOCKS, 8, 9), -EBADMSG);
	/* header length and name lengths disagree */
	assert_int_equal(load_patched(c, m, len, 12, 4, 1u << 31), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, 64, 2, 0), -EBADMSG);
	assert_int_equal(load_patched(c, m, len, 66, 2, 60000), -EBADMSG);
	free(m);
}

/* A large object whose header describes a small manifest (or a huge one):
 * refused after reading the header, before room for the object is made. */
static void test_manifest_size_claims(void **state)
{
	struct ctx *c = *state;
	const char *key = "manifests/db/00000000000000000004-0000000000000002.mf";
	size_t len;
	uint8_t *m = manifest_make(8, 65536, &len);
	size_t big = 24u << 20; /* over the one-GET size (pool.c) */
	uint8_t *b = calloc(1, big);
	memcpy(b, m, len);
	put(c, key, b, big);
	assert_int_equal(load(c, key), -EBADMSG);

	/* header claiming the largest geometry: 64 TiB at 4 KiB = 16 Gi grains */
	tape_put_le64(b + M_SIZE, 64ull << 40);
	tape_put_le32(b + M_GRAIN, 4096);
	tape_put_le64(b + M_GRAINS, (64ull << 40) / 4096);
	put(c, key, b, big);
	assert_int_equal(load(c, key), -EBADMSG);

	/* 1 Gi grains of 64 KiB (the largest allowed), not matching the size */
	tape_put_le64(b + M_SIZE, 64ull << 40);
	tape_put_le32(b + M_GRAIN, 65536);
	tape_put_le64(b + M_GRAINS, (64ull << 40) / 65536);
	put(c, key, b, big);
	assert_int_equal(load(c, key), -EBADMSG);
	free(b);

	/* shorter than a header */
	put(c, key, m, 50);
	assert_int_equal(load(c, key), -EBADMSG);
	/* the good one still loads */
	put(c, key, m, len);
	assert_int_equal(load(c, key), 0);
	free(m);
}

/* The tier's own entry point refuses it too, with the pool left usable. */
static void test_image_open_refuses(void **state)
{
	struct ctx *c = *state;
	const char *key = "manifests/db/00000000000000000005-0000000000000003.mf";
	size_t len;
	uint8_t *m = manifest_make(4, 65536, &len);
	tape_put_le32(m + M_GRAIN, 128u << 20);
	reseal(m, len);
	put(c, key, m, len);
	struct tier_image *im = NULL;
	guard_arm(SMALL_ALLOC);
	int rc = tape_tier_ops.image_open(c->p, key, NULL, &im);
	guard_check();
	assert_int_equal(rc, -EIO); /* refused as damaged: a reader sees EIO */
	assert_null(im);
	free(m);
}

/* ---- S3 listing pages ---- */

struct seen {
	char keys[8][256];
	uint64_t sizes[8];
	int64_t mtimes[8];
	int n, stop_at;
};

static int on_key(void *arg, const struct tape_obj_info *oi)
{
	struct seen *s = arg;
	if (s->n < 8) {
		snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", oi->key);
		s->sizes[s->n] = oi->size_bytes;
		s->mtimes[s->n] = oi->mtime;
	}
	s->n++;
	return s->stop_at && s->n == s->stop_at ? 42 : 0;
}

#define ENT(k, sz) "<Contents><Key>" k "</Key><LastModified>2026-11-25T12:00:00.000Z" \
		   "</LastModified><ETag>&quot;x&quot;</ETag><Size>" sz "</Size></Contents>"
#define PAGE(flags, body) "<?xml version=\"1.0\"?><ListBucketResult><Name>b</Name>" flags \
			  body "</ListBucketResult>"

static int parse(const char *xml, struct seen *s, struct s3_list_page *pg)
{
	char why[200];
	memset(s, 0, sizeof(*s));
	return s3_list_parse(xml, strlen(xml), "acm/", on_key, s, pg, why, sizeof(why));
}

static void test_listing_pages(void **state)
{
	(void)state;
	struct seen s;
	struct s3_list_page pg;

	/* a good page, S3 order, and RGW's (flags after the entries) */
	assert_int_equal(parse(PAGE("<IsTruncated>true</IsTruncated><NextContinuationToken>t1"
				    "</NextContinuationToken>",
				    ENT("acm/packs/a.pack", "33554432") ENT("acm/x&amp;y", "0")),
			       &s, &pg), 0);
	assert_int_equal(s.n, 2);
	assert_string_equal(s.keys[0], "packs/a.pack");
	assert_string_equal(s.keys[1], "x&y");
	assert_int_equal(s.sizes[0], 33554432);
	assert_int_equal(s.mtimes[0], 1795608000);
	assert_true(pg.truncated);
	assert_string_equal(pg.token, "t1");
	assert_int_equal(parse(PAGE("", ENT("acm/k", "1") "<IsTruncated>false</IsTruncated>"), &s,
			       &pg), 0);
	assert_int_equal(s.n, 1);
	assert_false(pg.truncated);

	/* a page that does not say whether it is the last, or says it badly */
	assert_int_equal(parse(PAGE("", ENT("acm/k", "1")), &s, &pg), -EBADMSG);
	assert_int_equal(parse(PAGE("<IsTruncated>maybe</IsTruncated>", ""), &s, &pg), -EBADMSG);
	/* truncated, but no way to go on */
	assert_int_equal(parse(PAGE("<IsTruncated>true</IsTruncated>", ENT("acm/k", "1")), &s, &pg),
			 -EBADMSG);
	char big[4096];
	char tok[1200];
	memset(tok, 't', sizeof(tok) - 1);
	tok[sizeof(tok) - 1] = 0;
	snprintf(big, sizeof(big), PAGE("<IsTruncated>true</IsTruncated><NextContinuationToken>%s"
					"</NextContinuationToken>", ""), tok);
	assert_int_equal(parse(big, &s, &pg), -EBADMSG);
	/* sizes that overflow, are negative, missing; a date that is not one */
	assert_int_equal(parse(PAGE("<IsTruncated>false</IsTruncated>",
				    ENT("acm/k", "18446744073709551616")), &s, &pg), -EBADMSG);
	assert_int_equal(parse(PAGE("<IsTruncated>false</IsTruncated>", ENT("acm/k", "-1")), &s,
			       &pg), -EBADMSG);
	assert_int_equal(parse(PAGE("<IsTruncated>false</IsTruncated>",
				    "<Contents><Key>acm/k</Key><LastModified>2026-11-25T12:00:00Z"
				    "</LastModified></Contents>"), &s, &pg), -EBADMSG);
	assert_int_equal(parse(PAGE("<IsTruncated>false</IsTruncated>",
				    "<Contents><Key>acm/k</Key><Size>1</Size><LastModified>noon"
				    "</LastModified></Contents>"), &s, &pg), -EBADMSG);
	/* an entry never closed; an error document or HTML instead of a page */
	assert_int_equal(parse(PAGE("<IsTruncated>false</IsTruncated>", "<Contents><Key>acm/k</Key>"),
			       &s, &pg), -EBADMSG);
	assert_int_equal(parse("<Error><Code>AccessDenied</Code></Error>", &s, &pg), -EBADMSG);
	assert_int_equal(parse("<html>502</html>", &s, &pg), -EBADMSG);
	/* a NUL inside: the rest would be hidden */
	const char nul[] = PAGE("<IsTruncated>false</IsTruncated>", ENT("acm/k", "1"));
	char *copy = malloc(sizeof(nul));
	memcpy(copy, nul, sizeof(nul));
	copy[60] = 0;
	memset(&s, 0, sizeof(s));
	char why[100];
	assert_int_equal(s3_list_parse(copy, sizeof(nul) - 1, "acm/", on_key, &s, &pg, why,
				       sizeof(why)),
			 -EBADMSG);
	free(copy);

	/* keys too long for the pool: skipped, never cut into another key */
	char lk[2600];
	char longkey[1400];
	memset(longkey, 'k', sizeof(longkey) - 1);
	longkey[sizeof(longkey) - 1] = 0;
	memcpy(longkey, "acm/packs/", 10);
	snprintf(lk, sizeof(lk), PAGE("<IsTruncated>false</IsTruncated>",
				      "<Contents><Key>%s</Key><Size>1</Size><LastModified>"
				      "2026-11-25T12:00:00Z</LastModified></Contents>"
				      "<Contents><Key>%.300s</Key><Size>1</Size><LastModified>"
				      "2026-11-25T12:00:00Z</LastModified></Contents>"
				      ENT("acm/ok", "5")),
		 longkey, longkey);
	assert_int_equal(parse(lk, &s, &pg), 0);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.keys[0], "ok");
	/* keys outside the pool prefix are not the pool's */
	assert_int_equal(parse(PAGE("<IsTruncated>false</IsTruncated>",
				    ENT("other/k", "1") ENT("acm/", "1") ENT("acm/k", "1")),
			       &s, &pg), 0);
	assert_int_equal(s.n, 1);
	/* the callback's stop comes back */
	memset(&s, 0, sizeof(s));
	s.stop_at = 1;
	const char *two = PAGE("<IsTruncated>false</IsTruncated>", ENT("acm/a", "1") ENT("acm/b", "1"));
	assert_int_equal(s3_list_parse(two, strlen(two), "acm/", on_key, &s, &pg, why, sizeof(why)),
			 42);
	assert_int_equal(s.n, 1);
}

static void test_header_values(void **state)
{
	(void)state;
	uint64_t v, a, b, t;
	int64_t tm;
	assert_int_equal(s3_parse_u64("18446744073709551615", 20, &v), 0);
	assert_true(v == UINT64_MAX);
	assert_int_equal(s3_parse_u64("18446744073709551616", 20, &v), -EINVAL);
	assert_int_equal(s3_parse_u64("", 0, &v), -EINVAL);
	assert_int_equal(s3_parse_u64("12a", 3, &v), -EINVAL);
	assert_int_equal(s3_parse_u64("-1", 2, &v), -EINVAL);
	assert_int_equal(s3_parse_content_range("bytes 100-199/1000", &a, &b, &t), 0);
	assert_true(a == 100 && b == 199 && t == 1000);
	assert_int_equal(s3_parse_content_range("bytes 0-9/*", &a, &b, &t), 0);
	assert_int_equal(s3_parse_content_range("bytes 9-0/10", &a, &b, &t), -EINVAL);
	assert_int_equal(s3_parse_content_range("bytes 0-10/10", &a, &b, &t), -EINVAL);
	assert_int_equal(s3_parse_content_range("bytes 0-99999999999999999999/1", &a, &b, &t),
			 -EINVAL);
	assert_int_equal(s3_parse_content_range("items 0-1/2", &a, &b, &t), -EINVAL);
	assert_int_equal(s3_parse_http_date("Wed, 25 Nov 2026 12:00:00 GMT", &tm), 0);
	assert_int_equal(tm, 1795608000);
	assert_int_equal(s3_parse_http_date("Wed, 25 Nov 2026 12:00:00", &tm), -EINVAL);
	assert_int_equal(s3_parse_http_date("Wed, 25 Foo 2026 12:00:00 GMT", &tm), -EINVAL);
	assert_int_equal(s3_parse_http_date("Wed, 25 Nov 2026 25:00:00 GMT", &tm), -EINVAL);
	assert_int_equal(s3_parse_iso8601("2026-11-25T12:00:00.000Z", &tm), 0);
	assert_int_equal(tm, 1795608000);
	assert_int_equal(s3_parse_iso8601("2026-11-25T12:00:00", &tm), -EINVAL);
	assert_int_equal(s3_parse_iso8601("1960-01-01T00:00:00Z", &tm), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pack_index_claims, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh_skips_bad_pack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_manifest_geometry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_manifest_size_claims, setup, teardown),
		cmocka_unit_test_setup_teardown(test_image_open_refuses, setup, teardown),
		cmocka_unit_test(test_listing_pages),
		cmocka_unit_test(test_header_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
