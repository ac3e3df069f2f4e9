/*
 * tapejob.c — tape copies (the Tape Server Option side): a disk history's BV
 * image, or the TV itself under a copy-on-write overlay (-m TAPE), uploaded
 * through the tier ops (tape/) as a complete volume image; incremental by
 * tracking: only grains written since the parent tape history's cut era are
 * read and hashed. Also tape retention (GEN/DAY), cancel, pool import and gc.
 *
 * A tape job runs on its own thread. The history row is `executing` from the
 * request on (a crash makes it `failed` at the next mount) and becomes
 * `succeeded` only after the tier stored the manifest.
 */
#include "engine_int.h"
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define LOG_PREFIX "tape"

struct tjob {
	struct vol *v;
	struct history *h;
	struct pool *p;
	struct job *ov;	     /* -m TAPE overlay job, or NULL */
	struct bvol *ovb;    /* the overlay's file */
	atomic_int cancel;
	_Atomic uint64_t *changed; /* NULL: every grain */
	char parent[256];
	char key[256];	     /* the manifest's key, recorded before the upload */
	uint64_t nr_changed;
};

/* ---------- grain sources ---------- */

static int read_from_hist(void *arg, uint64_t g, void *buf)
{
	struct tjob *t = arg;

	return grain_read_hist(t->v, t->h, g, buf);
}

/* -m TAPE: a grain still pending is read from the TV (and no longer needs
 * copy-on-write); one already copied on write is read from the overlay */
static int read_from_overlay(void *arg, uint64_t g, void *buf)
{
	struct tjob *t = arg;
	struct vol *v = t->v;
	uint64_t grain = v->row.grain_bytes, off = g * grain, len = grain;
	int rc;

	if (off + len > v->row.size_bytes) {
		len = v->row.size_bytes - off;
		memset((char *)buf + len, 0, grain - len);
	}
	stripes_lock(v, g, g);
	if (bitmap_test(t->ov->pending, g)) {
		rc = util_pread_full(IO_DATA, v->tv_fd, buf, (size_t)len, off);
		if (!rc && bitmap_clear(t->ov->pending, g))
			atomic_fetch_sub(&t->ov->remaining, 1);
	} else {
		rc = util_pread_full(IO_DATA, t->ovb->fd, buf, (size_t)len, off);
	}
	stripes_unlock(v, g, g);
	return rc;
}

/* zero_until for a disk history: its BV's holes, when no copy job still
 * fills the BV (then every grain is read as before) */
static uint64_t hist_zero_until(void *arg, uint64_t g, uint64_t limit)
{
	struct tjob *t = arg;
	struct vol *v = t->v;
	uint64_t grain = v->row.grain_bytes;
	uint64_t r = g;

	pthread_rwlock_rdlock(&v->barrier);
	if (!t->h->job)
		r = file_zero_until(t->h->bv->fd, g, limit, grain, v->row.size_bytes);
	pthread_rwlock_unlock(&v->barrier);
	return r;
}

/* zero_until for -m TAPE: grains still pending in the overlay whose TV
 * range is a hole, checked under their stripes (a writer copies a pending
 * grain to the overlay under its stripe before changing the TV); they leave
 * the overlay's pending set as read_from_overlay's reads do */
static uint64_t overlay_zero_until(void *arg, uint64_t g, uint64_t limit)
{
	struct tjob *t = arg;
	struct vol *v = t->v;
	uint64_t grain = v->row.grain_bytes, e = g;

	if (file_zero_until(v->tv_fd, g, limit, grain, v->row.size_bytes) == g)
		return g; /* data (the common case): no locks taken */
	stripes_lock(v, g, limit - 1);
	while (e < limit && bitmap_test(t->ov->pending, e))
		e++;
	e = file_zero_until(v->tv_fd, g, e, grain, v->row.size_bytes);
	for (uint64_t x = g; x < e; x++)
		if (bitmap_clear(t->ov->pending, x))
			atomic_fetch_sub(&t->ov->remaining, 1);
	stripes_unlock(v, g, limit - 1);
	return e;
}

/* ---------- parent choice ---------- */

/* newest succeeded tape history in the same pool whose cut is not later than h's */
static struct history *tape_parent(struct vol *v, struct history *h)
{
	struct history *best = NULL;

	for (struct history *x = v->hists; x; x = x->next) {
		if (x == h || x->row.tape_status != HS_SUCCEEDED || !x->row.cut_era)
			continue;
		if (strcmp(x->row.pool, h->row.pool) || x->row.cut_era > h->row.cut_era)
			continue;
		if (!best || x->row.cut_era > best->row.cut_era)
			best = x;
	}
	return best;
}

/* ---------- the job ---------- */

static void tjob_free(struct tjob *t)
{
	free(t->changed);
	free(t);
}

