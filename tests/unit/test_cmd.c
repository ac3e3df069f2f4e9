/*
 * test_cmd.c — core/cmd.c: the control-file language. Every command with every
 * option it takes, and every way a line is refused (docs/ctl-protocol.md):
 * each refusal must return the documented errno, leave a non-empty one-line
 * reason and out->kind == CMD_NONE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"

static struct cmd C;
static char ERR[256];

/* parse a NUL-terminated line */
static int parse(enum cmd_scope s, const char *line)
{
	memset(&C, 0xa5, sizeof(C)); /* garbage in: the parser must reset everything */
	memset(ERR, 'Z', sizeof(ERR) - 1);
	ERR[sizeof(ERR) - 1] = 0;
	return cmd_parse(s, line, strlen(line), &C, ERR, sizeof(ERR));
}

static void ok_(enum cmd_scope s, const char *line, enum cmd_kind kind, const char *file, int ln)
{
	int rc = parse(s, line);

	if (rc)
		fail_msg("%s:%d: '%s' refused (%d): %s", file, ln, line, rc, ERR);
	if (C.kind != kind)
		fail_msg("%s:%d: '%s' parsed as kind %d, want %d", file, ln, line, C.kind, kind);
	if (ERR[0])
		fail_msg("%s:%d: '%s' succeeded but left err '%s'", file, ln, line, ERR);
}

static void bad_(enum cmd_scope s, const char *line, int want, const char *file, int ln)
{
	int rc = parse(s, line);

	if (rc != want)
		fail_msg("%s:%d: '%s' gave %d (%s), want %d", file, ln, line, rc, ERR, want);
	if (!ERR[0] || ERR[0] == 'Z')
		fail_msg("%s:%d: '%s' failed without a reason", file, ln, line);
	if (strchr(ERR, '\n'))
		fail_msg("%s:%d: '%s': reason is not one line: '%s'", file, ln, line, ERR);
	if (C.kind != CMD_NONE)
		fail_msg("%s:%d: '%s' failed but kind is %d", file, ln, line, C.kind);
}

#define OK(s, line, kind) ok_(s, line, kind, __FILE__, __LINE__)
#define BAD(s, line) bad_(s, line, -EINVAL, __FILE__, __LINE__)
#define BADRC(s, line, rc) bad_(s, line, rc, __FILE__, __LINE__)
#define G CMD_GLOBAL
#define V CMD_VOLUME

/* ---- global: volume ---- */

static void test_volume_create(void **state)
{
	(void)state;
	OK(G, "volume create db 1G", CMD_VOLUME_CREATE);
	assert_string_equal(C.name, "db");
	assert_true(C.size_bytes == ACM_GiB);
	assert_int_equal(C.grain_bytes, 0);
	assert_int_equal(C.save, 0);
	assert_false(C.has_save);
	assert_false(C.has_path);

	OK(G, "volume create Db_1.x-y 8M save=3 grain=64K from=/srv/img/db.raw", CMD_VOLUME_CREATE);
	assert_string_equal(C.name, "Db_1.x-y");
	assert_true(C.size_bytes == 8 * ACM_MiB);
	assert_true(C.grain_bytes == 64 * ACM_KiB);
	assert_int_equal(C.save, 3);
	assert_true(C.has_save);
	assert_true(C.has_path);
	assert_string_equal(C.path, "/srv/img/db.raw");

	/* options in any order, tabs as separators, boundaries */
	OK(G, "volume\tcreate  db\t4096 grain=4K save=64", CMD_VOLUME_CREATE);
	assert_true(C.size_bytes == 4096);
	assert_true(C.grain_bytes == 4096);
	assert_int_equal(C.save, 64);
	OK(G, "volume create db 64T grain=16M save=1", CMD_VOLUME_CREATE);
	assert_true(C.size_bytes == 64 * ACM_GiB * 1024);
	assert_true(C.grain_bytes == 16 * ACM_MiB);
	assert_int_equal(C.save, 1);
	OK(G, "volume create db 12K grain=8KiB", CMD_VOLUME_CREATE);
	assert_true(C.grain_bytes == 8192);

	BAD(G, "volume create");
	BAD(G, "volume create db");
	BAD(G, "volume create .db 1G");
	BAD(G, "volume create d/b 1G");
	BAD(G, "volume create .. 1G");
	BAD(G, "volume create aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1G");
	BAD(G, "volume create db 1X");
	BAD(G, "volume create db -1G");
	BAD(G, "volume create db 0");
	BAD(G, "volume create db 5000");	 /* not a multiple of 4 KiB */
	BAD(G, "volume create db 65T");	 /* over 64 TiB */
	BAD(G, "volume create db 99999999999999999999999");
	BAD(G, "volume create db 1G save=0");
	BAD(G, "volume create db 1G save=65");
	BAD(G, "volume create db 1G save=x");
	BAD(G, "volume create db 1G save=");
	BAD(G, "volume create db 1G save=1 save=2");
	BAD(G, "volume create db 1G grain=2K");
	BAD(G, "volume create db 1G grain=32M");
	BAD(G, "volume create db 1G grain=12K"); /* not a power of two */
	BAD(G, "volume create db 1G grain=abc");
	BAD(G, "volume create db 1G grain=64K grain=64K");
	BAD(G, "volume create db 1G from=relative/path");
	BAD(G, "volume create db 1G from=");
	BAD(G, "volume create db 1G from=/a from=/b");
	BAD(G, "volume create db 1G size=1G");
	BAD(G, "volume create db 1G save");
	BAD(G, "volume create db 1G extra");
}

