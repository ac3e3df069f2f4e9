/*
 * upload.c — store one tape history: packs first, manifest last.
 *
 * Workers (pool->threads) claim runs of TAPE_RUN_BYTES worth of grains (or a
 * pack's worth, if packs are smaller). For a
 * grain the `changed` bitmap marks (every grain without a usable parent) a
 * worker reads it through req->src into its own staging buffer, skips it if
 * all zero and hashes it; unchanged grains copy the parent manifest's
 * reference. At the end of a claim the worker takes pool->lock once for the
 * whole batch: each hash is looked up in the pool's block table (dedup) and
 * every unknown block gets the next free slot of the upload's open pack. The
 * bytes are copied into the pack after the lock is dropped.
 *
 * So the blocks of one claim lie back to back in a pack, in grain order, and
 * a reader of the image fetches a claim with one ranged GET (image.c). (Were
 * blocks appended one at a time by several workers, the pack would hold them
 * interleaved and a sequential read would need a GET per block.)
 *
 * A pack that has no room left is detached from the upload; the last worker
 * to finish copying into it seals and PUTs it, so at most `threads` packs are
 * in flight. Once every pack is stored the manifest is written; only then
 * does the history exist.
 *
 * References held while running: every pack the upload points into is
 * pinned (pool->packs[].pins), so this process's collector leaves it alone.
 * On failure or cancel the packs still PENDING are forgotten; packs already
 * stored stay (other uploads may share them) and become gc's to reclaim.
 *
 * Other hosts: the upload holds the pool's shared bucket lock (lock.h) from
 * before the listing its dedup decisions rest on to after its manifest, so
 * no collector deletes a pack under it. If the lock may have lapsed (store
 * time between refreshes of half the stale limit) every pack the manifest
 * names is checked to exist before the manifest is stored; one missing
 * fails the upload: a history is never stored over a hole.
 *
 * Locking: pool->lock around the block table, the open pack's slots and
 * writer count, and the pin bookkeeping; never across read_grain, hashing,
 * copying block bytes or a PUT.
 */
#include "../core/fault.h"
#include "iomem.h"
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#define UPLOAD_SPARE_BUFS 4

struct open_pack {
	uint32_t no;	  /* pool pack number */
	uint8_t *buf;	  /* header + blocks, then index + trailer at seal */
	size_t len;	  /* bytes of header + blocks (slots handed out) */
	size_t data_cap;  /* header + pack_slots blocks */
	uint32_t writers; /* workers copying into handed-out slots; under p->lock */
	bool detached;	  /* full: no new slots; the last writer stores it */
};

struct upload {
	struct tier_pool *p;
	const struct tier_upload_req *req;
	uint64_t id;
	uint64_t nr_grains;
	struct tape_ref *refs;	   /* .pack = pool pack number while running */
	struct tape_manifest parent;
	int have_parent;
	uint32_t *parent_map;	   /* parent pack index → pool pack number (pinned) */
	atomic_uint_fast64_t next; /* next grain to claim */
	atomic_int err;
	atomic_uint_fast64_t grains_read, blocks_new, bytes_up;
	struct open_pack *open;	   /* protected by p->lock */
	uint8_t *pinned;	   /* per pool pack: pinned by us; protected by p->lock */
	uint32_t pinned_cap;
	char errmsg[160];	   /* first failure; protected by p->lock */
	/* pack buffers kept for the next pack: memory the system hands out anew
	 * costs a page fault per 4 KiB (32 MiB: 8192 of them); under p->lock */
	uint8_t *spare_buf[UPLOAD_SPARE_BUFS];
	unsigned nr_spare_buf;
};

/* Grains per pack: pack_bytes of them (a whole number of claims). */
static size_t pack_slots(const struct upload *u)
{
	uint32_t grain = u->req->grain_bytes;
	return u->p->pack_bytes / grain ? u->p->pack_bytes / grain : 1;
}

/* Bytes of blocks a pack takes: its grains, stored raw (version 1) or
 * sealed (a block is at most a grain plus nonce and tag) */
