/*
 * test_tape_pool.c — the tape tier end to end on the in-memory backend:
 * upload + read round trip, zero-grain skipping and holes, incremental upload
 * (exactly the changed grains read, only new blocks stored, counted),
 * cross-volume dedup, gc (orphans reclaimed, shared blocks kept, repack,
 * grace), a corrupted block gives -EIO (never wrong bytes), injected backend
 * faults fail an upload without a manifest, cancel.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "fault.h"
#include "format.h"
#include "iomem.h"
#include "pool.h"
#include "tier.h"

#define GRAIN 4096u
#define NR    256u /* 1 MiB volumes */

static const struct tier_ops *T = &tape_tier_ops;

struct vol {
	uint8_t *data;
	uint64_t size;
	atomic_uint reads;
	atomic_uchar *read_map; /* per grain: read how often */
	int fail_grain;		 /* -1 none */
};

static int vol_read(void *arg, uint64_t g, void *buf)
{
	struct vol *v = arg;
	atomic_fetch_add(&v->reads, 1);
	atomic_fetch_add(&v->read_map[g], 1);
	if ((int)g == v->fail_grain)
		return -EIO;
	uint64_t off = g * GRAIN;
	size_t n = off + GRAIN <= v->size ? GRAIN : (size_t)(v->size - off);
	memcpy(buf, v->data + off, n);
	memset((uint8_t *)buf + n, 0, GRAIN - n);
	return 0;
}

static uint32_t rnd_state = 12345;
static uint32_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 17;
	rnd_state ^= rnd_state << 5;
	return rnd_state;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}

static void vol_init(struct vol *v, uint64_t size)
{
	v->size = size;
	v->data = calloc(1, size);
	v->read_map = calloc(size / GRAIN + 1, sizeof(*v->read_map));
	v->fail_grain = -1;
	atomic_store(&v->reads, 0);
}

static void vol_reset_reads(struct vol *v)
{
	atomic_store(&v->reads, 0);
	for (unsigned i = 0; i <= NR; i++)
		atomic_store(&v->read_map[i], 0);
}

static void vol_free(struct vol *v)
{
	free(v->data);
	free(v->read_map);
}

struct ctx {
	struct tape_backend *be;
	struct tier_pool *p;
};

static char keyfile[] = "/tmp/acmfs-test-tape-pool-key-XXXXXX";

/* extra: the pool's format options; the default ("") is a new pool's:
 * format 2, compressed, not encrypted */
static int setup_as(void **state, const char *extra)
{
	struct ctx *c = calloc(1, sizeof(*c));
	char err[256], opts[512];
	c->be = tape_backend_mem_new();
	snprintf(opts, sizeof(opts), "pack_kb=256 threads=3 cache_mb=1 readahead_mb=1 %s", extra);
	assert_int_equal(tape_pool_open_backend(c->be, opts, &c->p, err, sizeof(err)), 0);
	*state = c;
	return 0;
}

static int setup(void **state)
{
	return setup_as(state, "");
}

static int setup_v1(void **state)
{
	return setup_as(state, "format=1");
}

/* an encrypted pool: created as `pool create` does */
static int setup_encrypted(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));
	char err[256], opts[512];
	static bool made; /* mkstemp's random name may itself end in 'X' */
	if (!made) {
		made = true;
		int fd = mkstemp(keyfile);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, "pool test passphrase\n", 21), 21);
		close(fd);
	}
	c->be = tape_backend_mem_new();
	snprintf(opts, sizeof(opts),
		 "pack_kb=256 threads=3 cache_mb=1 readahead_mb=1 key=%s kdf_log2n=10", keyfile);
	assert_int_equal(tape_pool_create_backend(c->be, opts, &c->p, err, sizeof(err)), 0);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	T->pool_close(c->p);
	free(c);
	return 0;
}

static int upload(struct ctx *c, struct vol *v, const char *volume, uint64_t version,
		  const char *parent, const uint8_t *changed, struct tier_upload_res *res)
{
	char err[256];
	atomic_uint_fast64_t done = 0;
	struct tier_upload_req req = {
		.volume = volume,
		.version = version,
		.size_bytes = v->size,
		.grain_bytes = GRAIN,
		.date = 1700000000 + (int64_t)version,
		.host = "testhost",
		.parent = parent,
		.changed = changed,
		.src = {.read_grain = vol_read, .arg = v},
		.done_grains = &done,
	};
	int rc = T->upload(c->p, &req, res, err, sizeof(err));
	if (!rc)
		assert_int_equal(done, (v->size + GRAIN - 1) / GRAIN);
	return rc;
}

/* image_read_iov's reply: gathers the segments into a buffer */
struct gather {
	uint8_t *buf;
	size_t len;
	int calls;
};

static int gather_cb(void *arg, const struct iovec *iov, int cnt)
{
	struct gather *g = arg;
	g->len = 0;
	g->calls++;
	for (int i = 0; i < cnt; i++) {
		memcpy(g->buf + g->len, iov[i].iov_base, iov[i].iov_len);
		g->len += iov[i].iov_len;
	}
	return 7; /* handed back to the caller */
}

/* reads the whole image in uneven pieces and compares */
static void check_image(struct ctx *c, const char *manifest, const struct vol *v)
{
	struct tier_image *im;
	uint8_t *buf = malloc(v->size + 100);
	assert_int_equal(T->image_open(c->p, manifest, NULL, &im), 0);
	uint64_t off = 0;
	size_t step = 1000;
	while (off < v->size) {
		ssize_t n = T->image_read(im, buf + off, step, off);
		assert_true(n > 0);
		off += (uint64_t)n;
		step = step * 3 % 70000 + 1;
	}
	assert_int_equal(T->image_read(im, buf, 10, v->size), 0);
	assert_memory_equal(buf, v->data, v->size);
	/* the same without a copy, in FUSE-sized pieces (holes come as zeros) */
	struct gather gt = {.buf = malloc(1u << 20)};
	for (off = 0; off < v->size; off += gt.len) {
		size_t l = (size_t)(rnd() % (1u << 20)) + 1;
		gt.calls = 0;
		assert_int_equal(T->image_read_iov(im, l, off, gather_cb, &gt), 7);
		assert_int_equal(gt.calls, 1);
		assert_true(gt.len > 0 && gt.len <= l);
		assert_true(gt.len == l || off + gt.len == v->size);
		assert_memory_equal(gt.buf, v->data + off, gt.len);
	}
	assert_int_equal(T->image_read_iov(im, 10, v->size, gather_cb, &gt), 7);
	assert_int_equal(gt.len, 0);
	free(gt.buf);
	/* random-access reads too */
	for (int i = 0; i < 50; i++) {
		uint64_t o = rnd() % v->size;
		size_t l = rnd() % 20000 + 1;
		ssize_t n = T->image_read(im, buf, l, o);
		assert_true(n > 0);
		assert_memory_equal(buf, v->data + o, (size_t)n);
	}
	uint64_t bad = 1;
	assert_int_equal(T->image_verify(im, &bad), 0);
	assert_int_equal(bad, 0);
	T->image_close(im);
	free(buf);
}