static void test_volume_delete(void **state)
{
	(void)state;
	OK(G, "volume delete db", CMD_VOLUME_DELETE);
	assert_string_equal(C.name, "db");
	BAD(G, "volume delete");
	BAD(G, "volume delete db extra");
	BAD(G, "volume delete -db");
	BAD(G, "volume remove db");
	BAD(G, "volume");
}

static void test_volume_clone(void **state)
{
	(void)state;
	OK(G, "volume clone test db", CMD_VOLUME_CLONE);
	assert_string_equal(C.name, "test");
	assert_string_equal(C.src, "db");
	assert_int_equal(C.sel, SEL_LATEST);
	assert_int_equal(C.media, MEDIA_UNSET);
	OK(G, "volume clone test db -v 7 -m TAPE", CMD_VOLUME_CLONE);
	assert_int_equal(C.sel, SEL_VERSION);
	assert_int_equal(C.sel_value, 7);
	assert_int_equal(C.media, MEDIA_TAPE);
	OK(G, "volume clone t2 db -g 2 -m DISK", CMD_VOLUME_CLONE);
	assert_int_equal(C.sel, SEL_GEN);
	assert_int_equal(C.sel_value, 2);
	assert_int_equal(C.media, MEDIA_DISK);
	BAD(G, "volume clone");
	BAD(G, "volume clone test");
	BAD(G, "volume clone db db");		/* a clone needs its own name */
	BAD(G, "volume clone .x db");
	BAD(G, "volume clone test d/b");
	BAD(G, "volume clone test db -g 1 -v 2");
	BAD(G, "volume clone test db -m BOTH");
	BAD(G, "volume clone test db -t 2026-01-01"); /* -t: not for clones */
	BAD(G, "volume clone test db -z");
	BAD(G, "volume clone test db -r /tmp/x");
	BAD(G, "volume clone test db -i");
	BAD(G, "volume clone test db extra");
	BAD(G, "volume clone test db -v");
	BAD(V, "volume clone test db");
}

static void test_bv_add(void **state)
{
	(void)state;
	OK(G, "bv add db", CMD_BV_ADD);
	assert_string_equal(C.name, "db");
	assert_int_equal(C.count, 1);
	OK(G, "bv add db 5", CMD_BV_ADD);
	assert_int_equal(C.count, 5);
	OK(G, "bv add db 64", CMD_BV_ADD);
	assert_int_equal(C.count, 64);
	BAD(G, "bv add");
	BAD(G, "bv add db 0");
	BAD(G, "bv add db 65");
	BAD(G, "bv add db x");
	BAD(G, "bv add db -1");
	BAD(G, "bv add db 1 2");
	BAD(G, "bv add .db");
	BAD(G, "bv del db");
	BAD(G, "bv");
}

static void test_policy(void **state)
{
	(void)state;
	OK(G, "policy db save=3", CMD_POLICY);
	assert_string_equal(C.name, "db");
	assert_true(C.has_save);
	assert_int_equal(C.save, 3);
	assert_false(C.has_interval);
	OK(G, "policy db interval=7", CMD_POLICY);
	assert_false(C.has_save);
	assert_true(C.has_interval);
	assert_int_equal(C.interval_days, 7);
	OK(G, "policy db interval=366 save=64", CMD_POLICY);
	assert_int_equal(C.interval_days, 366);
	assert_int_equal(C.save, 64);

	BAD(G, "policy");
	BAD(G, "policy db");
	BAD(G, "policy .db save=1");
	BAD(G, "policy db save=0");
	BAD(G, "policy db save=65");
	BAD(G, "policy db save=1 save=2");
	BAD(G, "policy db interval=0");
	BAD(G, "policy db interval=367");
	BAD(G, "policy db interval=1 interval=2");
	BAD(G, "policy db gens=1");
	BAD(G, "policy db save");
}

