/*
 * pool.c — open/close a tape pool, its in-core pack cache, list and remove.
 *
 * Owns: the pack table, the pack-id map and the hash → block table of a
 * pool (see pool.h for locking and pack states). Upload, image and gc live in
 * upload.c, image.c and gc.c and use the helpers here.
 *
 * The hash tables use open addressing with linear probing keyed by the first
 * bytes of the (uniformly random) pack id or block hash; deletion is done by
 * rebuilding (pool_bidx_rebuild_locked), which only failure and gc paths need.
 */
#include "pool.h"
#include "log.h"
#include "tier.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

static uint64_t key64(const uint8_t *k)
{
	uint64_t v;
	memcpy(&v, k, 8);
	return v;
}

/* ---- pack table and id map ---- */

static int idmap_grow_locked(struct tier_pool *p)
{
	uint32_t cap = p->idmap_cap ? p->idmap_cap * 2 : 256;
	uint32_t *m = calloc(cap, sizeof(*m));
	if (!m)
		return -ENOMEM;
	for (uint32_t i = 0; i < p->nr_packs; i++) {
		uint32_t h = (uint32_t)(key64(p->packs[i].id) & (cap - 1));
		while (m[h])
			h = (h + 1) & (cap - 1);
		m[h] = i + 1;
	}
	free(p->idmap);
	p->idmap = m;
	p->idmap_cap = cap;
	return 0;
}

long pool_pack_find_locked(struct tier_pool *p, const uint8_t id[16])
{
	if (!p->idmap_cap)
		return -1;
	uint32_t h = (uint32_t)(key64(id) & (p->idmap_cap - 1));
	while (p->idmap[h]) {
		uint32_t no = p->idmap[h] - 1;
		if (memcmp(p->packs[no].id, id, 16) == 0)
			return no;
		h = (h + 1) & (p->idmap_cap - 1);
	}
	return -1;
}

long pool_pack_add_locked(struct tier_pool *p, const uint8_t id[16], int state)
{
	long no = pool_pack_find_locked(p, id);
	if (no >= 0) {
		struct pool_pack *pk = &p->packs[no];
		if (pk->state == PACK_GONE) {
			pk->state = (uint8_t)state;
			pk->gen = p->gen;
		}
		return no;
	}
	if (p->nr_packs == UINT32_MAX - 1)
		return -ENOSPC;
	if (p->nr_packs == p->cap_packs) {
		uint32_t cap = p->cap_packs ? p->cap_packs * 2 : 64;
		struct pool_pack *np = realloc(p->packs, cap * sizeof(*np));
		if (!np)
			return -ENOMEM;
		p->packs = np;
		p->cap_packs = cap;
	}
	if ((uint64_t)(p->nr_packs + 1) * 2 > p->idmap_cap) {
		int rc = idmap_grow_locked(p);
		if (rc)
			return rc;
	}
	no = p->nr_packs++;
	struct pool_pack *pk = &p->packs[no];
	memset(pk, 0, sizeof(*pk));
	memcpy(pk->id, id, 16);
	pk->state = (uint8_t)state;
	pk->gen = p->gen;
	uint32_t h = (uint32_t)(key64(id) & (p->idmap_cap - 1));
	while (p->idmap[h])
		h = (h + 1) & (p->idmap_cap - 1);
	p->idmap[h] = (uint32_t)no + 1;
	return no;
}

