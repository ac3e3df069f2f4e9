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
	req.host = e->host;
	req.parent = t->parent[0] ? t->parent : NULL;
	req.changed = t->changed ? (const uint8_t *)t->changed : NULL;
	req.src.read_grain = t->ov ? read_from_overlay : read_from_hist;
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
	engine_run_hook(e, v, "tapecopy.post", err, sizeof(err));
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
	rc = engine_run_hook(e, v, "backup.pre", err, errlen);
	if (rc)
		return rc;
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
	engine_run_hook(e, v, "backup.post", err, errlen);
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
	return rc;
}

/* ---------- retention ---------- */

int tape_apply_retention(struct engine *e, struct vol *v)
{
	int64_t now = util_now();
	unsigned gens = 0;
	int rc = 0;

	/* DAY: expire; GEN: keep the newest tape_gens (walk newest first) */
	struct history *arr[4096];
	size_t n = 0;
	for (struct history *h = v->hists; h && n < ACM_ARRAY_SIZE(arr); h = h->next)
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
		tape_empty_trash(e);
		vol_log(v, "tape retention (%s): tape history version %llu deleted",
			arr[i] == NULL ? "" : (v->row.tape_days ? "GEN/DAY" : "GEN"),
			(unsigned long long)ver);
	}
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

void tape_empty_trash(struct engine *e)
{
	struct trash_ctx tc = { 0 };
	char err[256];

	if (!e->tier || catalog_trash_list(e->cat, trash_collect, &tc))
		goto out;
	for (size_t i = 0; i < tc.n; i++) {
		struct pool *p = engine_pool(e, tc.items[i].pool);
		int rc = 0;
		if (p) {
			rc = engine_pool_open(e, p, err, sizeof(err));
			if (!rc)
				rc = e->tier->remove(p->tp, tc.items[i].key);
			if (rc == -ENOENT)
				rc = 0;
		}
		if (rc) {
			log_warn("pool %s: cannot delete %s yet: %s", tc.items[i].pool,
				 tc.items[i].key, strerror(-rc));
			continue;
		}
		if (catalog_trash_del(e->cat, tc.items[i].pool, tc.items[i].key))
			log_warn("cannot clear %s from the trash", tc.items[i].key);
	}
out:
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

/* ---------- pool import / gc ---------- */

struct import_ctx {
	struct engine *e;
	struct pool *p;
	struct sbuf *reply;
	unsigned volumes, histories, skipped;
};

static int import_one(void *arg, const struct tier_manifest_info *mi)
{
	struct import_ctx *ic = arg;
	struct engine *e = ic->e;
	struct vol *v = NULL;
	struct history *h, **pp;
	char err[256];

	if (!mi->volume) { /* unreadable: the tier logged it */
		ic->skipped++;
		return 0;
	}

	for (struct vol *x = e->vols; x; x = x->next)
		if (!strcmp(x->row.name, mi->volume))
			v = x;
	if (!v) {
		struct cmd c;
		struct sbuf sb;
		memset(&c, 0, sizeof(c));
		c.kind = CMD_VOLUME_CREATE;
		if (!util_name_valid(mi->volume)) {
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
		ic->skipped++;
		return 0;
	}
	h = vol_hist(v, mi->version);
	if (h && h->row.tape_status != HS_NONE)
		return 0; /* known */
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
	snprintf(h->row.manifest, sizeof(h->row.manifest), "%s", mi->manifest);
	h->row.blocks = mi->blocks_total;
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

int pool_import(struct engine *e, struct pool *p, struct sbuf *reply)
{
	struct import_ctx ic = { e, p, reply, 0, 0, 0 };
	int rc;

	rc = e->tier->list(p->tp, import_one, &ic);
	if (rc)
		return rc;
	engine_log(e, "pool %s imported: %u volumes created, %u tape histories added, %u skipped",
		   p->row.name, ic.volumes, ic.histories, ic.skipped);
	sbuf_addf(reply, "ok pool=%s volumes=%u histories=%u skipped=%u\n", p->row.name,
		  ic.volumes, ic.histories, ic.skipped);
	return 0;
}

int pool_gc(struct engine *e, struct pool *p, int64_t grace_s, struct sbuf *reply)
{
	struct tier_gc_stats st;
	int rc;

	memset(&st, 0, sizeof(st));
	rc = e->tier->gc(p->tp, grace_s, &st);
	if (rc)
		return rc;
	engine_log(e, "pool %s gc: %llu packs deleted, %llu repacked, %llu blocks freed", p->row.name,
		   (unsigned long long)st.packs_deleted, (unsigned long long)st.packs_repacked,
		   (unsigned long long)st.blocks_freed);
	sbuf_addf(reply, "ok pool=%s packs_deleted=%llu packs_repacked=%llu blocks_freed=%llu "
			 "bytes_freed=%llu\n",
		  p->row.name, (unsigned long long)st.packs_deleted,
		  (unsigned long long)st.packs_repacked, (unsigned long long)st.blocks_freed,
		  (unsigned long long)st.bytes_freed);
	return 0;
}