static void *tjob_main(void *arg)
{
	struct tjob *t = arg;
	struct vol *v = t->v;
	struct engine *e = v->e;
	struct history *h = t->h;
	struct tier_upload_req req;
	struct tier_upload_res res;
	char err[256] = "";
	int rc;

	memset(&req, 0, sizeof(req));
	memset(&res, 0, sizeof(res));
	req.volume = v->row.name;
	req.version = h->row.version;
	req.size_bytes = v->row.size_bytes;
	req.grain_bytes = v->row.grain_bytes;
	req.date = h->row.date;
	req.host = e->holder;
	req.manifest_key = t->key[0] ? t->key : NULL;
	req.parent = t->parent[0] ? t->parent : NULL;
	req.changed = t->changed ? (const uint8_t *)t->changed : NULL;
	req.src.read_grain = t->ov ? read_from_overlay : read_from_hist;
	req.src.zero_until = t->ov ? overlay_zero_until : hist_zero_until;
	req.src.arg = t;
	req.cancel = &t->cancel;
	req.done_grains = &h->tape_done;
	rc = e->tier->upload(t->p->tp, &req, &res, err, sizeof(err));

	pthread_mutex_lock(&e->lock);
	if (!rc && atomic_load(&t->cancel))
		rc = -ECANCELED;
	if (!rc) {
		h->row.tape_status = HS_SUCCEEDED;
		snprintf(h->row.manifest, sizeof(h->row.manifest), "%s", res.manifest);
		h->row.blocks = res.blocks_total;
		atomic_fetch_add(&e->m.tape_uploads, 1);
		atomic_fetch_add(&e->m.tape_bytes, res.bytes_uploaded);
		atomic_fetch_add(&e->m.tape_blocks_new, res.blocks_new);
		vol_log(v,
			"tape copy of version %llu succeeded: pool %s, %llu blocks, %llu new, "
			"%llu grains read, %llu bytes uploaded%s",
			(unsigned long long)h->row.version, h->row.pool,
			(unsigned long long)res.blocks_total, (unsigned long long)res.blocks_new,
			(unsigned long long)res.grains_read, (unsigned long long)res.bytes_uploaded,
			t->parent[0] ? " (incremental)" : "");
	} else {
		h->row.tape_status = HS_FAILED;
		/* the manifest may be stored (a cancel after it, a PUT whose answer
		 * was lost): a failed history leaves nothing in the pool */
		if (h->row.manifest[0]) {
			e->trash_gen++;
			if (catalog_trash_add(e->cat, h->row.pool, h->row.manifest))
				log_err("cannot queue %s for deletion", h->row.manifest);
			h->row.manifest[0] = 0;
		}
		atomic_fetch_add(&e->m.tape_failed, 1);
		vol_log(v, "error: tape copy of version %llu failed: %s (%s)",
			(unsigned long long)h->row.version,
			err[0] ? err : strerror(-rc), util_errname(rc));
	}
	if (save_hist(e, h))
		log_err("cannot record the end of tape copy %llu",
			(unsigned long long)h->row.version);
	h->tjob = NULL;
	if (t->ov) {
		pthread_rwlock_wrlock(&v->barrier);
		for (struct job **pp = &v->jobs; *pp; pp = &(*pp)->next)
			if (*pp == t->ov) {
				*pp = t->ov->next;
				break;
			}
		pthread_rwlock_unlock(&v->barrier);
		close(t->ovb->fd);
		unlink(t->ovb->path);
		free(t->ov->pending);
		free(t->ov);
		free(t->ovb);
	}
	if (!rc)
		tape_apply_retention(e, v);
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	tape_empty_trash(e); /* what retention (or a failure) put in the trash */
	if (rc && !err[0])
		snprintf(err, sizeof(err), "%s", strerror(-rc));
	engine_hook_post(e, v, "tapecopy", rc, err);
	tjob_free(t);
	engine_thread_end(e);
	return NULL;
}

/* under e->lock. h->row.pool names the pool; h->row.cut_era is set. */
static int tjob_launch(struct engine *e, struct vol *v, struct history *h, struct job *ov,
		       struct bvol *ovb, char *err, size_t errlen)
{
	struct tjob *t = calloc(1, sizeof(*t));
	struct history *parent;
	pthread_attr_t a;
	pthread_t th;
	int rc;

