/*
 * upload.c — store one tape history: packs first, manifest last.
 *
 * Workers (pool->threads) claim runs of UPLOAD_CHUNK grains. For a grain the
 * `changed` bitmap marks (every grain without a usable parent) a worker reads
 * it through req->src, skips it if all zero, hashes it and looks the hash up
 * in the pool's block table; an unknown block is appended to the upload's
 * open pack. The worker that finds the open pack full detaches it and PUTs it
 * itself, so at most `threads` packs are in flight. Unchanged grains copy the
 * parent manifest's reference. Once every pack is stored the manifest is
 * written; only then does the history exist.
 *
 * References held while running: every pack the upload points into is
 * pinned (pool->packs[].pins), so this process's collector leaves it alone.
 * On failure or cancel the packs still PENDING are forgotten; packs already
 * stored stay (other uploads may share them) and become gc's to reclaim.
 *
 * Locking: pool->lock around the block table, the open pack and the pin
 * bookkeeping; never across read_grain, hashing or a PUT.
 */
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#define UPLOAD_CHUNK 64u /* grains claimed at once: keeps pack order ≈ grain order */

struct open_pack {
	uint32_t no;	/* pool pack number */
	uint8_t *buf;	/* header + blocks, then index + trailer at seal */
	size_t len;	/* bytes of header + blocks */
	size_t data_cap;
	size_t buf_cap;
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
};

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
	uint32_t grain = u->req->grain_bytes;
	op->data_cap = p->pack_bytes;
	if (op->data_cap < TAPE_PACK_HEADER_BYTES + grain)
		op->data_cap = TAPE_PACK_HEADER_BYTES + grain;
	size_t max_blocks = (op->data_cap - TAPE_PACK_HEADER_BYTES) / grain;
	op->buf_cap = op->data_cap + max_blocks * TAPE_PACK_ENTRY_BYTES + TAPE_PACK_TRAILER_BYTES;
	op->buf = malloc(op->buf_cap);
	if (!op->buf) {
		free(op);
		return -ENOMEM;
	}
	long no = pool_pack_add_locked(p, id, PACK_PENDING);
	if (no < 0) {
		free(op->buf);
		free(op);
		return (int)no;
	}
	p->packs[no].owner = u->id;
	p->packs[no].indexed = 1;
	op->no = (uint32_t)no;
	tape_pack_header_encode(op->buf, id);
	op->len = TAPE_PACK_HEADER_BYTES;
	int rc = pin_locked(u, op->no);
	if (rc) {
		p->packs[no].state = PACK_GONE;
		free(op->buf);
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
	tape_pack_index_encode(pk->ents, nr, op->buf + op->len);
	pthread_mutex_unlock(&p->lock);

	size_t ilen = (size_t)nr * TAPE_PACK_ENTRY_BYTES;
	int rc = tape_pack_trailer_encode(op->buf + op->len + ilen, nr, op->len, op->buf + op->len,
					  ilen);
	size_t total = op->len + ilen + TAPE_PACK_TRAILER_BYTES;
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
	free(op->buf);
	free(op);
	return rc;
}