static size_t pack_data_cap(const struct upload *u)
{
	size_t cap = pack_slots(u) * u->req->grain_bytes;
	if (u->p->codec.version == 2 && cap < u->req->grain_bytes + TAPE_BLOCK_OVERHEAD)
		cap = u->req->grain_bytes + TAPE_BLOCK_OVERHEAD;
	return TAPE_PACK_DATA_OFF + cap;
}

/* Blocks a pack may hold: one per grain, more when compressed */
static uint32_t pack_max_ents(const struct upload *u)
{
	return tape_pack_max_blocks(pool_codec(u->p), pack_slots(u) * u->req->grain_bytes,
				    u->req->grain_bytes);
}

/* Bytes of every pack buffer of the upload: header and blocks, then their
 * index and the trailer. */
static size_t pack_buf_bytes(const struct upload *u)
{
	return pack_data_cap(u) + tape_pack_index_bytes(pool_codec(u->p), pack_max_ents(u)) +
	       TAPE_PACK_TRAILER_BYTES;
}

/* Pack buffers are iomem (page aligned, huge pages): a file pool writes them
 * around the page cache, whose fresh pages were 39 % of the daemon's CPU in
 * a file:// upload (backend_file.c). */
static uint8_t *pack_buf_new(const struct upload *u)
{
	return iomem_alloc(pack_buf_bytes(u));
}

static void pack_buf_free(const struct upload *u, uint8_t *buf)
{
	iomem_free(buf, pack_buf_bytes(u));
}

/* Returns a pack buffer to the spares (or frees it); takes p->lock. */
static void pack_buf_put(struct upload *u, uint8_t *buf)
{
	pthread_mutex_lock(&u->p->lock);
	if (u->nr_spare_buf < UPLOAD_SPARE_BUFS) {
		u->spare_buf[u->nr_spare_buf++] = buf;
		buf = NULL;
	}
	pthread_mutex_unlock(&u->p->lock);
	pack_buf_free(u, buf);
}

static void open_pack_free(struct upload *u, struct open_pack *op)
{
	pack_buf_put(u, op->buf);
	free(op);
}

static void upload_fail(struct upload *u, int rc, const char *what)
{
	int zero = 0;
	if (atomic_compare_exchange_strong(&u->err, &zero, rc)) {
		pthread_mutex_lock(&u->p->lock);
		snprintf(u->errmsg, sizeof(u->errmsg), "%s: %s", what, strerror(-rc));
		pthread_mutex_unlock(&u->p->lock);
	}
}

static int pin_locked(struct upload *u, uint32_t no)
{
	if (no >= u->pinned_cap) {
		uint32_t cap = u->pinned_cap ? u->pinned_cap : 64;
		while (cap <= no)
			cap *= 2;
		uint8_t *n = realloc(u->pinned, cap);
		if (!n)
			return -ENOMEM;
		memset(n + u->pinned_cap, 0, cap - u->pinned_cap);
		u->pinned = n;
		u->pinned_cap = cap;
	}
	if (!u->pinned[no]) {
		u->pinned[no] = 1;
		u->p->packs[no].pins++;
	}
	return 0;
}

static int open_pack_new_locked(struct upload *u, struct open_pack **out)
{
	struct tier_pool *p = u->p;
	uint8_t id[16];
	if (RAND_bytes(id, sizeof(id)) != 1)
		return -EIO;
	struct open_pack *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->data_cap = pack_data_cap(u);
	op->buf = u->nr_spare_buf ? u->spare_buf[--u->nr_spare_buf] : pack_buf_new(u);
	if (!op->buf) {
		free(op);
		return -ENOMEM;
	}
	long no = pool_pack_add_locked(p, id, PACK_PENDING);
	if (no < 0) {
		pack_buf_free(u, op->buf);
		free(op);
		return (int)no;
	}
	p->packs[no].owner = u->id;
	p->packs[no].indexed = 1;
	op->no = (uint32_t)no;
	op->len = tape_pack_start(op->buf, id, pool_codec(p));
	int rc = pin_locked(u, op->no);
	if (rc) {
		p->packs[no].state = PACK_GONE;
		pack_buf_free(u, op->buf);
		free(op);
		return rc;
	}
	*out = op;
	return 0;
}