static int count_prefix_cb(void *arg, const struct tape_obj_info *oi)
{
	(void)oi;
	(*(int *)arg)++;
	return 0;
}

static int count_objects(struct ctx *c, const char *prefix)
{
	int n = 0;
	assert_int_equal(c->be->ops->list(c->be, prefix, count_prefix_cb, &n), 0);
	return n;
}

static void test_roundtrip_and_holes(void **state)
{
	struct ctx *c = *state;
	struct vol v;
	struct tier_upload_res res;
	vol_init(&v, NR * GRAIN - 1234); /* last grain partial */
	for (unsigned g = 0; g < NR; g++)
		if (g % 4 != 0 && g < 200) /* every 4th grain and the tail are holes */
			fill_random(v.data + g * GRAIN, g == NR - 1 ? GRAIN - 1234 : GRAIN);
	assert_int_equal(upload(c, &v, "vol1", 1, NULL, NULL, &res), 0);
	assert_int_equal(res.grains_read, NR);
	assert_int_equal(res.blocks_total, 150);
	assert_int_equal(res.blocks_new, 150);
	struct tape_mem_stats st;
	tape_mem_stats_get(c->be, &st);
	/* only non-zero blocks travel: payload + small overheads */
	assert_true(st.bytes_put >= 150 * GRAIN && st.bytes_put < 150 * GRAIN + 40000);
	/* lock objects counted apart; a format 2 pool's config was written at
	 * its creation or first use */
	assert_true(res.bytes_uploaded ==
		    st.bytes_put - (count_objects(c, "config") ? TAPE_CONFIG_BYTES : 0));
	assert_true(st.lock_ops > 0);
	assert_int_equal(count_objects(c, "locks/"), 0); /* released */
	assert_int_equal(count_objects(c, "manifests/"), 1);
	assert_true(count_objects(c, "packs/") >= 3); /* 256 KiB packs */
	check_image(c, res.manifest, &v);

	struct tier_image *im;
	uint8_t h[32];
	assert_int_equal(T->image_open(c->p, res.manifest, NULL, &im), 0);
	assert_int_equal(T->image_seek(im, 0, SEEK_DATA), GRAIN);
	assert_int_equal(T->image_seek(im, 0, SEEK_HOLE), 0);
	assert_int_equal(T->image_seek(im, GRAIN + 5, SEEK_DATA), GRAIN + 5);
	assert_int_equal(T->image_seek(im, GRAIN + 5, SEEK_HOLE), 4 * GRAIN);
	assert_int_equal(T->image_seek(im, 200 * GRAIN, SEEK_DATA), -ENXIO);
	assert_int_equal(T->image_seek(im, 200 * GRAIN, SEEK_HOLE), 200 * GRAIN);
	assert_int_equal(T->image_seek(im, v.size, SEEK_DATA), -ENXIO);
	assert_int_equal(T->image_grain_hash(im, 0, h), 1);
	assert_int_equal(T->image_grain_hash(im, 1, h), 0);
	uint8_t want[32], sha[32];
	assert_int_equal(T->image_block_name(im, v.data + GRAIN, GRAIN, want), 0);
	assert_memory_equal(h, want, 32);
	tape_sha256(v.data + GRAIN, GRAIN, sha); /* keyed names only in encrypted pools */
	assert_int_equal(memcmp(h, sha, 32) != 0, c->p->codec.encrypted);
	T->image_close(im);

	/* list reports it */
	vol_free(&v);
}

struct list_acc {
	int n;
	uint64_t version;
};

static int list_cb(void *arg, const struct tier_manifest_info *mi)
{
	struct list_acc *a = arg;
	a->n++;
	a->version = mi->version;
	assert_string_equal(mi->volume, "vol1");
	assert_string_equal(mi->host, "testhost");
	assert_int_equal(mi->grain_bytes, GRAIN);
	return 0;
}

static void test_incremental(void **state)
{
	struct ctx *c = *state;
	struct vol v;
	struct tier_upload_res r1, r2;
	uint8_t changed[NR / 8] = {0};
	vol_init(&v, NR * GRAIN);
	fill_random(v.data, v.size);
	assert_int_equal(upload(c, &v, "vol1", 1, NULL, NULL, &r1), 0);
	assert_int_equal(r1.blocks_new, NR);

	/* change 5 grains; mark them plus 2 that were written with the same bytes */
	unsigned ch[] = {3, 77, 78, 200, 255}, same[] = {10, 11};
	for (unsigned i = 0; i < 5; i++) {
		fill_random(v.data + ch[i] * GRAIN, GRAIN);
		changed[ch[i] / 8] |= (uint8_t)(1u << (ch[i] % 8));
	}
	for (unsigned i = 0; i < 2; i++)
		changed[same[i] / 8] |= (uint8_t)(1u << (same[i] % 8));
	vol_reset_reads(&v);
	struct tape_mem_stats before, after;
	tape_mem_stats_get(c->be, &before);
	assert_int_equal(upload(c, &v, "vol1", 2, r1.manifest, changed, &r2), 0);
	tape_mem_stats_get(c->be, &after);
	assert_int_equal(r2.grains_read, 7);
	assert_int_equal(atomic_load(&v.reads), 7);
	for (unsigned g = 0; g < NR; g++) {
		int marked = (changed[g / 8] >> (g % 8)) & 1;
		assert_int_equal(atomic_load(&v.read_map[g]), marked);
	}
	assert_int_equal(r2.blocks_new, 5);
	assert_int_equal(r2.blocks_total, NR);
	/* one pack of 5 blocks (its data page aligned) + one manifest */
	assert_int_equal(after.puts - before.puts, 2);
	assert_true(after.bytes_put - before.bytes_put < TAPE_PACK_DATA_OFF + 5 * GRAIN + NR * 24 + 2000);
	check_image(c, r2.manifest, &v);

	/* a second volume with the same content dedups completely */
	struct tier_upload_res r3;
	assert_int_equal(upload(c, &v, "vol2", 1, NULL, NULL, &r3), 0);
	assert_int_equal(r3.blocks_new, 0);
	assert_int_equal(r3.grains_read, NR);

	/* a missing parent falls back to a full read */
	struct tier_upload_res r4;
	vol_reset_reads(&v);
	assert_int_equal(upload(c, &v, "vol1", 3, "manifests/vol1/nope.mf", changed, &r4), 0);
	assert_int_equal(r4.grains_read, NR);
	assert_int_equal(r4.blocks_new, 0);

	struct list_acc a = {0};
	assert_int_equal(T->remove(c->p, r3.manifest), 0);
	assert_int_equal(T->remove(c->p, r3.manifest), -ENOENT);
	assert_int_equal(T->list(c->p, list_cb, &a), 0);
	assert_int_equal(a.n, 3);
	vol_free(&v);
}

