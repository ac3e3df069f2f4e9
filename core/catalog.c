/*
 * catalog.c — SQLite behind catalog.h.
 *
 * Schema history (PRAGMA user_version):
 *   1: meta, volumes, bvs, histories
 *   2: pools; histories gain tape retention type and verify result;
 *      volumes gain the last tape cut (era, version); histories gain cut_era, the
 *      era their image was cut at (parent choice of incremental tape copies)
 *   3: tape_trash: manifests to delete once no history names them (a crash
 *      between forgetting a history and deleting its manifest leaves the
 *      manifest, never a history without its manifest)
 * A migration runs in one transaction; a crash mid-way leaves the old version.
 * See docs/catalog.md.
 */
#include "catalog.h"

#include <errno.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fault.h"
#include "log.h"

#define LOG_PREFIX "catalog"

struct catalog {
	sqlite3 *db;
};

static const char *const migrations[] = {
	/* → 1 */
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
	" PRIMARY KEY(vol_id, version));",
	/* → 2 */
	"CREATE TABLE pools(name TEXT PRIMARY KEY, url TEXT NOT NULL, opts TEXT NOT NULL);"
	"ALTER TABLE histories ADD COLUMN btype INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE histories ADD COLUMN verify_state INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE histories ADD COLUMN verify_date INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE volumes ADD COLUMN last_tape_version INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE volumes ADD COLUMN last_tape_era INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE histories ADD COLUMN cut_era INTEGER NOT NULL DEFAULT 0;",
	/* → 3 */
	"CREATE TABLE tape_trash(pool TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY(pool, key));",
};

_Static_assert(ACM_ARRAY_SIZE(migrations) == CATALOG_SCHEMA_VERSION, "one migration per version");

static int map_err(struct catalog *c, int rc, const char *what)
{
	int e;

	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_DONE:
	case SQLITE_ROW:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		e = -EBUSY;
		break;
	case SQLITE_FULL:
		e = -ENOSPC;
		break;
	case SQLITE_NOMEM:
		e = -ENOMEM;
		break;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		e = -EUCLEAN;
		break;
	case SQLITE_CONSTRAINT:
		e = -EEXIST;
		break;
	case SQLITE_READONLY:
		e = -EROFS;
		break;
	default:
		e = -EIO;
	}
	log_err("%s: %s (sqlite %d)", what, c && c->db ? sqlite3_errmsg(c->db) : "?", rc);
	return e;
}

static int exec(struct catalog *c, const char *sql)
{
	char *msg = NULL;
	int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);

	if (rc != SQLITE_OK) {
		log_err("exec: %s", msg ? msg : "?");
		sqlite3_free(msg);
		return map_err(c, rc, "exec");
	}
	return 0;
}

