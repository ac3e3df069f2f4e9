/*
 * cmd.h — the control-file language (SPEC §4, docs/ctl-protocol.md).
 *
 * cmd_parse() turns one written line into a struct cmd or rejects it with
 * -EINVAL/-E2BIG and a one-line reason. It checks syntax only: names, sizes,
 * repeated and contradictory options. Whether a volume or history exists is
 * the engine's business. No allocation; the struct holds copies of strings.
 */
#ifndef ACMFS_CMD_H
#define ACMFS_CMD_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define CMD_MAX_LINE 4096

enum cmd_scope { CMD_GLOBAL, CMD_VOLUME };

enum cmd_kind {
	CMD_NONE,
	/* global */
	CMD_VOLUME_CREATE,
	CMD_VOLUME_DELETE,
	CMD_VOLUME_CLONE,
	CMD_BV_ADD,
	CMD_POLICY,
	CMD_TAPEPOLICY,
	CMD_POOL_CREATE,
	CMD_POOL_DELETE,
	CMD_POOL_IMPORT,
	CMD_POOL_GC,
	CMD_POOL_HOSTS,
	CMD_POOL_PASSWD,
	/* per volume */
	CMD_BACKUP,
	CMD_RESTORE,
	CMD_HISTDEL,
	CMD_CANCELTRK,
	CMD_TPHISTCOPY,
	CMD_CANCEL,
	CMD_VERIFY,
};

enum cmd_media { MEDIA_UNSET, MEDIA_DISK, MEDIA_TAPE, MEDIA_BOTH };
enum cmd_btype { BTYPE_UNSET, BTYPE_GEN, BTYPE_DAY };
/* which history a command names */
enum cmd_sel { SEL_LATEST, SEL_GEN, SEL_VERSION, SEL_DATE, SEL_ALL };

struct cmd {
	enum cmd_kind kind;
	/* names: volume / pool (global commands) */
	char name[ACM_NAME_MAX + 1];
	/* volume create */
	uint64_t size_bytes;
	uint64_t grain_bytes; /* 0 = default */
	uint32_t save;	      /* 0 = unset */
	char path[PATH_MAX];  /* from=, -r */
	bool has_path;
	/* bv add */
	uint32_t count;
	/* policy */
	bool has_save, has_interval;
	uint32_t interval_days;
	/* tapepolicy */
	bool has_gens, has_days, has_pool;
	uint32_t gens, days;
	char pool[ACM_NAME_MAX + 1];
	/* pool gc */
	bool has_grace;
	uint64_t grace_s;
	/* pool import host= (a host id or name) */
	char host[64];
	/* pool create */
	char url[1024];
	char opts[2048]; /* validated key=value words, space separated */
	/* per-volume options */
	bool differential;   /* -T */
	enum cmd_media media;
	enum cmd_btype btype;
	enum cmd_sel sel;
	uint64_t sel_value;  /* generation or version */
	int64_t sel_date;
	char bd[ACM_NAME_MAX + 1]; /* canceltrk -bd */
	bool all;		   /* canceltrk -all */
	bool instant;		   /* restore -i */
	char src[ACM_NAME_MAX + 1]; /* volume clone NAME SRC */
};

/* The volume geometry rules of `volume create` (README, "Limits"): 0 or
 * -EINVAL with the reason in err. grain_bytes 0 = the default. */
int cmd_volume_geometry(uint64_t size_bytes, uint64_t grain_bytes, char *err, size_t errlen);

/* Parse `len` bytes (need not be NUL-terminated). Returns 0, -EINVAL or -E2BIG;
 * on error `err` holds the reason. */
int cmd_parse(enum cmd_scope scope, const char *buf, size_t len, struct cmd *out, char *err,
	      size_t errlen) ACM_MUST_USE;

/* the command's first word(s), for logs: "backup", "volume create" */
const char *cmd_name(enum cmd_kind kind);

#endif
