/*
 * common.h — the small library every acm* tool links: argument parsing in
 * ACM's style, mount discovery, device names, the ctl round trip, key=value
 * parsing, text tables, a JSON emitter and a progress bar.
 *
 * Contract: the tools are thin clients of a mounted acmfs. They reach the
 * engine only by writing one command to a `ctl` file and reading the reply
 * (docs/ctl-protocol.md), and by reading the mount's table, info and
 * status.json files. Nothing here knows the engine's internals.
 *
 * Deliberately not here: a JSON parser. status.json is only scanned
 * (acm_json_scan) for flat scalar members of objects — enough to pick
 * `mode_u` for `acmdevdisp -u`.
 *
 * Errors: functions return 0 (or a count) or a negative errno; the tool maps
 * it to an exit status with acm_exit_code() and prints one line with
 * acm_error(). Ownership: buffers returned through `char **` are malloc'd and
 * freed by the caller. Single-threaded except acm_progress_*, which keeps no
 * shared state (acmrestore draws from a second thread that owns the bar).
 */
#ifndef ACMFS_TOOLS_COMMON_H
#define ACMFS_TOOLS_COMMON_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifndef ACMFS_VERSION
#define ACMFS_VERSION "0.0.0"
#endif

/* Exit statuses, shared by all tools and documented in their man pages. */
enum {
	ACM_EXIT_OK = 0,
	ACM_EXIT_FAIL = 1,     /* any other error */
	ACM_EXIT_USAGE = 2,    /* bad options or command syntax (EINVAL, E2BIG) */
	ACM_EXIT_NOENT = 3,    /* no such volume, history, backup volume or pool */
	ACM_EXIT_BUSY = 4,     /* conflicting operation, or volume in use (EBUSY) */
	ACM_EXIT_NOSPC = 5,    /* no usable backup volume or no space (ENOSPC) */
	ACM_EXIT_IO = 6,       /* tape or store I/O failed (EIO) */
	ACM_EXIT_PERM = 7,     /* not the owner of the mount (EPERM, EACCES) */
	ACM_EXIT_EXIST = 8,    /* volume or pool exists (EEXIST) */
	ACM_EXIT_CANCELED = 9, /* the operation was cancelled (ECANCELED) */
	ACM_EXIT_FAILED = 10,  /* the backup or copy ran and ended `failed` */
	ACM_EXIT_NOMOUNT = 11, /* no acmfs mount found, or several */
};

#define ACM_NAME_MAX  64
#define ACM_REPLY_MAX 8192
#define ACM_MAX_COLS  16

/* One tool invocation. */
struct acm_ctx {
	const char *prog;      /* "acmbackup" */
	const char *mount_opt; /* -M DIR, or NULL */
	char mnt[PATH_MAX];    /* the mount, once found */
	bool json;             /* --json */
};

/* One option in ACM syntax: "-T", "-bd", "--json". `metavar` NULL = flag.
 * acm_parse() sets `value` to the argument, or to "" for a flag that was
 * given; it stays NULL when the option is absent. */
struct acm_opt {
	const char *name;
	const char *metavar;
	const char *value;
};

/*
 * Parse argv: options (from `opts`, plus the common -M DIR, --json, --help,
 * --version) may appear before or after positional arguments, as in ACM
 * (`acmcanceltrk DEV -bd BD`); `--` ends options. Positional arguments go to
 * `pos` (at most `max_pos`, else -EINVAL). --help prints `usage` to stdout
 * and --version the version, both returning 1 (caller exits 0). A repeated
 * or unknown option or a missing argument prints an error and returns
 * -EINVAL. `json_ok` false rejects --json.
 */
int acm_parse(struct acm_ctx *ctx, int argc, char **argv, struct acm_opt *opts, size_t nr_opts,
              const char **pos, size_t max_pos, size_t *nr_pos, const char *usage, bool json_ok);