	if (!t)
		return -ENOMEM;
	t->v = v;
	t->h = h;
	t->ov = ov;
	t->ovb = ovb;
	t->p = engine_pool(e, h->row.pool);
	if (!t->p) {
		free(t);
		snprintf(err, errlen, "tape pool %s does not exist", h->row.pool);
		return -ENOENT;
	}
	rc = engine_pool_open(e, t->p, err, errlen);
	if (rc) {
		free(t);
		return rc;
	}
	parent = tape_parent(v, h);
	if (parent) {
		t->changed = calloc(bitmap_words(v->nr_grains) + 1, 8);
		if (!t->changed) {
			free(t);
			return -ENOMEM;
		}
		t->nr_changed = track_changed(v->trk, parent->row.cut_era, t->changed);
		snprintf(t->parent, sizeof(t->parent), "%s", parent->row.manifest);
	}
	if (ov) {
		/* the overlay only has to protect the grains the upload will read */
		for (uint64_t g = 0; g < v->nr_grains; g++)
			if (!t->changed || bitmap_test(t->changed, g))
				bitmap_set(ov->pending, g);
		atomic_store(&ov->remaining, t->changed ? t->nr_changed : v->nr_grains);
		ov->total = atomic_load(&ov->remaining);
	}
	atomic_store(&h->tape_done, 0);
	h->row.tape_status = HS_EXECUTING;
	/* recorded before the upload: a crash after the manifest's PUT leaves
	 * a key the next mount knows to delete, not an orphan */
	h->row.manifest[0] = 0;
	if (e->tier->manifest_key &&
	    !e->tier->manifest_key(v->row.name, h->row.version, t->key, sizeof(t->key)))
		snprintf(h->row.manifest, sizeof(h->row.manifest), "%s", t->key);
	rc = save_hist(e, h);
	if (rc) {
		tjob_free(t);
		return rc;
	}
	h->tjob = t;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	engine_thread_start(e);
	rc = pthread_create(&th, &a, tjob_main, t);
	pthread_attr_destroy(&a);
	if (rc) {
		e->nr_threads--;
		h->tjob = NULL;
		tjob_free(t);
		snprintf(err, errlen, "cannot start the tape job");
		return -rc;
	}
	vol_log(v, "tape copy of version %llu to pool %s started (%s, %llu grains to read)",
		(unsigned long long)h->row.version, h->row.pool,
		parent ? "incremental" : "full",
		(unsigned long long)(parent ? t->nr_changed : v->nr_grains));
	return 0;
}

int tape_start_copy(struct engine *e, struct vol *v, struct history *h, bool from_tv, char *err,
		    size_t errlen)
{
	(void)from_tv;
	if (!e->tier) {
		snprintf(err, errlen, "tape tier not available");
		return -EIO;
	}
	if (!h->row.pool[0])
		snprintf(h->row.pool, sizeof(h->row.pool), "%s", v->row.pool);
	return tjob_launch(e, v, h, NULL, NULL, err, errlen);
}