int pool_pack_append_ent_locked(struct pool_pack *pk, const struct tape_pack_entry *e)
{
	if (pk->nr_ents == pk->cap_ents) {
		uint32_t cap = pk->cap_ents ? pk->cap_ents * 2 : 64;
		struct tape_pack_entry *n = realloc(pk->ents, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		pk->ents = n;
		pk->cap_ents = cap;
	}
	pk->ents[pk->nr_ents++] = *e;
	return 0;
}

/* ---- block table ---- */

static const uint8_t *slot_hash(struct tier_pool *p, const struct blk_slot *s)
{
	return p->packs[s->pack].ents[s->ent].hash;
}

struct blk_slot *pool_bidx_lookup_locked(struct tier_pool *p, const uint8_t hash[32])
{
	if (!p->bidx_cap)
		return NULL;
	uint64_t h = key64(hash) & (p->bidx_cap - 1);
	while (p->bidx[h].pack != UINT32_MAX) {
		if (memcmp(slot_hash(p, &p->bidx[h]), hash, 32) == 0)
			return &p->bidx[h];
		h = (h + 1) & (p->bidx_cap - 1);
	}
	return NULL;
}

static void bidx_place(struct tier_pool *p, struct blk_slot *tab, uint64_t cap, uint32_t pack,
		       uint32_t ent)
{
	uint64_t h = key64(p->packs[pack].ents[ent].hash) & (cap - 1);
	while (tab[h].pack != UINT32_MAX)
		h = (h + 1) & (cap - 1);
	tab[h].pack = pack;
	tab[h].ent = ent;
}

static int bidx_resize_locked(struct tier_pool *p, uint64_t cap)
{
	struct blk_slot *tab = malloc(cap * sizeof(*tab));
	if (!tab)
		return -ENOMEM;
	memset(tab, 0xff, cap * sizeof(*tab));
	for (uint64_t i = 0; i < p->bidx_cap; i++)
		if (p->bidx[i].pack != UINT32_MAX)
			bidx_place(p, tab, cap, p->bidx[i].pack, p->bidx[i].ent);
	free(p->bidx);
	p->bidx = tab;
	p->bidx_cap = cap;
	return 0;
}

int pool_bidx_insert_locked(struct tier_pool *p, uint32_t pack, uint32_t ent)
{
	if ((p->bidx_used + 1) * 10 > p->bidx_cap * 7) {
		int rc = bidx_resize_locked(p, p->bidx_cap ? p->bidx_cap * 2 : 1024);
		if (rc)
			return rc;
	}
	if (pool_bidx_lookup_locked(p, p->packs[pack].ents[ent].hash))
		return 0; /* keep the first copy */
	bidx_place(p, p->bidx, p->bidx_cap, pack, ent);
	p->bidx_used++;
	return 0;
}

int pool_bidx_rebuild_locked(struct tier_pool *p)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < p->nr_packs; i++)
		if (p->packs[i].state == PACK_STORED || p->packs[i].state == PACK_PENDING)
			n += p->packs[i].nr_ents;
	uint64_t cap = 1024;
	while (cap * 7 < (n + 1) * 10)
		cap *= 2;
	struct blk_slot *tab = malloc(cap * sizeof(*tab));
	if (!tab)
		return -ENOMEM;
	memset(tab, 0xff, cap * sizeof(*tab));
	free(p->bidx);
	p->bidx = tab;
	p->bidx_cap = cap;
	p->bidx_used = 0;
	for (uint32_t i = 0; i < p->nr_packs; i++) {
		struct pool_pack *pk = &p->packs[i];
		if (pk->state != PACK_STORED && pk->state != PACK_PENDING)
			continue;
		for (uint32_t e = 0; e < pk->nr_ents; e++) {
			if (pool_bidx_lookup_locked(p, pk->ents[e].hash))
				continue;
			bidx_place(p, p->bidx, p->bidx_cap, i, e);
			p->bidx_used++;
		}
	}
	return 0;
}

/* ---- object helpers ---- */

/* whole small objects (pool_get_all): nothing the tape tier stores that way
 * is larger, and a listing or HEAD may claim anything */
#define POOL_GET_ALL_MAX (64ull << 20)

/* Reads [0, size) of key into a new buffer of exactly size bytes; -EIO if
 * the object is not that long any more (changed under us or truncated). */
static int get_exact(struct tier_pool *p, const char *key, uint64_t size, uint8_t **buf)
{
	uint8_t *b = malloc(size ? size : 1);
	if (!b)
		return -ENOMEM;
	ssize_t n = pool_get(p, key, 0, b, size);
	if (n < 0) {
		free(b);
		return (int)n;
	}
	if ((uint64_t)n != size) {
		free(b);
		return -EIO;
	}
	*buf = b;
	return 0;
}

int pool_get_all(struct tier_pool *p, const char *key, uint8_t **buf, size_t *len)
{
	struct tape_obj_info oi;
	int rc = p->be->ops->head(p->be, key, &oi);
	if (rc)
		return rc;
	if (oi.size_bytes > POOL_GET_ALL_MAX) {
		tape_log(TAPE_LOG_WARN, "%s: %llu bytes, more than any such object: refused", key,
			 (unsigned long long)oi.size_bytes);
		return -EFBIG;
	}
	rc = get_exact(p, key, oi.size_bytes, buf);
	if (!rc)
		*len = (size_t)oi.size_bytes;
	return rc;
}

int pool_pack_index_fetch(struct tier_pool *p, const char *key, uint64_t size_bytes,
			  struct tape_pack_entry **ents, uint32_t *nr)
{
	uint8_t tr[TAPE_PACK_TRAILER_BYTES];
	struct tape_pack_trailer t;
	uint8_t *ib = NULL;
	struct tape_pack_entry *e = NULL;
	int rc;
	/* size_bytes comes from a listing or a HEAD: bounded before it is used */
	if (size_bytes < TAPE_PACK_HEADER_BYTES + TAPE_PACK_TRAILER_BYTES ||
	    size_bytes > TAPE_PACK_MAX_BYTES) {
		tape_log(TAPE_LOG_WARN, "pack %s: object of %llu bytes cannot be a pack", key,
			 (unsigned long long)size_bytes);
		return -EBADMSG;
	}
	ssize_t n = pool_get(p, key, size_bytes - sizeof(tr), tr, sizeof(tr));
	if (n < 0)
		return (int)n;
	if (n != (ssize_t)sizeof(tr))
		return -EBADMSG;
	/* N and I checked against the object size and the largest pack before
	 * the 48 N bytes of the index are allocated */
	rc = tape_pack_trailer_decode(tr, sizeof(tr), size_bytes, &t);
	if (rc) {
		if (rc == -EBADMSG)
			tape_log(TAPE_LOG_WARN,
				 "pack %s: trailer (%u blocks, index at %llu) does not fit an "
				 "object of %llu bytes",
				 key, tape_get_le32(tr + 12),
				 (unsigned long long)tape_get_le64(tr + 16),
				 (unsigned long long)size_bytes);
		return rc;
	}
	size_t ilen = (size_t)t.index_len;
	uint8_t id[16];
	if (tape_pack_key_parse(key, id))
		return -EINVAL;
	ib = malloc(ilen ? ilen : 1);
	e = malloc((t.nr_blocks ? t.nr_blocks : 1) * sizeof(*e));
	if (!ib || !e) {
		rc = -ENOMEM;
		goto out_free;
	}
	if (ilen) {
		n = pool_get(p, key, t.index_off, ib, ilen);
		if (n < 0) {
			rc = (int)n;
			goto out_free;
		}
		if ((size_t)n != ilen) {
			rc = -EBADMSG;
			goto out_free;
		}
	}
	rc = tape_pack_index_read(pool_codec(p), id, ib, ilen, &t, e);
	if (rc) {
		tape_log(TAPE_LOG_WARN, "pack %s: index %s", key,
			 t.version != p->codec.version ? "of another pool version"
						       : "damaged or not authentic");
		goto out_free;
	}
	free(ib);
	*ents = e;
	*nr = t.nr_blocks;
	return 0;
out_free:
	free(ib);
	free(e);
	return rc;
}