/* Seals and PUTs a detached pack; frees it. Called without the lock. */
static int open_pack_store(struct upload *u, struct open_pack *op)
{
	struct tier_pool *p = u->p;
	char key[64];
	uint8_t id[16];
	pthread_mutex_lock(&p->lock);
	struct pool_pack *pk = &p->packs[op->no];
	uint32_t nr = pk->nr_ents;
	memcpy(id, pk->id, 16);
	/* the entries of a detached pack no longer change */
	long tail = tape_pack_finish(pool_codec(p), id, pk->ents, nr, op->len, op->buf + op->len);
	pthread_mutex_unlock(&p->lock);

	int rc = tail < 0 ? (int)tail : 0;
	size_t total = op->len + (tail > 0 ? (size_t)tail : 0);
	if (!rc)
		rc = tape_pack_key(id, key, sizeof(key));
	if (!rc)
		rc = p->be->ops->put(p->be, key, op->buf, total);
	if (!rc) {
		atomic_fetch_add(&u->bytes_up, total);
		pthread_mutex_lock(&p->lock);
		pk = &p->packs[op->no];
		pk->state = PACK_STORED;
		pk->size_bytes = total;
		pk->mtime = time(NULL);
		pk->gen = p->gen + 1; /* survives a refresh whose listing predates it */
		pthread_mutex_unlock(&p->lock);
	} else {
		upload_fail(u, rc, "storing a pack");
	}
	open_pack_free(u, op);
	return rc;
}

/* One claim's hashed blocks, waiting to be placed. */
struct batch {
	uint8_t *data;		/* n blocks of grain bytes */
	uint8_t (*hash)[32];	/* their names */
	uint64_t *grain;	/* grain number of each block */
	size_t *dst;		/* pack offset a block is copied to, or SIZE_MAX */
	uint32_t n;
	/* version 2: blocks as stored (compressed, encrypted), sealed only
	 * for the blocks the pool does not hold */
	uint8_t *sealed;	/* n slots of grain + TAPE_BLOCK_OVERHEAD bytes */
	uint32_t *slen;		/* stored length, 0 = not sealed (yet) */
	uint32_t *sflags;
	struct tape_coder coder;
};

static const uint8_t *stored_bytes(const struct upload *u, const struct batch *bt, uint32_t i)
{
	uint32_t grain = u->req->grain_bytes;
	if (!bt->sealed)
		return bt->data + (size_t)i * grain;
	return bt->sealed + (size_t)i * (grain + TAPE_BLOCK_OVERHEAD);
}

static int seal_one(struct upload *u, struct batch *bt, uint32_t i)
{
	uint32_t grain = u->req->grain_bytes;
	if (!bt->sealed || bt->slen[i])
		return 0;
	return tape_block_seal(&u->p->codec, &bt->coder, bt->hash[i],
			       bt->data + (size_t)i * grain, grain,
			       bt->sealed + (size_t)i * (grain + TAPE_BLOCK_OVERHEAD), &bt->slen[i],
			       &bt->sflags[i]);
}

/* Places blocks [i, n) of a batch: a reference to a block the pool (or this
 * upload) already holds, or the next slot of the open pack, until the pack is
 * full. Returns the first block not placed; *op_out is the pack the slots are
 * in (its writer count raised) or NULL. */
static uint32_t place_locked(struct upload *u, struct batch *bt, uint32_t i,
			     struct open_pack **op_out, int *rc, bool *need_seal)
{
	struct tier_pool *p = u->p;
	uint32_t len = u->req->grain_bytes;
	struct open_pack *op = u->open;
	*need_seal = false;