static void test_gc(void **state)
{
	struct ctx *c = *state;
	struct vol a, b;
	struct tier_upload_res ra, rb;
	struct tier_gc_stats st;
	vol_init(&a, NR * GRAIN);
	vol_init(&b, NR * GRAIN);
	fill_random(a.data, a.size);
	memcpy(b.data, a.data, a.size);
	fill_random(b.data, 192 * GRAIN); /* b shares the last 64 grains with a */
	assert_int_equal(upload(c, &a, "va", 1, NULL, NULL, &ra), 0);
	assert_int_equal(upload(c, &b, "vb", 1, NULL, NULL, &rb), 0);
	assert_int_equal(rb.blocks_new, 192);
	int packs_before = count_objects(c, "packs/");

	/* within the grace period nothing goes */
	assert_int_equal(T->remove(c->p, ra.manifest), 0);
	assert_int_equal(T->gc(c->p, 3600, &st), 0);
	assert_int_equal(st.packs_deleted + st.packs_repacked, 0);
	assert_int_equal(count_objects(c, "packs/"), packs_before);

	tape_mem_set_mtime_all(c->be, 1000);
	assert_int_equal(T->gc(c->p, 0, &st), 0);
	/* a's 192 private blocks fill most of 3+ packs; workers interleave, so
	 * some packs mix private and shared blocks and may be kept or repacked */
	assert_true(st.packs_deleted + st.packs_repacked >= 2);
	assert_true(st.blocks_freed >= 128 && st.blocks_freed <= 192);
	uint64_t freed_first = st.blocks_freed;
	check_image(c, rb.manifest, &b);

	/* an open image pins its packs even after its manifest is gone */
	struct tier_image *im;
	uint8_t *buf = malloc(b.size);
	assert_int_equal(T->image_open(c->p, rb.manifest, NULL, &im), 0);
	assert_int_equal(T->remove(c->p, rb.manifest), 0);
	tape_mem_set_mtime_all(c->be, 1000);
	assert_int_equal(T->gc(c->p, 0, &st), 0);
	assert_int_equal(st.packs_deleted + st.packs_repacked, 0);
	assert_int_equal(T->image_read(im, buf, b.size, 0), (ssize_t)b.size);
	assert_memory_equal(buf, b.data, b.size);
	T->image_close(im);
	free(buf);

	/* everything unreferenced: the pool empties */
	assert_int_equal(T->gc(c->p, 0, &st), 0);
	assert_int_equal(count_objects(c, "packs/"), 0);
	/* every block either collection reclaimed, each exactly once */
	assert_int_equal(freed_first + st.blocks_freed, 192 + 256);

	/* a manifest whose references cannot be read is kept, and so is every
	 * pack its (intact) pack table names; the collection goes on */
	assert_int_equal(upload(c, &a, "va", 2, NULL, NULL, &ra), 0);
	assert_int_equal(upload(c, &b, "vb", 2, NULL, NULL, &rb), 0);
	struct tier_image *imb;
	assert_int_equal(T->image_open(c->p, rb.manifest, NULL, &imb), 0); /* its packs */
	struct tape_manifest mb;
	assert_int_equal(pool_manifest_load(c->p, rb.manifest, &mb, NULL), 0);
	uint64_t refs_at = (mb.fmt == 2 ? TAPE_MANIFEST_FIXED2 : TAPE_MANIFEST_FIXED) + strlen(mb.volume) + strlen(mb.host) + strlen(mb.parent) +
			   16ull * mb.nr_packs;
	tape_manifest_release(&mb);
	T->image_close(imb);
	assert_int_equal(T->remove(c->p, ra.manifest), 0); /* va's own blocks: garbage */
	assert_int_equal(tape_mem_corrupt(c->be, rb.manifest, refs_at + 30), 0);
	tape_mem_set_mtime_all(c->be, 1000);
	packs_before = count_objects(c, "packs/");
	assert_int_equal(T->gc(c->p, 0, &st), 0);
	assert_int_equal(st.manifests_unreadable, 1);
	if (c->p->codec.encrypted) /* its pack table is sealed: nothing can go */
		assert_int_equal(st.packs_deleted + st.packs_repacked, 0);
	else
		assert_true(st.packs_deleted > 0); /* va's went */
	assert_int_equal(count_objects(c, "manifests/"), 1);
	{ /* vb's packs all stay: its blocks read back once the byte is undone */
		assert_int_equal(tape_mem_corrupt(c->be, rb.manifest, refs_at + 30), 0);
		check_image(c, rb.manifest, &b);
	}
	/* a flipped byte inside the pack table: nothing is deleted at all */
	assert_int_equal(upload(c, &a, "va", 3, NULL, NULL, &ra), 0);
	assert_int_equal(T->remove(c->p, ra.manifest), 0);
	assert_int_equal(tape_mem_corrupt(c->be, rb.manifest, refs_at - 5), 0);
	tape_mem_set_mtime_all(c->be, 1000);
	packs_before = count_objects(c, "packs/");
	assert_int_equal(T->gc(c->p, 0, &st), 0);
	assert_int_equal(st.manifests_unreadable, 1);
	assert_int_equal(st.packs_deleted + st.packs_repacked, 0);
	assert_int_equal(count_objects(c, "packs/"), packs_before);
	vol_free(&a);
	vol_free(&b);
}