/* A manifest up to this size is read with one GET, as the HEAD sizes it;
 * a larger one only once its header agrees with that size. */
#define MANIFEST_ONE_GET (16u << 20)

/* HEAD, bound, GET: the whole manifest object, never more room than its own
 * header accounts for (a listing, a HEAD or a sparse file may claim any
 * size; the header's geometry is bounded by format.c). */
static int manifest_read(struct tier_pool *p, const char *key, uint8_t **buf, size_t *len)
{
	struct tape_obj_info oi;
	uint8_t hdr[TAPE_MANIFEST_FIXED2];
	uint64_t total;
	int rc = p->be->ops->head(p->be, key, &oi);
	if (rc)
		return rc;
	if (oi.size_bytes < TAPE_MANIFEST_FIXED + 32 || oi.size_bytes > TAPE_MANIFEST_MAX_BYTES) {
		tape_log(TAPE_LOG_WARN, "manifest %s: object of %llu bytes cannot be a manifest",
			 key, (unsigned long long)oi.size_bytes);
		return -EBADMSG;
	}
	if (oi.size_bytes > MANIFEST_ONE_GET) {
		ssize_t n = pool_get(p, key, 0, hdr, sizeof(hdr));
		if (n < 0)
			return (int)n;
		if (n != (ssize_t)sizeof(hdr))
			return -EIO; /* shorter than its HEAD said: changed under us */
		rc = tape_manifest_header_check(hdr, sizeof(hdr), &total);
		if (!rc && total != oi.size_bytes)
			rc = -EBADMSG;
		if (rc) {
			tape_log(TAPE_LOG_WARN,
				 "manifest %s: header (size %llu, grain %u, %llu grains, %u packs) "
				 "does not describe an object of %llu bytes",
				 key, (unsigned long long)tape_get_le64(hdr + 16),
				 tape_get_le32(hdr + 24), (unsigned long long)tape_get_le64(hdr + 32),
				 tape_get_le32(hdr + 28), (unsigned long long)oi.size_bytes);
			return rc;
		}
	}
	rc = get_exact(p, key, oi.size_bytes, buf);
	if (!rc)
		*len = (size_t)oi.size_bytes;
	return rc;
}

int pool_manifest_load(struct tier_pool *p, const char *key, struct tape_manifest *m,
		       uint8_t sha[32])
{
	uint8_t *buf;
	size_t len;
	memset(m, 0, sizeof(*m));
	int rc = manifest_read(p, key, &buf, &len);
	if (rc)
		return rc;
	rc = tape_manifest_decode(buf, len, pool_codec(p), key, m);
	if (!rc && sha)
		memcpy(sha, buf + len - 32, 32);
	if (rc)
		tape_log(TAPE_LOG_ERR, "manifest %s: refused: %s", key,
			 rc == -EBADMSG ? "damaged or not authentic (the pool was tampered with "
					  "or damaged)"
			 : rc == -EPROTONOSUPPORT ? "of an unsupported format version"
						  : strerror(-rc));
	free(buf);
	return rc;
}

int pool_pin_manifest(struct tier_pool *p, const struct tape_manifest *m, uint32_t *map)
{
	int rc = 0;
	uint32_t i;
	pthread_mutex_lock(&p->lock);
	for (i = 0; i < m->nr_packs; i++) {
		long no = pool_pack_add_locked(p, m->packs[i], PACK_STORED);
		if (no < 0) {
			rc = (int)no;
			break;
		}
		if (p->packs[no].state == PACK_DOOMED) {
			rc = -EAGAIN;
			break;
		}
		p->packs[no].pins++;
		map[i] = (uint32_t)no;
	}
	if (rc)
		for (uint32_t j = 0; j < i; j++)
			p->packs[map[j]].pins--;
	pthread_mutex_unlock(&p->lock);
	return rc;
}

