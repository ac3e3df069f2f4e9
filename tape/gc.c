/*
 * gc.c — reclaim blocks no manifest references.
 *
 * Mark: refresh the pack cache, then read every manifest (any failure to read
 * one aborts the collection: liveness unknown means nothing may go) and mark
 * each referenced (pack, offset). Sweep, for packs older than the grace
 * period and not pinned by a running upload or open image in this process:
 *   - no live block → delete the pack;
 *   - live bytes below half of the block bytes → repack: copy the live
 *     blocks (each re-verified) into new packs, store them, rewrite every
 *     manifest that points into the old pack (same key, atomic put), then
 *     delete the old pack.
 * Chosen packs are DOOMED under pool->lock first, so uploads stop taking new
 * references to them and openers of a manifest that still names one retry.
 *
 * Crash safety: new packs are durable before a manifest is rewritten, and a
 * manifest is rewritten before the old pack is deleted; a crash at any point
 * leaves every manifest readable (the next gc finishes the job).
 *
 * Other hosts: the collection holds the pool's exclusive bucket lock
 * (lock.h) from before its listings to after its last delete, and is refused
 * (-EBUSY) while any other host holds a fresh lock: no upload there can take
 * a reference the mark did not see, no reader there reads a pack it deletes.
 * Stale locks (crashed hosts) are removed first. Ages are store time: the
 * grace period is measured against the mtime of our own freshly written
 * lock, not the local clock. If the lock may have lapsed before the sweep
 * (refreshes stale/2 apart), nothing is deleted.
 *
 * An unreadable manifest (bad checksum, unknown version) is reported and
 * kept; the packs its pack table names are kept whole; if even that table
 * cannot be read, nothing is deleted. It never counts as "references
 * nothing".
 */
#include "../core/fault.h"
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#define GC_RUN_GAP (1u << 20)  /* dead bytes a repack GET reads to save a request */
#define GC_RUN_MAX (16u << 20) /* bytes of one repack GET */

struct mf_info {
	char key[TAPE_KEY_MAX];
	uint8_t *packs; /* per pool pack: 1 if referenced (sized nr_pool) */
};

struct keyvec {
	struct tape_obj_info *v;
	size_t n, cap;
};