static void test_gc_repack(void **state)
{
	struct ctx *c = *state;
	struct vol a, b;
	struct tier_upload_res ra, rb;
	struct tier_gc_stats st;
	char err[128];
	/* one big pack per upload */
	T->pool_close(c->p);
	c->be = tape_backend_mem_new();
	assert_int_equal(tape_pool_open_backend(c->be, "pack_mb=4 threads=2", &c->p, err,
						sizeof(err)),
			 0);
	vol_init(&a, 64 * GRAIN);
	vol_init(&b, 64 * GRAIN);
	fill_random(a.data, a.size);
	memcpy(b.data, a.data, a.size);
	fill_random(b.data, 48 * GRAIN); /* 16 of a's 64 blocks stay live */
	assert_int_equal(upload(c, &a, "va", 1, NULL, NULL, &ra), 0);
	assert_int_equal(upload(c, &b, "vb", 1, NULL, NULL, &rb), 0);
	assert_int_equal(count_objects(c, "packs/"), 2);
	assert_int_equal(T->remove(c->p, ra.manifest), 0);
	tape_mem_set_mtime_all(c->be, 1000);
	struct tape_mem_stats m0, m1;
	tape_mem_stats_get(c->be, &m0);
	assert_int_equal(T->gc(c->p, 0, &st), 0);
	tape_mem_stats_get(c->be, &m1);
	assert_int_equal(st.packs_repacked, 1);
	assert_int_equal(st.blocks_freed, 48);
	/* the 16 live blocks (back to back) come in one ranged GET, not 16;
	 * the rest: b's manifest (twice: mark, rewrite) */
	assert_true(m1.gets - m0.gets <= 3);
	assert_true(st.requests > 0 && st.requests < 20);
	assert_int_equal(count_objects(c, "packs/"), 2); /* b's pack + the repacked one */
	check_image(c, rb.manifest, &b);
	/* the rewritten manifest still dedups new uploads */
	struct tier_upload_res r2;
	assert_int_equal(upload(c, &b, "vb", 2, NULL, NULL, &r2), 0);
	assert_int_equal(r2.blocks_new, 0);
	vol_free(&a);
	vol_free(&b);
}

struct pack_keys {
	char k[8][256];
	int n;
};

static int pack_keys_cb(void *arg, const struct tape_obj_info *oi)
{
	struct pack_keys *ks = arg;
	if (ks->n < 8)
		strcpy(ks->k[ks->n++], oi->key);
	return 0;
}

static void test_corrupt_block_eio(void **state)
{
	struct ctx *c = *state;
	struct vol v;
	struct tier_upload_res r;
	vol_init(&v, 32 * GRAIN);
	fill_random(v.data, v.size);
	assert_int_equal(upload(c, &v, "vc", 1, NULL, NULL, &r), 0);
	/* corrupt the first block of every pack */
	struct pack_keys ks = {.n = 0};
	assert_int_equal(c->be->ops->list(c->be, "packs/", pack_keys_cb, &ks), 0);
	assert_true(ks.n >= 1);
	for (int i = 0; i < ks.n; i++)
		assert_int_equal(tape_mem_corrupt(c->be, ks.k[i], TAPE_PACK_DATA_OFF + 100), 0);

	struct tier_image *im;
	uint8_t *buf = malloc(v.size);
	assert_int_equal(T->image_open(c->p, r.manifest, NULL, &im), 0);
	int eio = 0;
	for (uint64_t g = 0; g < 32; g++) {
		ssize_t n = T->image_read(im, buf, GRAIN, g * GRAIN);
		if (n < 0) {
			assert_int_equal(n, -EIO);
			eio++;
		} else {
			assert_int_equal(n, GRAIN);
			assert_memory_equal(buf, v.data + g * GRAIN, GRAIN); /* never wrong bytes */
		}
	}
	assert_int_equal(eio, ks.n);
	/* the zero-copy path refuses the same blocks without calling back */
	struct gather gt = {.buf = malloc(GRAIN)};
	eio = 0;
	for (uint64_t g = 0; g < 32; g++) {
		gt.calls = 0;
		int rc = T->image_read_iov(im, GRAIN, g * GRAIN, gather_cb, &gt);
		if (rc < 0) {
			assert_int_equal(rc, -EIO);
			assert_int_equal(gt.calls, 0);
			eio++;
		} else {
			assert_int_equal(gt.len, GRAIN);
			assert_memory_equal(gt.buf, v.data + g * GRAIN, GRAIN);
		}
	}
	assert_int_equal(eio, ks.n);
	free(gt.buf);
	/* the failure is not cached as data: still EIO on a second try */
	ssize_t n = T->image_read(im, buf, v.size, 0);
	assert_true(n == -EIO || (n >= 0 && (size_t)n < v.size));
	uint64_t bad = 0;
	assert_int_equal(T->image_verify(im, &bad), 0);
	assert_int_equal(bad, ks.n);
	T->image_close(im);
	free(buf);
	vol_free(&v);
}

/* Bytes the backend served while an image read grains g[0..n) one by one,
 * prefetching each first or not; counted after close (which lets queued
 * fetches finish). */
static uint64_t bytes_for_reads(struct ctx *c, const char *manifest, const struct vol *v,
				const uint64_t *g, int n, bool prefetch)
{
	struct tape_mem_stats st0, st1;
	struct tier_image *im;
	uint8_t buf[GRAIN];

	assert_int_equal(T->image_open(c->p, manifest, NULL, &im), 0);
	tape_mem_stats_get(c->be, &st0);
	for (int i = 0; i < n; i++) {
		if (prefetch)
			assert_int_equal(T->image_prefetch(im, g[i] * GRAIN, GRAIN), 0);
		assert_int_equal(T->image_read(im, buf, GRAIN, g[i] * GRAIN), GRAIN);
		assert_memory_equal(buf, v->data + g[i] * GRAIN, GRAIN);
	}
	T->image_close(im);
	tape_mem_stats_get(c->be, &st1);
	return st1.bytes_got - st0.bytes_got;
}

/* A reader that says what it needs (a restore skipping matching grains)
 * gets those blocks and not the read-ahead's guess around them. */
static void test_prefetch_turns_readahead_off(void **state)
{
	struct ctx *c = *state;
	struct vol v;
	struct tier_upload_res r;
	const uint64_t g[] = {10, 60, 110, 160};

	vol_init(&v, NR * GRAIN);
	fill_random(v.data, v.size);
	assert_int_equal(upload(c, &v, "vp", 1, NULL, NULL, &r), 0);
	uint64_t guessed = bytes_for_reads(c, r.manifest, &v, g, 4, false);
	uint64_t told = bytes_for_reads(c, r.manifest, &v, g, 4, true);
	/* 4 blocks plus at most one pack index each (64 entries of 48 bytes) */
	assert_true(told <= 4 * (GRAIN + 64 * 48 + 512));
	assert_true(told * 8 < guessed); /* read-ahead fetched the gaps too */
	vol_free(&v);
}