void pool_unpin(struct tier_pool *p, const uint32_t *nos, uint32_t n)
{
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < n; i++)
		p->packs[nos[i]].pins--;
	pthread_mutex_unlock(&p->lock);
}

/* ---- refresh ---- */

struct objvec {
	struct tape_obj_info *v;
	size_t n, cap;
};

static int objvec_add(void *arg, const struct tape_obj_info *oi)
{
	struct objvec *ov = arg;
	if (ov->n == ov->cap) {
		size_t cap = ov->cap ? ov->cap * 2 : 64;
		struct tape_obj_info *n = realloc(ov->v, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		ov->v = n;
		ov->cap = cap;
	}
	ov->v[ov->n++] = *oi;
	return 0;
}

int pool_refresh(struct tier_pool *p)
{
	struct objvec ov = {0};
	uint64_t gen;
	int rc, dropped = 0;
	pthread_mutex_lock(&p->lock);
	gen = ++p->gen;
	for (uint32_t i = 0; i < p->nr_packs; i++)
		p->packs[i].seen = 0;
	pthread_mutex_unlock(&p->lock);

	rc = p->be->ops->list(p->be, "packs/", objvec_add, &ov);
	if (rc)
		goto out_free;
	for (size_t i = 0; i < ov.n; i++) {
		uint8_t id[16];
		if (tape_pack_key_parse(ov.v[i].key, id))
			continue;
		pthread_mutex_lock(&p->lock);
		long no = pool_pack_find_locked(p, id);
		int known = no >= 0 && p->packs[no].state != PACK_GONE && p->packs[no].indexed;
		if (no >= 0) {
			p->packs[no].seen = 1;
			p->packs[no].size_bytes = ov.v[i].size_bytes;
			p->packs[no].mtime = ov.v[i].mtime;
		}
		pthread_mutex_unlock(&p->lock);
		if (known)
			continue;
		struct tape_pack_entry *ents;
		uint32_t nr;
		rc = pool_pack_index_fetch(p, ov.v[i].key, ov.v[i].size_bytes, &ents, &nr);
		if (rc == -ENOENT) { /* deleted since the listing */
			rc = 0;
			continue;
		}
		if (rc == -EBADMSG || rc == -EPROTONOSUPPORT) {
			tape_log(TAPE_LOG_WARN, "pack %s: unreadable index (%s), ignored",
				 ov.v[i].key, strerror(-rc));
			rc = 0;
			continue;
		}
		if (rc)
			goto out_free;
		pthread_mutex_lock(&p->lock);
		no = pool_pack_add_locked(p, id, PACK_STORED);
		if (no < 0) {
			rc = (int)no;
			pthread_mutex_unlock(&p->lock);
			free(ents);
			goto out_free;
		}
		struct pool_pack *pk = &p->packs[no];
		if (pk->indexed) { /* raced with another refresher */
			free(ents);
		} else {
			free(pk->ents);
			pk->ents = ents;
			pk->nr_ents = pk->cap_ents = nr;
			pk->indexed = 1;
			for (uint32_t e = 0; e < nr && !rc; e++)
				rc = pool_bidx_insert_locked(p, (uint32_t)no, e);
		}
		pk->seen = 1;
		pk->size_bytes = ov.v[i].size_bytes;
		pk->mtime = ov.v[i].mtime;
		pthread_mutex_unlock(&p->lock);
		if (rc)
			goto out_free;
	}
	/* forget stored packs that vanished (deleted by another host's gc) */
	pthread_mutex_lock(&p->lock);
	for (uint32_t i = 0; i < p->nr_packs; i++) {
		struct pool_pack *pk = &p->packs[i];
		if (pk->state == PACK_STORED && !pk->seen && pk->gen < gen && !pk->pins) {
			pk->state = PACK_GONE;
			pk->indexed = 0;
			free(pk->ents);
			pk->ents = NULL;
			pk->nr_ents = pk->cap_ents = 0;
			dropped = 1;
		}
	}
	if (dropped)
		rc = pool_bidx_rebuild_locked(p);
	p->refreshed = 1;
	pthread_mutex_unlock(&p->lock);
out_free:
	free(ov.v);
	return rc;
}

/* ---- open / close ---- */

static int opt_u64(const char *opts, const char *key, uint64_t def, uint64_t min, uint64_t max,
		   uint64_t *out)
{
	char v[32];
	int rc = tape_opt_get(opts, key, v, sizeof(v));
	if (rc < 0)
		return -EINVAL;
	if (rc == 0) {
		*out = def;
		return 0;
	}
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || *end || end == v || x < min || x > max)
		return -EINVAL;
	*out = x;
	return 0;
}

static void pool_free(struct tier_pool *p)
{
	for (uint32_t i = 0; i < p->nr_packs; i++)
		free(p->packs[i].ents);
	free(p->packs);
	free(p->idmap);
	free(p->bidx);
	if (p->be)
		p->be->ops->close(p->be);
	tape_codec_wipe(&p->codec);
	free(p->opts);
	free(p->name);
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->gc_lock);
	pthread_mutex_destroy(&p->codec_lock);
	free(p);
}