/* backup -m TAPE: the TV straight to tape, point in time by an overlay */
int tape_backup_direct(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply,
		       char *err, size_t errlen)
{
	struct history *h = NULL, **pp;
	struct job *ov = NULL;
	struct bvol *ovb = NULL;
	uint32_t era;
	int rc;

	if (!e->tier) {
		snprintf(err, errlen, "tape tier not available");
		return -EIO;
	}
	rc = engine_hook_pre(e, v, "backup", err, errlen);
	if (rc)
		return rc;
	/* from here on every way out runs backup.post */
	pthread_mutex_lock(&e->lock);
	if (v->restoring) {
		snprintf(err, errlen, "a restore of %s is running", v->row.name);
		rc = -EBUSY;
		goto out_unlock;
	}
	if (!engine_pool(e, v->row.pool)) {
		snprintf(err, errlen, "tape pool %s does not exist", v->row.pool);
		rc = -ENOENT;
		goto out_unlock;
	}
	h = calloc(1, sizeof(*h));
	ov = calloc(1, sizeof(*ov));
	ovb = calloc(1, sizeof(*ovb));
	if (!h || !ov || !ovb || !(ov->pending = calloc(bitmap_words(v->nr_grains) + 1, 8))) {
		rc = -ENOMEM;
		goto out_free;
	}
	ovb->fd = -1;
	snprintf(ovb->name, sizeof(ovb->name), "%s.overlay", v->row.name);
	snprintf(ovb->path, sizeof(ovb->path), "%s/overlay-%llu.img", v->dir,
		 (unsigned long long)v->row.next_version);
	ovb->fd = open(ovb->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (ovb->fd < 0 || ftruncate(ovb->fd, (off_t)v->row.size_bytes)) {
		rc = -errno;
		snprintf(err, errlen, "cannot create the overlay: %s", strerror(errno));
		goto out_free;
	}
	ov->v = v;
	ov->bv = ovb;
	ov->nr_grains = v->nr_grains;
	ov->overlay = true;
	ov->started = true;

	era = v->row.era;
	h->row.vol_id = v->row.id;
	h->row.version = v->row.next_version++;
	h->row.date = util_now();
	h->row.media = MEDIA_TAPE;
	h->row.tape_status = HS_EXECUTING;
	h->row.btype = (int)c->btype;
	h->row.cut_era = era;
	snprintf(h->row.pool, sizeof(h->row.pool), "%s", v->row.pool);
	v->row.era = era + 1;
	rc = catalog_begin(e->cat);
	if (!rc)
		rc = save_hist(e, h);
	if (!rc)
		rc = catalog_put_volume(e->cat, &v->row);
	if (!rc)
		rc = catalog_commit(e->cat);
	if (rc) {
		catalog_rollback(e->cat);
		v->row.next_version--;
		v->row.era = era;
		goto out_free;
	}
	for (pp = &v->hists; *pp; pp = &(*pp)->next)
		;
	*pp = h;
	/* the logical copy: the overlay job joins the volume under the barrier */
	pthread_rwlock_wrlock(&v->barrier);
	rc = tjob_launch(e, v, h, ov, ovb, err, errlen);
	if (!rc) {
		ov->next = v->jobs;
		v->jobs = ov;
		track_set_era(v->trk, era + 1);
	}
	pthread_rwlock_unlock(&v->barrier);
	if (rc) {
		h->row.tape_status = HS_FAILED;
		if (save_hist(e, h))
			log_err("cannot record tape failure");
		goto out_free_job;
	}
	atomic_fetch_add(&e->m.backups_started, 1);
	sbuf_addf(reply,
		  "ok volume=%s version=%llu bv=- media=TAPE differential=0 copy=full grains=%llu\n"
		  "%s acmbackup completed\n",
		  v->row.name, (unsigned long long)h->row.version,
		  (unsigned long long)v->nr_grains, v->row.name);
	pthread_mutex_unlock(&e->lock);
	engine_hook_post(e, v, "backup", 0, NULL);
	err[0] = 0;
	return 0;
out_free:
	free(h);
out_free_job:
	if (ovb && ovb->fd >= 0) {
		close(ovb->fd);
		unlink(ovb->path);
	}
	if (ov)
		free(ov->pending);
	free(ov);
	free(ovb);
out_unlock:
	pthread_mutex_unlock(&e->lock);
	if (!err[0])
		snprintf(err, errlen, "tape backup failed: %s", strerror(-rc));
	engine_hook_post(e, v, "backup", rc, err);
	return rc;
}

/* ---------- retention ---------- */

int tape_apply_retention(struct engine *e, struct vol *v)
{
	int64_t now = util_now();
	unsigned gens = 0;
	int rc = 0;

	/* DAY: expire; GEN: keep the newest tape_gens (walk newest first). The
	 * list holds every tape history, however many (a fixed cap kept the
	 * oldest only, and counted generations from the wrong end) */
	struct history **arr;
	size_t n = 0, want = 0;
	for (struct history *h = v->hists; h; h = h->next)
		if (h->row.tape_status == HS_SUCCEEDED && !h->tjob)
			want++;
	if (!want)
		return 0;
	arr = malloc(want * sizeof(*arr));
	if (!arr) {
		vol_log(v, "error: tape retention skipped: no memory for a list of %zu tape "
			   "histories; nothing deleted (retried after the next tape copy)",
			want);
		return -ENOMEM;
	}
	for (struct history *h = v->hists; h && n < want; h = h->next)
		if (h->row.tape_status == HS_SUCCEEDED && !h->tjob)
			arr[n++] = h;
	for (size_t i = n; i-- > 0;) {
		struct history *h = arr[i];
		bool drop = false;
		if (h->row.btype == BTYPE_DAY) {
			drop = v->row.tape_days &&
			       now - h->row.date >= (int64_t)v->row.tape_days * 86400;
		} else {
			gens++;
			drop = v->row.tape_gens && gens > v->row.tape_gens;
		}
		if (!drop || h->readers)
			continue;
		uint64_t ver = h->row.version;
		rc = hist_drop_tape(e, v, h);
		if (rc) {
			vol_log(v, "error: tape retention could not delete version %llu: %s",
				(unsigned long long)ver, strerror(-rc));
			continue;
		}
		hist_unlink_if_empty(e, v, h);
		vol_log(v, "tape retention (%s): tape history version %llu deleted",
			arr[i] == NULL ? "" : (v->row.tape_days ? "GEN/DAY" : "GEN"),
			(unsigned long long)ver);
	}
	free(arr);
	return rc;
}

/* ---------- trash ---------- */

struct trash_item {
	char pool[ACM_NAME_MAX + 1];
	char key[256];
};

struct trash_ctx {
	struct trash_item *items;
	size_t n, cap;
};

static int trash_collect(void *arg, const char *pool, const char *key)
{
	struct trash_ctx *tc = arg;

	if (tc->n == tc->cap) {
		size_t nc = tc->cap ? tc->cap * 2 : 16;
		void *ni = realloc(tc->items, nc * sizeof(*tc->items));
		if (!ni)
			return -ENOMEM;
		tc->items = ni;
		tc->cap = nc;
	}
	snprintf(tc->items[tc->n].pool, sizeof(tc->items[tc->n].pool), "%s", pool);
	snprintf(tc->items[tc->n].key, sizeof(tc->items[tc->n].key), "%s", key);
	tc->n++;
	return 0;
}

/* Without e->lock: the object-store deletes run unlocked, each pool pinned
 * (busy) meanwhile; the catalog is read and updated under the lock. Two runs
 * at once may delete the same key: a missing object counts as deleted. */
void tape_empty_trash(struct engine *e)
{
	struct trash_ctx tc = { 0 };
	struct pool **pools = NULL;
	int *rcs = NULL;
	char err[256];

	if (!e->tier)
		return;
	pthread_mutex_lock(&e->lock);
	if (catalog_trash_list(e->cat, trash_collect, &tc) || !tc.n)
		goto out_unlock;
	pools = calloc(tc.n, sizeof(*pools));
	rcs = calloc(tc.n, sizeof(*rcs));
	if (!pools || !rcs)
		goto out_unlock;
	for (size_t i = 0; i < tc.n; i++) {
		struct pool *p = engine_pool(e, tc.items[i].pool);
		if (p && !engine_pool_open(e, p, err, sizeof(err))) {
			p->busy++;
			pools[i] = p;
		}
	}
	pthread_mutex_unlock(&e->lock);
	for (size_t i = 0; i < tc.n; i++) {
		int rc = pools[i] ? e->tier->remove(pools[i]->tp, tc.items[i].key) : 0;
		rcs[i] = rc == -ENOENT ? 0 : rc; /* no pool: nothing left to delete */
		if (rcs[i])
			log_warn("pool %s: cannot delete %s yet: %s", tc.items[i].pool,
				 tc.items[i].key, strerror(-rcs[i]));
	}
	pthread_mutex_lock(&e->lock);
	for (size_t i = 0; i < tc.n; i++) {
		if (pools[i])
			pools[i]->busy--;
		if (!rcs[i] && catalog_trash_del(e->cat, tc.items[i].pool, tc.items[i].key))
			log_warn("cannot clear %s from the trash", tc.items[i].key);
	}
out_unlock:
	pthread_mutex_unlock(&e->lock);
	free(pools);
	free(rcs);
	free(tc.items);
}

/* ---------- cancel ---------- */

int do_cancel(struct engine *e, struct vol *v, const struct cmd *c, struct sbuf *reply, char *err,
	      size_t errlen)
{
	int n = 0;

	(void)c;
	pthread_mutex_lock(&e->lock);
	sbuf_addf(reply, "ok volume=%s version=", v->row.name);
	for (struct history *h = v->hists; h; h = h->next)
		if (h->tjob) {
			atomic_store(&h->tjob->cancel, 1);
			sbuf_addf(reply, "%s%llu", n++ ? "," : "", (unsigned long long)h->row.version);
			vol_log(v, "tape copy of version %llu cancelled by request",
				(unsigned long long)h->row.version);
		}
	pthread_mutex_unlock(&e->lock);
	if (!n) {
		snprintf(err, errlen, "no tape job of %s is running", v->row.name);
		return -ENOENT;
	}
	sbuf_add(reply, "\n", 1);
	return 0;
}

void tape_cancel_all(struct engine *e)
{
	pthread_mutex_lock(&e->lock);
	for (struct vol *v = e->vols; v; v = v->next)
		for (struct history *h = v->hists; h; h = h->next)
			if (h->tjob)
				atomic_store(&h->tjob->cancel, 1);
	pthread_mutex_unlock(&e->lock);
}

/* ---------- pool import / hosts / gc ---------- */

/* A manifest's writer: "<32 hex id>:<name>" since host ids, a bare name
 * before. id is "" for the latter. */
static void split_host(const char *host, char id[33], char *name, size_t namelen)
{
	const char *colon = host ? strchr(host, ':') : NULL;
	id[0] = 0;
	if (colon && colon - host == 32 && strspn(host, "0123456789abcdef") == 32) {
		memcpy(id, host, 32);
		id[32] = 0;
		snprintf(name, namelen, "%s", colon + 1);
	} else {
		snprintf(name, namelen, "%s", host ? host : "");
	}
}

/* what the listing gave, kept: the tier's strings live only during the callback */
struct mf_item {
	char key[256];
	char volume[ACM_NAME_MAX + 1];
	char host_id[33];
	char host_name[256];
	uint64_t version, size_bytes, blocks;
	uint32_t grain_bytes;
	int64_t date;
	bool unreadable;
	bool trashed; /* in the catalog's trash: a deleted history */
};

struct mf_list {
	struct mf_item *v;
	size_t n, cap;
};

static int mf_collect(void *arg, const struct tier_manifest_info *mi)
{
	struct mf_list *l = arg;
	if (l->n == l->cap) {
		size_t nc = l->cap ? l->cap * 2 : 64;
		void *nv = realloc(l->v, nc * sizeof(*l->v));
		if (!nv)
			return -ENOMEM;
		l->v = nv;
		l->cap = nc;
	}
	struct mf_item *it = &l->v[l->n++];
	fault_pause("import-listing"); /* tests: the listing runs without e->lock */
	memset(it, 0, sizeof(*it));
	snprintf(it->key, sizeof(it->key), "%s", mi->manifest);
	if (!mi->volume) {
		it->unreadable = true;
		return 0;
	}
	snprintf(it->volume, sizeof(it->volume), "%s", mi->volume);
	split_host(mi->host, it->host_id, it->host_name, sizeof(it->host_name));
	it->version = mi->version;
	it->size_bytes = mi->size_bytes;
	it->grain_bytes = mi->grain_bytes;
	it->date = mi->date;
	it->blocks = mi->blocks_total;
	return 0;
}

/* catalog meta "origin/<volume>": the host id whose histories a volume was
 * imported from (pool import host=); "" or absent: written here */
static void vol_origin(struct engine *e, const char *volume, char id[33])
{
	char key[ACM_NAME_MAX + 16], val[64];
	snprintf(key, sizeof(key), "origin/%s", volume);
	id[0] = 0;
	if (!catalog_get_meta(e->cat, key, val, sizeof(val)) && strlen(val) == 32)
		memcpy(id, val, 33);
}

struct import_ctx {
	struct engine *e;
	struct pool *p;
	const char *from; /* host id whose histories are imported */
	bool own;	  /* from == this host */
	unsigned volumes, histories, known, others, unreadable, conflicts, skipped;
};

static bool hist_has_manifest(struct vol *v, const char *key)
{
	for (struct history *h = v->hists; h; h = h->next)
		if (h->row.tape_status != HS_NONE && !strcmp(h->row.manifest, key))
			return true;
	return false;
}

/* under e->lock */
static int import_one(struct import_ctx *ic, const struct mf_item *mi)
{
	struct engine *e = ic->e;
	struct vol *v = NULL;
	struct history *h, **pp;
	char err[256], origin[33];

	for (struct vol *x = e->vols; x; x = x->next)
		if (!strcmp(x->row.name, mi->volume))
			v = x;
	if (v && hist_has_manifest(v, mi->key)) {
		ic->known++;
		return 0;
	}
	if (v && !ic->own) {
		/* another host's histories go only into a volume imported from
		 * that host, or into one that has nothing of its own yet */
		vol_origin(e, v->row.name, origin);
		bool empty = v->hists == NULL;
		if (strcmp(origin, ic->from) && !empty) {
			engine_log(e, "pool import: %s of host %s not imported: volume %s here holds "
				      "histories of its own (delete or rename it first)",
				   mi->key, mi->host_name, v->row.name);
			ic->conflicts++;
			return 0;
		}
	}
	if (!v) {
		struct cmd c;
		struct sbuf sb;
		memset(&c, 0, sizeof(c));
		c.kind = CMD_VOLUME_CREATE;
		if (!util_name_valid(mi->volume)) {
			ic->skipped++;
			return 0;
		}
		if (cmd_volume_geometry(mi->size_bytes, mi->grain_bytes, err, sizeof(err))) {
			engine_log(e, "error: pool import: %s not imported: %s", mi->key, err);
			ic->skipped++;
			return 0;
		}
		snprintf(c.name, sizeof(c.name), "%s", mi->volume);
		c.size_bytes = mi->size_bytes;
		c.grain_bytes = mi->grain_bytes;
		sbuf_init(&sb, 1024);
		err[0] = 0;
		int rc = engine_volume_create(e, &c, err, sizeof(err), &sb);
		sbuf_release(&sb);
		if (rc) {
			engine_log(e, "error: pool import: cannot create volume %s: %s", mi->volume,
				   err);
			ic->skipped++;
			return 0;
		}
		for (struct vol *x = e->vols; x; x = x->next)
			if (!strcmp(x->row.name, mi->volume))
				v = x;
		ic->volumes++;
	}
	if (!v || v->row.size_bytes != mi->size_bytes || v->row.grain_bytes != mi->grain_bytes) {
		engine_log(e, "pool import: %s not imported: volume %s here has another size or grain",
			   mi->key, mi->volume);
		ic->skipped++;
		return 0;
	}
	if (!ic->own) {
		char key[ACM_NAME_MAX + 16];
		snprintf(key, sizeof(key), "origin/%s", v->row.name);
		if (catalog_set_meta(e->cat, key, ic->from))
			return -EIO;
	}
	h = vol_hist(v, mi->version);
	if (h && h->row.tape_status != HS_NONE) {
		engine_log(e, "pool import: %s not imported: version %llu of %s exists here", mi->key,
			   (unsigned long long)mi->version, v->row.name);
		ic->conflicts++;
		return 0;
	}
	if (!h) {
		h = calloc(1, sizeof(*h));
		if (!h)
			return -ENOMEM;
		h->row.vol_id = v->row.id;
		h->row.version = mi->version;
		h->row.date = mi->date;
		h->row.media = MEDIA_TAPE;
		for (pp = &v->hists; *pp && (*pp)->row.version < mi->version; pp = &(*pp)->next)
			;
		h->next = *pp;
		*pp = h;
	}
	h->row.tape_status = HS_SUCCEEDED;
	snprintf(h->row.pool, sizeof(h->row.pool), "%s", ic->p->row.name);
	snprintf(h->row.manifest, sizeof(h->row.manifest), "%s", mi->key);
	h->row.blocks = mi->blocks;
	h->row.cut_era = 0; /* unknown here: the next tape copy is a full one */
	if (v->row.next_version <= mi->version) {
		v->row.next_version = mi->version + 1;
		if (catalog_put_volume(e->cat, &v->row))
			return -EIO;
	}
	if (save_hist(e, h))
		return -EIO;
	ic->histories++;
	return 0;
}

/* Resolves host= (an id, or a name that exactly one id in the pool has) */
static int resolve_host(struct engine *e, const struct mf_list *l, const char *want, char id[33],
			char *err, size_t errlen)
{
	id[0] = 0;
	if (strlen(want) == 32 && strspn(want, "0123456789abcdef") == 32) {
		memcpy(id, want, 33);
		return 0;
	}
	for (size_t i = 0; i < l->n; i++) {
		const struct mf_item *it = &l->v[i];
		if (it->unreadable || !it->host_id[0] || strcmp(it->host_name, want))
			continue;
		if (id[0] && strcmp(id, it->host_id)) {
			snprintf(err, errlen, "host name %s is used by more than one host (%s, %s): "
					      "give host=ID (see pool hosts)",
				 want, id, it->host_id);
			return -EINVAL;
		}
		memcpy(id, it->host_id, 33);
	}
	if (!id[0]) {
		snprintf(err, errlen, "no histories of host %s in the pool", want);
		return -ENOENT;
	}
	(void)e;
	return 0;
}

int pool_import(struct engine *e, struct pool *p, const char *host, struct sbuf *reply, char *err,
		size_t errlen)
{
	struct import_ctx ic = {.e = e, .p = p};
	struct mf_list l = {0};
	char from[33];
	int rc;

	/* The listing reads every manifest's header: object-store I/O, so
	 * without e->lock (the caller pinned the pool); what it found is then
	 * applied under the lock, checked against the volumes as they are then.
	 * A manifest in the trash is a deleted history, gone or about to go from
	 * the pool: those in the trash before the listing are skipped, and a
	 * listing during which one was trashed is done again. */
	struct trash_ctx tc = {0};
	for (int attempt = 0;; attempt++) {
		uint64_t gen;
		free(tc.items);
		memset(&tc, 0, sizeof(tc));
		free(l.v);
		memset(&l, 0, sizeof(l));
		pthread_mutex_lock(&e->lock);
		gen = e->trash_gen;
		rc = catalog_trash_list(e->cat, trash_collect, &tc);
		pthread_mutex_unlock(&e->lock);
		if (!rc)
			rc = e->tier->list(p->tp, mf_collect, &l);
		if (rc) {
			snprintf(err, errlen, "listing pool %s: %s", p->row.name, strerror(-rc));
			free(l.v);
			free(tc.items);
			return rc;
		}
		pthread_mutex_lock(&e->lock);
		if (e->trash_gen == gen)
			break;
		pthread_mutex_unlock(&e->lock);
		if (attempt == 2) {
			snprintf(err, errlen, "histories of pool %s were deleted during the import "
					      "three times: run it again", p->row.name);
			free(l.v);
			free(tc.items);
			return -EAGAIN;
		}
	}
	for (size_t i = 0; i < l.n; i++)
		for (size_t k = 0; k < tc.n; k++)
			if (!strcmp(tc.items[k].pool, p->row.name) && !strcmp(tc.items[k].key, l.v[i].key))
				l.v[i].trashed = true;
	free(tc.items);
	if (host) {
		rc = resolve_host(e, &l, host, from, err, errlen);
		if (rc)
			goto out;
	} else {
		memcpy(from, e->host_id, 33);
	}
	ic.from = from;
	ic.own = !strcmp(from, e->host_id);
	for (size_t i = 0; i < l.n && !rc; i++) {
		const struct mf_item *it = &l.v[i];
		if (it->trashed) {
			ic.skipped++; /* a deleted history */
			continue;
		}
		if (it->unreadable) {
			ic.unreadable++;
			continue;
		}
		/* a manifest from before host ids names its host only: ours if the
		 * name is ours (and only on an import of this host's) */
		bool mine = it->host_id[0] ? !strcmp(it->host_id, from)
					   : ic.own && !strcmp(it->host_name, e->host);
		if (!mine) {
			ic.others++;
			continue;
		}
		rc = import_one(&ic, it);
	}
	if (rc) {
		snprintf(err, errlen, "pool import: %s", strerror(-rc));
		goto out;
	}
	engine_log(e,
		   "pool %s imported (host %s): %u volumes created, %u tape histories added, "
		   "%u known, %u of other hosts left alone, %u conflicts, %u unreadable, %u skipped",
		   p->row.name, from, ic.volumes, ic.histories, ic.known, ic.others, ic.conflicts,
		   ic.unreadable, ic.skipped);
	sbuf_addf(reply,
		  "ok pool=%s host=%s volumes=%u histories=%u known=%u others=%u conflicts=%u "
		  "unreadable=%u skipped=%u\n",
		  p->row.name, from, ic.volumes, ic.histories, ic.known, ic.others, ic.conflicts,
		  ic.unreadable, ic.skipped);
out:
	pthread_mutex_unlock(&e->lock);
	free(l.v);
	return rc;
}

struct host_sum {
	char id[33];
	char name[256];
	unsigned histories, volumes;
	int64_t newest;
	uint64_t blocks;
};

int pool_hosts(struct engine *e, struct pool *p, struct sbuf *reply, char *err, size_t errlen)
{
	struct mf_list l = {0};
	struct host_sum *hs = NULL;
	size_t nh = 0;
	unsigned unreadable = 0;
	int rc = e->tier->list(p->tp, mf_collect, &l);
	if (rc) {
		snprintf(err, errlen, "listing pool %s: %s", p->row.name, strerror(-rc));
		goto out;
	}
	hs = calloc(l.n + 1, sizeof(*hs));
	if (!hs) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < l.n; i++) {
		const struct mf_item *it = &l.v[i];
		if (it->unreadable) {
			unreadable++;
			continue;
		}
		size_t k;
		for (k = 0; k < nh; k++)
			if (!strcmp(hs[k].id, it->host_id) &&
			    (it->host_id[0] || !strcmp(hs[k].name, it->host_name)))
				break;
		if (k == nh) {
			memcpy(hs[k].id, it->host_id, 33);
			snprintf(hs[k].name, sizeof(hs[k].name), "%s", it->host_name);
			nh++;
		}
		hs[k].histories++;
		hs[k].blocks += it->blocks;
		if (it->date > hs[k].newest)
			hs[k].newest = it->date;
		/* a name seen first for this host? count its volumes */
		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++)
			seen = !l.v[j].unreadable && !strcmp(l.v[j].volume, it->volume) &&
			       !strcmp(l.v[j].host_id, it->host_id) &&
			       !strcmp(l.v[j].host_name, it->host_name);
		if (!seen)
			hs[k].volumes++;
	}
	sbuf_addf(reply, "ok pool=%s hosts=%zu unreadable=%u\n", p->row.name, nh, unreadable);
	for (size_t k = 0; k < nh; k++)
		sbuf_addf(reply, "host id=%s name=%s volumes=%u histories=%u blocks=%llu newest=%lld "
				 "this=%d\n",
			  hs[k].id[0] ? hs[k].id : "-", hs[k].name, hs[k].volumes, hs[k].histories,
			  (unsigned long long)hs[k].blocks, (long long)hs[k].newest,
			  !strcmp(hs[k].id, e->host_id));