/* Several workers upload at once, yet each pack holds its blocks in grain
 * order, so a sequential read of the image costs a few GETs per pack, not
 * one per block (blocks appended one by one by several workers would lie
 * interleaved). */
static void test_sequential_read_gets_per_pack(void **state)
{
	struct ctx *c = *state;
	struct vol v;
	struct tier_upload_res r;
	struct tape_mem_stats st0, st1;
	struct tier_image *im;
	uint8_t buf[16 * GRAIN];

	vol_init(&v, NR * GRAIN);
	fill_random(v.data, v.size);
	assert_int_equal(upload(c, &v, "vs", 1, NULL, NULL, &r), 0);
	int packs = count_objects(c, "packs/");
	assert_int_equal(packs, NR * GRAIN / (256 * 1024)); /* pack_kb=256, no dedup */
	assert_int_equal(T->image_open(c->p, r.manifest, NULL, &im), 0);
	tape_mem_stats_get(c->be, &st0);
	for (uint64_t off = 0; off < v.size; off += sizeof(buf)) {
		assert_int_equal(T->image_read(im, buf, sizeof(buf), off), sizeof(buf));
		assert_memory_equal(buf, v.data + off, sizeof(buf));
	}
	T->image_close(im);
	tape_mem_stats_get(c->be, &st1);
	/* per pack: its index (HEAD + GET) and its blocks in one or two runs */
	assert_true(st1.gets - st0.gets <= 3u * (unsigned)packs);
	assert_true(st1.bytes_got - st0.bytes_got < v.size + v.size / 8);
	vol_free(&v);
}

/* Read-ahead asks for whole aligned windows: with packs of one claim each
 * (pack_kb=1024, 256 grains) and a window as large, a sequential reader's
 * blocks come in one GET per pack, not in pieces cut wherever the window
 * happened to end. */
static void test_readahead_gets_whole_claims(void **state)
{
	(void)state;
	struct tape_backend *be = tape_backend_mem_new();
	struct ctx c = {.be = be};
	char err[128];
	struct vol v;
	struct tier_upload_res r;
	struct tape_mem_stats st0, st1;
	struct tier_image *im;
	uint8_t buf[16 * GRAIN];
	const unsigned packs = 8;

	assert_int_equal(tape_pool_open_backend(be, "pack_kb=1024 threads=3 cache_mb=4 readahead_mb=1",
						&c.p, err, sizeof(err)),
			 0);
	vol_init(&v, packs * (1u << 20));
	fill_random(v.data, v.size);
	assert_int_equal(upload(&c, &v, "vr", 1, NULL, NULL, &r), 0);
	assert_int_equal(count_objects(&c, "packs/"), (int)packs);
	assert_int_equal(T->image_open(c.p, r.manifest, NULL, &im), 0);
	tape_mem_stats_get(be, &st0);
	for (uint64_t off = 0; off < v.size; off += sizeof(buf)) {
		assert_int_equal(T->image_read(im, buf, sizeof(buf), off), sizeof(buf));
		assert_memory_equal(buf, v.data + off, sizeof(buf));
	}
	T->image_close(im);
	tape_mem_stats_get(be, &st1);
	/* one per pack, and the first two reads' own (read-ahead starts with
	 * the second sequential read); with windows cut where the reader was,
	 * 23 */
	assert_true(st1.gets - st0.gets <= packs + 2);
	T->pool_close(c.p);
	vol_free(&v);
}

static void test_faults_and_cancel(void **state)
{
	struct ctx *c = *state;
	struct vol v;
	struct tier_upload_res r;
	vol_init(&v, NR * GRAIN);
	fill_random(v.data, v.size);
	/* a failing pack PUT (ops: list, then puts) fails the upload */
	for (uint64_t k = 1; k <= 4; k++) {
		tape_mem_fail_op(c->be, k, -EIO);
		assert_int_equal(upload(c, &v, "vf", 1, NULL, NULL, &r), -EIO);
		tape_mem_fail_op(c->be, 0, 0);
		assert_int_equal(count_objects(c, "manifests/"), 0);
	}
	/* the source failing */
	v.fail_grain = 100;
	assert_int_equal(upload(c, &v, "vf", 1, NULL, NULL, &r), -EIO);
	v.fail_grain = -1;
	assert_int_equal(count_objects(c, "manifests/"), 0);
	/* cancel */
	atomic_int cancel = 1;
	char err[128];
	struct tier_upload_req req = {.volume = "vf", .version = 1, .size_bytes = v.size,
				      .grain_bytes = GRAIN, .src = {.read_grain = vol_read, .arg = &v},
				      .cancel = &cancel};
	assert_int_equal(T->upload(c->p, &req, &r, err, sizeof(err)), -ECANCELED);
	/* then it works, and only blocks the pool lacks are uploaded */
	assert_int_equal(upload(c, &v, "vf", 1, NULL, NULL, &r), 0);
	assert_true(r.blocks_new <= NR);
	check_image(c, r.manifest, &v);
	/* invalid requests */
	assert_int_equal(upload(c, &v, "../x", 1, NULL, NULL, &r), -EINVAL);
	assert_int_equal(T->remove(c->p, "packs/x.pack"), -EINVAL);
	vol_free(&v);
}

/* Whether any page of fd in [off, off + len) is in the page cache, by
 * cachestat(2) (Linux 6.5), which looks without touching: a RWF_NOWAIT read
 * starts read-ahead of what it misses (and then sometimes finds it), mincore
 * needs a mapping, whose start valgrind reads. Where the kernel has no
 * cachestat, false (the bytes are still checked). */
#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
static bool page_cached(int fd, uint64_t off, uint64_t len)
{
	struct {
		uint64_t off, len;
	} range = {off, len};
	struct {
		uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
	} cs;
	if (syscall(__NR_cachestat, fd, &range, &cs, 0) != 0) {
		assert_true(errno == ENOSYS);
		return false;
	}
	return cs.nr_cache > 0;
}

/* A pack in a file pool: its blocks start page aligned after zeros, and
 * getv returns the file's bytes whether the read is aligned (direct I/O)
 * or not (buffered), including a read that runs past the end. */