/* ---- format version, keys, compression (codec.h) ---- */

/* compress=zstd[:LEVEL]|none; the default level was chosen by measurement
 * (BENCHMARKS.md, "Compression") */
#define POOL_ZSTD_DEFAULT 3

static int opt_compress(const char *opts, int *level)
{
	char v[32];
	int rc = tape_opt_get(opts, "compress", v, sizeof(v));
	if (rc < 0)
		return -EINVAL;
	*level = POOL_ZSTD_DEFAULT;
	if (rc == 0 || !strcmp(v, "zstd"))
		return 0;
	if (!strcmp(v, "none")) {
		*level = 0;
		return 0;
	}
	char *end;
	if (strncmp(v, "zstd:", 5))
		return -EINVAL;
	long l = strtol(v + 5, &end, 10);
	if (*end || end == v + 5 || l < 1 || l > 19)
		return -EINVAL;
	*level = (int)l;
	return 0;
}

static bool pool_is_empty(struct tier_pool *p, int *rc)
{
	struct objvec ov = {0};
	*rc = p->be->ops->list(p->be, "packs/", objvec_add, &ov);
	if (!*rc && !ov.n)
		*rc = p->be->ops->list(p->be, "manifests/", objvec_add, &ov);
	bool empty = !*rc && !ov.n;
	free(ov.v);
	return empty;
}

static int config_get(struct tier_pool *p, uint8_t cfg[TAPE_CONFIG_BYTES], bool *found)
{
	struct tape_obj_info oi;
	*found = false;
	int rc = p->be->ops->head(p->be, TAPE_CONFIG_KEY, &oi);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	if (oi.size_bytes != TAPE_CONFIG_BYTES)
		return -EBADMSG;
	ssize_t n = pool_get(p, TAPE_CONFIG_KEY, 0, cfg, TAPE_CONFIG_BYTES);
	if (n < 0)
		return (int)n;
	if (n != TAPE_CONFIG_BYTES)
		return -EBADMSG;
	*found = true;
	return 0;
}

/* Writes a new pool's config unless another host did first (under the
 * exclusive bucket lock, so two creators end with one config). */
static int config_create(struct tier_pool *p, const char *pass, size_t passlen,
			 const struct tape_kdf *kdf, char *err, size_t errlen)
{
	uint8_t cfg[TAPE_CONFIG_BYTES];
	struct tape_codec c;
	int64_t now;
	unsigned reclaimed;
	bool found;
	int rc = pool_lock_exclusive(p, &now, &reclaimed, err, errlen);
	if (rc)
		return rc;
	rc = config_get(p, cfg, &found);
	if (!rc && !found) {
		rc = tape_config_create(&c, pass, passlen, kdf, cfg);
		if (!rc)
			rc = p->be->ops->put(p->be, TAPE_CONFIG_KEY, cfg, sizeof(cfg));
		tape_codec_wipe(&c);
		if (!rc)
			tape_log(TAPE_LOG_INFO, "pool config written (format 2, %s)",
				 pass ? "encrypted" : "not encrypted");
	}
	pool_unlock_exclusive(p);
	if (rc)
		snprintf(err, errlen, "writing the pool's config: %s", strerror(-rc));
	return rc;
}

/* Reads the pool's config (creating it for a new pool) and sets p->codec:
 * version 1 for a pool without one, else its parameters and keys. */