int catalog_schema_version(struct catalog *c)
{
	sqlite3_stmt *st;
	int v = -1;

	if (sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -EIO;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

static int migrate(struct catalog *c)
{
	int v = catalog_schema_version(c);
	char sql[64];
	int rc;

	if (v < 0)
		return -EIO;
	if (v > CATALOG_SCHEMA_VERSION) {
		log_err("catalog schema %d is newer than this acmfs (%d)", v,
			CATALOG_SCHEMA_VERSION);
		return -EPROTO;
	}
	for (; v < CATALOG_SCHEMA_VERSION; v++) {
		rc = exec(c, "BEGIN IMMEDIATE");
		if (rc)
			return rc;
		rc = exec(c, migrations[v]);
		if (!rc) {
			snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", v + 1);
			rc = exec(c, sql);
		}
		if (rc) {
			exec(c, "ROLLBACK");
			return rc;
		}
		rc = exec(c, "COMMIT");
		if (rc)
			return rc;
		log_info("catalog migrated to schema %d", v + 1);
	}
	return 0;
}

int catalog_check(struct catalog *c, char *msg, size_t msglen)
{
	sqlite3_stmt *st;
	int rc = -EIO;

	if (sqlite3_prepare_v2(c->db, "PRAGMA integrity_check", -1, &st, NULL) != SQLITE_OK)
		return map_err(c, sqlite3_errcode(c->db), "integrity_check");
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *r = (const char *)sqlite3_column_text(st, 0);
		snprintf(msg, msglen, "%s", r ? r : "?");
		rc = r && !strcmp(r, "ok") ? 0 : -EUCLEAN;
	}
	sqlite3_finalize(st);
	return rc;
}

/* ---- fault-injection VFS shim (only registered when ACMFS_FAULT names the
 * catalog): every write, sync and truncate of the database and its WAL
 * counts as one IO_CATALOG operation ---- */

struct shim_file {
	sqlite3_file base;
	sqlite3_file *real; /* follows this struct in the same allocation */
};

static sqlite3_vfs *real_vfs;
static sqlite3_io_methods shim_methods;

static sqlite3_file *REAL(sqlite3_file *f)
{
	return ((struct shim_file *)f)->real;
}

static int shim_fault(void)
{
	int rc = fault_check(IO_CATALOG, NULL);

	return rc == -ENOSPC ? SQLITE_FULL : rc ? SQLITE_IOERR : SQLITE_OK;
}

static int shim_close(sqlite3_file *f)
{
	return REAL(f)->pMethods->xClose(REAL(f));
}
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
	return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
	int rc = shim_fault();
	return rc ? rc : REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	int rc = shim_fault();
	return rc ? rc : REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int shim_sync(sqlite3_file *f, int flags)
{
	int rc = shim_fault();
	return rc ? rc : REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int shim_size(sqlite3_file *f, sqlite3_int64 *s)
{
	return REAL(f)->pMethods->xFileSize(REAL(f), s);
}
static int shim_lock(sqlite3_file *f, int l)
{
	return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int shim_unlock(sqlite3_file *f, int l)
{
	return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int shim_check(sqlite3_file *f, int *r)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r);
}
static int shim_fctl(sqlite3_file *f, int op, void *a)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, a);
}
static int shim_sector(sqlite3_file *f)
{
	return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int shim_devchar(sqlite3_file *f)
{
	return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int shim_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int shim_shmlock(sqlite3_file *f, int off, int n, int flags)
{
	return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void shim_shmbarrier(sqlite3_file *f)
{
	REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int shim_shmunmap(sqlite3_file *f, int del)
{
	return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
	struct shim_file *sf = (struct shim_file *)f;
	int rc;

	sf->real = (sqlite3_file *)(sf + 1);
	rc = real_vfs->xOpen(real_vfs, name, sf->real, flags, out);
	f->pMethods = rc == SQLITE_OK && sf->real->pMethods ? &shim_methods : NULL;
	return rc;
}

static sqlite3_vfs shim_vfs;

static void shim_register(void)
{
	if (real_vfs)
		return;
	real_vfs = sqlite3_vfs_find(NULL);
	shim_vfs = *real_vfs;
	shim_vfs.zName = "acmfs-fault";
	shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real_vfs->szOsFile;
	shim_vfs.xOpen = shim_open;
	shim_methods = (sqlite3_io_methods){
		.iVersion = 2,
		.xClose = shim_close,
		.xRead = shim_read,
		.xWrite = shim_write,
		.xTruncate = shim_truncate,
		.xSync = shim_sync,
		.xFileSize = shim_size,
		.xLock = shim_lock,
		.xUnlock = shim_unlock,
		.xCheckReservedLock = shim_check,
		.xFileControl = shim_fctl,
		.xSectorSize = shim_sector,
		.xDeviceCharacteristics = shim_devchar,
		.xShmMap = shim_shmmap,
		.xShmLock = shim_shmlock,
		.xShmBarrier = shim_shmbarrier,
		.xShmUnmap = shim_shmunmap,
	};
	sqlite3_vfs_register(&shim_vfs, 0);
}

int catalog_open(const char *path, struct catalog **out)
{
	struct catalog *c = calloc(1, sizeof(*c));
	char msg[256];
	int rc;

	if (!c)
		return -ENOMEM;
	if (fault_active(IO_CATALOG))
		shim_register();
	rc = sqlite3_open_v2(path, &c->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
			     real_vfs ? "acmfs-fault" : NULL);
	if (rc != SQLITE_OK) {
		rc = map_err(c, rc, "open");
		goto out_close;
	}
	sqlite3_busy_timeout(c->db, 5000);
	rc = exec(c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
	if (rc)
		goto out_close;
	rc = catalog_check(c, msg, sizeof(msg));
	if (rc) {
		log_err("integrity check of %s failed: %s", path, msg);
		goto out_close;
	}
	rc = migrate(c);
	if (rc)
		goto out_close;
	*out = c;
	return 0;
out_close:
	sqlite3_close(c->db);
	free(c);
	return rc;
}

void catalog_close(struct catalog *c)
{
	if (!c)
		return;
	sqlite3_close(c->db);
	free(c);
}

int catalog_begin(struct catalog *c)
{
	return exec(c, "BEGIN IMMEDIATE");
}

int catalog_commit(struct catalog *c)
{
	int rc = exec(c, "COMMIT");

	if (rc)
		catalog_rollback(c);
	return rc;
}

void catalog_rollback(struct catalog *c)
{
	if (!sqlite3_get_autocommit(c->db))
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

static void col_text(sqlite3_stmt *st, int i, char *dst, size_t len)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	snprintf(dst, len, "%s", t ? (const char *)t : "");
}

static int load_rows(struct catalog *c, const char *sql, int (*row)(struct catalog *, sqlite3_stmt *,
								   const struct catalog_loader *),
		     const struct catalog_loader *ld)
{
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_err(c, rc, "prepare load");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int r = row(c, st, ld);
		if (r) {
			sqlite3_finalize(st);
			return r;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : map_err(c, rc, "load");
}

static int pool_row_cb(struct catalog *c, sqlite3_stmt *st, const struct catalog_loader *ld)
{
	struct pool_row r;

	memset(&r, 0, sizeof(r));
	col_text(st, 0, r.name, sizeof(r.name));
	col_text(st, 1, r.url, sizeof(r.url));
	col_text(st, 2, r.opts, sizeof(r.opts));
	return ld->pool ? ld->pool(ld->arg, &r) : 0;
}

static int vol_row_cb(struct catalog *c, sqlite3_stmt *st, const struct catalog_loader *ld)
{
	struct vol_row r;

	memset(&r, 0, sizeof(r));
	r.id = sqlite3_column_int64(st, 0);
	col_text(st, 1, r.name, sizeof(r.name));
	r.size_bytes = (uint64_t)sqlite3_column_int64(st, 2);
	r.grain_bytes = (uint32_t)sqlite3_column_int64(st, 3);
	r.save = (uint32_t)sqlite3_column_int64(st, 4);
	r.interval_days = (uint32_t)sqlite3_column_int64(st, 5);
	r.era = (uint32_t)sqlite3_column_int64(st, 6);
	r.next_version = (uint64_t)sqlite3_column_int64(st, 7);
	r.next_bv = (uint32_t)sqlite3_column_int64(st, 8);
	r.tape_gens = (uint32_t)sqlite3_column_int64(st, 9);
	r.tape_days = (uint32_t)sqlite3_column_int64(st, 10);
	col_text(st, 11, r.pool, sizeof(r.pool));
	col_text(st, 12, r.state, sizeof(r.state));
	r.created = sqlite3_column_int64(st, 13);
	r.last_tape_version = sqlite3_column_int64(st, 14);
	r.last_tape_era = (uint32_t)sqlite3_column_int64(st, 15);
	return ld->volume ? ld->volume(ld->arg, &r) : 0;
}

static int bv_row_cb(struct catalog *c, sqlite3_stmt *st, const struct catalog_loader *ld)
{
	struct bv_row r;

	memset(&r, 0, sizeof(r));
	r.id = sqlite3_column_int64(st, 0);
	r.vol_id = sqlite3_column_int64(st, 1);
	r.idx = (uint32_t)sqlite3_column_int64(st, 2);
	r.tracking = sqlite3_column_int(st, 3) != 0;
	r.track_base = (uint32_t)sqlite3_column_int64(st, 4);
	return ld->bv ? ld->bv(ld->arg, &r) : 0;
}

static int hist_row_cb(struct catalog *c, sqlite3_stmt *st, const struct catalog_loader *ld)
{
	struct hist_row r;

	memset(&r, 0, sizeof(r));
	r.vol_id = sqlite3_column_int64(st, 0);
	r.version = (uint64_t)sqlite3_column_int64(st, 1);
	r.date = sqlite3_column_int64(st, 2);
	r.differential = sqlite3_column_int(st, 3) != 0;
	r.media = sqlite3_column_int(st, 4);
	r.bv_id = sqlite3_column_int64(st, 5);
	r.disk_status = sqlite3_column_int(st, 6);
	r.copy_full = sqlite3_column_int(st, 7) != 0;
	r.grains_total = (uint64_t)sqlite3_column_int64(st, 8);
	r.grains_copied = (uint64_t)sqlite3_column_int64(st, 9);
	r.tape_status = sqlite3_column_int(st, 10);
	col_text(st, 11, r.pool, sizeof(r.pool));
	col_text(st, 12, r.manifest, sizeof(r.manifest));
	r.blocks = (uint64_t)sqlite3_column_int64(st, 13);
	r.btype = sqlite3_column_int(st, 14);
	r.verify_state = sqlite3_column_int(st, 15);
	r.verify_date = sqlite3_column_int64(st, 16);
	r.cut_era = (uint32_t)sqlite3_column_int64(st, 17);
	return ld->hist ? ld->hist(ld->arg, &r) : 0;
}

int catalog_load(struct catalog *c, const struct catalog_loader *ld)
{
	int rc;

	rc = load_rows(c, "SELECT name, url, opts FROM pools ORDER BY name", pool_row_cb, ld);
	if (!rc)
		rc = load_rows(c,
			       "SELECT id, name, size, grain, save, interval_days, era, next_version,"
			       " next_bv, tape_gens, tape_days, pool, state, created,"
			       " last_tape_version, last_tape_era FROM volumes ORDER BY name",
			       vol_row_cb, ld);
	if (!rc)
		rc = load_rows(c,
			       "SELECT id, vol_id, idx, tracking, track_base FROM bvs"
			       " ORDER BY vol_id, idx",
			       bv_row_cb, ld);
	if (!rc)
		rc = load_rows(c,
			       "SELECT vol_id, version, date, differential, media, bv_id, disk_status,"
			       " copy_full, grains_total, grains_copied, tape_status, pool, manifest,"
			       " blocks, btype, verify_state, verify_date, cut_era FROM histories"
			       " ORDER BY vol_id, version",
			       hist_row_cb, ld);
	return rc;
}

/* prepare, bind with a tiny format ("i" int64, "t" text), step, finalize */
static int run(struct catalog *c, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	int rc, i = 1;

	rc = sqlite3_prepare_v2(c->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_err(c, rc, "prepare");
	va_start(ap, fmt);
	for (const char *f = fmt; *f; f++, i++) {
		if (*f == 'i')
			sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
		else
			sqlite3_bind_text(st, i, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
	}
	va_end(ap);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : map_err(c, rc, sql);
}

int catalog_put_volume(struct catalog *c, struct vol_row *r)
{
	int rc;

	if (!r->id) {
		rc = run(c,
			 "INSERT INTO volumes(name, size, grain, save, interval_days, era,"
			 " next_version, next_bv, tape_gens, tape_days, pool, state, created,"
			 " last_tape_version, last_tape_era)"
			 " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
			 "tiiiiiiiiittiii", r->name, (int64_t)r->size_bytes,
			 (int64_t)r->grain_bytes, (int64_t)r->save, (int64_t)r->interval_days,
			 (int64_t)r->era, (int64_t)r->next_version, (int64_t)r->next_bv,
			 (int64_t)r->tape_gens, (int64_t)r->tape_days, r->pool, r->state, r->created,
			 r->last_tape_version, (int64_t)r->last_tape_era);
		if (!rc)
			r->id = sqlite3_last_insert_rowid(c->db);
		return rc;
	}
	return run(c,
		   "UPDATE volumes SET name=?, size=?, grain=?, save=?, interval_days=?, era=?,"
		   " next_version=?, next_bv=?, tape_gens=?, tape_days=?, pool=?, state=?,"
		   " created=?, last_tape_version=?, last_tape_era=? WHERE id=?",
		   "tiiiiiiiiittiiii", r->name, (int64_t)r->size_bytes, (int64_t)r->grain_bytes,
		   (int64_t)r->save, (int64_t)r->interval_days, (int64_t)r->era,
		   (int64_t)r->next_version, (int64_t)r->next_bv, (int64_t)r->tape_gens,
		   (int64_t)r->tape_days, r->pool, r->state, r->created, r->last_tape_version,
		   (int64_t)r->last_tape_era, r->id);
}

int catalog_del_volume(struct catalog *c, int64_t vol_id)
{
	int rc = run(c, "DELETE FROM histories WHERE vol_id=?", "i", vol_id);

	if (!rc)
		rc = run(c, "DELETE FROM bvs WHERE vol_id=?", "i", vol_id);
	if (!rc)
		rc = run(c, "DELETE FROM volumes WHERE id=?", "i", vol_id);
	return rc;
}

int catalog_put_bv(struct catalog *c, struct bv_row *r)
{
	int rc;

	if (!r->id) {
		rc = run(c, "INSERT INTO bvs(vol_id, idx, tracking, track_base) VALUES(?,?,?,?)",
			 "iiii", r->vol_id, (int64_t)r->idx, (int64_t)r->tracking,
			 (int64_t)r->track_base);
		if (!rc)
			r->id = sqlite3_last_insert_rowid(c->db);
		return rc;
	}
	return run(c, "UPDATE bvs SET tracking=?, track_base=? WHERE id=?", "iii",
		   (int64_t)r->tracking, (int64_t)r->track_base, r->id);
}

int catalog_put_hist(struct catalog *c, const struct hist_row *r)
{
	return run(c,
		   "INSERT OR REPLACE INTO histories(vol_id, version, date, differential, media,"
		   " bv_id, disk_status, copy_full, grains_total, grains_copied, tape_status, pool,"
		   " manifest, blocks, btype, verify_state, verify_date, cut_era)"
		   " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
		   "iiiiiiiiiiittiiiii", r->vol_id, (int64_t)r->version, r->date,
		   (int64_t)r->differential, (int64_t)r->media, r->bv_id, (int64_t)r->disk_status,
		   (int64_t)r->copy_full, (int64_t)r->grains_total, (int64_t)r->grains_copied,
		   (int64_t)r->tape_status, r->pool, r->manifest, (int64_t)r->blocks,
		   (int64_t)r->btype, (int64_t)r->verify_state, r->verify_date,
		   (int64_t)r->cut_era);
}

int catalog_del_hist(struct catalog *c, int64_t vol_id, uint64_t version)
{
	return run(c, "DELETE FROM histories WHERE vol_id=? AND version=?", "ii", vol_id,
		   (int64_t)version);
}

int catalog_put_pool(struct catalog *c, const struct pool_row *r)
{
	return run(c, "INSERT OR REPLACE INTO pools(name, url, opts) VALUES(?,?,?)", "ttt",
		   r->name, r->url, r->opts);
}

int catalog_del_pool(struct catalog *c, const char *name)
{
	return run(c, "DELETE FROM pools WHERE name=?", "t", name);
}

int catalog_trash_add(struct catalog *c, const char *pool, const char *key)
{
	return run(c, "INSERT OR IGNORE INTO tape_trash(pool, key) VALUES(?,?)", "tt", pool, key);
}

int catalog_trash_del(struct catalog *c, const char *pool, const char *key)
{
	return run(c, "DELETE FROM tape_trash WHERE pool=? AND key=?", "tt", pool, key);
}

int catalog_trash_list(struct catalog *c, int (*cb)(void *arg, const char *pool, const char *key),
		       void *arg)
{
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(c->db, "SELECT pool, key FROM tape_trash ORDER BY pool, key", -1,
				&st, NULL);
	if (rc != SQLITE_OK)
		return map_err(c, rc, "prepare trash");
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int r = cb(arg, (const char *)sqlite3_column_text(st, 0),
			   (const char *)sqlite3_column_text(st, 1));
		if (r) {
			sqlite3_finalize(st);
			return r;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : map_err(c, rc, "trash");
}

int catalog_get_meta(struct catalog *c, const char *key, char *val, size_t len)
{
	sqlite3_stmt *st;
	int rc;

	rc = sqlite3_prepare_v2(c->db, "SELECT value FROM meta WHERE key=?", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return map_err(c, rc, "prepare meta");
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		col_text(st, 0, val, len);
		rc = 0;
	} else {
		rc = rc == SQLITE_DONE ? -ENOENT : map_err(c, rc, "meta");
	}
	sqlite3_finalize(st);
	return rc;
}

int catalog_set_meta(struct catalog *c, const char *key, const char *val)
{
	return run(c, "INSERT OR REPLACE INTO meta(key, value) VALUES(?,?)", "tt", key, val);
}