static void check_file_pack_reads(struct ctx *c, const char *dir)
{
	struct pack_keys ks = {.n = 0};
	assert_int_equal(c->be->ops->list(c->be, "packs/", pack_keys_cb, &ks), 0);
	assert_true(ks.n >= 1);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, ks.k[0]);
	/* read around the page cache where possible: pages this read brought in
	 * could sit in another CPU's LRU batch, where POSIX_FADV_DONTNEED below
	 * cannot drop them (packs are written with O_DIRECT, so none are cached) */
	static uint8_t file[256 * 1024] __attribute__((aligned(4096)));
	int rfd = open(path, O_RDONLY | O_DIRECT);
	if (rfd < 0)
		rfd = open(path, O_RDONLY);
	assert_true(rfd >= 0);
	ssize_t got = pread(rfd, file, sizeof(file), 0);
	assert_true(got > 0);
	close(rfd);
	size_t size = (size_t)got;
	assert_true(size > TAPE_PACK_DATA_OFF + 2 * GRAIN);
	for (size_t i = TAPE_PACK_HEADER_BYTES; i < TAPE_PACK_DATA_OFF; i++)
		assert_int_equal(file[i], 0);
	struct tape_pack_entry *e;
	uint32_t nr;
	assert_int_equal(pool_pack_index_fetch(c->p, ks.k[0], size, &e, &nr), 0);
	assert_true(nr >= 2);
	assert_int_equal(e[0].off, TAPE_PACK_DATA_OFF);
	free(e);

	uint8_t *al = aligned_alloc(4096, 2 * GRAIN), *un = malloc(2 * GRAIN + 1);
	assert_non_null(al);
	assert_non_null(un);
	struct iovec aiov[2] = {{al, GRAIN}, {al + GRAIN, GRAIN}};
	/* out of the page cache first: an aligned read goes around it (direct
	 * I/O) and leaves it so; a buffered read would bring the pages in */
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	assert_int_equal(tape_getv(c->be, ks.k[0], TAPE_PACK_DATA_OFF, aiov, 2, NULL, NULL),
			 2 * GRAIN);
	assert_memory_equal(al, file + TAPE_PACK_DATA_OFF, 2 * GRAIN);
	int dfd = open(path, O_RDONLY | O_DIRECT); /* not on tmpfs: there all is cached */
	if (dfd >= 0) {
		close(dfd);
		assert_false(page_cached(fd, TAPE_PACK_DATA_OFF, 2 * GRAIN));
	}
	close(fd);
	struct iovec uiov[2] = {{un + 1, 100}, {un + 101, GRAIN}};
	assert_int_equal(tape_getv(c->be, ks.k[0], 7, uiov, 2, NULL, NULL), 100 + GRAIN);
	assert_memory_equal(un + 1, file + 7, 100 + GRAIN);
	/* aligned, running past the end: what is there */
	uint64_t tail = (size - GRAIN / 2) / 4096 * 4096;
	struct iovec tiov[1] = {{al, 2 * GRAIN}};
	assert_int_equal(tape_getv(c->be, ks.k[0], tail, tiov, 1, NULL, NULL),
			 (ssize_t)(size - tail));
	assert_memory_equal(al, file + tail, size - tail);
	free(al);
	free(un);
}

/* file_put: a page-aligned buffer goes around the page cache (its whole
 * pages direct, the partial last page buffered), an unaligned one through
 * it; both files hold exactly the bytes. */
static void check_file_puts(struct ctx *c, const char *dir)
{
	size_t len = 3 * 4096 + 100;
	uint8_t *al = iomem_alloc(len), *un = malloc(len + 1), back[3 * 4096 + 100];
	assert_non_null(al);
	assert_non_null(un);
	fill_random(al, len);
	memcpy(un + 1, al, len);
	un[1] ^= 0xff;
	assert_int_equal(c->be->ops->put(c->be, "t/aligned", al, len), 0);
	assert_int_equal(c->be->ops->put(c->be, "t/unaligned", un + 1, len), 0);
	char path[512];
	for (int k = 0; k < 2; k++) {
		snprintf(path, sizeof(path), "%s/t/%s", dir, k ? "unaligned" : "aligned");
		int fd = open(path, O_RDONLY);
		assert_true(fd >= 0);
		if (k == 0) {
			int dfd = open(path, O_RDONLY | O_DIRECT); /* tmpfs caches all */
			if (dfd >= 0) {
				close(dfd);
				assert_false(page_cached(fd, 0, 3 * 4096));
			}
		}
		struct stat st;
		assert_int_equal(fstat(fd, &st), 0);
		assert_int_equal(st.st_size, len);
		assert_int_equal(pread(fd, back, len, 0), (ssize_t)len);
		assert_memory_equal(back, k ? un + 1 : al, len);
		close(fd);
	}
	iomem_free(al, len);
	free(un);
}

/* A file system that opens O_DIRECT but refuses the I/O (the fault shim's
 * ACMFS_FAULT_NODIRECT): aligned puts and reads fall back to buffered I/O
 * and still store and return exactly the bytes. */
static void check_file_nodirect(struct ctx *c, const char *dir)
{
	size_t len = 5 * 4096 + 7;
	uint8_t *al = iomem_alloc(len), *back = iomem_alloc(len);
	assert_non_null(al);
	assert_non_null(back);
	fill_random(al, len);
	assert_int_equal(setenv("ACMFS_FAULT_NODIRECT", "1", 1), 0);
	fault_init_from_env();
	assert_int_equal(c->be->ops->put(c->be, "t/nodirect", al, len), 0);
	struct iovec iov[2] = {{back, 4096}, {back + 4096, 4 * 4096}};
	assert_int_equal(tape_getv(c->be, "t/nodirect", 0, iov, 2, NULL, NULL), 5 * 4096);
	assert_memory_equal(back, al, 5 * 4096);
	unsetenv("ACMFS_FAULT_NODIRECT");
	fault_init_from_env();
	char path[512];
	snprintf(path, sizeof(path), "%s/t/nodirect", dir);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(back, 1, len, f), len);
	fclose(f);
	assert_memory_equal(back, al, len);
	iomem_free(al, len);
	iomem_free(back, len);
}