static int pool_codec_setup(struct tier_pool *p, const char *opts, bool create, const char *name,
			    char *err, size_t errlen)
{
	char keyfile[512], encrypt[16], format[8], kdfv[8];
	char *pass = NULL;
	size_t passlen = 0;
	uint8_t cfg[TAPE_CONFIG_BYTES];
	bool found;
	int zlevel, rc;
	struct tape_kdf kdf = {15, 8, 1};

	int hk = tape_opt_get(opts, "key", keyfile, sizeof(keyfile));
	int he = tape_opt_get(opts, "encrypt", encrypt, sizeof(encrypt));
	int hf = tape_opt_get(opts, "format", format, sizeof(format));
	int hd = tape_opt_get(opts, "kdf_log2n", kdfv, sizeof(kdfv));
	if (hk < 0 || he < 0 || hf < 0 || hd < 0 || opt_compress(opts, &zlevel) ||
	    (he > 0 && strcmp(encrypt, "none")) || (hf > 0 && strcmp(format, "1") && strcmp(format, "2"))) {
		snprintf(err, errlen, "bad pool option (key=FILE, encrypt=none, format=1|2, "
				      "compress=zstd[:1..19]|none)");
		return -EINVAL;
	}
	if (hk > 0 && he > 0) {
		snprintf(err, errlen, "key= and encrypt=none contradict each other");
		return -EINVAL;
	}
	if (hd > 0) { /* tests: a cheaper KDF for a new pool's key */
		char *end;
		long n = strtol(kdfv, &end, 10);
		if (*end || n < 10 || n > 22) {
			snprintf(err, errlen, "kdf_log2n must be 10..22");
			return -EINVAL;
		}
		kdf.log2n = (uint8_t)n;
	}
	if (hk > 0 && hf > 0 && !strcmp(format, "1")) {
		snprintf(err, errlen, "a format 1 pool cannot be encrypted");
		return -EINVAL;
	}
	if (hk > 0) {
		rc = tape_pass_read(keyfile, &pass, &passlen, err, errlen);
		if (rc)
			return rc;
	}
	rc = config_get(p, cfg, &found);
	if (rc) {
		snprintf(err, errlen, "reading the pool's config: %s", strerror(-rc));
		goto out;
	}
	if (!found) {
		bool v1 = hf > 0 && !strcmp(format, "1");
		if (!create && pass) {
			snprintf(err, errlen, "pool %s: its config object is missing: refusing to "
					      "open an encrypted pool without it", name);
			rc = -EIO;
			goto out;
		}
		/* a pool that is still empty becomes format 2 at its creation or
		 * first use (the store's default pool is never "created") */
		if (!v1) {
			bool empty = pool_is_empty(p, &rc);
			if (rc) {
				snprintf(err, errlen, "listing the pool: %s", strerror(-rc));
				goto out;
			}
			v1 = !empty; /* a pool written before format 2 stays format 1 */
		}
		if (v1) {
			if (pass) {
				snprintf(err, errlen, "pool %s holds format 1 data, which cannot be "
						      "encrypted: use a new pool", name);
				rc = -EINVAL;
				goto out;
			}
			tape_codec_v1(&p->codec);
			rc = 0;
			goto out;
		}
		rc = config_create(p, pass, passlen, &kdf, err, errlen);
		if (rc)
			goto out;
		rc = config_get(p, cfg, &found);
		if (!rc && !found)
			rc = -EIO;
		if (rc) {
			snprintf(err, errlen, "reading the pool's config back: %s", strerror(-rc));
			goto out;
		}
	}
	if (hf > 0 && !strcmp(format, "1")) {
		snprintf(err, errlen, "pool %s is a format 2 pool", name);
		rc = -EINVAL;
		goto out;
	}
	rc = tape_config_open(cfg, sizeof(cfg), pass, passlen, &p->codec);
	if (rc == -EACCES)
		snprintf(err, errlen, "wrong key for pool %s", name);
	else if (rc == -ENOKEY)
		snprintf(err, errlen, "pool %s is encrypted: key=FILE is needed", name);
	else if (rc == -EPROTONOSUPPORT)
		snprintf(err, errlen, "pool %s: config of an unknown version", name);
	else if (rc)
		snprintf(err, errlen, "pool %s: config damaged (%s)", name, strerror(-rc));
	if (rc == -ENOKEY)
		rc = -EACCES;
	if (!rc && !p->codec.encrypted && pass) {
		snprintf(err, errlen, "pool %s is not encrypted: drop key=", name);
		rc = -EINVAL;
	}
	if (!rc)
		p->codec.zlevel = zlevel;
out:
	tape_pass_free(pass, passlen);
	if (rc)
		tape_codec_wipe(&p->codec);
	return rc;
}