static void test_tapepolicy(void **state)
{
	(void)state;
	OK(G, "tapepolicy db gens=5 days=30 pool=p1", CMD_TAPEPOLICY);
	assert_string_equal(C.name, "db");
	assert_true(C.has_gens);
	assert_true(C.has_days);
	assert_true(C.has_pool);
	assert_int_equal(C.gens, 5);
	assert_int_equal(C.days, 30);
	assert_string_equal(C.pool, "p1");
	OK(G, "tapepolicy db gens=0", CMD_TAPEPOLICY);
	assert_true(C.has_gens);
	assert_int_equal(C.gens, 0);
	assert_false(C.has_days);
	assert_false(C.has_pool);
	OK(G, "tapepolicy db days=36500 gens=10000", CMD_TAPEPOLICY);

	BAD(G, "tapepolicy");
	BAD(G, "tapepolicy db");
	BAD(G, "tapepolicy db gens=10001");
	BAD(G, "tapepolicy db days=36501");
	BAD(G, "tapepolicy db gens=x");
	BAD(G, "tapepolicy db pool=.p");
	BAD(G, "tapepolicy db pool=");
	BAD(G, "tapepolicy db gens=1 gens=2");
	BAD(G, "tapepolicy db days=1 days=2");
	BAD(G, "tapepolicy db pool=a pool=b");
	BAD(G, "tapepolicy db save=1");
}

/* ---- global: pools ---- */

static void test_pool_create(void **state)
{
	(void)state;
	OK(G, "pool create p1 file:///srv/tape", CMD_POOL_CREATE);
	assert_string_equal(C.name, "p1");
	assert_string_equal(C.url, "file:///srv/tape");
	assert_string_equal(C.opts, "");

	OK(G,
	   "pool create s3p s3://bucket/prefix endpoint=https://s3.example:9000 region=eu-1 "
	   "path_style=1 credentials=/etc/acmfs/cred ca=/etc/ssl/ca.pem retries=3",
	   CMD_POOL_CREATE);
	assert_string_equal(C.url, "s3://bucket/prefix");
	assert_string_equal(C.opts, "endpoint=https://s3.example:9000 region=eu-1 path_style=1 "
				    "credentials=/etc/acmfs/cred ca=/etc/ssl/ca.pem "
				    "retries=3");
	OK(G, "pool create p s3://bucket", CMD_POOL_CREATE);
	assert_string_equal(C.url, "s3://bucket");

	/* secrets never on the command line; the reason must not echo the value */
	BAD(G, "pool create p1 s3://b secret_access_key=TOPSECRETVALUE");
	assert_non_null(strstr(ERR, "secret_access_key"));
	assert_null(strstr(ERR, "TOPSECRETVALUE"));
	BAD(G, "pool create p1 s3://b access_key_id=AKIAEXAMPLE");
	assert_null(strstr(ERR, "AKIAEXAMPLE"));
	BAD(G, "pool create p1 s3://b session_token=tok");
	BAD(G, "pool create p1 s3://b password=pw");
	BAD(G, "pool create p1 s3://user:pw@bucket");
	BAD(G, "pool create p1 s3://b/../etc");
	BAD(G, "pool create p1 file:///srv/../etc");
	BAD(G, "pool create p1 http://example.com/x");
	BAD(G, "pool create p1 file://relative");
	BAD(G, "pool create p1 /srv/tape");
	BAD(G, "pool create p1 s3://b region");      /* not key=value */
	BAD(G, "pool create p1 s3://b =eu");
	BAD(G, "pool create p1 s3://b region=a region=b");
	BAD(G, "pool create p1 s3://b regionx=a");
	BAD(G, "pool create p1 s3://b Region=a");
	BAD(G, "pool create .p file:///srv/tape");
	BAD(G, "pool create p1");
	BAD(G, "pool create");

	/* options over the 2048-byte field, inside a 4096-byte line */
	char line[4096], big[900];
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	snprintf(line, sizeof(line), "pool create p s3://b endpoint=%s region=%s ca=%s", big, big,
		 big);
	assert_true(strlen(line) < CMD_MAX_LINE);
	BAD(G, line);
}