/* "prog: error: <message>" on stderr. */
void acm_error(const struct acm_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Map a negative errno to one of ACM_EXIT_*. */
int acm_exit_code(int err);

/*
 * Find the mount into ctx->mnt: ctx->mount_opt, else $ACMFS_MOUNT, else the
 * single fuse.acmfs mount in /proc/self/mountinfo. Prints the error itself
 * and returns -ENODEV (none / not acmfs) or -ENOTUNIQ (several).
 */
int acm_find_mount(struct acm_ctx *ctx);

/*
 * Resolve DEVICE (a volume name, or the path of a volume's `data` file) to a
 * volume name and make sure the mount is known: a path names its own mount
 * unless -M/ACMFS_MOUNT say otherwise. Checks that the volume exists.
 * Prints the error itself; returns 0, -ENODEV/-ENOTUNIQ, -EINVAL or -ENOENT.
 */
int acm_device(struct acm_ctx *ctx, const char *device, char vol[ACM_NAME_MAX + 1]);

/* True when `s` is a non-empty string of decimal digits. */
bool acm_number_ok(const char *s);

/* True when `name` matches [A-Za-z0-9][A-Za-z0-9._-]{0,63}. */
bool acm_name_ok(const char *name);

/*
 * Write `cmd` (one line) to the ctl of `vol` (NULL = the global ctl) with a
 * single write on an O_RDWR descriptor, then read the reply into `reply`.
 * On failure `reply` holds the daemon's reason (without "error: ") or
 * strerror. Returns 0 or the write's -errno.
 */
int acm_ctl(const struct acm_ctx *ctx, const char *vol, const char *cmd, char *reply,
            size_t reply_len);

/* Read a whole file (sizes on a FUSE mount are not trusted) into a malloc'd,
 * NUL-terminated buffer. `rel` is relative to the mount. */
int acm_read_file(const char *path, char **out);
int acm_read_mnt(const struct acm_ctx *ctx, const char *rel, char **out);

/*
 * key=value lookup. acm_reply_get: space-separated words ("ok a=1 b=2"), value
 * percent-decoded. acm_info_get: one pair per line, value is the rest of the
 * line. Return 0, -ENOENT when absent, -ENAMETOOLONG when `val` is short.
 */
int acm_reply_get(const char *text, const char *key, char *val, size_t len);
int acm_info_get(const char *text, const char *key, char *val, size_t len);

/* Undo the percent-encoding of reply values (paths with space, '%', '='). */
void acm_pct_decode(char *s);

/* Make `path` absolute without requiring it to exist. */
int acm_abspath(const char *path, char *out, size_t len);

/* ---- text tables ---- */

/* A table: row 0 is the header. Cells are owned copies. */
struct acm_table {
	size_t nr_cols;
	size_t nr_rows;
	size_t cap_rows;
	char **cells; /* nr_rows * nr_cols */
};

void acm_table_init(struct acm_table *t, size_t nr_cols);
void acm_table_release(struct acm_table *t);
int acm_table_add(struct acm_table *t, const char *const *cells);
const char *acm_table_cell(const struct acm_table *t, size_t row, size_t col);
/* Print left-aligned columns separated by one or more spaces. */
void acm_table_print(const struct acm_table *t, FILE *f);

/*
 * Split one line of a daemon table into cells using the column starts of its
 * header line (left-aligned columns; cells may hold spaces, e.g. "1.0 Gbyte").
 * Falls back to whitespace words when their count equals the column count.
 * Returns the number of cells, or -EPROTO when the line does not fit.
 */
int acm_table_split(const char *header, const char *line, char cells[][128], size_t max_cols);

/*
 * Parse a whole daemon table (first non-empty line = header) into `t`
 * (initialised here; row 0 = header). Lines that do not fit are an error.
 */
int acm_table_parse(const char *text, struct acm_table *t);

/* "Transaction-Disk" → "transaction_disk" (JSON member names). */
void acm_json_name(const char *header, char *out, size_t len);

/* Count the header's columns (words) and copy them into `names`. */
int acm_table_header(const char *header, char names[][128], size_t max_cols);

/* ---- JSON output ---- */

struct acm_json {
	FILE *f;
	int depth;
	bool first[32];
};

void acm_json_init(struct acm_json *j, FILE *f);
/* `key` is NULL inside arrays and at the top level. */
void acm_json_obj(struct acm_json *j, const char *key);
void acm_json_arr(struct acm_json *j, const char *key);
void acm_json_end(struct acm_json *j, char close); /* '}' or ']' */
void acm_json_str(struct acm_json *j, const char *key, const char *val);
void acm_json_int(struct acm_json *j, const char *key, long long val);
void acm_json_bool(struct acm_json *j, const char *key, bool val);
void acm_json_null(struct acm_json *j, const char *key);
/* A value from a table or info file: "-", "----", "" → null; digits (with an
 * optional trailing '%') → number; else string. */
void acm_json_auto(struct acm_json *j, const char *key, const char *val);
/* Emit every key=value of a reply ("ok k=v …") or an info file as members. */
void acm_json_kv(struct acm_json *j, const char *text, bool lines);
/* Finish the document with a newline. */
void acm_json_done(struct acm_json *j);

/*
 * Scan JSON text: for every object, call `fn` when it closes with its scalar
 * members (strings unescaped, other scalars as written). Nested objects and
 * arrays are reported on their own. Returns 0, -EPROTO on malformed text, or
 * the first non-zero return of `fn`.
 */
struct acm_json_member {
	char key[64];
	char val[256];
};
int acm_json_scan(const char *text,
                  int (*fn)(void *arg, const struct acm_json_member *m, size_t nr), void *arg);

/* ---- progress bar on stderr ---- */

struct acm_progress {
	bool on;          /* stderr is a terminal */
	double start;     /* seconds, monotonic */
	double last_draw; /* seconds, monotonic */
	uint64_t total;   /* bytes the job moves (0 = unknown: no rate) */
	int last_pct;
	char label[16];
};

void acm_progress_init(struct acm_progress *p, const char *label, uint64_t total_bytes);
/* Draw at most ~10 times a second; `pct` 0..100. */
void acm_progress_draw(struct acm_progress *p, int pct, bool force);
/* Erase the bar's line (on failure). */
void acm_progress_clear(struct acm_progress *p);
/* Draw 100% and end the line (on success). */
void acm_progress_done(struct acm_progress *p);

/*
 * The ACM command tools' shared path: send `cmd` to DEVICE's volume ctl and,
 * on failure, print the reason and return the exit status to use. On
 * success returns 0 with the reply in `reply`.
 */
int acm_volume_command(struct acm_ctx *ctx, const char *vol, const char *cmd, char *reply,
                       size_t reply_len);

/*
 * Wait until history `version` of `vol` has no side `executing` (polling its
 * info file every ~150 ms), drawing a progress bar on a terminal. `tape_grace`
 * keeps waiting up to that many seconds for a tape copy that has not started
 * yet (media TAPE/BOTH with tape_status=none). On return `*info` holds the
 * final info text (caller frees). Returns 0, -ENOENT (history vanished), or
 * -ECANCELED when a side ended `failed` (its name in `failed_side`).
 */
int acm_wait_history(const struct acm_ctx *ctx, const char *vol, const char *version,
                     bool wait_tape, double tape_grace, char **info, const char **failed_side);

/* Print "<device> <acm word> completed", or with --json the reply (and the
 * final history info, when given) as one object. */
void acm_print_completed(const struct acm_ctx *ctx, const char *device, const char *reply,
                         const char *info);

double acm_now(void);
void acm_sleep_ms(int ms);

#endif