static int pool_open_common(struct tape_backend *be, const char *opts, bool create,
			    const char *name, struct tier_pool **out, char *err, size_t errlen)
{
	uint64_t pack_mb, threads, cache_mb, ra_mb, pack_kb, lock_stale, lock_wait;
	if (!opts)
		opts = "";
	if (opt_u64(opts, "pack_mb", 32, 1, 4096, &pack_mb) ||
	    opt_u64(opts, "pack_kb", 0, 1, 4u << 20, &pack_kb) ||
	    opt_u64(opts, "threads", 4, 1, 64, &threads) ||
	    opt_u64(opts, "cache_mb", 64, 1, 1u << 20, &cache_mb) ||
	    opt_u64(opts, "readahead_mb", 64, 0, 4096, &ra_mb) ||
	    opt_u64(opts, "lock_stale", 1800, 6, 7 * 86400, &lock_stale) ||
	    opt_u64(opts, "lock_wait", 1800, 0, 7 * 86400, &lock_wait)) {
		snprintf(err, errlen, "bad pool option (pack_mb, threads, cache_mb, readahead_mb, "
				      "lock_stale, lock_wait)");
		return -EINVAL;
	}
	struct tier_pool *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	p->be = be;
	p->pack_bytes = pack_kb ? pack_kb << 10 : pack_mb << 20; /* pack_kb: tests */
	p->threads = (unsigned)threads;
	p->cache_bytes = cache_mb << 20;
	p->readahead_bytes = ra_mb << 20;
	p->next_upload_id = 1;
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->gc_lock, NULL);
	pool_lock_init(&p->lk, (int64_t)lock_stale, (int64_t)lock_wait);
	pthread_mutex_init(&p->codec_lock, NULL);
	p->opts = strdup(opts);
	p->name = strdup(name);
	if (!p->opts || !p->name) {
		p->be = NULL;
		pool_free(p);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* a create checks the key and writes the config now; a mount's open
	 * does no I/O (it may run under the engine's lock), the first
	 * operation reads the config (pool_ready) */
	if (create) {
		int rc = pool_codec_setup(p, opts, true, name, err, errlen);
		if (rc) {
			p->be = NULL; /* the caller keeps it */
			pool_free(p);
			return rc;
		}
		p->codec_ready = true;
	}
	*out = p;
	return 0;
}

int pool_ready(struct tier_pool *p, char *err, size_t errlen)
{
	int rc = 0;
	pthread_mutex_lock(&p->codec_lock);
	if (!p->codec_ready) {
		rc = pool_codec_setup(p, p->opts, false, p->name, err, errlen);
		if (!rc)
			p->codec_ready = true;
		else
			tape_log(TAPE_LOG_ERR, "pool %s: %s", p->name, err);
	}
	pthread_mutex_unlock(&p->codec_lock);
	return rc;
}

int tape_pool_open_backend(struct tape_backend *be, const char *opts, struct tier_pool **out,
			   char *err, size_t errlen)
{
	return pool_open_common(be, opts, false, "", out, err, errlen);
}

int tape_pool_create_backend(struct tape_backend *be, const char *opts, struct tier_pool **out,
			     char *err, size_t errlen)
{
	return pool_open_common(be, opts, true, "", out, err, errlen);
}

ssize_t pool_get(struct tier_pool *p, const char *key, uint64_t off, void *buf, size_t len)
{
	ssize_t n = p->be->ops->get(p->be, key, off, buf, len);

	if (n > 0)
		atomic_fetch_add(&p->bytes_read, (uint64_t)n);
	return n;
}

ssize_t pool_getv(struct tier_pool *p, const char *key, uint64_t off, const struct iovec *iov,
		  int iovcnt, tape_progress_cb progress, void *arg)
{
	ssize_t n = tape_getv(p->be, key, off, iov, iovcnt, progress, arg);

	if (n > 0)
		atomic_fetch_add(&p->bytes_read, (uint64_t)n);
	return n;
}

static uint64_t tier_pool_bytes_read(struct tier_pool *p)
{
	return atomic_load(&p->bytes_read);
}

struct tape_backend *tape_pool_backend(struct tier_pool *p)
{
	return p->be;
}

static int tier_pool_open_as(const char *name, const char *url, const char *opts, bool create,
			     struct tier_pool **out, char *err, size_t errlen)
{
	struct tape_backend *be;
	char v[16];
	if (!opts)
		opts = "";
	/* data leaving the site is encrypted unless the user says otherwise */
	if (create && !strncmp(url, "s3://", 5) && tape_opt_get(opts, "key", v, sizeof(v)) == 0 &&
	    tape_opt_get(opts, "encrypt", v, sizeof(v)) == 0) {
		snprintf(err, errlen, "an s3:// pool needs key=FILE (a 0600 passphrase file), or "
				      "encrypt=none to store it unencrypted");
		return -EINVAL;
	}
	int rc = tape_backend_open(url, opts, &be, err, errlen);
	if (rc)
		return rc;
	rc = pool_open_common(be, opts, create, name, out, err, errlen);
	if (rc)
		be->ops->close(be);
	return rc;
}

static int tier_pool_open(const char *name, const char *url, const char *opts,
			  struct tier_pool **out, char *err, size_t errlen)
{
	return tier_pool_open_as(name, url, opts, false, out, err, errlen);
}

static int tier_pool_create(const char *name, const char *url, const char *opts,
			    struct tier_pool **out, char *err, size_t errlen)
{
	return tier_pool_open_as(name, url, opts, true, out, err, errlen);
}

/* A new passphrase for an encrypted pool: the same master key, wrapped
 * anew, written under the exclusive lock. Other hosts' running mounts keep
 * working; they need the new passphrase at their next mount. */
static int tier_pool_passwd(struct tier_pool *p, const char *keyfile, char *err, size_t errlen)
{
	uint8_t cfg[TAPE_CONFIG_BYTES];
	char *pass = NULL;
	size_t passlen = 0;
	int64_t now;
	unsigned reclaimed;
	int rc = pool_ready(p, err, errlen);
	if (rc)
		return rc;
	if (p->codec.version != 2 || !p->codec.encrypted) {
		snprintf(err, errlen, "the pool is not encrypted");
		return -EINVAL;
	}
	rc = tape_pass_read(keyfile, &pass, &passlen, err, errlen);
	if (rc)
		return rc;
	rc = tape_config_rewrap(&p->codec, pass, passlen, cfg);
	tape_pass_free(pass, passlen);
	if (rc) {
		snprintf(err, errlen, "wrapping the key: %s", strerror(-rc));
		return rc;
	}
	rc = pool_lock_exclusive(p, &now, &reclaimed, err, errlen);
	if (rc)
		return rc;
	rc = p->be->ops->put(p->be, TAPE_CONFIG_KEY, cfg, sizeof(cfg));
	pool_unlock_exclusive(p);
	if (rc)
		snprintf(err, errlen, "writing the pool's config: %s", strerror(-rc));
	return rc;
}

static void tier_pool_close(struct tier_pool *p)
{
	if (!p)
		return;
	pool_lock_fini(p);
	pool_free(p);
}

/* ---- identity, keys ---- */

static void tier_pool_identity(struct tier_pool *p, const char *holder)
{
	pool_lock_set_holder(p, holder);
}

static int tier_manifest_key(const char *volume, uint64_t version, char *out, size_t outlen)
{
	uint8_t rnd[8];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EIO;
	return tape_manifest_key(volume, version, rnd, out, outlen);
}

int tape_manifest_key_check(const char *key, const char *volume, uint64_t version)
{
	char want[TAPE_KEY_MAX];
	uint8_t zero[8] = {0};
	int rc = tape_manifest_key(volume, version, zero, want, sizeof(want));
	if (rc)
		return rc;
	size_t kl = strlen(key), wl = strlen(want);
	/* same but for the 16 hex digits before ".mf" */
	if (kl != wl || memcmp(key, want, wl - 19) || strcmp(key + kl - 3, ".mf"))
		return -EINVAL;
	for (size_t i = wl - 19; i < wl - 3; i++)
		if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
			return -EINVAL;
	return 0;
}

/* ---- list / remove ---- */

struct list_ctx {
	struct tier_pool *p;
	struct objvec ov;
};

static int tier_list(struct tier_pool *p, int (*cb)(void *arg, const struct tier_manifest_info *mi),
		     void *arg)
{
	struct objvec ov = {0};
	char err[256];
	int rc = pool_ready(p, err, sizeof(err));
	if (rc)
		return rc;
	rc = pool_lock_shared(p, 0, NULL, err, sizeof(err));
	if (rc) {
		tape_log(TAPE_LOG_ERR, "listing manifests: %s", err);
		return rc;
	}
	rc = p->be->ops->list(p->be, "manifests/", objvec_add, &ov);
	for (size_t i = 0; !rc && i < ov.n; i++) {
		size_t kl = strlen(ov.v[i].key);
		if (kl < 3 || strcmp(ov.v[i].key + kl - 3, ".mf") != 0)
			continue;
		struct tape_manifest m;
		rc = pool_manifest_load(p, ov.v[i].key, &m, NULL);
		if (rc == -ENOENT) { /* removed meanwhile */
			rc = 0;
			continue;
		}
		if (rc == -EBADMSG || rc == -EPROTONOSUPPORT || rc == -EIO) {
			/* one bad object must not stop every import: say so, go on */
			tape_log(TAPE_LOG_ERR, "manifest %s unreadable (%s): skipped", ov.v[i].key,
				 strerror(-rc));
			struct tier_manifest_info bad = {.manifest = ov.v[i].key};
			rc = cb(arg, &bad);
			continue;
		}
		if (rc)
			break;
		struct tier_manifest_info mi = {
			.manifest = ov.v[i].key,
			.volume = m.volume,
			.version = m.version,
			.size_bytes = m.size_bytes,
			.grain_bytes = m.grain_bytes,
			.date = m.date,
			.host = m.host,
			.blocks_total = m.blocks_total,
		};
		rc = cb(arg, &mi);
		tape_manifest_release(&m);
	}
	free(ov.v);
	pool_unlock_shared(p);
	return rc;
}

static int tier_remove(struct tier_pool *p, const char *manifest)
{
	size_t kl = strlen(manifest);
	char err[256];
	if (strncmp(manifest, "manifests/", 10) != 0 || kl < 4 || strcmp(manifest + kl - 3, ".mf"))
		return -EINVAL;
	/* not while another host's gc may be rewriting it (its PUT would bring
	 * the manifest back); the caller's trash retries later */
	int rc = pool_lock_shared(p, 0, NULL, err, sizeof(err));
	if (rc) {
		tape_log(TAPE_LOG_WARN, "deleting %s: %s", manifest, err);
		return rc;
	}
	rc = p->be->ops->del(p->be, manifest);
	pool_unlock_shared(p);
	return rc;
}

static int tier_upload(struct tier_pool *p, const struct tier_upload_req *req,
		       struct tier_upload_res *res, char *err, size_t errlen)
{
	return tape_pool_upload(p, req, res, err, errlen);
}

static int tier_gc(struct tier_pool *p, int64_t grace_seconds, struct tier_gc_stats *st)
{
	return tape_pool_gc(p, grace_seconds, st);
}

const struct tier_ops tape_tier_ops = {
	.pool_open = tier_pool_open,
	.pool_create = tier_pool_create,
	.pool_passwd = tier_pool_passwd,
	.pool_close = tier_pool_close,
	.pool_identity = tier_pool_identity,
	.manifest_key = tier_manifest_key,
	.pool_bytes_read = tier_pool_bytes_read,
	.upload = tier_upload,
	.remove = tier_remove,
	.gc = tier_gc,
	.list = tier_list,
	.image_open = tape_image_open,
	.image_read = tape_image_read,
	.image_read_iov = tape_image_read_iov,
	.image_prefetch = tape_image_prefetch,
	.image_seek = tape_image_seek,
	.image_grain_hash = tape_image_grain_hash,
	.image_block_name = tape_image_block_name,
	.image_verify = tape_image_verify,
	.image_close = tape_image_close,
};
