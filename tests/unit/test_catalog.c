/*
 * test_catalog.c — core/catalog.c: a fresh catalog, every row type round-trips
 * with all its fields, updates and deletes, transactions, persistence across
 * close/open, migration from schema 1 (built by hand with the sqlite3 API),
 * a newer schema and a file that is not a database refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "log.h"

/* ---- fixture: a temp dir per test ---- */

struct fx {
	char dir[64];
	char db[128];
};

static int count_trash(void *arg, const char *pool, const char *key)
{
	(void)pool;
	(void)key;
	(*(int *)arg)++;
	return 0;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/acmfs-ut-cat-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/catalog.db", f->dir);
	*state = f;
	return 0;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *fw)
{
	(void)st;
	(void)flag;
	(void)fw;
	return remove(p);
}

static int teardown(void **state)
{
	struct fx *f = *state;

	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* plain POSIX file helpers: the test's own I/O stays outside the code under test */
static char *slurp(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void spit(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, len, 0), (ssize_t)len);
	assert_int_equal(fsync(fd), 0);
	close(fd);
}

/* ---- collecting loader ---- */

struct loaded {
	struct vol_row vols[8];
	struct bv_row bvs[16];
	struct hist_row hists[16];
	struct pool_row pools[4];
	int nv, nb, nh, np;
	char order[64]; /* 'p','v','b','h' in callback order */
	int no;
};

static int cb_vol(void *arg, const struct vol_row *r)
{
	struct loaded *l = arg;
	assert_true(l->nv < 8);
	l->vols[l->nv++] = *r;
	l->order[l->no++] = 'v';
	return 0;
}

static int cb_bv(void *arg, const struct bv_row *r)
{
	struct loaded *l = arg;
	assert_true(l->nb < 16);
	l->bvs[l->nb++] = *r;
	l->order[l->no++] = 'b';
	return 0;
}

static int cb_hist(void *arg, const struct hist_row *r)
{
	struct loaded *l = arg;
	assert_true(l->nh < 16);
	l->hists[l->nh++] = *r;
	l->order[l->no++] = 'h';
	return 0;
}

static int cb_pool(void *arg, const struct pool_row *r)
{
	struct loaded *l = arg;
	assert_true(l->np < 4);
	l->pools[l->np++] = *r;
	l->order[l->no++] = 'p';
	return 0;
}

static struct loaded *load(struct catalog *c)
{
	static struct loaded l;
	struct catalog_loader ld = { &l, cb_vol, cb_bv, cb_hist, cb_pool };

	memset(&l, 0, sizeof(l));
	assert_int_equal(catalog_load(c, &ld), 0);
	return &l;
}

/* ---- sample rows with every field non-default ---- */

static struct vol_row sample_vol(const char *name)
{
	struct vol_row r;

	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", name);
	r.size_bytes = 5ULL << 40; /* > 32 bits */
	r.grain_bytes = 65536;
	r.save = 7;
	r.interval_days = 30;
	r.era = 4000000000u; /* > INT32_MAX */
	r.next_version = 123456789012ULL;
	r.next_bv = 9;
	r.tape_gens = 11;
	r.tape_days = 365;
	snprintf(r.pool, sizeof(r.pool), "pool-%s", name);
	snprintf(r.state, sizeof(r.state), "needs-restore");
	r.created = 1795608000;
	r.last_tape_version = 77;
	r.last_tape_era = 3999999999u;
	return r;
}

static struct hist_row sample_hist(int64_t vol_id, uint64_t version, int64_t bv_id)
{
	struct hist_row h;

	memset(&h, 0, sizeof(h));
	h.vol_id = vol_id;
	h.version = version;
	h.date = 1795608000 + (int64_t)version;
	h.differential = true;
	h.media = 3;
	h.bv_id = bv_id;
	h.disk_status = HS_SUCCEEDED;
	h.copy_full = true;
	h.grains_total = 1ULL << 33;
	h.grains_copied = (1ULL << 33) - 5;
	h.tape_status = HS_FAILED;
	h.btype = 2;
	snprintf(h.pool, sizeof(h.pool), "default");
	snprintf(h.manifest, sizeof(h.manifest), "manifests/db/%020llu.man",
		 (unsigned long long)version);
	h.blocks = 16384;
	h.verify_state = 2;
	h.verify_date = 1795608000 + 86400;
	h.cut_era = 4100000000u;
	return h;
}