	*op_out = NULL;
	*rc = 0;
	if (!op) {
		*rc = open_pack_new_locked(u, &u->open);
		if (*rc)
			return i;
		op = u->open;
	}
	for (; i < bt->n; i++) {
		const uint8_t *hash = bt->hash[i];
		struct tape_ref *r = &u->refs[bt->grain[i]];
		struct blk_slot *s = pool_bidx_lookup_locked(p, hash);
		bt->dst[i] = SIZE_MAX;
		if (s) {
			struct pool_pack *pk = &p->packs[s->pack];
			if (pk->state == PACK_STORED ||
			    (pk->state == PACK_PENDING && pk->owner == u->id)) {
				*rc = pin_locked(u, s->pack);
				if (*rc)
					break;
				r->pack = s->pack;
				r->len = pk->ents[s->ent].len;
				r->off = pk->ents[s->ent].off;
				memcpy(r->prefix, hash, 8);
				continue;
			}
			/* another upload's pending or a doomed pack: store our own copy */
		}
		if (bt->sealed && !bt->slen[i]) { /* the pool lost it since the dedup check */
			*need_seal = true;
			break;
		}
		uint32_t flags = 0;
		if (bt->sealed) {
			len = bt->slen[i];
			flags = bt->sflags[i];
		}
		if (op->len + len > op->data_cap || p->packs[op->no].nr_ents >= pack_max_ents(u)) {
			op->detached = true;
			u->open = NULL;
			break;
		}
		struct pool_pack *pk = &p->packs[op->no];
		struct tape_pack_entry e = {.off = op->len, .len = len, .flags = flags};
		memcpy(e.hash, hash, 32);
		*rc = pool_pack_append_ent_locked(pk, &e);
		if (!*rc && !s)
			*rc = pool_bidx_insert_locked(p, op->no, pk->nr_ents - 1);
		if (*rc)
			break;
		bt->dst[i] = op->len;
		op->len += len;
		r->pack = op->no;
		r->len = len;
		r->off = e.off;
		memcpy(r->prefix, hash, 8);
		atomic_fetch_add(&u->blocks_new, 1);
	}
	op->writers++;
	*op_out = op;
	return i;
}

/* Version 2: seals the blocks of a batch the pool does not hold (outside
 * the lock: compression and encryption are the costly part). */
static int seal_new(struct upload *u, struct batch *bt)
{
	struct tier_pool *p = u->p;
	if (!bt->sealed)
		return 0;
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < bt->n; i++) {
		struct blk_slot *s = pool_bidx_lookup_locked(p, bt->hash[i]);
		bool have = s && p->packs[s->pack].state == PACK_STORED;
		bt->slen[i] = have ? 0 : UINT32_MAX; /* UINT32_MAX: to seal */
	}
	pthread_mutex_unlock(&p->lock);
	for (uint32_t i = 0; i < bt->n; i++) {
		if (bt->slen[i] != UINT32_MAX)
			continue;
		bt->slen[i] = 0;
		int rc = seal_one(u, bt, i);
		if (rc)
			return rc;
	}
	return 0;
}

/* Dedups a claim's blocks and copies the new ones into packs. */
static int upload_batch(struct upload *u, struct batch *bt)
{
	struct tier_pool *p = u->p;
	int rc = seal_new(u, bt);

	for (uint32_t i = 0; i < bt->n && !rc;) {
		struct open_pack *op;
		bool need_seal;
		pthread_mutex_lock(&p->lock);
		uint32_t j = place_locked(u, bt, i, &op, &rc, &need_seal);
		pthread_mutex_unlock(&p->lock);
		if (!op)
			break;
		for (uint32_t k = i; k < j; k++)
			if (bt->dst[k] != SIZE_MAX) {
				size_t n = bt->sealed ? bt->slen[k] : u->req->grain_bytes;
				memcpy(op->buf + bt->dst[k], stored_bytes(u, bt, k), n);
			}
		pthread_mutex_lock(&p->lock);
		bool store = --op->writers == 0 && op->detached;
		pthread_mutex_unlock(&p->lock);
		if (store) {
			if (atomic_load(&u->err)) {
				open_pack_free(u, op);
			} else {
				int src = open_pack_store(u, op);
				if (src && !rc)
					rc = src;
			}
		}
		if (need_seal && !rc)
			rc = seal_one(u, bt, j);
		i = j;
	}
	return rc;
}

static int grain_changed(const struct upload *u, uint64_t g)
{
	if (!u->have_parent || !u->req->changed)
		return 1;
	return (u->req->changed[g >> 3] >> (g & 7)) & 1;
}

