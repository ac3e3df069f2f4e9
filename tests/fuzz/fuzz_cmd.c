/*
 * fuzz_cmd.c — libFuzzer target for the ctl parser, cmd_parse() (core/cmd.h).
 *
 * The input is one write(2) to a ctl file, parsed in both scopes (global and
 * per volume), with a roomy and a tiny error buffer. Oracle:
 *  - success: kind is a command of that scope (cmd_name() knows it), every
 *    name it carries passes util_name_valid(), strings are terminated,
 *    numbers are in the documented ranges, contradictions were refused;
 *  - failure: -EINVAL or -E2BIG, kind CMD_NONE, a non-empty reason;
 *  - input with a NUL or over CMD_MAX_LINE is never accepted;
 *  - the result does not depend on the size of the error buffer.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "cmd.h"
#include "fuzz_common.h"
#include "util.h"

/* the pool options tape/tier.h understands (core/cmd.c must accept no other) */
static const char *const pool_keys[] = { "endpoint", "region",	 "path_style", "credentials",
					  "ca",	      "pack_mb", "threads",    "cache_mb",
					  "readahead_mb", "retries", "retry_s", "timeout_s",
					  "lock_stale", "lock_wait", "multipart_mb",
					  "key",	"encrypt", "format",	 "compress",
					  "kdf_log2n" };

static bool terminated(const char *s, size_t cap)
{
	return memchr(s, 0, cap) != NULL;
}

static void check_pool_opts(const char *opts)
{
	char copy[sizeof(((struct cmd *)0)->opts)];
	snprintf(copy, sizeof(copy), "%s", opts);
	for (char *save = NULL, *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(w, '=');
		CHECK(eq && eq != w, "pool option without key=value: '%s'", w);
		bool known = false;
		for (size_t k = 0; k < sizeof(pool_keys) / sizeof(pool_keys[0]); k++)
			if ((size_t)(eq - w) == strlen(pool_keys[k]) &&
			    !strncmp(w, pool_keys[k], (size_t)(eq - w)))
				known = true;
		CHECK(known, "unknown pool option accepted: '%s'", w);
		if (!strncmp(w, "key=", 4) || !strncmp(w, "credentials=", 12))
			CHECK(eq[1] == '/', "relative key/credentials file accepted: '%s'", w);
	}
}