static void assert_vol_eq(const struct vol_row *a, const struct vol_row *b)
{
	assert_int_equal(a->id, b->id);
	assert_string_equal(a->name, b->name);
	assert_true(a->size_bytes == b->size_bytes);
	assert_int_equal(a->grain_bytes, b->grain_bytes);
	assert_int_equal(a->save, b->save);
	assert_int_equal(a->interval_days, b->interval_days);
	assert_int_equal(a->era, b->era);
	assert_true(a->next_version == b->next_version);
	assert_int_equal(a->next_bv, b->next_bv);
	assert_int_equal(a->tape_gens, b->tape_gens);
	assert_int_equal(a->tape_days, b->tape_days);
	assert_string_equal(a->pool, b->pool);
	assert_string_equal(a->state, b->state);
	assert_int_equal(a->created, b->created);
	assert_int_equal(a->last_tape_version, b->last_tape_version);
	assert_int_equal(a->last_tape_era, b->last_tape_era);
}

static void assert_hist_eq(const struct hist_row *a, const struct hist_row *b)
{
	assert_int_equal(a->vol_id, b->vol_id);
	assert_true(a->version == b->version);
	assert_int_equal(a->date, b->date);
	assert_int_equal(a->differential, b->differential);
	assert_int_equal(a->media, b->media);
	assert_int_equal(a->bv_id, b->bv_id);
	assert_int_equal(a->disk_status, b->disk_status);
	assert_int_equal(a->copy_full, b->copy_full);
	assert_true(a->grains_total == b->grains_total);
	assert_true(a->grains_copied == b->grains_copied);
	assert_int_equal(a->tape_status, b->tape_status);
	assert_int_equal(a->btype, b->btype);
	assert_string_equal(a->pool, b->pool);
	assert_string_equal(a->manifest, b->manifest);
	assert_true(a->blocks == b->blocks);
	assert_int_equal(a->verify_state, b->verify_state);
	assert_int_equal(a->verify_date, b->verify_date);
	assert_int_equal(a->cut_era, b->cut_era);
}

/* ---- tests ---- */

static void test_fresh(void **state)
{
	struct fx *f = *state;
	struct catalog *c;
	char msg[64], val[32];
	struct loaded *l;

	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_schema_version(c), CATALOG_SCHEMA_VERSION);
	assert_int_equal(catalog_check(c, msg, sizeof(msg)), 0);
	assert_string_equal(msg, "ok");
	l = load(c);
	assert_int_equal(l->nv + l->nb + l->nh + l->np, 0);
	assert_int_equal(catalog_get_meta(c, "nothing", val, sizeof(val)), -ENOENT);
	catalog_close(c);
	assert_int_equal(access(f->db, F_OK), 0);

	/* reopen: already current, nothing to migrate */
	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_schema_version(c), CATALOG_SCHEMA_VERSION);
	catalog_close(c);
	catalog_close(NULL);
}