static void *upload_worker(void *arg)
{
	struct upload *u = arg;
	const struct tier_upload_req *req = u->req;
	uint32_t grain = req->grain_bytes;
	/* a claim fills at most one pack (all of it when nothing dedups) */
	uint64_t run = TAPE_RUN_BYTES < u->p->pack_bytes ? TAPE_RUN_BYTES : u->p->pack_bytes;
	uint64_t claim = run / grain ? run / grain : 1;
	struct batch bt = {
		.data = malloc((size_t)claim * grain),
		.hash = malloc((size_t)claim * sizeof(*bt.hash)),
		.grain = malloc((size_t)claim * sizeof(*bt.grain)),
		.dst = malloc((size_t)claim * sizeof(*bt.dst)),
	};
	bool v2 = u->p->codec.version == 2;
	if (v2) {
		bt.sealed = malloc((size_t)claim * (grain + TAPE_BLOCK_OVERHEAD));
		bt.slen = calloc(claim, sizeof(*bt.slen));
		bt.sflags = calloc(claim, sizeof(*bt.sflags));
	}
	if (!bt.data || !bt.hash || !bt.grain || !bt.dst ||
	    (v2 && (!bt.sealed || !bt.slen || !bt.sflags))) {
		upload_fail(u, -ENOMEM, "allocating");
		goto out_free;
	}
	for (;;) {
		uint64_t start = atomic_fetch_add(&u->next, claim);
		if (start >= u->nr_grains || atomic_load(&u->err))
			break;
		uint64_t end = start + claim;
		if (end > u->nr_grains)
			end = u->nr_grains;
		int rc;
		/* the source is asked for holes where a claim starts and after each
		 * hole, not per grain: a dense volume costs one question a claim */
		bool probe = req->src.zero_until != NULL;
		bt.n = 0;
		for (uint64_t g = start; g < end; g++) {
			if (atomic_load(&u->err))
				goto out_free;
			if (req->cancel && atomic_load(req->cancel)) {
				upload_fail(u, -ECANCELED, "cancelled");
				goto out_free;
			}
			struct tape_ref *r = &u->refs[g];
			uint64_t z = probe && grain_changed(u, g)
					     ? req->src.zero_until(req->src.arg, g, end)
					     : g;
			if (probe && grain_changed(u, g))
				probe = z > g;
			if (z > g) {
				/* a hole of the source: zero blocks, nothing to read */
				for (uint64_t x = g; x < z; x++) {
					memset(&u->refs[x], 0, sizeof(u->refs[x]));
					u->refs[x].pack = TAPE_ZERO_PACK;
				}
				if (req->done_grains)
					atomic_fetch_add(req->done_grains, z - g);
				g = z - 1;
				continue;
			}
			if (!grain_changed(u, g)) {
				*r = u->parent.refs[g];
				if (r->pack != TAPE_ZERO_PACK)
					r->pack = u->parent_map[r->pack];
			} else {
				uint8_t *buf = bt.data + (size_t)bt.n * grain;
				rc = req->src.read_grain(req->src.arg, g, buf);
				atomic_fetch_add(&u->grains_read, 1);
				if (rc) {
					upload_fail(u, rc < 0 ? rc : -EIO, "reading the volume");
					goto out_free;
				}
				if (tape_is_zero(buf, grain)) {
					memset(r, 0, sizeof(*r));
					r->pack = TAPE_ZERO_PACK;
				} else {
					rc = tape_codec_name(&u->p->codec, buf, grain,
							     bt.hash[bt.n]);
					if (rc) {
						upload_fail(u, rc, "hashing a block");
						goto out_free;
					}
					bt.grain[bt.n++] = g;
					continue; /* counted done once placed */
				}
			}
			if (req->done_grains)
				atomic_fetch_add(req->done_grains, 1);
		}
		rc = upload_batch(u, &bt);
		if (rc) {
			upload_fail(u, rc, "storing a block");
			break;
		}
		if (req->done_grains)
			atomic_fetch_add(req->done_grains, bt.n);
	}
out_free:
	free(bt.data);
	free(bt.hash);
	free(bt.grain);
	free(bt.dst);
	free(bt.sealed);
	free(bt.slen);
	free(bt.sflags);
	tape_coder_fini(&bt.coder);
	return NULL;
}