static void test_file_backend(void **state)
{
	(void)state;
	char dir[] = "/tmp/tape-unit-XXXXXX", url[64], err[128];
	assert_non_null(mkdtemp(dir));
	snprintf(url, sizeof(url), "file://%s", dir);
	struct ctx c;
	assert_int_equal(T->pool_open("t", url, "pack_kb=128", &c.p, err, sizeof(err)), 0);
	c.be = tape_pool_backend(c.p);
	struct vol v;
	struct tier_upload_res r;
	vol_init(&v, 100 * GRAIN + 7);
	fill_random(v.data, v.size);
	assert_int_equal(upload(&c, &v, "vfile", 1, NULL, NULL, &r), 0);
	check_image(&c, r.manifest, &v);
	check_file_pack_reads(&c, dir);
	check_file_puts(&c, dir);
	check_file_nodirect(&c, dir);
	struct tier_gc_stats st;
	assert_int_equal(T->remove(c.p, r.manifest), 0);
	assert_int_equal(T->gc(c.p, 0, &st), 0);
	assert_int_equal(count_objects(&c, "packs/"), 0);
	T->pool_close(c.p);
	assert_int_equal(T->pool_open("t", "ftp://x", "", &c.p, err, sizeof(err)), -EINVAL);
	assert_int_equal(T->pool_open("t", "file://relative", "", &c.p, err, sizeof(err)), -EINVAL);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
	vol_free(&v);
}

/* ---- two hosts over one store: the bucket lock protocol (lock.h) ---- */

static struct tier_pool *open_host(struct tape_backend *be, const char *opts, const char *who)
{
	struct tier_pool *p;
	char err[128];
	assert_int_equal(tape_pool_open_backend(tape_backend_mem_share(be), opts, &p, err,
						sizeof(err)),
			 0);
	T->pool_identity(p, who);
	return p;
}

/* a volume whose read of grain `at` first runs `hook` (once): another host
 * acting in the middle of an upload, after its listing, before its dedup */
struct racing_vol {
	struct vol v;
	uint64_t at;
	atomic_int fired;
	void (*hook)(struct racing_vol *rv);
	struct tier_pool *other;
	struct tape_backend *be;
	int gc_rc;
	struct tier_gc_stats st;
	int64_t advance; /* store clock moved on before the other's gc */
};

static int racing_read(void *arg, uint64_t g, void *buf)
{
	struct racing_vol *rv = arg;
	if (g == rv->at && !atomic_exchange(&rv->fired, 1))
		rv->hook(rv);
	return vol_read(&rv->v, g, buf);
}

static void other_gc(struct racing_vol *rv)
{
	if (rv->advance)
		tape_mem_clock_advance(rv->be, rv->advance);
	rv->gc_rc = T->gc(rv->other, 0, &rv->st);
}

static int upload_from(struct tier_pool *p, const char *volume, uint64_t version,
		       struct tier_src src, uint64_t size, struct tier_upload_res *res, char *err,
		       size_t errlen)
{
	struct tier_upload_req req = {
		.volume = volume,
		.version = version,
		.size_bytes = size,
		.grain_bytes = GRAIN,
		.date = 1700000000,
		.host = "00:test",
		.src = src,
	};
	return T->upload(p, &req, res, err, errlen);
}

static int count_in(struct tape_backend *be, const char *prefix)
{
	struct ctx c = {.be = be};
	return count_objects(&c, prefix);
}

/* host B deleted its history and backs the same data up again, deduplicating
 * into packs that are garbage right now; host A's gc runs meanwhile. It must
 * be refused: deleting those packs would leave B a "succeeded" history that
 * cannot be read (the data loss this protocol exists for). */
static void test_hosts_gc_refused_during_upload(void **state)
{
	(void)state;
	struct tape_backend *be = tape_backend_mem_new();
	struct tier_pool *a = open_host(be, "pack_kb=256 threads=2", "aaaa:hostA");
	struct tier_pool *b = open_host(be, "pack_kb=256 threads=2", "bbbb:hostB");
	be->ops->close(be); /* the pools hold it now */
	struct racing_vol rv = {.at = 0, .hook = other_gc, .other = a, .be = be};
	struct tier_upload_res r1, r2;
	char err[256];
	vol_init(&rv.v, NR * GRAIN);
	fill_random(rv.v.data, rv.v.size);
	struct tier_src plain = {.read_grain = vol_read, .arg = &rv.v}, racing = {.read_grain = racing_read, .arg = &rv};
	assert_int_equal(upload_from(b, "vb", 1, plain, rv.v.size, &r1, err, sizeof(err)), 0);
	assert_int_equal(T->remove(b, r1.manifest), 0);

	assert_int_equal(upload_from(b, "vb", 2, racing, rv.v.size, &r2, err, sizeof(err)), 0);
	assert_int_equal(rv.gc_rc, -EBUSY);
	assert_non_null(strstr(rv.st.busy, "hostB"));
	assert_int_equal(r2.blocks_new, 0); /* it did dedup into the garbage */
	struct ctx cb = {.be = be, .p = b}, ca = {.be = be, .p = a};
	check_image(&cb, r2.manifest, &rv.v);
	/* once B is done, A collects; what B's history needs stays */
	struct tier_gc_stats st;
	assert_int_equal(T->gc(a, 0, &st), 0);
	assert_int_equal(st.locks_reclaimed, 0);
	check_image(&ca, r2.manifest, &rv.v);
	check_image(&cb, r2.manifest, &rv.v);
	assert_int_equal(count_in(be, "locks/"), 0);
	T->pool_close(a);
	T->pool_close(b);
	vol_free(&rv.v);
}

/* the same, but B's lock is stale when A looks (B stalled longer than the
 * stale limit): A may collect, and B must notice at its commit point and
 * fail rather than store a manifest over deleted packs */