static void test_round_trip(void **state)
{
	struct fx *f = *state;
	struct catalog *c;
	struct vol_row va = sample_vol("alpha"), vb = sample_vol("beta");
	struct bv_row b1 = { 0 }, b2 = { 0 }, b3 = { 0 };
	struct hist_row h1, h2, h3;
	struct pool_row p1, p2;
	struct loaded *l;
	char val[64];

	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_begin(c), 0);
	/* inserted in reverse name order: load returns them by name */
	assert_int_equal(catalog_put_volume(c, &vb), 0);
	assert_int_equal(catalog_put_volume(c, &va), 0);
	assert_true(va.id > 0 && vb.id > 0 && va.id != vb.id);

	b1.vol_id = va.id;
	b1.idx = 2;
	b1.tracking = true;
	b1.track_base = 4000000001u;
	b2.vol_id = va.id;
	b2.idx = 1;
	b3.vol_id = vb.id;
	b3.idx = 1;
	assert_int_equal(catalog_put_bv(c, &b1), 0);
	assert_int_equal(catalog_put_bv(c, &b2), 0);
	assert_int_equal(catalog_put_bv(c, &b3), 0);
	assert_true(b1.id > 0 && b2.id > 0 && b3.id > 0);

	h1 = sample_hist(va.id, 5, b1.id);
	h2 = sample_hist(va.id, 3, b2.id);
	h2.differential = false;
	h2.copy_full = false;
	h2.tape_status = HS_NONE;
	h2.pool[0] = 0;
	h2.manifest[0] = 0;
	h3 = sample_hist(vb.id, 1, 0);
	assert_int_equal(catalog_put_hist(c, &h1), 0);
	assert_int_equal(catalog_put_hist(c, &h2), 0);
	assert_int_equal(catalog_put_hist(c, &h3), 0);

	memset(&p1, 0, sizeof(p1));
	memset(&p2, 0, sizeof(p2));
	snprintf(p1.name, sizeof(p1.name), "zeta");
	memset(p1.url, 'u', 3000); /* long URL survives intact */
	memcpy(p1.url, "s3://", 5);
	snprintf(p1.opts, sizeof(p1.opts), "endpoint=https://x:9000 region=eu path_style=1");
	snprintf(p2.name, sizeof(p2.name), "default");
	snprintf(p2.url, sizeof(p2.url), "file:///srv/tape");
	assert_int_equal(catalog_put_pool(c, &p1), 0);
	assert_int_equal(catalog_put_pool(c, &p2), 0);
	assert_int_equal(catalog_set_meta(c, "store_id", "abc-123"), 0);
	assert_int_equal(catalog_commit(c), 0);

	for (int pass = 0; pass < 2; pass++) {
		l = load(c);
		/* order: pools, volumes, bvs, histories */
		assert_string_equal(l->order, "ppvvbbbhhh");
		assert_int_equal(l->np, 2);
		assert_string_equal(l->pools[0].name, "default");
		assert_string_equal(l->pools[0].url, "file:///srv/tape");
		assert_string_equal(l->pools[0].opts, "");
		assert_string_equal(l->pools[1].name, "zeta");
		assert_string_equal(l->pools[1].url, p1.url);
		assert_string_equal(l->pools[1].opts, p1.opts);

		assert_int_equal(l->nv, 2);
		assert_vol_eq(&l->vols[0], &va);
		assert_vol_eq(&l->vols[1], &vb);

		/* bvs by vol_id, idx */
		assert_int_equal(l->nb, 3);
		const struct bv_row *x = &l->bvs[0], *y = &l->bvs[1];
		if (va.id > vb.id) {
			x = &l->bvs[1];
			y = &l->bvs[2];
		}
		assert_int_equal(x->id, b2.id);
		assert_int_equal(x->idx, 1);
		assert_false(x->tracking);
		assert_int_equal(x->track_base, 0);
		assert_int_equal(y->id, b1.id);
		assert_int_equal(y->vol_id, va.id);
		assert_int_equal(y->idx, 2);
		assert_true(y->tracking);
		assert_int_equal(y->track_base, 4000000001u);

		/* histories by vol_id, version */
		assert_int_equal(l->nh, 3);
		const struct hist_row *a0 = &l->hists[0], *a1 = &l->hists[1], *bb = &l->hists[2];
		if (va.id > vb.id) {
			bb = &l->hists[0];
			a0 = &l->hists[1];
			a1 = &l->hists[2];
		}
		assert_hist_eq(a0, &h2);
		assert_hist_eq(a1, &h1);
		assert_hist_eq(bb, &h3);

		assert_int_equal(catalog_get_meta(c, "store_id", val, sizeof(val)), 0);
		assert_string_equal(val, "abc-123");

		/* second pass: the same after close/open */
		catalog_close(c);
		assert_int_equal(catalog_open(f->db, &c), 0);
	}
	catalog_close(c);
}