static int upload_load_parent(struct upload *u)
{
	const struct tier_upload_req *req = u->req;
	int rc = 0;
	for (int attempt = 0; attempt < 5; attempt++) {
		rc = pool_manifest_load(u->p, req->parent, &u->parent, NULL);
		if (rc)
			break;
		if (u->parent.size_bytes != req->size_bytes ||
		    u->parent.grain_bytes != req->grain_bytes) {
			tape_log(TAPE_LOG_INFO, "parent %s has another geometry: full upload",
				 req->parent);
			tape_manifest_release(&u->parent);
			return 0;
		}
		u->parent_map = malloc((u->parent.nr_packs + 1) * sizeof(uint32_t));
		if (!u->parent_map) {
			rc = -ENOMEM;
			tape_manifest_release(&u->parent);
			break;
		}
		rc = pool_pin_manifest(u->p, &u->parent, u->parent_map);
		if (rc == -EAGAIN) { /* collector is rewriting it: reload */
			free(u->parent_map);
			u->parent_map = NULL;
			tape_manifest_release(&u->parent);
			struct timespec ts = {0, 200 * 1000 * 1000};
			nanosleep(&ts, NULL);
			continue;
		}
		if (rc) {
			free(u->parent_map);
			u->parent_map = NULL;
			tape_manifest_release(&u->parent);
			break;
		}
		/* take the pins into our own bookkeeping */
		pthread_mutex_lock(&u->p->lock);
		for (uint32_t i = 0; i < u->parent.nr_packs && !rc; i++) {
			uint32_t no = u->parent_map[i];
			if (no < u->pinned_cap && u->pinned[no]) {
				u->p->packs[no].pins--; /* already ours */
				continue;
			}
			rc = pin_locked(u, no);
			if (!rc)
				u->p->packs[no].pins--; /* pin_locked added a second one */
		}
		pthread_mutex_unlock(&u->p->lock);
		if (!rc)
			u->have_parent = 1;
		return rc;
	}
	if (rc == -ENOENT) {
		tape_log(TAPE_LOG_WARN, "parent %s missing: full upload", req->parent);
		return 0;
	}
	return rc;
}

struct pack_set {
	uint8_t (*ids)[16]; /* sorted */
	uint32_t n;
	uint8_t *found;
};

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static int mark_found(void *arg, const struct tape_obj_info *oi)
{
	struct pack_set *ps = arg;
	uint8_t id[16];
	if (tape_pack_key_parse(oi->key, id))
		return 0;
	uint8_t(*hit)[16] = bsearch(id, ps->ids, ps->n, 16, cmp_id);
	if (hit)
		ps->found[hit - ps->ids] = 1;
	return 0;
}

/* After the lock may have lapsed: every pack the manifest will name must
 * still be in the store (packs are immutable: present means intact). */
static int upload_packs_exist(struct upload *u, char *err, size_t errlen)
{
	struct tier_pool *p = u->p;
	struct pack_set ps = {0};
	int rc = 0;

	pthread_mutex_lock(&p->lock);
	uint32_t nr_pool = p->nr_packs;
	uint8_t *used = calloc(nr_pool + 1, 1);
	ps.ids = malloc((nr_pool + 1) * 16);
	if (used && ps.ids) {
		for (uint64_t g = 0; g < u->nr_grains; g++)
			if (u->refs[g].pack != TAPE_ZERO_PACK && u->refs[g].pack < nr_pool)
				used[u->refs[g].pack] = 1;
		for (uint32_t i = 0; i < nr_pool; i++)
			if (used[i])
				memcpy(ps.ids[ps.n++], p->packs[i].id, 16);
	}
	pthread_mutex_unlock(&p->lock);
	if (!used || !ps.ids) {
		rc = -ENOMEM;
		goto out;
	}
	qsort(ps.ids, ps.n, 16, cmp_id);
	ps.found = calloc(ps.n + 1, 1);
	if (!ps.found) {
		rc = -ENOMEM;
		goto out;
	}
	rc = p->be->ops->list(p->be, "packs/", mark_found, &ps);
	if (rc) {
		snprintf(err, errlen, "re-checking the packs after a lapsed lock: %s", strerror(-rc));
		goto out;
	}
	for (uint32_t i = 0; i < ps.n; i++)
		if (!ps.found[i]) {
			char key[64];
			tape_pack_key(ps.ids[i], key, sizeof(key));
			snprintf(err, errlen,
				 "%s was deleted by a gc while this upload's pool lock had "
				 "lapsed: nothing stored", key);
			rc = -EIO;
			goto out;
		}
	tape_log(TAPE_LOG_INFO, "pool lock had lapsed; all %u packs referenced are present",
		 ps.n);
out:
	free(used);
	free(ps.ids);
	free(ps.found);
	return rc;
}

