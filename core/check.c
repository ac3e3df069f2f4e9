/*
 * check.c — `acmfs --check STORE`: the consistency check of an unmounted
 * store (catalog ↔ files ↔ tracking state). Read-only by default; with
 * repair it only makes things more conservative: interrupted histories become
 * `failed`, pairs whose tracking cannot be trusted lose it (next copy full),
 * a history pointing at a missing backup volume loses its disk side.
 *
 * Output: one line per finding ("problem: …", "repaired: …", "note: …") and a
 * summary line. Returns the number of problems left (0 = clean) or -errno.
 */
#include "engine_int.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct ck {
	struct catalog *cat;
	const char *store;
	bool repair;
	struct sbuf *out;
	int problems, repaired;
	struct vol_row *vols;
	size_t nvols;
	struct bv_row *bvs;
	size_t nbvs;
	struct hist_row *hists;
	size_t nhists;
	struct pool_row *pools;
	size_t npools;
};

#define PUSH(arr, n, item)                                                  \
	do {                                                                \
		void *np_ = realloc((arr), ((n) + 1) * sizeof(*(arr)));     \
		if (!np_)                                                   \
			return -ENOMEM;                                     \
		(arr) = np_;                                                \
		(arr)[(n)++] = *(item);                                     \
	} while (0)

static int ld_vol(void *a, const struct vol_row *r)
{
	struct ck *c = a;
	PUSH(c->vols, c->nvols, r);
	return 0;
}
static int ld_bv(void *a, const struct bv_row *r)
{
	struct ck *c = a;
	PUSH(c->bvs, c->nbvs, r);
	return 0;
}
static int ld_hist(void *a, const struct hist_row *r)
{
	struct ck *c = a;
	PUSH(c->hists, c->nhists, r);
	return 0;
}
static int ld_pool(void *a, const struct pool_row *r)
{
	struct ck *c = a;
	PUSH(c->pools, c->npools, r);
	return 0;
}

static void problem(struct ck *c, bool fixed, const char *fmt, ...) ACM_PRINTF(3, 4);
static void problem(struct ck *c, bool fixed, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (fixed) {
		c->repaired++;
		sbuf_addf(c->out, "repaired: %s\n", msg);
	} else {
		c->problems++;
		sbuf_addf(c->out, "problem: %s\n", msg);
	}
}

static int check_file(struct ck *c, const char *path, uint64_t size, const char *what)
{
	struct stat st;

	if (stat(path, &st)) {
		problem(c, false, "%s: %s missing (%s)", what, path, strerror(errno));
		return -ENOENT;
	}
	if ((uint64_t)st.st_size != size) {
		problem(c, false, "%s: %s has %lld bytes, expected %llu", what, path,
			(long long)st.st_size, (unsigned long long)size);
		return -EINVAL;
	}
	return 0;
}

static struct bv_row *find_bv(struct ck *c, int64_t id)
{
	for (size_t i = 0; i < c->nbvs; i++)
		if (c->bvs[i].id == id)
			return &c->bvs[i];
	return NULL;
}

static int check_volume(struct ck *c, struct vol_row *v)
{
	char dir[3300], path[3400], why[256];
	uint64_t nr = (v->size_bytes + v->grain_bytes - 1) / v->grain_bytes, marked = 0;
	int rc = 0;

	snprintf(dir, sizeof(dir), "%s/vol/%lld", c->store, (long long)v->id);
	snprintf(path, sizeof(path), "%s/tv.img", dir);
	check_file(c, path, v->size_bytes, v->name);
	bool trk_ok = track_check(dir, nr, v->grain_bytes, v->era, &marked, why, sizeof(why)) == 0;
	if (!trk_ok)
		sbuf_addf(c->out, "note: %s: tracking state not trusted: %s\n", v->name, why);
	else if (marked)
		sbuf_addf(c->out, "note: %s: %llu write-intent region(s) marked (unclean stop); "
				  "their grains count as written\n",
			  v->name, (unsigned long long)marked);
	for (size_t i = 0; i < c->nbvs; i++) {
		struct bv_row *b = &c->bvs[i];
		if (b->vol_id != v->id)
			continue;
		char what[128];
		snprintf(what, sizeof(what), "%s.bv%u", v->name, b->idx);
		snprintf(path, sizeof(path), "%s/bv%u.img", dir, b->idx);
		bool file_ok = check_file(c, path, v->size_bytes, what) == 0;
		if (b->tracking && (!trk_ok || !file_ok)) {
			if (c->repair) {
				b->tracking = false;
				rc = catalog_put_bv(c->cat, b);
				if (rc)
					return rc;
			}
			problem(c, c->repair, "%s: tracking cannot be trusted%s", what,
				c->repair ? ": stopped, next backup to it is a full copy" : "");
		}
		if (b->tracking && b->track_base >= v->era)
			problem(c, false, "%s: tracking base %u not older than the volume era %u",
				what, b->track_base, v->era);
	}
	if (!strcmp(v->state, "restoring") || !strcmp(v->state, "needs-restore"))
		sbuf_addf(c->out, "note: %s: a restore was interrupted: the volume needs a "
				  "restore\n", v->name);
	return 0;
}