static void test_update_delete(void **state)
{
	struct fx *f = *state;
	struct catalog *c;
	struct vol_row va = sample_vol("alpha"), dup = sample_vol("alpha");
	struct bv_row b = { 0 };
	struct hist_row h;
	struct pool_row p;
	struct loaded *l;
	char val[8];

	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_put_volume(c, &va), 0);
	int64_t id = va.id;
	/* same name again: refused by the UNIQUE constraint */
	assert_int_equal(catalog_put_volume(c, &dup), -EEXIST);

	/* update keeps the id and changes every field */
	va.size_bytes = 4096;
	va.era = 2;
	va.next_version = 3;
	va.save = 1;
	snprintf(va.state, sizeof(va.state), "ok");
	snprintf(va.name, sizeof(va.name), "renamed");
	va.last_tape_era = 0;
	assert_int_equal(catalog_put_volume(c, &va), 0);
	assert_int_equal(va.id, id);
	l = load(c);
	assert_int_equal(l->nv, 1);
	assert_vol_eq(&l->vols[0], &va);

	b.vol_id = id;
	b.idx = 1;
	assert_int_equal(catalog_put_bv(c, &b), 0);
	int64_t bid = b.id;
	b.tracking = true;
	b.track_base = 41;
	b.idx = 99; /* idx is not updated: a BV keeps its name */
	assert_int_equal(catalog_put_bv(c, &b), 0);
	l = load(c);
	assert_int_equal(l->nb, 1);
	assert_int_equal(l->bvs[0].id, bid);
	assert_true(l->bvs[0].tracking);
	assert_int_equal(l->bvs[0].track_base, 41);
	assert_int_equal(l->bvs[0].idx, 1);
	/* a second BV with the same idx is refused */
	struct bv_row b2 = { 0 };
	b2.vol_id = id;
	b2.idx = 1;
	assert_int_equal(catalog_put_bv(c, &b2), -EEXIST);

	/* put_hist replaces by (vol_id, version) */
	h = sample_hist(id, 1, bid);
	assert_int_equal(catalog_put_hist(c, &h), 0);
	h.disk_status = HS_FAILED;
	h.grains_copied = 3;
	assert_int_equal(catalog_put_hist(c, &h), 0);
	l = load(c);
	assert_int_equal(l->nh, 1);
	assert_hist_eq(&l->hists[0], &h);
	struct hist_row h2 = sample_hist(id, 2, 0);
	assert_int_equal(catalog_put_hist(c, &h2), 0);
	assert_int_equal(catalog_del_hist(c, id, 1), 0);
	l = load(c);
	assert_int_equal(l->nh, 1);
	assert_true(l->hists[0].version == 2);

	/* pools replace by name, delete by name */
	memset(&p, 0, sizeof(p));
	snprintf(p.name, sizeof(p.name), "p");
	snprintf(p.url, sizeof(p.url), "file:///a");
	assert_int_equal(catalog_put_pool(c, &p), 0);
	snprintf(p.url, sizeof(p.url), "file:///b");
	assert_int_equal(catalog_put_pool(c, &p), 0);
	l = load(c);
	assert_int_equal(l->np, 1);
	assert_string_equal(l->pools[0].url, "file:///b");
	assert_int_equal(catalog_del_pool(c, "p"), 0);
	l = load(c);
	assert_int_equal(l->np, 0);

	/* meta replace */
	assert_int_equal(catalog_set_meta(c, "k", "1"), 0);
	assert_int_equal(catalog_set_meta(c, "k", "2"), 0);
	assert_int_equal(catalog_get_meta(c, "k", val, sizeof(val)), 0);
	assert_string_equal(val, "2");

	/* deleting a volume removes its bvs and histories */
	assert_int_equal(catalog_del_volume(c, id), 0);
	l = load(c);
	assert_int_equal(l->nv + l->nb + l->nh, 0);
	catalog_close(c);
}

static void test_transactions(void **state)
{
	struct fx *f = *state;
	struct catalog *c;
	struct vol_row a = sample_vol("a"), b = sample_vol("b");
	struct loaded *l;

	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_begin(c), 0);
	assert_int_equal(catalog_put_volume(c, &a), 0);
	assert_int_equal(catalog_set_meta(c, "x", "y"), 0);
	catalog_rollback(c);
	l = load(c);
	assert_int_equal(l->nv, 0);
	char val[8];
	assert_int_equal(catalog_get_meta(c, "x", val, sizeof(val)), -ENOENT);
	catalog_rollback(c); /* no transaction open: harmless */

	assert_int_equal(catalog_begin(c), 0);
	assert_int_equal(catalog_put_volume(c, &b), 0);
	assert_int_equal(catalog_commit(c), 0);
	/* a commit without a transaction fails and leaves data intact */
	assert_true(catalog_commit(c) < 0);
	catalog_close(c);

	assert_int_equal(catalog_open(f->db, &c), 0);
	l = load(c);
	assert_int_equal(l->nv, 1);
	assert_string_equal(l->vols[0].name, "b");
	/* an open transaction not committed before close is lost */
	assert_int_equal(catalog_begin(c), 0);
	struct vol_row d = sample_vol("d");
	assert_int_equal(catalog_put_volume(c, &d), 0);
	catalog_close(c);
	assert_int_equal(catalog_open(f->db, &c), 0);
	l = load(c);
	assert_int_equal(l->nv, 1);
	catalog_close(c);
}