static int keyvec_add(void *arg, const struct tape_obj_info *oi)
{
	struct keyvec *kv = arg;
	size_t kl = strlen(oi->key);
	if (kl < 3 || strcmp(oi->key + kl - 3, ".mf") != 0)
		return 0;
	if (kv->n == kv->cap) {
		size_t cap = kv->cap ? kv->cap * 2 : 32;
		struct tape_obj_info *n = realloc(kv->v, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		kv->v = n;
		kv->cap = cap;
	}
	kv->v[kv->n++] = *oi;
	return 0;
}

/* where a live block of a repacked pack went */
struct move {
	uint32_t old_pack; /* pool pack number */
	uint64_t old_off;
	uint32_t new_pack;
	uint64_t new_off;
};

static int cmp_move(const void *a, const void *b)
{
	const struct move *x = a, *y = b;
	if (x->old_pack != y->old_pack)
		return x->old_pack < y->old_pack ? -1 : 1;
	return x->old_off < y->old_off ? -1 : x->old_off > y->old_off;
}

struct gc {
	struct tier_pool *p;
	uint32_t nr_pool;	 /* packs considered (snapshot) */
	uint8_t **live;		 /* per pool pack, per entry */
	struct mf_info *mfs;
	size_t nr_mfs;
	uint8_t *doom;		 /* per pool pack: 1 delete, 2 repack */
	struct move *moves;
	size_t nr_moves, cap_moves;
	struct tier_gc_stats *st;
	int64_t now;		 /* store time, from our lock */
	bool keep_all;		 /* a manifest's pack table was unreadable: delete nothing */
};

static uint32_t le32_at(const uint8_t *b)
{
	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

/* A manifest that does not decode: keep every pack its pack table names (a
 * v1 header and table read on their own, bounded by the object's size). */
static void gc_salvage(struct gc *gc, const struct tape_obj_info *oi)
{
	struct tier_pool *p = gc->p;
	uint8_t hdr[TAPE_MANIFEST_FIXED2], *tab = NULL;
	size_t want = oi->size_bytes < sizeof(hdr) ? (size_t)oi->size_bytes : sizeof(hdr);
	ssize_t n = pool_get(p, oi->key, 0, hdr, want);
	uint32_t H, P, V;

	gc->st->manifests_unreadable++;
	if (n != (ssize_t)want || n < 72 || memcmp(hdr, "ACMFSMAN", 8))
		goto keep_all;
	V = le32_at(hdr + 8);
	/* a version 1 or plain version 2 table can be read on its own; an
	 * encrypted one cannot */
	if (V != p->codec.version || (V == 2 && (n < TAPE_MANIFEST_FIXED2 || (hdr[70] & 1))))
		goto keep_all;
	uint32_t fixed = V == 2 ? TAPE_MANIFEST_FIXED2 : TAPE_MANIFEST_FIXED;
	H = le32_at(hdr + 12);
	P = le32_at(hdr + 28);
	uint64_t G = (uint64_t)le32_at(hdr + 32) | (uint64_t)le32_at(hdr + 36) << 32;
	/* the counts must account for the object's length exactly, or a flipped
	 * count could hide packs */
	if (H < fixed || H > fixed + 3 * 65535 || P > (1u << 24) || G > (oi->size_bytes / 24) ||
	    (uint64_t)H + 16ull * P + 24ull * G + 32 != oi->size_bytes)
		goto keep_all;
	tab = malloc((size_t)P * 16 + 1);
	if (!tab || pool_get(p, oi->key, H, tab, (size_t)P * 16) != (ssize_t)P * 16)
		goto keep_all;
	/* and every id must be a pack we know: a flipped id names none */
	pthread_mutex_lock(&p->lock);
	for (uint32_t k = 0; k < P; k++) {
		long no = pool_pack_find_locked(p, tab + 16 * k);
		if (no < 0 || (uint32_t)no >= gc->nr_pool || !gc->live[no]) {
			pthread_mutex_unlock(&p->lock);
			goto keep_all;
		}
	}
	for (uint32_t k = 0; k < P; k++) {
		long no = pool_pack_find_locked(p, tab + 16 * k);
		memset(gc->live[no], 1, p->packs[no].nr_ents + 1);
	}
	pthread_mutex_unlock(&p->lock);
	free(tab);
	tape_log(TAPE_LOG_ERR, "gc: %s is unreadable: kept, with the %u packs it names", oi->key,
		 P);
	return;
keep_all:
	free(tab);
	gc->keep_all = true;
	tape_log(TAPE_LOG_ERR, "gc: %s is unreadable and so is its pack table: nothing deleted",
		 oi->key);
}

static int gc_mark(struct gc *gc, struct keyvec *kv)
{
	struct tier_pool *p = gc->p;
	int rc = 0;
	gc->mfs = calloc(kv->n + 1, sizeof(*gc->mfs));
	if (!gc->mfs)
		return -ENOMEM;
	for (size_t i = 0; i < kv->n; i++) {
		struct tape_manifest m;
		struct mf_info *mi = &gc->mfs[gc->nr_mfs];
		rc = pool_manifest_load(p, kv->v[i].key, &m, NULL);
		if (rc == -ENOENT) { /* removed meanwhile */
			rc = 0;
			continue;
		}
		if (rc == -EBADMSG || rc == -EPROTONOSUPPORT) {
			gc_salvage(gc, &kv->v[i]);
			rc = 0;
			continue;
		}
		gc->st->manifests++;
		if (rc) {
			tape_log(TAPE_LOG_ERR, "gc: cannot read %s (%s): nothing collected",
				 kv->v[i].key, strerror(-rc));
			return rc;
		}
		gc->nr_mfs++;
		snprintf(mi->key, sizeof(mi->key), "%s", kv->v[i].key);
		mi->packs = calloc(gc->nr_pool + 1, 1);
		long *map = malloc((m.nr_packs + 1) * sizeof(*map));
		if (!mi->packs || !map) {
			free(map);
			tape_manifest_release(&m);
			return -ENOMEM;
		}
		pthread_mutex_lock(&p->lock);
		for (uint32_t k = 0; k < m.nr_packs; k++) {
			map[k] = pool_pack_find_locked(p, m.packs[k]);
			if (map[k] >= (long)gc->nr_pool)
				map[k] = -1;
			if (map[k] >= 0)
				mi->packs[map[k]] = 1;
		}
		for (uint64_t g = 0; g < m.nr_grains; g++) {
			const struct tape_ref *r = &m.refs[g];
			if (r->pack == TAPE_ZERO_PACK || map[r->pack] < 0)
				continue;
			struct pool_pack *pk = &p->packs[map[r->pack]];
			long e = tape_pack_entry_find(pk->ents, pk->nr_ents, r->off);
			if (e >= 0 && gc->live[map[r->pack]])
				gc->live[map[r->pack]][e] = 1;
		}
		pthread_mutex_unlock(&p->lock);
		free(map);
		tape_manifest_release(&m);
	}
	return 0;
}

/* a pack being assembled by the repacker */
struct outpack {
	uint8_t id[16];
	uint8_t *buf;
	size_t len, cap;
	struct tape_pack_entry *ents;
	uint32_t nr, cap_ents;
};

static int outpack_start(struct outpack *o, const struct tier_pool *p, size_t cap)
{
	if (RAND_bytes(o->id, 16) != 1)
		return -EIO;
	o->cap = cap;
	o->buf = malloc(cap);
	if (!o->buf)
		return -ENOMEM;
	o->len = tape_pack_start(o->buf, o->id, pool_codec(p));
	o->nr = 0;
	return 0;
}

/* Seals and stores o, registers it in the pool and resolves the moves that
 * went into it; frees o->buf. */
static int outpack_store(struct gc *gc, struct outpack *o)
{
	struct tier_pool *p = gc->p;
	size_t ilen = tape_pack_index_bytes(pool_codec(p), o->nr);
	size_t total = o->len + ilen + TAPE_PACK_TRAILER_BYTES;
	char key[64];
	int rc = 0;
	uint8_t *full = realloc(o->buf, total);
	if (!full) {
		rc = -ENOMEM;
		goto out_free;
	}
	o->buf = full;
	long tail = tape_pack_finish(pool_codec(p), o->id, o->ents, o->nr, o->len, o->buf + o->len);
	if (tail < 0)
		rc = (int)tail;
	if (!rc)
		rc = tape_pack_key(o->id, key, sizeof(key));
	if (!rc)
		rc = p->be->ops->put(p->be, key, o->buf, total);
	if (rc)
		goto out_free;
	struct tape_pack_entry *copy = malloc(o->nr * sizeof(*copy));
	if (!copy) {
		rc = -ENOMEM;
		goto out_free;
	}
	memcpy(copy, o->ents, o->nr * sizeof(*copy));
	pthread_mutex_lock(&p->lock);
	long no = pool_pack_add_locked(p, o->id, PACK_STORED);
	if (no >= 0) {
		struct pool_pack *pk = &p->packs[no];
		free(pk->ents);
		pk->ents = copy;
		pk->nr_ents = pk->cap_ents = o->nr;
		pk->indexed = 1;
		pk->size_bytes = total;
		pk->mtime = gc->now;
		pk->gen = p->gen + 1;
		copy = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	free(copy);
	if (no < 0) {
		rc = (int)no;
		goto out_free;
	}
	for (size_t m = 0; m < gc->nr_moves; m++)
		if (gc->moves[m].new_pack == UINT32_MAX)
			gc->moves[m].new_pack = (uint32_t)no;
	gc->st->bytes_freed -= total;
out_free:
	free(o->buf);
	o->buf = NULL;
	return rc;
}

/* Appends one verified live block to the output, storing full packs. */
static int outpack_add(struct gc *gc, struct outpack *o, uint32_t old_pack,
		       const struct tape_pack_entry *pe, const uint8_t *data)
{
	size_t need = TAPE_PACK_DATA_OFF + pe->len;
	int rc;
	if (o->buf && o->nr &&
	    (o->len + pe->len > o->cap ||
	     o->nr >= tape_pack_max_blocks(pool_codec(gc->p), gc->p->pack_bytes, TAPE_GRAIN_MIN))) {
		rc = outpack_store(gc, o);
		if (rc)
			return rc;
	}
	if (!o->buf) {
		rc = outpack_start(o, gc->p, gc->p->pack_bytes > need ? gc->p->pack_bytes : need);
		if (rc)
			return rc;
	}
	if (o->nr == o->cap_ents) {
		uint32_t cap = o->cap_ents ? o->cap_ents * 2 : 256;
		struct tape_pack_entry *ne = realloc(o->ents, cap * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		o->ents = ne;
		o->cap_ents = cap;
	}
	if (gc->nr_moves == gc->cap_moves) {
		size_t cap = gc->cap_moves ? gc->cap_moves * 2 : 256;
		struct move *nm = realloc(gc->moves, cap * sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		gc->moves = nm;
		gc->cap_moves = cap;
	}
	o->ents[o->nr] = *pe;
	o->ents[o->nr].off = o->len;
	o->nr++;
	memcpy(o->buf + o->len, data, pe->len);
	gc->moves[gc->nr_moves++] = (struct move){
		.old_pack = old_pack, .old_off = pe->off, .new_pack = UINT32_MAX, .new_off = o->len};
	o->len += pe->len;
	return 0;
}

/* Copies the live blocks of the repack set into new packs. */
static int gc_copy_live(struct gc *gc)
{
	struct tier_pool *p = gc->p;
	struct outpack o = {0};
	struct tape_coder coder = {0};
	uint8_t *in = NULL;
	int rc = 0;

	for (uint32_t no = 0; no < gc->nr_pool && !rc; no++) {
		if (gc->doom[no] != 2)
			continue;
		char key[64];
		uint8_t id[16];
		pthread_mutex_lock(&p->lock);
		memcpy(id, p->packs[no].id, 16);
		uint32_t pn = p->packs[no].nr_ents;
		struct tape_pack_entry *pe = malloc((pn + 1) * sizeof(*pe));
		if (pe)
			memcpy(pe, p->packs[no].ents, pn * sizeof(*pe));
		pthread_mutex_unlock(&p->lock);
		if (!pe) {
			rc = -ENOMEM;
			break;
		}
		tape_pack_key(id, key, sizeof(key));
		/* live blocks in runs, one ranged GET each: entries are sorted by
		 * offset; a run takes in dead gaps up to GC_RUN_GAP and stops at
		 * GC_RUN_MAX bytes (a request per block made a repack of a pack
		 * of small blocks cost hundreds of requests) */
		for (uint32_t e = 0; e < pn && !rc;) {
			if (!gc->live[no][e]) {
				e++;
				continue;
			}
			uint32_t last = e;
			for (uint32_t k = e + 1; k < pn; k++) {
				if (!gc->live[no][k])
					continue;
				uint64_t end = pe[k].off + pe[k].len;
				if (pe[k].off > pe[last].off + pe[last].len + GC_RUN_GAP ||
				    end - pe[e].off > GC_RUN_MAX)
					break;
				last = k;
			}
			uint64_t base = pe[e].off;
			size_t span = (size_t)(pe[last].off + pe[last].len - base);
			uint8_t *nb = realloc(in, span);
			if (!nb) {
				rc = -ENOMEM;
				break;
			}
			in = nb;
			ssize_t n = pool_get(p, key, base, in, span);
			if (n != (ssize_t)span) {
				tape_log(TAPE_LOG_ERR, "gc: live blocks at %llu+%zu of %s unreadable",
					 (unsigned long long)base, span, key);
				rc = n < 0 ? (int)n : -EIO;
				break;
			}
			for (uint32_t k = e; k <= last && !rc; k++) {
				uint8_t h[32];
				if (!gc->live[no][k])
					continue;
				const uint8_t *blk = in + (pe[k].off - base);
				bool bad;
				if (p->codec.version == 2)
					bad = tape_block_verify(&p->codec, &coder, pe[k].hash,
								pe[k].flags, blk, pe[k].len,
								1u << (pe[k].flags >> TAPE_BLK_RAWSHIFT)) != 0;
				else
					bad = tape_sha256(blk, pe[k].len, h) || memcmp(h, pe[k].hash, 32);
				if (bad) {
					tape_log(TAPE_LOG_ERR, "gc: live block at %llu of %s damaged",
						 (unsigned long long)pe[k].off, key);
					rc = -EIO;
					break;
				}
				rc = outpack_add(gc, &o, no, &pe[k], blk);
			}
			e = last + 1;
		}
		free(pe);
	}
	if (!rc && o.buf && o.nr)
		rc = outpack_store(gc, &o);
	free(o.buf);
	free(o.ents);
	free(in);
	tape_coder_fini(&coder);
	return rc;
}

/* Rewrites one manifest so it points at the moved blocks. */
static int gc_rewrite_manifest(struct gc *gc, const char *key)
{
	struct tier_pool *p = gc->p;
	struct tape_manifest m;
	uint8_t *enc = NULL;
	size_t enclen;
	long *map = NULL;
	uint32_t *newmap = NULL;
	uint8_t(*ids)[16] = NULL;
	int rc = pool_manifest_load(p, key, &m, NULL);
	if (rc)
		return rc == -ENOENT ? 0 : rc;
	map = malloc((m.nr_packs + 1) * sizeof(*map));
	if (!map) {
		rc = -ENOMEM;
		goto out_free;
	}
	pthread_mutex_lock(&p->lock);
	uint32_t nr_pool = p->nr_packs;
	for (uint32_t k = 0; k < m.nr_packs; k++)
		map[k] = pool_pack_find_locked(p, m.packs[k]);
	newmap = malloc((nr_pool + 1) * sizeof(*newmap));
	ids = malloc((nr_pool + 1) * 16);
	if (!newmap || !ids) {
		pthread_mutex_unlock(&p->lock);
		rc = -ENOMEM;
		goto out_free;
	}
	memset(newmap, 0xff, (nr_pool + 1) * sizeof(*newmap));
	uint32_t nr_ids = 0;
	for (uint64_t g = 0; g < m.nr_grains && !rc; g++) {
		struct tape_ref *r = &m.refs[g];
		if (r->pack == TAPE_ZERO_PACK)
			continue;
		long no = map[r->pack];
		if (no >= 0 && (uint32_t)no < gc->nr_pool && gc->doom[no] == 2) {
			struct move k = {.old_pack = (uint32_t)no, .old_off = r->off};
			struct move *mv =
				bsearch(&k, gc->moves, gc->nr_moves, sizeof(k), cmp_move);
			if (!mv) {
				rc = -ESTALE; /* a reference the mark did not see */
				break;
			}
			no = mv->new_pack;
			r->off = mv->new_off;
		}
		if (no < 0) { /* pack unknown to the pool: keep its id */
			rc = -ESTALE;
			break;
		}
		if (newmap[no] == UINT32_MAX) {
			newmap[no] = nr_ids;
			memcpy(ids[nr_ids++], p->packs[no].id, 16);
		}
		r->pack = newmap[no];
	}
	pthread_mutex_unlock(&p->lock);
	if (rc)
		goto out_free;
	free(m.packs);
	m.packs = ids;
	m.nr_packs = nr_ids;
	ids = NULL;
	rc = tape_manifest_encode(&m, pool_codec(p), key, &enc, &enclen);
	if (!rc)
		rc = p->be->ops->put(p->be, key, enc, enclen);
out_free:
	free(enc);
	free(map);
	free(newmap);
	free(ids);
	tape_manifest_release(&m);
	return rc;
}

int tape_pool_gc(struct tier_pool *p, int64_t grace_seconds, struct tier_gc_stats *st)
{
	struct gc gc = {.p = p, .st = st};
	struct keyvec kv = {0};
	int rc;
	unsigned reclaimed = 0;
	memset(st, 0, sizeof(*st));
	rc = pool_ready(p, st->busy, sizeof(st->busy));
	if (rc)
		return rc;
	uint64_t req0 = atomic_load(&p->be->requests);
	pthread_mutex_lock(&p->gc_lock);
	rc = pool_lock_exclusive(p, &gc.now, &reclaimed, st->busy, sizeof(st->busy));
	st->locks_reclaimed = reclaimed;
	if (rc) {
		tape_log(TAPE_LOG_WARN, "gc: %s", st->busy);
		goto out_unlock;
	}
	/* a put that a crash interrupted leaves a temporary (file pools); one
	 * untouched for a stale period belongs to nobody any more */
	if (p->be->ops->sweep_temps &&
	    p->be->ops->sweep_temps(p->be, gc.now - p->lk.stale_s, &st->temps_removed) == 0 &&
	    st->temps_removed)
		tape_log(TAPE_LOG_INFO, "gc: %llu temporaries of interrupted puts removed",
			 (unsigned long long)st->temps_removed);
	rc = pool_refresh(p);
	if (rc)
		goto out_unlock_x;
	pthread_mutex_lock(&p->lock);
	gc.nr_pool = p->nr_packs;
	gc.live = calloc(gc.nr_pool + 1, sizeof(*gc.live));
	gc.doom = calloc(gc.nr_pool + 1, 1);
	for (uint32_t i = 0; gc.live && i < gc.nr_pool; i++) {
		struct pool_pack *pk = &p->packs[i];
		if (pk->state == PACK_STORED && pk->indexed) {
			gc.live[i] = calloc(pk->nr_ents + 1, 1);
			if (!gc.live[i]) {
				rc = -ENOMEM;
				break;
			}
		}
	}
	pthread_mutex_unlock(&p->lock);
	if (!gc.live || !gc.doom)
		rc = -ENOMEM;
	if (rc)
		goto out_free;

	/* list manifests after the packs: a manifest stored meanwhile only
	 * references packs we either know or that are too young to touch */
	rc = p->be->ops->list(p->be, "manifests/", keyvec_add, &kv);
	if (rc)
		goto out_free;
	rc = gc_mark(&gc, &kv);
	if (rc)
		goto out_free;
	fault_pause("gc-listed");
	if (gc.keep_all)
		goto out_free;
	rc = pool_lock_exclusive_valid(p);
	if (rc) {
		tape_log(TAPE_LOG_ERR, "gc: the pool's lock may have lapsed (%s): nothing deleted",
			 strerror(-rc));
		snprintf(st->busy, sizeof(st->busy), "the gc lock lapsed while marking: run gc again");
		rc = -EBUSY;
		goto out_free;
	}

	/* choose, and doom atomically with the pin check */
	int64_t now = gc.now;
	int any_repack = 0, any = 0;
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < gc.nr_pool; i++) {
		struct pool_pack *pk = &p->packs[i];
		if (!gc.live[i] || pk->state != PACK_STORED || pk->pins ||
		    pk->mtime > now - grace_seconds)
			continue;
		uint64_t live_bytes = 0, all_bytes = 0, nr_live = 0;
		for (uint32_t e = 0; e < pk->nr_ents; e++) {
			all_bytes += pk->ents[e].len;
			if (gc.live[i][e]) {
				live_bytes += pk->ents[e].len;
				nr_live++;
			}
		}
		if (nr_live == 0) {
			gc.doom[i] = 1;
		} else if (live_bytes * 2 < all_bytes) {
			gc.doom[i] = 2;
			any_repack = 1;
		} else {
			continue;
		}
		pk->state = PACK_DOOMED;
		any = 1;
		st->blocks_freed += pk->nr_ents - nr_live;
		st->bytes_freed += pk->size_bytes;
	}
	if (any)
		rc = pool_bidx_rebuild_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (rc)
		goto out_undoom;

	if (any_repack) {
		rc = gc_copy_live(&gc);
		if (!rc) {
			qsort(gc.moves, gc.nr_moves, sizeof(*gc.moves), cmp_move);
			for (size_t i = 0; i < gc.nr_mfs && !rc; i++) {
				int hit = 0;
				for (uint32_t k = 0; k < gc.nr_pool && !hit; k++)
					hit = gc.mfs[i].packs[k] && gc.doom[k] == 2;
				if (hit)
					rc = gc_rewrite_manifest(&gc, gc.mfs[i].key);
			}
		}
		if (rc) {
			/* keep the old packs: every manifest stays readable */
			tape_log(TAPE_LOG_ERR, "gc: repack failed (%s); old packs kept",
				 strerror(-rc));
			pthread_mutex_lock(&p->lock);
			for (uint32_t i = 0; i < gc.nr_pool; i++)
				if (gc.doom[i] == 2) {
					gc.doom[i] = 0;
					p->packs[i].state = PACK_STORED;
				}
			pool_bidx_rebuild_locked(p);
			pthread_mutex_unlock(&p->lock);
			st->bytes_freed = st->blocks_freed = 0;
			rc = 0;
		}
	}

	/* the copying may have been long: the lock must still be ours */
	if (any && pool_lock_exclusive_valid(p)) {
		tape_log(TAPE_LOG_ERR, "gc: the pool's lock may have lapsed: no pack deleted");
		snprintf(st->busy, sizeof(st->busy), "the gc lock lapsed: run gc again");
		st->bytes_freed = st->blocks_freed = 0;
		rc = -EBUSY;
		goto out_undoom;
	}
	for (uint32_t i = 0; i < gc.nr_pool; i++) {
		if (!gc.doom[i])
			continue;
		char key[64];
		uint8_t id[16];
		pthread_mutex_lock(&p->lock);
		memcpy(id, p->packs[i].id, 16);
		pthread_mutex_unlock(&p->lock);
		tape_pack_key(id, key, sizeof(key));
		int drc = p->be->ops->del(p->be, key);
		if (drc && drc != -ENOENT) {
			tape_log(TAPE_LOG_ERR, "gc: deleting %s: %s", key, strerror(-drc));
			if (!rc)
				rc = drc;
			pthread_mutex_lock(&p->lock);
			p->packs[i].state = PACK_STORED;
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		if (gc.doom[i] == 1)
			st->packs_deleted++;
		else
			st->packs_repacked++;
		pthread_mutex_lock(&p->lock);
		struct pool_pack *pk = &p->packs[i];
		pk->state = PACK_GONE;
		pk->indexed = 0;
		free(pk->ents);
		pk->ents = NULL;
		pk->nr_ents = pk->cap_ents = 0;
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_lock(&p->lock);
	int rrc = pool_bidx_rebuild_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (!rc)
		rc = rrc;
	goto out_free;

out_undoom:
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < gc.nr_pool; i++)
		if (gc.doom[i])
			p->packs[i].state = PACK_STORED;
	pool_bidx_rebuild_locked(p);
	pthread_mutex_unlock(&p->lock);
out_free:
	for (uint32_t i = 0; gc.live && i < gc.nr_pool; i++)
		free(gc.live[i]);
	free(gc.live);
	free(gc.doom);
	for (size_t i = 0; i < gc.nr_mfs; i++)
		free(gc.mfs[i].packs);
	free(gc.mfs);
	free(gc.moves);
	free(kv.v);
out_unlock_x:
	pool_unlock_exclusive(p);
out_unlock:
	st->requests = atomic_load(&p->be->requests) - req0;
	pthread_mutex_unlock(&p->gc_lock);
	return rc;
}