static void test_pool_other(void **state)
{
	(void)state;
	OK(G, "pool delete p1", CMD_POOL_DELETE);
	assert_string_equal(C.name, "p1");
	OK(G, "pool import p1", CMD_POOL_IMPORT);
	assert_string_equal(C.name, "p1");
	OK(G, "pool gc p1", CMD_POOL_GC);
	assert_string_equal(C.name, "p1");
	assert_false(C.has_grace);
	OK(G, "pool gc p1 grace=60", CMD_POOL_GC);
	assert_true(C.has_grace);
	assert_int_equal(C.grace_s, 60);
	OK(G, "pool gc p1 grace=0", CMD_POOL_GC);
	assert_true(C.has_grace);
	assert_int_equal(C.grace_s, 0);
	OK(G, "pool gc p1 grace=31536000", CMD_POOL_GC);
	assert_int_equal(C.grace_s, 31536000);

	BAD(G, "pool gc p1 grace=31536001");
	BAD(G, "pool gc p1 grace=x");
	BAD(G, "pool gc p1 grace=-1");
	BAD(G, "pool gc p1 foo=1");
	BAD(G, "pool gc p1 grace=1 grace=2");
	BAD(G, "pool gc .p1 grace=1");
	BAD(G, "pool gc");
	BAD(G, "pool delete p1 grace=5");
	BAD(G, "pool import p1 grace=5");
	BAD(G, "pool delete");
	BAD(G, "pool import p1 x");
	BAD(G, "pool delete .p");
	BAD(G, "pool frob p1");
	BAD(G, "pool");
}

/* ---- per volume ---- */

static void test_backup(void **state)
{
	(void)state;
	OK(V, "backup", CMD_BACKUP);
	assert_int_equal(C.media, MEDIA_BOTH); /* default media */
	assert_false(C.differential);
	assert_int_equal(C.btype, BTYPE_UNSET);
	OK(V, "backup -T -m DISK", CMD_BACKUP);
	assert_true(C.differential);
	assert_int_equal(C.media, MEDIA_DISK);
	OK(V, "backup -T", CMD_BACKUP);
	assert_true(C.differential);
	assert_int_equal(C.media, MEDIA_BOTH);
	OK(V, "backup -m TAPE -b DAY", CMD_BACKUP);
	assert_false(C.differential);
	assert_int_equal(C.media, MEDIA_TAPE);
	assert_int_equal(C.btype, BTYPE_DAY);
	OK(V, "backup -b GEN -m BOTH -T", CMD_BACKUP);
	assert_int_equal(C.media, MEDIA_BOTH);
	assert_int_equal(C.btype, BTYPE_GEN);
	assert_true(C.differential);
	OK(V, "backup -b GEN", CMD_BACKUP);
	assert_int_equal(C.media, MEDIA_BOTH);

	BAD(V, "backup -T -m TAPE");
	BAD(V, "backup -m TAPE -T");
	BAD(V, "backup -m DISK -b GEN"); /* -b only names tape histories */
	BAD(V, "backup -m disk");
	BAD(V, "backup -m CLOUD");
	BAD(V, "backup -m");
	BAD(V, "backup -b WEEK");
	BAD(V, "backup -b");
	BAD(V, "backup -T -T");
	BAD(V, "backup -m DISK -m TAPE");
	BAD(V, "backup -b GEN -b DAY");
	BAD(V, "backup -g 1");
	BAD(V, "backup -z");
	BAD(V, "backup -r /tmp/x");
	BAD(V, "backup -t");
	BAD(V, "backup T");
	BAD(V, "backup --T");
	BAD(V, "backup -Tm DISK");
}