out:
	free(hs);
	free(l.v);
	return rc;
}

int pool_gc(struct engine *e, struct pool *p, int64_t grace_s, struct sbuf *reply, char *err,
	    size_t errlen)
{
	struct tier_gc_stats st;
	int rc;

	memset(&st, 0, sizeof(st));
	rc = e->tier->gc(p->tp, grace_s, &st);
	if (rc == -EBUSY && st.busy[0]) {
		snprintf(err, errlen, "pool %s: %s", p->row.name, st.busy);
		return rc;
	}
	if (rc) {
		snprintf(err, errlen, "pool %s gc: %s", p->row.name, strerror(-rc));
		return rc;
	}
	engine_log(e, "pool %s gc: %llu packs deleted, %llu repacked, %llu blocks freed, "
		      "%llu manifests read, %llu unreadable (kept), %llu stale locks removed",
		   p->row.name, (unsigned long long)st.packs_deleted,
		   (unsigned long long)st.packs_repacked, (unsigned long long)st.blocks_freed,
		   (unsigned long long)st.manifests, (unsigned long long)st.manifests_unreadable,
		   (unsigned long long)st.locks_reclaimed);
	sbuf_addf(reply, "ok pool=%s packs_deleted=%llu packs_repacked=%llu blocks_freed=%llu "
			 "bytes_freed=%llu manifests=%llu unreadable=%llu locks_removed=%llu "
			 "temps_removed=%llu requests=%llu\n",
		  p->row.name, (unsigned long long)st.packs_deleted,
		  (unsigned long long)st.packs_repacked, (unsigned long long)st.blocks_freed,
		  (unsigned long long)st.bytes_freed, (unsigned long long)st.manifests,
		  (unsigned long long)st.manifests_unreadable,
		  (unsigned long long)st.locks_reclaimed, (unsigned long long)st.temps_removed,
		  (unsigned long long)st.requests);
	return 0;
}