static void test_hosts_lapsed_lock_fails_upload(void **state)
{
	(void)state;
	struct tape_backend *be = tape_backend_mem_new();
	struct tier_pool *a = open_host(be, "pack_kb=256 threads=2 lock_stale=10", "aaaa:hostA");
	struct tier_pool *b = open_host(be, "pack_kb=256 threads=2 lock_stale=1000", "bbbb:hostB");
	be->ops->close(be); /* the pools hold it now */
	struct racing_vol rv = {.at = 0, .hook = other_gc, .other = a, .be = be, .advance = 600};
	struct tier_upload_res r1, r2, r3;
	char err[256] = "";
	vol_init(&rv.v, NR * GRAIN);
	fill_random(rv.v.data, rv.v.size);
	struct tier_src plain = {.read_grain = vol_read, .arg = &rv.v}, racing = {.read_grain = racing_read, .arg = &rv};
	assert_int_equal(upload_from(b, "vb", 1, plain, rv.v.size, &r1, err, sizeof(err)), 0);
	assert_int_equal(T->remove(b, r1.manifest), 0);

	assert_int_equal(upload_from(b, "vb", 2, racing, rv.v.size, &r2, err, sizeof(err)), -EIO);
	assert_int_equal(rv.gc_rc, 0);
	assert_int_equal(rv.st.locks_reclaimed, 1);
	assert_true(rv.st.packs_deleted > 0);
	assert_non_null(strstr(err, "deleted by a gc"));
	assert_int_equal(count_in(be, "manifests/"), 0); /* nothing stored */
	/* the next try sees the pool as it is and stores everything anew */
	assert_int_equal(upload_from(b, "vb", 3, plain, rv.v.size, &r3, err, sizeof(err)), 0);
	assert_int_equal(r3.blocks_new, NR);
	struct ctx ca = {.be = be, .p = a};
	check_image(&ca, r3.manifest, &rv.v);
	T->pool_close(a);
	T->pool_close(b);
	vol_free(&rv.v);
}

struct bg_upload {
	struct tier_pool *p;
	struct vol *v;
	int rc;
	char err[256];
	struct tier_upload_res res;
};

static void *bg_upload_main(void *arg)
{
	struct bg_upload *u = arg;
	struct tier_src src = {.read_grain = vol_read, .arg = u->v};
	u->rc = upload_from(u->p, "vw", 1, src, u->v->size, &u->res, u->err, sizeof(u->err));
	return NULL;
}

/* while A's gc holds the pool, B's uploads wait (lock_wait=) or fail, and
 * B's reads and deletes are refused at once; stale locks of crashed hosts
 * are removed by the next gc, fresh ones stop it */
static void test_hosts_exclusive_and_stale(void **state)
{
	(void)state;
	struct tape_backend *be = tape_backend_mem_new();
	struct tier_pool *a = open_host(be, "pack_kb=256 lock_stale=10", "aaaa:hostA");
	struct tier_pool *b = open_host(be, "pack_kb=256 lock_wait=0", "bbbb:hostB");
	struct tier_pool *w = open_host(be, "pack_kb=256 lock_wait=20", "cccc:hostC");
	be->ops->close(be); /* the pools hold it now */
	struct vol v;
	struct tier_upload_res r;
	struct tier_image *im;
	char err[256];
	int64_t now;
	unsigned reclaimed;
	vol_init(&v, 64 * GRAIN);
	fill_random(v.data, v.size);
	struct tier_src src = {.read_grain = vol_read, .arg = &v};
	assert_int_equal(upload_from(b, "vb", 1, src, v.size, &r, err, sizeof(err)), 0);
	char first[256];
	snprintf(first, sizeof(first), "%s", r.manifest);

	assert_int_equal(pool_lock_exclusive(a, &now, &reclaimed, err, sizeof(err)), 0);
	assert_int_equal(upload_from(b, "vb", 2, src, v.size, &r, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "hostA"));
	assert_int_equal(T->image_open(b, first, NULL, &im), -EBUSY);
	assert_int_equal(T->remove(b, first), -EBUSY);
	/* a second collector is refused too: two repacks never undo each other */
	struct tier_gc_stats st2;
	assert_int_equal(T->gc(w, 0, &st2), -EBUSY);
	assert_non_null(strstr(st2.busy, "hostA"));
	assert_non_null(strstr(st2.busy, "(gc"));
	/* another host waits, and goes on once the gc is over */
	struct bg_upload bu = {.p = w, .v = &v};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, bg_upload_main, &bu), 0);
	usleep(1500 * 1000);
	assert_int_equal(count_in(be, "manifests/vw/"), 0);
	pool_unlock_exclusive(a);
	pthread_join(th, NULL);
	assert_int_equal(bu.rc, 0);
	assert_int_equal(count_in(be, "manifests/vw/"), 1);

	/* a crashed host's lock: fresh, it stops gc; stale, gc removes it */
	const char *dead = "locks/0123456789abcdef0123456789abcdef-s.lock";
	assert_int_equal(be->ops->put(be, dead, "acmfs-lock 1\nkind=shared\nhost=dd:hostD\n", 38), 0);
	struct tier_gc_stats st;
	assert_int_equal(T->gc(a, 0, &st), -EBUSY);
	assert_non_null(strstr(st.busy, "hostD"));
	tape_mem_clock_advance(be, 11);
	assert_int_equal(T->gc(a, 0, &st), 0);
	assert_int_equal(st.locks_reclaimed, 1);
	assert_int_equal(count_in(be, "locks/"), 0);
	T->pool_close(a);
	T->pool_close(b);
	T->pool_close(w);
	vol_free(&v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_roundtrip_and_holes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_incremental, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_gc_repack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_block_eio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prefetch_turns_readahead_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sequential_read_gets_per_pack, setup, teardown),
		/* the same in a format 1 pool and in an encrypted one */
		cmocka_unit_test_setup_teardown(test_roundtrip_and_holes, setup_v1, teardown),
		cmocka_unit_test_setup_teardown(test_incremental, setup_v1, teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup_v1, teardown),
		cmocka_unit_test_setup_teardown(test_gc_repack, setup_v1, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_block_eio, setup_v1, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip_and_holes, setup_encrypted, teardown),
		cmocka_unit_test_setup_teardown(test_incremental, setup_encrypted, teardown),
		cmocka_unit_test_setup_teardown(test_gc, setup_encrypted, teardown),
		cmocka_unit_test_setup_teardown(test_gc_repack, setup_encrypted, teardown),
		cmocka_unit_test_setup_teardown(test_corrupt_block_eio, setup_encrypted, teardown),
		cmocka_unit_test_setup_teardown(test_prefetch_turns_readahead_off, setup_encrypted,
						teardown),
		cmocka_unit_test(test_readahead_gets_whole_claims),
		cmocka_unit_test_setup_teardown(test_faults_and_cancel, setup, teardown),
		cmocka_unit_test(test_file_backend),
		cmocka_unit_test(test_hosts_gc_refused_during_upload),
		cmocka_unit_test(test_hosts_lapsed_lock_fails_upload),
		cmocka_unit_test(test_hosts_exclusive_and_stale),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	if (keyfile[sizeof(keyfile) - 2] != 'X')
		unlink(keyfile);
	return rc;
}