static void test_restore(void **state)
{
	(void)state;
	OK(V, "restore", CMD_RESTORE);
	assert_int_equal(C.sel, SEL_LATEST);
	assert_int_equal(C.media, MEDIA_UNSET);
	assert_false(C.has_path);
	OK(V, "restore -g 2", CMD_RESTORE);
	assert_int_equal(C.sel, SEL_GEN);
	assert_int_equal(C.sel_value, 2);
	OK(V, "restore -v 7 -m TAPE", CMD_RESTORE);
	assert_int_equal(C.sel, SEL_VERSION);
	assert_int_equal(C.sel_value, 7);
	assert_int_equal(C.media, MEDIA_TAPE);
	OK(V, "restore -m DISK -r /tmp/out.img", CMD_RESTORE);
	assert_int_equal(C.media, MEDIA_DISK);
	assert_true(C.has_path);
	assert_string_equal(C.path, "/tmp/out.img");
	OK(V, "restore -t 2026-11-25T12:00:00Z", CMD_RESTORE);
	assert_int_equal(C.sel, SEL_DATE);
	assert_int_equal(C.sel_date, 1795608000);
	OK(V, "restore -t 2026/11/25_12:00", CMD_RESTORE);
	assert_int_equal(C.sel_date, 1795608000);
	OK(V, "restore -g 4294967295", CMD_RESTORE);
	assert_int_equal(C.sel_value, 4294967295ULL);

	BAD(V, "restore -g 0");
	BAD(V, "restore -v 0");
	BAD(V, "restore -g x");
	BAD(V, "restore -g -1");
	BAD(V, "restore -g 4294967296");
	BAD(V, "restore -g");
	BAD(V, "restore -g 1 -v 2");	/* contradictory selections */
	BAD(V, "restore -v 2 -g 1");
	BAD(V, "restore -g 1 -t 2026-01-01");
	BAD(V, "restore -t 2026-01-01 -v 3");
	BAD(V, "restore -g 1 -g 2");
	BAD(V, "restore -t yesterday");
	BAD(V, "restore -m BOTH");
	BAD(V, "restore -m TAPE -m DISK");
	BAD(V, "restore -r relative/file");
	BAD(V, "restore -r /a -r /b");
	BAD(V, "restore -r");
	BAD(V, "restore -z");
	BAD(V, "restore -T");
	BAD(V, "restore -b GEN");
	BAD(V, "restore 3");

	OK(V, "restore -i", CMD_RESTORE);
	assert_true(C.instant);
	OK(V, "restore -v 3 -m TAPE -i", CMD_RESTORE);
	assert_true(C.instant);
	assert_int_equal(C.sel_value, 3);
	OK(V, "restore -g 1", CMD_RESTORE);
	assert_false(C.instant); /* not left over from the line before */
	BAD(V, "restore -i -r /tmp/x"); /* a live restore is of the volume itself */
	BAD(V, "restore -r /tmp/x -i");
	BAD(V, "restore -i -i");
	BAD(V, "backup -i");
	BAD(V, "histdel -g 1 -i");
}

static void test_histdel(void **state)
{
	(void)state;
	OK(V, "histdel -g 1", CMD_HISTDEL);
	assert_int_equal(C.sel, SEL_GEN);
	assert_int_equal(C.sel_value, 1);
	assert_int_equal(C.media, MEDIA_UNSET);
	OK(V, "histdel -v 3 -m TAPE", CMD_HISTDEL);
	assert_int_equal(C.sel, SEL_VERSION);
	assert_int_equal(C.sel_value, 3);
	assert_int_equal(C.media, MEDIA_TAPE);
	OK(V, "histdel -z", CMD_HISTDEL);
	assert_int_equal(C.sel, SEL_ALL);
	OK(V, "histdel -m DISK -z", CMD_HISTDEL);
	assert_int_equal(C.media, MEDIA_DISK);

	BAD(V, "histdel");
	BAD(V, "histdel -m DISK");
	BAD(V, "histdel -z -g 1");
	BAD(V, "histdel -g 1 -v 1");
	BAD(V, "histdel -z -z");
	BAD(V, "histdel -t 2026-01-01"); /* -t is for restore only */
	BAD(V, "histdel -g 0");
	BAD(V, "histdel -m BOTH -z");
	BAD(V, "histdel -r /x -z");
	BAD(V, "histdel -T -z");
}

static void test_canceltrk(void **state)
{
	(void)state;
	OK(V, "canceltrk -bd db.bv1", CMD_CANCELTRK);
	assert_string_equal(C.bd, "db.bv1");
	assert_false(C.all);
	OK(V, "canceltrk -all", CMD_CANCELTRK);
	assert_true(C.all);
	assert_string_equal(C.bd, "");

	BAD(V, "canceltrk");
	BAD(V, "canceltrk -bd db.bv1 -all");
	BAD(V, "canceltrk -all -bd db.bv1");
	BAD(V, "canceltrk -bd");
	BAD(V, "canceltrk -bd .bv1");
	BAD(V, "canceltrk -bd db/bv1");
	BAD(V, "canceltrk -all -all");
	BAD(V, "canceltrk -bd a -bd b");
	BAD(V, "canceltrk -g 1 -all");
	BAD(V, "canceltrk db.bv1");
}

static void test_tphistcopy_cancel_verify(void **state)
{
	(void)state;
	OK(V, "tphistcopy", CMD_TPHISTCOPY);
	assert_int_equal(C.sel, SEL_LATEST);
	OK(V, "tphistcopy -g 2 -b DAY", CMD_TPHISTCOPY);
	assert_int_equal(C.sel, SEL_GEN);
	assert_int_equal(C.sel_value, 2);
	assert_int_equal(C.btype, BTYPE_DAY);
	OK(V, "tphistcopy -v 9", CMD_TPHISTCOPY);
	assert_int_equal(C.sel, SEL_VERSION);
	BAD(V, "tphistcopy -m DISK");
	BAD(V, "tphistcopy -g 1 -v 1");
	BAD(V, "tphistcopy -z");
	BAD(V, "tphistcopy -T");

	OK(V, "cancel", CMD_CANCEL);
	BAD(V, "cancel -g 1");
	BAD(V, "cancel now");

	OK(V, "verify", CMD_VERIFY);
	assert_int_equal(C.sel, SEL_LATEST);
	OK(V, "verify -v 3 -m TAPE", CMD_VERIFY);
	assert_int_equal(C.sel_value, 3);
	assert_int_equal(C.media, MEDIA_TAPE);
	OK(V, "verify -g 1 -m DISK", CMD_VERIFY);
	assert_int_equal(C.sel, SEL_GEN);
	BAD(V, "verify -m BOTH");
	BAD(V, "verify -r /x");
	BAD(V, "verify -z");
	BAD(V, "verify -g 1 -v 2");
}