static int check_hist(struct ck *c, struct hist_row *h)
{
	struct vol_row *v = NULL;
	bool dirty = false;

	for (size_t i = 0; i < c->nvols; i++)
		if (c->vols[i].id == h->vol_id)
			v = &c->vols[i];
	if (!v) {
		problem(c, false, "history version %llu belongs to no volume",
			(unsigned long long)h->version);
		return 0;
	}
	if (h->version >= v->next_version)
		problem(c, false, "%s: history version %llu not below next version %llu", v->name,
			(unsigned long long)h->version, (unsigned long long)v->next_version);
	if (h->bv_id) {
		struct bv_row *b = find_bv(c, h->bv_id);
		if (!b || b->vol_id != v->id) {
			problem(c, c->repair, "%s: version %llu names a missing backup volume%s",
				v->name, (unsigned long long)h->version,
				c->repair ? ": disk side dropped" : "");
			if (c->repair) {
				h->bv_id = 0;
				h->disk_status = HS_NONE;
				dirty = true;
			}
		}
		for (size_t i = 0; i < c->nhists; i++)
			if (&c->hists[i] != h && c->hists[i].bv_id == h->bv_id && h->bv_id)
				problem(c, false, "%s: versions %llu and %llu share a backup volume",
					v->name, (unsigned long long)h->version,
					(unsigned long long)c->hists[i].version);
	}
	if (h->disk_status == HS_EXECUTING) {
		problem(c, c->repair, "%s: version %llu was interrupted during its copy%s", v->name,
			(unsigned long long)h->version, c->repair ? ": marked failed" : "");
		if (c->repair) {
			h->disk_status = HS_FAILED;
			struct bv_row *b = find_bv(c, h->bv_id);
			if (b && b->tracking) {
				b->tracking = false;
				int rc = catalog_put_bv(c->cat, b);
				if (rc)
					return rc;
			}
			dirty = true;
		}
	}
	if (h->tape_status == HS_EXECUTING) {
		problem(c, c->repair, "%s: tape copy of version %llu was interrupted%s", v->name,
			(unsigned long long)h->version, c->repair ? ": marked failed" : "");
		if (c->repair) {
			h->tape_status = HS_FAILED;
			dirty = true;
		}
	}
	if (h->tape_status != HS_NONE) {
		bool found = false;
		for (size_t i = 0; i < c->npools; i++)
			found |= !strcmp(c->pools[i].name, h->pool);
		if (!found)
			problem(c, false, "%s: version %llu is in unknown pool %s", v->name,
				(unsigned long long)h->version, h->pool);
	}
	return dirty ? catalog_put_hist(c->cat, h) : 0;
}

int engine_check_store(const char *store, bool repair, struct sbuf *out)
{
	struct ck c;
	char path[PATH_MAX], msg[256];
	int lockfd, rc;

	memset(&c, 0, sizeof(c));
	c.store = store;
	c.repair = repair;
	c.out = out;
	snprintf(path, sizeof(path), "%.4000s/catalog.db", store);
	if (access(path, F_OK)) {
		sbuf_addf(out, "problem: %s is not an acmfs store (no catalog.db)\n", store);
		return -ENOENT;
	}
	snprintf(path, sizeof(path), "%.4000s/lock", store);
	lockfd = open(path, O_RDWR | O_CLOEXEC);
	if (lockfd >= 0 && flock(lockfd, LOCK_EX | LOCK_NB)) {
		sbuf_addf(out, "problem: store %s is mounted (locked); unmount it first\n", store);
		close(lockfd);
		return -EBUSY;
	}
	snprintf(path, sizeof(path), "%.4000s/catalog.db", store);
	rc = catalog_open(path, &c.cat);
	if (rc) {
		sbuf_addf(out, "problem: catalog: %s\n",
			  rc == -EUCLEAN ? "integrity check failed" : strerror(-rc));
		goto out;
	}
	rc = catalog_check(c.cat, msg, sizeof(msg));
	sbuf_addf(out, "catalog: integrity %s, schema %d\n", rc ? msg : "ok",
		  catalog_schema_version(c.cat));
	if (rc)
		c.problems++;
	struct catalog_loader ld = { &c, ld_vol, ld_bv, ld_hist, ld_pool };
	rc = catalog_load(c.cat, &ld);
	if (!rc && repair)
		rc = catalog_begin(c.cat);
	for (size_t i = 0; !rc && i < c.nvols; i++)
		rc = check_volume(&c, &c.vols[i]);
	for (size_t i = 0; !rc && i < c.nhists; i++)
		rc = check_hist(&c, &c.hists[i]);
	if (repair) {
		if (!rc)
			rc = catalog_commit(c.cat);
		else
			catalog_rollback(c.cat);
	}
	if (!rc) {
		sbuf_addf(out, "%zu volumes, %zu backup volumes, %zu histories, %zu pools: %d "
			       "problem(s)%s",
			  c.nvols, c.nbvs, c.nhists, c.npools, c.problems, repair ? ", " : "\n");
		if (repair)
			sbuf_addf(out, "%d repaired\n", c.repaired);
		rc = c.problems;
	}
out:
	catalog_close(c.cat);
	free(c.vols);
	free(c.bvs);
	free(c.hists);
	free(c.pools);
	if (lockfd >= 0)
		close(lockfd);
	return rc;
}