/* the schema-1 SQL, copied from catalog.c's first migration */
static const char schema_v1[] =
	"CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
	"CREATE TABLE volumes("
	" id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
	" size INTEGER NOT NULL, grain INTEGER NOT NULL, save INTEGER NOT NULL,"
	" interval_days INTEGER NOT NULL, era INTEGER NOT NULL, next_version INTEGER NOT NULL,"
	" next_bv INTEGER NOT NULL, tape_gens INTEGER NOT NULL, tape_days INTEGER NOT NULL,"
	" pool TEXT NOT NULL, state TEXT NOT NULL, created INTEGER NOT NULL);"
	"CREATE TABLE bvs("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" vol_id INTEGER NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,"
	" idx INTEGER NOT NULL, tracking INTEGER NOT NULL, track_base INTEGER NOT NULL,"
	" UNIQUE(vol_id, idx));"
	"CREATE TABLE histories("
	" vol_id INTEGER NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,"
	" version INTEGER NOT NULL, date INTEGER NOT NULL, differential INTEGER NOT NULL,"
	" media INTEGER NOT NULL, bv_id INTEGER NOT NULL, disk_status INTEGER NOT NULL,"
	" copy_full INTEGER NOT NULL, grains_total INTEGER NOT NULL,"
	" grains_copied INTEGER NOT NULL, tape_status INTEGER NOT NULL, pool TEXT NOT NULL,"
	" manifest TEXT NOT NULL, blocks INTEGER NOT NULL,"
	" PRIMARY KEY(vol_id, version));";

static void make_db(const char *path, const char *sql)
{
	sqlite3 *db;
	char *msg = NULL;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("setup SQL failed: %s", msg ? msg : "?");
	assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_migrate_from_v1(void **state)
{
	struct fx *f = *state;
	struct catalog *c;
	struct loaded *l;
	char sql[4096];

	snprintf(sql, sizeof(sql),
		 "%s"
		 "INSERT INTO volumes VALUES(1,'db',1073741824,65536,2,30,17,5,3,0,0,'default',"
		 "'ok',1795608000);"
		 "INSERT INTO bvs VALUES(1,1,1,1,16);"
		 "INSERT INTO bvs VALUES(2,1,2,0,0);"
		 "INSERT INTO histories VALUES(1,4,1795608100,1,1,1,2,0,16384,12,0,'',"
		 "'',0);"
		 "INSERT INTO meta VALUES('k','v');"
		 "PRAGMA user_version=1;",
		 schema_v1);
	make_db(f->db, sql);

	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_schema_version(c), CATALOG_SCHEMA_VERSION);
	l = load(c);
	assert_int_equal(l->nv, 1);
	assert_int_equal(l->vols[0].id, 1);
	assert_string_equal(l->vols[0].name, "db");
	assert_true(l->vols[0].size_bytes == ACM_GiB);
	assert_int_equal(l->vols[0].grain_bytes, 65536);
	assert_int_equal(l->vols[0].save, 2);
	assert_int_equal(l->vols[0].era, 17);
	assert_int_equal(l->vols[0].next_version, 5);
	assert_int_equal(l->vols[0].next_bv, 3);
	assert_string_equal(l->vols[0].pool, "default");
	assert_string_equal(l->vols[0].state, "ok");
	assert_int_equal(l->vols[0].created, 1795608000);
	/* new columns defaulted */
	assert_int_equal(l->vols[0].last_tape_version, 0);
	assert_int_equal(l->vols[0].last_tape_era, 0);

	assert_int_equal(l->nb, 2);
	assert_true(l->bvs[0].tracking);
	assert_int_equal(l->bvs[0].track_base, 16);

	assert_int_equal(l->nh, 1);
	assert_true(l->hists[0].version == 4);
	assert_int_equal(l->hists[0].bv_id, 1);
	assert_int_equal(l->hists[0].disk_status, HS_SUCCEEDED);
	assert_true(l->hists[0].grains_copied == 12);
	assert_int_equal(l->hists[0].btype, 0);
	assert_int_equal(l->hists[0].verify_state, 0);
	assert_int_equal(l->hists[0].verify_date, 0);
	assert_int_equal(l->hists[0].cut_era, 0);

	char val[8];
	assert_int_equal(catalog_get_meta(c, "k", val, sizeof(val)), 0);
	assert_string_equal(val, "v");

	/* the v2 table exists and the new columns are writable */
	struct pool_row p;
	memset(&p, 0, sizeof(p));
	snprintf(p.name, sizeof(p.name), "default");
	snprintf(p.url, sizeof(p.url), "file:///t");
	assert_int_equal(catalog_put_pool(c, &p), 0);
	struct hist_row h = l->hists[0];
	h.cut_era = 16;
	h.verify_state = 1;
	assert_int_equal(catalog_put_hist(c, &h), 0);

	/* the v3 trash table works */
	assert_int_equal(catalog_trash_add(c, "default", "manifests/db/x.mf"), 0);
	assert_int_equal(catalog_trash_add(c, "default", "manifests/db/x.mf"), 0); /* idempotent */
	catalog_close(c);

	/* reopened: still the current version, no second migration, data intact */
	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_schema_version(c), CATALOG_SCHEMA_VERSION);
	int ntrash = 0;
	assert_int_equal(catalog_trash_list(c, count_trash, &ntrash), 0);
	assert_int_equal(ntrash, 1);
	assert_int_equal(catalog_trash_del(c, "default", "manifests/db/x.mf"), 0);
	ntrash = 0;
	assert_int_equal(catalog_trash_list(c, count_trash, &ntrash), 0);
	assert_int_equal(ntrash, 0);
	l = load(c);
	assert_int_equal(l->np, 1);
	assert_int_equal(l->hists[0].cut_era, 16);
	assert_int_equal(l->hists[0].verify_state, 1);
	catalog_close(c);
}