static void test_scopes_and_unknown(void **state)
{
	(void)state;
	/* each language only in its own ctl */
	BAD(G, "backup");
	BAD(G, "restore");
	BAD(G, "cancel");
	BAD(V, "volume create db 1G");
	BAD(V, "bv add db");
	BAD(V, "pool gc p");
	BAD(G, "snapshot");
	BAD(V, "snapshot");
	BAD(V, "BACKUP");
	BAD(G, "Volume create db 1G");
	BAD(V, "-T");
}

/* ---- the line itself ---- */

static void test_line_rules(void **state)
{
	char big[CMD_MAX_LINE + 2];
	char err[256];
	struct cmd c;

	(void)state;
	/* trailing newline (and CRLF) accepted, exactly one */
	OK(V, "backup -T -m DISK\n", CMD_BACKUP);
	assert_true(C.differential);
	OK(V, "backup\r\n", CMD_BACKUP);
	OK(G, "volume delete db\n", CMD_VOLUME_DELETE);
	assert_string_equal(C.name, "db"); /* the newline is not part of the name */
	OK(V, "  cancel  ", CMD_CANCEL);
	OK(V, "\tcancel\t", CMD_CANCEL);
	BAD(V, "backup\n\n");
	BAD(V, "backup\nbackup");
	BAD(V, "backup\nbackup\n");
	BAD(V, "backup\rbackup");
	BAD(V, "\n");
	BAD(V, "");
	BAD(V, "   ");
	BAD(G, "\t \t");

	/* control characters */
	BAD(V, "backup\x01");
	BAD(V, "backup -m \x1b[0mDISK");
	BAD(V, "backup\v-T");
	BAD(V, "backup\f");
	BAD(G, "volume create db\x7f 1G"); /* DEL: not a name character */

	/* NUL byte inside the length */
	memset(&c, 0xa5, sizeof(c));
	err[0] = 0;
	assert_int_equal(cmd_parse(CMD_VOLUME, "backup\0-T", 9, &c, err, sizeof(err)), -EINVAL);
	assert_true(err[0]);
	assert_int_equal(c.kind, CMD_NONE);
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(cmd_parse(CMD_VOLUME, "cancel\0", 7, &c, err, sizeof(err)), -EINVAL);
	assert_int_equal(c.kind, CMD_NONE);

	/* the buffer need not be NUL-terminated: only len bytes count */
	memset(&c, 0xa5, sizeof(c));
	err[0] = 'x';
	assert_int_equal(cmd_parse(CMD_VOLUME, "backup -T -m TAPE", 9, &c, err, sizeof(err)), 0);
	assert_int_equal(c.kind, CMD_BACKUP);
	assert_true(c.differential);
	assert_int_equal(c.media, MEDIA_BOTH);
	assert_int_equal(err[0], 0);

	/* exactly 4096 bytes is allowed, 4097 is E2BIG */
	memset(big, ' ', sizeof(big));
	memcpy(big, "cancel", 6);
	memset(&c, 0xa5, sizeof(c));
	assert_int_equal(cmd_parse(CMD_VOLUME, big, CMD_MAX_LINE, &c, err, sizeof(err)), 0);
	assert_int_equal(c.kind, CMD_CANCEL);
	memset(&c, 0xa5, sizeof(c));
	err[0] = 0;
	assert_int_equal(cmd_parse(CMD_VOLUME, big, CMD_MAX_LINE + 1, &c, err, sizeof(err)),
			 -E2BIG);
	assert_true(err[0]);
	assert_int_equal(c.kind, CMD_NONE);
	memset(big, 'a', sizeof(big));
	assert_int_equal(cmd_parse(CMD_GLOBAL, big, CMD_MAX_LINE + 2, &c, err, sizeof(err)),
			 -E2BIG);
	assert_int_equal(c.kind, CMD_NONE);

	/* too many words */
	char many[1024] = "cancel";
	for (int i = 0; i < 64; i++)
		strcat(many, " x");
	BAD(V, many);

	/* a small err buffer is filled, truncated and terminated */
	char small[8];
	memset(small, 'Q', sizeof(small));
	assert_int_equal(cmd_parse(CMD_VOLUME, "frobnicate", 10, &c, small, sizeof(small)),
			 -EINVAL);
	assert_true(strlen(small) > 0 && strlen(small) < sizeof(small));
}