static int upload_manifest(struct upload *u, struct tier_upload_res *res)
{
	struct tier_pool *p = u->p;
	const struct tier_upload_req *req = u->req;
	struct tape_manifest m = {0};
	uint32_t *map = NULL;
	uint8_t *enc = NULL, rnd[8];
	size_t enclen;
	int rc;

	pthread_mutex_lock(&p->lock);
	uint32_t nr_pool = p->nr_packs;
	map = malloc((nr_pool + 1) * sizeof(*map));
	m.packs = malloc((nr_pool + 1) * 16);
	if (!map || !m.packs) {
		pthread_mutex_unlock(&p->lock);
		rc = -ENOMEM;
		goto out_free;
	}
	memset(map, 0xff, (nr_pool + 1) * sizeof(*map));
	for (uint64_t g = 0; g < u->nr_grains; g++) {
		struct tape_ref *r = &u->refs[g];
		if (r->pack == TAPE_ZERO_PACK)
			continue;
		m.blocks_total++;
		if (map[r->pack] == UINT32_MAX) {
			map[r->pack] = m.nr_packs;
			memcpy(m.packs[m.nr_packs++], p->packs[r->pack].id, 16);
		}
		r->pack = map[r->pack];
	}
	pthread_mutex_unlock(&p->lock);

	snprintf(m.volume, sizeof(m.volume), "%s", req->volume);
	snprintf(m.host, sizeof(m.host), "%s", req->host ? req->host : "");
	snprintf(m.parent, sizeof(m.parent), "%s", u->have_parent ? req->parent : "");
	m.version = req->version;
	m.size_bytes = req->size_bytes;
	m.grain_bytes = req->grain_bytes;
	m.date = req->date;
	m.nr_grains = u->nr_grains;
	m.refs = u->refs;
	if (req->manifest_key) {
		rc = tape_manifest_key_check(req->manifest_key, req->volume, req->version);
		if (!rc)
			snprintf(res->manifest, sizeof(res->manifest), "%s", req->manifest_key);
	} else if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		rc = -EIO;
	} else {
		rc = tape_manifest_key(req->volume, req->version, rnd, res->manifest,
				       sizeof(res->manifest));
	}
	if (!rc)
		rc = tape_manifest_encode(&m, pool_codec(p), res->manifest, &enc, &enclen);
	m.refs = NULL;
	if (rc)
		goto out_free;
	rc = p->be->ops->put(p->be, res->manifest, enc, enclen);
	if (rc)
		goto out_free;
	fault_pause("upload-stored");
	atomic_fetch_add(&u->bytes_up, enclen);
	res->blocks_total = m.blocks_total;
out_free:
	free(enc);
	free(map);
	free(m.packs);
	return rc;
}

int tape_pool_upload(struct tier_pool *p, const struct tier_upload_req *req,
		     struct tier_upload_res *res, char *err, size_t errlen)
{
	struct upload u = {.p = p, .req = req};
	pthread_t tids[64];
	unsigned nr_threads = 0;
	int rc;

	memset(res, 0, sizeof(*res));
	rc = pool_ready(p, err, errlen);
	if (rc)
		return rc;
	if (!req->volume || !tape_volume_name_ok(req->volume) || !req->grain_bytes ||
	    !req->size_bytes || !req->src.read_grain) {
		snprintf(err, errlen, "invalid upload request");
		return -EINVAL;
	}
	u.nr_grains = (req->size_bytes + req->grain_bytes - 1) / req->grain_bytes;
	if (u.nr_grains > UINT64_MAX / sizeof(*u.refs) / 2) {
		snprintf(err, errlen, "volume too large");
		return -EFBIG;
	}
	u.refs = malloc(u.nr_grains * sizeof(*u.refs));
	if (!u.refs) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_lock(&p->lock);
	u.id = p->next_upload_id++;
	pthread_mutex_unlock(&p->lock);