static void check_ok(enum cmd_scope scope, const struct cmd *c, const uint8_t *data, size_t size)
{
	CHECK(c->kind != CMD_NONE, "success with CMD_NONE");
	CHECK(strcmp(cmd_name(c->kind), "?") != 0, "unknown kind %d", (int)c->kind);
	CHECK(size <= CMD_MAX_LINE, "accepted %zu bytes", size);
	CHECK(!memchr(data, 0, size), "accepted a NUL byte");
	CHECK(terminated(c->name, sizeof(c->name)) && terminated(c->path, sizeof(c->path)) &&
		      terminated(c->pool, sizeof(c->pool)) && terminated(c->url, sizeof(c->url)) &&
		      terminated(c->opts, sizeof(c->opts)) && terminated(c->bd, sizeof(c->bd)),
	      "unterminated string field");
	if (c->has_path)
		CHECK(c->path[0] == '/', "relative path accepted: '%s'", c->path);

	bool global = c->kind >= CMD_VOLUME_CREATE && c->kind <= CMD_POOL_PASSWD;
	CHECK(global == (scope == CMD_GLOBAL), "kind %s in the wrong scope", cmd_name(c->kind));
	if (global) {
		CHECK(util_name_valid(c->name), "invalid name accepted: '%s'", c->name);
		CHECK(c->kind == CMD_VOLUME_CREATE || c->kind == CMD_POOL_PASSWD || !c->has_path,
		      "path on %s",
		      cmd_name(c->kind));
	} else {
		CHECK(c->name[0] == 0, "volume command carries a name");
		CHECK(c->kind == CMD_RESTORE || !c->has_path, "path on %s", cmd_name(c->kind));
	}
	switch (c->kind) {
	case CMD_VOLUME_CREATE:
		CHECK(c->size_bytes && c->size_bytes % 4096 == 0, "size %llu",
		      (unsigned long long)c->size_bytes);
		CHECK(c->grain_bytes == 0 ||
			      (c->grain_bytes >= 4096 && c->grain_bytes <= 16 * ACM_MiB &&
			       !(c->grain_bytes & (c->grain_bytes - 1))),
		      "grain %llu", (unsigned long long)c->grain_bytes);
		CHECK(!c->has_save || (c->save >= 1 && c->save <= 64), "save %u", c->save);
		break;
	case CMD_BV_ADD:
		CHECK(c->count >= 1 && c->count <= 64, "count %u", c->count);
		break;
	case CMD_POLICY:
		CHECK(c->has_save || c->has_interval, "empty policy");
		CHECK(!c->has_save || (c->save >= 1 && c->save <= 64), "save %u", c->save);
		CHECK(!c->has_interval || (c->interval_days >= 1 && c->interval_days <= 366),
		      "interval %u", c->interval_days);
		break;
	case CMD_TAPEPOLICY:
		if (c->has_pool)
			CHECK(util_name_valid(c->pool), "invalid pool name: '%s'", c->pool);
		break;
	case CMD_POOL_CREATE:
		CHECK(!strncmp(c->url, "file:///", 8) || !strncmp(c->url, "s3://", 5), "url '%s'",
		      c->url);
		CHECK(!strchr(c->url, '@'), "credentials in url '%s'", c->url);
		check_pool_opts(c->opts);
		break;
	case CMD_BACKUP:
		CHECK(c->media != MEDIA_UNSET, "backup without media");
		CHECK(!(c->differential && c->media == MEDIA_TAPE), "-T with -m TAPE accepted");
		CHECK(!(c->btype != BTYPE_UNSET && c->media == MEDIA_DISK), "-b with -m DISK");
		break;
	case CMD_HISTDEL:
		CHECK(c->sel == SEL_GEN || c->sel == SEL_VERSION || c->sel == SEL_ALL,
		      "histdel without a selection");
		break;
	case CMD_CANCELTRK:
		CHECK(c->all != (c->bd[0] != 0), "canceltrk needs exactly one of -bd/-all");
		if (c->bd[0])
			CHECK(util_name_valid(c->bd), "invalid bv name '%s'", c->bd);
		break;
	default:
		break;
	}
	if (c->sel == SEL_GEN || c->sel == SEL_VERSION)
		CHECK(c->sel_value >= 1 && c->sel_value <= UINT32_MAX, "selector %llu",
		      (unsigned long long)c->sel_value);
	if (c->media == MEDIA_BOTH)
		CHECK(c->kind == CMD_BACKUP, "BOTH on %s", cmd_name(c->kind));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cmd c, c2;
	char err[512], small[8];

	for (int s = 0; s < 2; s++) {
		enum cmd_scope scope = s ? CMD_VOLUME : CMD_GLOBAL;
		memset(err, 'x', sizeof(err));
		int rc = cmd_parse(scope, (const char *)data, size, &c, err, sizeof(err));
		CHECK(terminated(err, sizeof(err)), "error buffer not terminated");
		if (rc == 0) {
			check_ok(scope, &c, data, size);
		} else {
			CHECK(rc == -EINVAL || rc == -E2BIG, "rc %d", rc);
			CHECK(err[0] != 0, "failure (%d) with an empty reason", rc);
			CHECK(c.kind == CMD_NONE, "failure leaves kind %d", (int)c.kind);
			if (size > CMD_MAX_LINE)
				CHECK(rc == -E2BIG, "over-long input gives %d", rc);
		}
		/* same verdict with a tiny error buffer; no overflow of it */
		memset(small, 'y', sizeof(small));
		int rc2 = cmd_parse(scope, (const char *)data, size, &c2, small, sizeof(small));
		CHECK(rc2 == rc, "rc depends on errlen: %d vs %d", rc, rc2);
		CHECK(terminated(small, sizeof(small)), "small error buffer not terminated");
		CHECK(rc == 0 || small[0] != 0, "empty reason in a small buffer");
		if (rc == 0)
			CHECK(!memcmp(&c, &c2, sizeof(c)), "result depends on errlen");
	}
	return 0;
}
