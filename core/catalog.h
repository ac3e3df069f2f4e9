/*
 * catalog.h — the store's durable metadata: STORE/catalog.db (SQLite, WAL,
 * synchronous=FULL). The only module that speaks SQL.
 *
 * The engine keeps an in-memory model and writes every change through here,
 * inside catalog_begin()/catalog_commit(), before it reports the change done.
 * The schema is versioned (PRAGMA user_version) and migrated on open; open
 * also runs `PRAGMA quick_check` and refuses a damaged catalog.
 *
 * Not thread-safe: the caller serialises (the engine holds eng->lock).
 * Errors: 0 or -errno (SQLite codes mapped: BUSY→EBUSY, FULL→ENOSPC,
 * CORRUPT/NOTADB→EUCLEAN, others→EIO); the raw message is logged here.
 */
#ifndef ACMFS_CATALOG_H
#define ACMFS_CATALOG_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define CATALOG_SCHEMA_VERSION 3

struct catalog;

enum hstat { HS_NONE = 0, HS_EXECUTING = 1, HS_SUCCEEDED = 2, HS_FAILED = 3 };

struct vol_row {
	int64_t id;
	char name[ACM_NAME_MAX + 1];
	uint64_t size_bytes;
	uint32_t grain_bytes;
	uint32_t save;
	uint32_t interval_days;
	uint32_t era;		/* current era (tracking) */
	uint64_t next_version;	/* next history version */
	uint32_t next_bv;	/* next backup volume number */
	uint32_t tape_gens, tape_days;
	char pool[ACM_NAME_MAX + 1];
	char state[16];		/* "ok", "restoring", "needs-restore" */
	int64_t created;
	int64_t last_tape_version; /* reserved (schema 2); tape parents come from histories' cut_era */
	uint32_t last_tape_era;	   /* reserved (schema 2) */
};

struct bv_row {
	int64_t id;
	int64_t vol_id;
	uint32_t idx;		/* N in <vol>.bvN */
	bool tracking;
	uint32_t track_base;	/* era of the pair's last logical copy (if tracking) */
};

struct hist_row {
	int64_t vol_id;
	uint64_t version;
	int64_t date;
	bool differential;
	int media;		/* enum cmd_media */
	int64_t bv_id;		/* 0: no disk history */
	int disk_status;	/* enum hstat */
	bool copy_full;
	uint64_t grains_total, grains_copied;
	int tape_status;	/* enum hstat */
	int btype;		/* enum cmd_btype of the tape history */
	char pool[ACM_NAME_MAX + 1];
	char manifest[256];
	uint64_t blocks;
	int verify_state;	/* 0 never, 1 ok, 2 damaged */
	int64_t verify_date;
	uint32_t cut_era;	/* era the image was cut at (its logical copy) */
};

struct pool_row {
	char name[ACM_NAME_MAX + 1];
	char url[3200];
	char opts[2048];
};

struct catalog_loader {
	void *arg;
	int (*volume)(void *arg, const struct vol_row *r);
	int (*bv)(void *arg, const struct bv_row *r);
	int (*hist)(void *arg, const struct hist_row *r);
	int (*pool)(void *arg, const struct pool_row *r);
};

int catalog_open(const char *path, struct catalog **out) ACM_MUST_USE;
void catalog_close(struct catalog *c);
int catalog_schema_version(struct catalog *c);
/* full PRAGMA integrity_check; 0 when "ok" */
int catalog_check(struct catalog *c, char *msg, size_t msglen);

int catalog_begin(struct catalog *c) ACM_MUST_USE;
int catalog_commit(struct catalog *c) ACM_MUST_USE;
void catalog_rollback(struct catalog *c);

/* load everything, in order: pools, volumes, bvs, histories (by version) */
int catalog_load(struct catalog *c, const struct catalog_loader *ld) ACM_MUST_USE;

int catalog_put_volume(struct catalog *c, struct vol_row *r) ACM_MUST_USE; /* id 0 → insert, sets id */
int catalog_del_volume(struct catalog *c, int64_t vol_id) ACM_MUST_USE;	  /* with its bvs, histories */
int catalog_put_bv(struct catalog *c, struct bv_row *r) ACM_MUST_USE;	  /* id 0 → insert */
int catalog_put_hist(struct catalog *c, const struct hist_row *r) ACM_MUST_USE;
int catalog_del_hist(struct catalog *c, int64_t vol_id, uint64_t version) ACM_MUST_USE;
int catalog_put_pool(struct catalog *c, const struct pool_row *r) ACM_MUST_USE;
int catalog_del_pool(struct catalog *c, const char *name) ACM_MUST_USE;

/* tape objects to delete once the catalog no longer names them (schema 3):
 * added in the transaction that forgets a tape history, removed after the
 * object is gone. cb returning non-zero stops. */
int catalog_trash_add(struct catalog *c, const char *pool, const char *key) ACM_MUST_USE;
int catalog_trash_del(struct catalog *c, const char *pool, const char *key) ACM_MUST_USE;
int catalog_trash_list(struct catalog *c,
		       int (*cb)(void *arg, const char *pool, const char *key), void *arg);

/* meta key/value (strings) */
int catalog_get_meta(struct catalog *c, const char *key, char *val, size_t len);
int catalog_set_meta(struct catalog *c, const char *key, const char *val) ACM_MUST_USE;

#endif