	/* before the listing: what it shows stays until the lock is dropped */
	uint64_t epoch = 0;
	rc = pool_lock_shared(p, p->lk.wait_s, &epoch, err, errlen);
	if (rc)
		goto out_free;
	rc = pool_refresh(p);
	if (rc) {
		snprintf(err, errlen, "listing the pool: %s", strerror(-rc));
		goto out_unlock;
	}
	if (req->parent && *req->parent) {
		rc = upload_load_parent(&u);
		if (rc) {
			snprintf(err, errlen, "parent manifest: %s", strerror(-rc));
			goto out_unpin;
		}
	}

	unsigned want = p->threads < 64 ? p->threads : 64;
	for (; nr_threads < want; nr_threads++)
		if (pthread_create(&tids[nr_threads], NULL, upload_worker, &u))
			break;
	if (!nr_threads)
		upload_worker(&u);
	for (unsigned i = 0; i < nr_threads; i++)
		pthread_join(tids[i], NULL);

	pthread_mutex_lock(&p->lock);
	struct open_pack *op = u.open;
	u.open = NULL;
	pthread_mutex_unlock(&p->lock);
	bool empty = false;
	if (op) { /* every block deduplicated: no pack to store */
		pthread_mutex_lock(&p->lock);
		empty = p->packs[op->no].nr_ents == 0;
		if (empty)
			p->packs[op->no].state = PACK_GONE;
		pthread_mutex_unlock(&p->lock);
	}
	if (op && !empty && !atomic_load(&u.err)) {
		open_pack_store(&u, op);
	} else if (op) {
		open_pack_free(&u, op);
	}
	while (u.nr_spare_buf)
		pack_buf_free(&u, u.spare_buf[--u.nr_spare_buf]);

	rc = atomic_load(&u.err);
	if (rc) {
		snprintf(err, errlen, "%s", u.errmsg);
		goto out_forget;
	}
	fault_pause("upload-deduped");
	rc = pool_lock_shared_valid(p, epoch);
	if (rc == 0)
		rc = upload_packs_exist(&u, err, errlen);
	else if (rc > 0)
		rc = 0;
	else
		snprintf(err, errlen, "the pool's lock: %s", strerror(-rc));
	if (rc)
		goto out_forget;
	rc = upload_manifest(&u, res);
	if (rc) {
		snprintf(err, errlen, "storing the manifest: %s", strerror(-rc));
		goto out_forget;
	}
	res->blocks_new = atomic_load(&u.blocks_new);
	res->bytes_uploaded = atomic_load(&u.bytes_up);
	res->grains_read = atomic_load(&u.grains_read);
	goto out_unpin;

out_forget:
	/* forget what never became durable */
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < p->nr_packs; i++) {
		struct pool_pack *pk = &p->packs[i];
		if (pk->state == PACK_PENDING && pk->owner == u.id) {
			pk->state = PACK_GONE;
			pk->indexed = 0;
			free(pk->ents);
			pk->ents = NULL;
			pk->nr_ents = pk->cap_ents = 0;
		}
	}
	int rrc = pool_bidx_rebuild_locked(p);
	pthread_mutex_unlock(&p->lock);
	if (rrc)
		tape_log(TAPE_LOG_ERR, "rebuilding the block table: %s", strerror(-rrc));
	if (rc != -ECANCELED)
		tape_log(TAPE_LOG_ERR, "upload of %s v%llu failed: %s", req->volume,
			 (unsigned long long)req->version, err);
out_unpin:
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < u.pinned_cap; i++)
		if (u.pinned[i])
			p->packs[i].pins--;
	pthread_mutex_unlock(&p->lock);
	free(u.pinned);
	free(u.parent_map);
	if (u.have_parent)
		tape_manifest_release(&u.parent);
out_unlock:
	pool_unlock_shared(p);
out_free:
	free(u.refs);
	return rc;
}