/* Records a non-zero block for grain g: dedup or append. */
static int upload_block(struct upload *u, uint64_t g, const uint8_t *data, const uint8_t hash[32])
{
	struct tier_pool *p = u->p;
	uint32_t len = u->req->grain_bytes;
	int rc = 0;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct blk_slot *s = pool_bidx_lookup_locked(p, hash);
		if (s) {
			struct pool_pack *pk = &p->packs[s->pack];
			if (pk->state == PACK_STORED ||
			    (pk->state == PACK_PENDING && pk->owner == u->id)) {
				rc = pin_locked(u, s->pack);
				if (rc)
					break;
				struct tape_ref *r = &u->refs[g];
				r->pack = s->pack;
				r->len = pk->ents[s->ent].len;
				r->off = pk->ents[s->ent].off;
				memcpy(r->prefix, hash, 8);
				break;
			}
			/* another upload's pending or a doomed pack: store our own copy */
		}
		struct open_pack *op = u->open;
		if (op && op->len + len <= op->data_cap) {
			struct pool_pack *pk = &p->packs[op->no];
			struct tape_pack_entry e = {.off = op->len, .len = len, .flags = 0};
			memcpy(e.hash, hash, 32);
			rc = pool_pack_append_ent_locked(pk, &e);
			if (rc)
				break;
			if (!s)
				rc = pool_bidx_insert_locked(p, op->no, pk->nr_ents - 1);
			if (rc)
				break;
			memcpy(op->buf + op->len, data, len);
			op->len += len;
			struct tape_ref *r = &u->refs[g];
			r->pack = op->no;
			r->len = len;
			r->off = e.off;
			memcpy(r->prefix, hash, 8);
			atomic_fetch_add(&u->blocks_new, 1);
			break;
		}
		if (op) {
			u->open = NULL;
			pthread_mutex_unlock(&p->lock);
			rc = open_pack_store(u, op);
			pthread_mutex_lock(&p->lock);
			if (rc)
				break;
			continue;
		}
		rc = open_pack_new_locked(u, &u->open);
		if (rc)
			break;
	}
	pthread_mutex_unlock(&p->lock);
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
	uint8_t *buf = malloc(req->grain_bytes);
	uint8_t hash[32];
	if (!buf) {
		upload_fail(u, -ENOMEM, "allocating");
		return NULL;
	}
	for (;;) {
		uint64_t start = atomic_fetch_add(&u->next, UPLOAD_CHUNK);
		if (start >= u->nr_grains || atomic_load(&u->err))
			break;
		uint64_t end = start + UPLOAD_CHUNK;
		if (end > u->nr_grains)
			end = u->nr_grains;
		for (uint64_t g = start; g < end; g++) {
			if (atomic_load(&u->err))
				break;
			if (req->cancel && atomic_load(req->cancel)) {
				upload_fail(u, -ECANCELED, "cancelled");
				break;
			}
			struct tape_ref *r = &u->refs[g];
			if (!grain_changed(u, g)) {
				*r = u->parent.refs[g];
				if (r->pack != TAPE_ZERO_PACK)
					r->pack = u->parent_map[r->pack];
			} else {
				int rc = req->src.read_grain(req->src.arg, g, buf);
				atomic_fetch_add(&u->grains_read, 1);
				if (rc) {
					upload_fail(u, rc < 0 ? rc : -EIO, "reading the volume");
					break;
				}
				if (tape_is_zero(buf, req->grain_bytes)) {
					memset(r, 0, sizeof(*r));
					r->pack = TAPE_ZERO_PACK;
				} else {
					rc = tape_sha256(buf, req->grain_bytes, hash);
					if (!rc)
						rc = upload_block(u, g, buf, hash);
					if (rc) {
						upload_fail(u, rc, "storing a block");
						break;
					}
				}
			}
			if (req->done_grains)
				atomic_fetch_add(req->done_grains, 1);
		}
	}
	free(buf);
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
	rc = tape_manifest_encode(&m, &enc, &enclen);
	m.refs = NULL;
	if (rc)
		goto out_free;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		rc = -EIO;
		goto out_free;
	}
	rc = tape_manifest_key(req->volume, req->version, rnd, res->manifest,
			       sizeof(res->manifest));
	if (rc)
		goto out_free;
	rc = p->be->ops->put(p->be, res->manifest, enc, enclen);
	if (rc)
		goto out_free;
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

	rc = pool_refresh(p);
	if (rc) {
		snprintf(err, errlen, "listing the pool: %s", strerror(-rc));
		goto out_free;
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
	if (op && !atomic_load(&u.err)) {
		open_pack_store(&u, op);
	} else if (op) {
		free(op->buf);
		free(op);
	}

	rc = atomic_load(&u.err);
	if (rc) {
		snprintf(err, errlen, "%s", u.errmsg);
		goto out_forget;
	}
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
out_free:
	free(u.refs);
	return rc;
}