/* a refused line leaves no trace of the previous successful parse */
static void test_reset_between_calls(void **state)
{
	struct cmd c;
	char err[128];

	(void)state;
	assert_int_equal(cmd_parse(CMD_VOLUME, "restore -r /x/y", 15, &c, err, sizeof(err)), 0);
	assert_true(c.has_path);
	assert_int_equal(cmd_parse(CMD_VOLUME, "restore -g 1 -v 1", 17, &c, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(c.kind, CMD_NONE);
	assert_int_equal(cmd_parse(CMD_VOLUME, "restore", 7, &c, err, sizeof(err)), 0);
	assert_false(c.has_path);
	assert_int_equal(c.sel, SEL_LATEST);
	assert_int_equal(err[0], 0);
}

static void test_cmd_name(void **state)
{
	static const struct {
		enum cmd_kind k;
		const char *name;
	} names[] = {
		{ CMD_VOLUME_CREATE, "volume create" }, { CMD_VOLUME_DELETE, "volume delete" },
		{ CMD_VOLUME_CLONE, "volume clone" },
		{ CMD_BV_ADD, "bv add" },		{ CMD_POLICY, "policy" },
		{ CMD_TAPEPOLICY, "tapepolicy" },	{ CMD_POOL_CREATE, "pool create" },
		{ CMD_POOL_DELETE, "pool delete" },	{ CMD_POOL_IMPORT, "pool import" },
		{ CMD_POOL_GC, "pool gc" },		{ CMD_BACKUP, "backup" },
		{ CMD_RESTORE, "restore" },		{ CMD_HISTDEL, "histdel" },
		{ CMD_CANCELTRK, "canceltrk" },		{ CMD_TPHISTCOPY, "tphistcopy" },
		{ CMD_CANCEL, "cancel" },		{ CMD_VERIFY, "verify" },
		{ CMD_NONE, "?" },
	};

	(void)state;
	for (size_t i = 0; i < ACM_ARRAY_SIZE(names); i++)
		assert_string_equal(cmd_name(names[i].k), names[i].name);
}

/* the geometry rules, as pool import applies them to a manifest's claims */
static void test_volume_geometry(void **state)
{
	char err[256];
	(void)state;
	const uint64_t K = 1024, T = K * K * K * K;
	assert_int_equal(cmd_volume_geometry(16 * T, 0, err, sizeof(err)), 0);	 /* 2^28 x 64K */
	assert_int_equal(cmd_volume_geometry(16 * T + 4 * K, 0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "give grain=128K"));
	assert_int_equal(cmd_volume_geometry(1 * T, 4 * K, err, sizeof(err)), 0); /* 2^28 x 4K */
	assert_int_equal(cmd_volume_geometry(1 * T + 4 * K, 4 * K, err, sizeof(err)), -EINVAL);
	assert_int_equal(cmd_volume_geometry(64 * T, 256 * K, err, sizeof(err)), 0);
	assert_int_equal(cmd_volume_geometry(64 * T + 256 * K, 256 * K, err, sizeof(err)), -EINVAL);
	assert_int_equal(cmd_volume_geometry(1 << 20, 96 * K, err, sizeof(err)), -EINVAL);
	assert_int_equal(cmd_volume_geometry(1 << 20, 128u << 20, err, sizeof(err)), -EINVAL);
	assert_int_equal(cmd_volume_geometry(1 << 20, 2 * K, err, sizeof(err)), -EINVAL);
	assert_int_equal(cmd_volume_geometry(0, 0, err, sizeof(err)), -EINVAL);
	assert_int_equal(cmd_volume_geometry(5000, 0, err, sizeof(err)), -EINVAL);
}

/* ctl writes arrive on several FUSE threads at once: cmd_parse must keep no
 * state between calls (strtok's position is one process-wide static, so two
 * threads tokenizing together would take each other's words). Each thread
 * parses its own lines, with long words and runs of separators to widen the
 * window, and checks every field of every result; cmocka's asserts are not
 * thread-safe, so a thread counts mismatches and keeps the first. */
#define MT_THREADS 8
#define MT_ITERS 20000

struct mt_arg {
	int id;
	long bad;
	char first[512];
};

static void mt_fail(struct mt_arg *a, const char *fmt, ...) ACM_PRINTF(2, 3);
static void mt_fail(struct mt_arg *a, const char *fmt, ...)
{
	va_list ap;

	if (a->bad++)
		return;
	va_start(ap, fmt);
	vsnprintf(a->first, sizeof(a->first), fmt, ap);
	va_end(ap);
}

static void *mt_parse(void *p)
{
	struct mt_arg *a = p;
	static const char *sep[] = { " ", "\t", "   ", " \t \t ", "        " };
	char line[CMD_MAX_LINE], name[32], path[1200], err[256];
	struct cmd *c = malloc(sizeof(*c));

	if (!c) {
		mt_fail(a, "no memory");
		return NULL;
	}
	for (int i = 0; i < MT_ITERS; i++) {
		const char *s = sep[(i + a->id) % ACM_ARRAY_SIZE(sep)];
		unsigned size = 1 + (unsigned)((i * 7 + a->id) % 1000), save = 1 + (unsigned)(i % 64);
		unsigned grain = 4u << ((i + a->id) % 12); /* 4K..8M */
		int n, plen, rc;

		snprintf(name, sizeof(name), "t%d_v%d", a->id, i);
		/* a long path, different per thread and iteration */
		plen = snprintf(path, sizeof(path), "/thread%d/iter%d/", a->id, i);
		memset(path + plen, 'a' + a->id, 1000);
		snprintf(path + plen + 1000, sizeof(path) - (size_t)plen - 1000, "/%d.raw", i);
		if (i % 4 == 3) {
			/* a volume command: fewer words, different kind */
			n = snprintf(line, sizeof(line), "%shistdel%s-v%s%d%s", s, s, s, i + 1, s);
			rc = cmd_parse(CMD_VOLUME, line, (size_t)n, c, err, sizeof(err));
			if (rc || c->kind != CMD_HISTDEL || c->sel != SEL_VERSION || c->sel_value != (uint64_t)i + 1)
				mt_fail(a, "thread %d iter %d: '%s' gave rc %d kind %d sel %d version %llu (%s)",
					a->id, i, line, rc, c->kind, c->sel, (unsigned long long)c->sel_value,
					err);
			continue;
		}
		n = snprintf(line, sizeof(line), "volume%screate%s%s%s%uM%sgrain=%uK%ssave=%u%sfrom=%s",
			     s, s, name, s, size, s, grain, s, save, s, path);
		rc = cmd_parse(CMD_GLOBAL, line, (size_t)n, c, err, sizeof(err));
		if (rc || c->kind != CMD_VOLUME_CREATE || strcmp(c->name, name) ||
		    c->size_bytes != (uint64_t)size * ACM_MiB ||
		    c->grain_bytes != (uint64_t)grain * ACM_KiB || c->save != save || !c->has_path ||
		    strcmp(c->path, path))
			mt_fail(a, "thread %d iter %d: rc %d (%s) kind %d name '%.40s' size %llu grain %llu save %u path '%.60s'",
				a->id, i, rc, err, c->kind, c->name, (unsigned long long)c->size_bytes,
				(unsigned long long)c->grain_bytes, c->save, c->path);
	}
	free(c);
	return NULL;
}

static void test_parse_concurrent(void **state)
{
	pthread_t th[MT_THREADS];
	struct mt_arg args[MT_THREADS];
	long bad = 0;

	(void)state;
	for (int t = 0; t < MT_THREADS; t++) {
		args[t] = (struct mt_arg){ .id = t };
		assert_int_equal(pthread_create(&th[t], NULL, mt_parse, &args[t]), 0);
	}
	for (int t = 0; t < MT_THREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
	for (int t = 0; t < MT_THREADS; t++) {
		if (args[t].bad)
			print_error("%ld wrong parses, first: %s\n", args[t].bad, args[t].first);
		bad += args[t].bad;
	}
	assert_int_equal(bad, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_volume_geometry),
		cmocka_unit_test(test_volume_create),
		cmocka_unit_test(test_volume_delete),
		cmocka_unit_test(test_volume_clone),
		cmocka_unit_test(test_bv_add),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_tapepolicy),
		cmocka_unit_test(test_pool_create),
		cmocka_unit_test(test_pool_other),
		cmocka_unit_test(test_backup),
		cmocka_unit_test(test_restore),
		cmocka_unit_test(test_histdel),
		cmocka_unit_test(test_canceltrk),
		cmocka_unit_test(test_tphistcopy_cancel_verify),
		cmocka_unit_test(test_scopes_and_unknown),
		cmocka_unit_test(test_line_rules),
		cmocka_unit_test(test_reset_between_calls),
		cmocka_unit_test(test_cmd_name),
		cmocka_unit_test(test_parse_concurrent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