static void test_newer_schema_refused(void **state)
{
	struct fx *f = *state;
	struct catalog *c = NULL;

	make_db(f->db, "CREATE TABLE t(x); PRAGMA user_version=99;");
	assert_int_equal(catalog_open(f->db, &c), -EPROTO);
	assert_null(c);
}

static void test_not_a_database(void **state)
{
	struct fx *f = *state;
	struct catalog *c = NULL;
	char junk[8192], *back;
	size_t len;

	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)('a' + i % 26);
	spit(f->db, junk, sizeof(junk));
	int rc = catalog_open(f->db, &c);
	assert_true(rc < 0);
	assert_int_equal(rc, -EUCLEAN); /* NOTADB → EUCLEAN per catalog.h */
	assert_null(c);
	/* the damaged file is left as it was, for the operator */
	back = slurp(f->db, &len);
	assert_int_equal(len, sizeof(junk));
	assert_memory_equal(back, junk, sizeof(junk));
	free(back);
}

/* a catalog whose pages are damaged is refused at open (quick/integrity check) */
static void test_damaged_database(void **state)
{
	struct fx *f = *state;
	struct catalog *c;
	char *buf;
	size_t len;

	assert_int_equal(catalog_open(f->db, &c), 0);
	assert_int_equal(catalog_begin(c), 0);
	for (int i = 0; i < 400; i++) {
		char name[32];
		snprintf(name, sizeof(name), "vol%03d", i);
		struct vol_row r = sample_vol(name);
		assert_int_equal(catalog_put_volume(c, &r), 0);
	}
	assert_int_equal(catalog_commit(c), 0);
	catalog_close(c);

	buf = slurp(f->db, &len);
	assert_true(len > 8 * 4096);
	/* scribble over the middle pages (not the header page) */
	for (size_t i = 2 * 4096; i < len - 4096; i += 7)
		buf[i] = (char)(buf[i] ^ 0x5a);
	spit(f->db, buf, len);
	free(buf);

	c = NULL;
	assert_true(catalog_open(f->db, &c) < 0);
	assert_null(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_update_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrate_from_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_schema_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_database, setup, teardown),
	};

	log_set_level(LOG_LVL_ERR); /* the refusals below log errors by design */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
