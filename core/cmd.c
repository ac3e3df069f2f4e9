/*
 * cmd.c — parser of the control-file language; see cmd.h.
 *
 * Shape: tokenize (max 64 words), dispatch on the first word(s), then one
 * small parser per command. Every option may appear once; mutually exclusive
 * options are rejected with a reason naming both.
 */
#include "cmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_WORDS 64

struct toks {
	char store[CMD_MAX_LINE + 1];
	char *w[MAX_WORDS];
	int n;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) ACM_PRINTF(3, 4);
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

const char *cmd_name(enum cmd_kind kind)
{
	switch (kind) {
	case CMD_VOLUME_CREATE: return "volume create";
	case CMD_VOLUME_DELETE: return "volume delete";
	case CMD_VOLUME_CLONE: return "volume clone";
	case CMD_BV_ADD: return "bv add";
	case CMD_POLICY: return "policy";
	case CMD_TAPEPOLICY: return "tapepolicy";
	case CMD_POOL_CREATE: return "pool create";
	case CMD_POOL_DELETE: return "pool delete";
	case CMD_POOL_IMPORT: return "pool import";
	case CMD_POOL_GC: return "pool gc";
	case CMD_POOL_HOSTS: return "pool hosts";
	case CMD_POOL_PASSWD: return "pool passwd";
	case CMD_BACKUP: return "backup";
	case CMD_RESTORE: return "restore";
	case CMD_HISTDEL: return "histdel";
	case CMD_CANCELTRK: return "canceltrk";
	case CMD_TPHISTCOPY: return "tphistcopy";
	case CMD_CANCEL: return "cancel";
	case CMD_VERIFY: return "verify";
	case CMD_NONE: break;
	}
	return "?";
}

static int tokenize(const char *buf, size_t len, struct toks *t, char *err, size_t errlen)
{
	char *p, *save = NULL;

	if (len > CMD_MAX_LINE) {
		snprintf(err, errlen, "command longer than %d bytes", CMD_MAX_LINE);
		return -E2BIG;
	}
	if (memchr(buf, 0, len))
		return fail(err, errlen, "command contains a NUL byte");
	memcpy(t->store, buf, len);
	t->store[len] = 0;
	/* one line: a single trailing newline (and CR) is allowed */
	if (len && t->store[len - 1] == '\n')
		t->store[--len] = 0;
	if (len && t->store[len - 1] == '\r')
		t->store[--len] = 0;
	if (strpbrk(t->store, "\r\n"))
		return fail(err, errlen, "one command per write");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)t->store[i];
		if (c < 0x20 && c != '\t')
			return fail(err, errlen, "control character in command");
	}
	t->n = 0;
	/* strtok_r: ctl writes are parsed on several FUSE threads at once, and
	 * strtok's position is one process-wide static */
	for (p = strtok_r(t->store, " \t", &save); p; p = strtok_r(NULL, " \t", &save)) {
		if (t->n == MAX_WORDS)
			return fail(err, errlen, "too many words");
		t->w[t->n++] = p;
	}
	if (t->n == 0)
		return fail(err, errlen, "empty command");
	return 0;
}

static int copy_name(char *dst, const char *src, const char *what, char *err, size_t errlen)
{
	if (!util_name_valid(src))
		return fail(err, errlen, "invalid %s name '%.80s' (want [A-Za-z0-9][A-Za-z0-9._-]{0,63})",
			    what, src);
	snprintf(dst, ACM_NAME_MAX + 1, "%s", src);
	return 0;
}

static int parse_num(const char *s, uint64_t max, uint64_t *out, const char *what, char *err,
		     size_t errlen)
{
	if (util_parse_u64(s, max, out))
		return fail(err, errlen, "invalid %s '%.40s' (want 0..%llu)", what, s,
			    (unsigned long long)max);
	return 0;
}

/* key=value option; returns pointer to value if word starts with key= */
static const char *kv(const char *word, const char *key)
{
	size_t n = strlen(key);

	if (!strncmp(word, key, n) && word[n] == '=')
		return word + n + 1;
	return NULL;
}

static int parse_path(struct cmd *c, const char *v, char *err, size_t errlen)
{
	if (c->has_path)
		return fail(err, errlen, "path given twice");
	if (v[0] != '/')
		return fail(err, errlen, "path must be absolute: '%.80s'", v);
	if (strlen(v) >= sizeof(c->path))
		return fail(err, errlen, "path too long");
	snprintf(c->path, sizeof(c->path), "%s", v);
	c->has_path = true;
	return 0;
}

/* save=N: 1..64 disk generations, once */
static int parse_save(struct cmd *c, const char *val, char *err, size_t errlen)
{
	uint64_t v;
	int rc;

	if (c->has_save)
		return fail(err, errlen, "save= given twice");
	rc = parse_num(val, 64, &v, "save number", err, errlen);
	if (rc)
		return rc;
	if (v == 0)
		return fail(err, errlen, "save number must be at least 1");
	c->save = (uint32_t)v;
	c->has_save = true;
	return 0;
}

/* Volume geometry limits (README, "Limits"). The largest volume is the
 * largest the tape format describes (docs/tape-format.md). The number of
 * grains bounds the per-grain state a volume keeps in RAM and on disk (era
 * map, copy-job and upload bitmaps; today 8 bytes of RAM per grain for the
 * era map): 2^28 grains is 16 TiB at the default grain, 1 TiB at the
 * smallest. Pool import (core/tapejob.c) applies the same rules to a
 * manifest's geometry (cmd_volume_geometry). */
#define VOL_MAX_BYTES (64 * 1024 * ACM_GiB)
#define VOL_MAX_GRAINS (1ULL << 28)
#define GRAIN_MIN (4 * ACM_KiB)
#define GRAIN_MAX (16 * ACM_MiB)
#define GRAIN_DEFAULT (64 * ACM_KiB) /* what engine_volume_create gives grain=0 */

static uint64_t grains_of(uint64_t size, uint64_t grain)
{
	return size / grain + (size % grain != 0);
}

static int check_geometry(const struct cmd *c, char *err, size_t errlen)
{
	uint64_t grain = c->grain_bytes ? c->grain_bytes : GRAIN_DEFAULT, need = grain;

	if (grains_of(c->size_bytes, grain) <= VOL_MAX_GRAINS)
		return 0;
	while (grains_of(c->size_bytes, need) > VOL_MAX_GRAINS)
		need <<= 1; /* at most 256 KiB: 64 TiB / 2^28 */
	return fail(err, errlen,
		    "volume too large for grain %lluK%s: %llu grains, the most is %llu "
		    "(1 TiB at grain 4K, 16 TiB at 64K, 64 TiB at 256K): give grain=%lluK or larger",
		    (unsigned long long)(grain / ACM_KiB), c->grain_bytes ? "" : " (the default)",
		    (unsigned long long)grains_of(c->size_bytes, grain),
		    (unsigned long long)VOL_MAX_GRAINS, (unsigned long long)(need / ACM_KiB));
}

int cmd_volume_geometry(uint64_t size_bytes, uint64_t grain_bytes, char *err, size_t errlen)
{
	struct cmd c;
	uint64_t g = grain_bytes ? grain_bytes : GRAIN_DEFAULT;

	if (!size_bytes || size_bytes % (4 * ACM_KiB) || size_bytes > VOL_MAX_BYTES)
		return fail(err, errlen, "size %llu is not a multiple of 4 KiB up to 64 TiB",
			    (unsigned long long)size_bytes);
	if (g < GRAIN_MIN || g > GRAIN_MAX || (g & (g - 1)))
		return fail(err, errlen, "grain %llu is not a power of two from 4K to 16M",
			    (unsigned long long)g);
	memset(&c, 0, sizeof(c));
	c.size_bytes = size_bytes;
	c.grain_bytes = grain_bytes;
	return check_geometry(&c, err, errlen);
}

static int parse_volume_create(struct toks *t, struct cmd *c, char *err, size_t errlen)
{
	int rc;

	if (t->n < 4)
		return fail(err, errlen, "usage: volume create NAME SIZE [save=N] [grain=SIZE] [from=PATH]");
	rc = copy_name(c->name, t->w[2], "volume", err, errlen);
	if (rc)
		return rc;
	if (util_parse_size(t->w[3], &c->size_bytes))
		return fail(err, errlen, "invalid size '%.40s'", t->w[3]);
	if (c->size_bytes == 0 || c->size_bytes % (4 * ACM_KiB))
		return fail(err, errlen, "size must be a non-zero multiple of 4 KiB");
	if (c->size_bytes > VOL_MAX_BYTES)
		return fail(err, errlen, "size over 64 TiB, the largest volume: '%.40s'", t->w[3]);
	for (int i = 4; i < t->n; i++) {
		const char *val;
		if ((val = kv(t->w[i], "save"))) {
			rc = parse_save(c, val, err, errlen);
			if (rc)
				return rc;
		} else if ((val = kv(t->w[i], "grain"))) {
			if (c->grain_bytes)
				return fail(err, errlen, "grain= given twice");
			if (util_parse_size(val, &c->grain_bytes) || c->grain_bytes < GRAIN_MIN ||
			    c->grain_bytes > GRAIN_MAX ||
			    (c->grain_bytes & (c->grain_bytes - 1)))
				return fail(err, errlen,
					    "grain must be a power of two from 4K to 16M: '%.40s'", val);
		} else if ((val = kv(t->w[i], "from"))) {
			rc = parse_path(c, val, err, errlen);
			if (rc)
				return rc;
		} else {
			return fail(err, errlen, "unknown option '%.40s'", t->w[i]);
		}
	}
	return check_geometry(c, err, errlen);
}

static int parse_policy(struct toks *t, struct cmd *c, char *err, size_t errlen)
{
	int rc;
	uint64_t v;

	if (t->n < 3)
		return fail(err, errlen, "usage: policy VOL save=N [interval=DAYS]");
	rc = copy_name(c->name, t->w[1], "volume", err, errlen);
	if (rc)
		return rc;
	for (int i = 2; i < t->n; i++) {
		const char *val;
		if ((val = kv(t->w[i], "save"))) {
			rc = parse_save(c, val, err, errlen);
			if (rc)
				return rc;
		} else if ((val = kv(t->w[i], "interval"))) {
			if (c->has_interval)
				return fail(err, errlen, "interval= given twice");
			rc = parse_num(val, 366, &v, "interval", err, errlen);
			if (rc)
				return rc;
			if (v == 0)
				return fail(err, errlen, "interval must be 1..366 days");
			c->interval_days = (uint32_t)v;
			c->has_interval = true;
		} else {
			return fail(err, errlen, "unknown option '%.40s'", t->w[i]);
		}
	}
	if (!c->has_save && !c->has_interval)
		return fail(err, errlen, "policy needs save= or interval=");
	return 0;
}

static int parse_tapepolicy(struct toks *t, struct cmd *c, char *err, size_t errlen)
{
	int rc;
	uint64_t v;

	if (t->n < 3)
		return fail(err, errlen, "usage: tapepolicy VOL [gens=N] [days=D] [pool=NAME]");
	rc = copy_name(c->name, t->w[1], "volume", err, errlen);
	if (rc)
		return rc;
	for (int i = 2; i < t->n; i++) {
		const char *val;
		if ((val = kv(t->w[i], "gens"))) {
			if (c->has_gens)
				return fail(err, errlen, "gens= given twice");
			rc = parse_num(val, 10000, &v, "tape generations", err, errlen);
			if (rc)
				return rc;
			c->gens = (uint32_t)v;
			c->has_gens = true;
		} else if ((val = kv(t->w[i], "days"))) {
			if (c->has_days)
				return fail(err, errlen, "days= given twice");
			rc = parse_num(val, 36500, &v, "tape days", err, errlen);
			if (rc)
				return rc;
			c->days = (uint32_t)v;
			c->has_days = true;
		} else if ((val = kv(t->w[i], "pool"))) {
			if (c->has_pool)
				return fail(err, errlen, "pool= given twice");
			rc = copy_name(c->pool, val, "pool", err, errlen);
			if (rc)
				return rc;
			c->has_pool = true;
		} else {
			return fail(err, errlen, "unknown option '%.40s'", t->w[i]);
		}
	}
	return 0;
}

/* what tape/tier.h's pools understand; never credentials themselves */
static const char *const pool_keys[] = { "endpoint", "region",	 "path_style", "credentials",
					  "ca",	      "pack_mb", "threads",    "cache_mb",
					  "readahead_mb", "retries", "retry_s", "timeout_s",
					  "lock_stale", "lock_wait", "multipart_mb",
					  "key",	"encrypt", "format",	 "compress",
					  "kdf_log2n" };

static int parse_pool_create(struct toks *t, struct cmd *c, char *err, size_t errlen)
{
	int rc;
	size_t used = 0;

	if (t->n < 4)
		return fail(err, errlen, "usage: pool create NAME URL [key=value...]");
	rc = copy_name(c->name, t->w[2], "pool", err, errlen);
	if (rc)
		return rc;
	if (strncmp(t->w[3], "file:///", 8) && strncmp(t->w[3], "s3://", 5))
		return fail(err, errlen, "pool URL must be file:///DIR or s3://BUCKET[/PREFIX]");
	if (strlen(t->w[3]) >= sizeof(c->url))
		return fail(err, errlen, "pool URL too long");
	size_t ul = strlen(t->w[3]);
	if (strstr(t->w[3], "/../") || (ul >= 3 && !strcmp(t->w[3] + ul - 3, "/..")) ||
	    strchr(t->w[3], '@'))
		return fail(err, errlen, "pool URL must not contain '..' or credentials");
	snprintf(c->url, sizeof(c->url), "%s", t->w[3]);
	c->opts[0] = 0;
	for (int i = 4; i < t->n; i++) {
		const char *eq = strchr(t->w[i], '=');
		bool known = false;
		if (!eq || eq == t->w[i])
			return fail(err, errlen, "pool option must be key=value: '%.40s'", t->w[i]);
		for (size_t k = 0; k < ACM_ARRAY_SIZE(pool_keys); k++) {
			size_t kl = strlen(pool_keys[k]);
			if ((size_t)(eq - t->w[i]) == kl && !strncmp(t->w[i], pool_keys[k], kl))
				known = true;
		}
		if (!known)
			return fail(err, errlen,
				    "unknown pool option '%.*s' (credentials come from the "
				    "environment or credentials=FILE)",
				    (int)(eq - t->w[i] > 40 ? 40 : eq - t->w[i]), t->w[i]);
		for (int j = 4; j < i; j++)
			if (!strncmp(t->w[j], t->w[i], (size_t)(eq - t->w[i]) + 1))
				return fail(err, errlen, "pool option given twice");
		if ((!strncmp(t->w[i], "key=", 4) || !strncmp(t->w[i], "credentials=", 12)) &&
		    eq[1] != '/')
			return fail(err, errlen, "%.*s= must be an absolute path",
				    (int)(eq - t->w[i]), t->w[i]);
		size_t wl = strlen(t->w[i]);
		if (used + wl + 2 > sizeof(c->opts))
			return fail(err, errlen, "pool options too long");
		if (used)
			c->opts[used++] = ' ';
		memcpy(c->opts + used, t->w[i], wl + 1);
		used += wl;
	}
	return 0;
}

static int parse_volume_clone(struct toks *t, struct cmd *c, char *err, size_t errlen);

static int parse_global(struct toks *t, struct cmd *c, char *err, size_t errlen)
{
	const char *w0 = t->w[0], *w1 = t->n > 1 ? t->w[1] : "";
	int rc;
	uint64_t v;

	if (!strcmp(w0, "volume") && !strcmp(w1, "create")) {
		c->kind = CMD_VOLUME_CREATE;
		return parse_volume_create(t, c, err, errlen);
	}
	if (!strcmp(w0, "volume") && !strcmp(w1, "clone")) {
		c->kind = CMD_VOLUME_CLONE;
		return parse_volume_clone(t, c, err, errlen);
	}
	if (!strcmp(w0, "volume") && !strcmp(w1, "delete")) {
		c->kind = CMD_VOLUME_DELETE;
		if (t->n != 3)
			return fail(err, errlen, "usage: volume delete NAME");
		return copy_name(c->name, t->w[2], "volume", err, errlen);
	}
	if (!strcmp(w0, "bv") && !strcmp(w1, "add")) {
		c->kind = CMD_BV_ADD;
		if (t->n < 3 || t->n > 4)
			return fail(err, errlen, "usage: bv add VOL [COUNT]");
		rc = copy_name(c->name, t->w[2], "volume", err, errlen);
		if (rc)
			return rc;
		c->count = 1;
		if (t->n == 4) {
			rc = parse_num(t->w[3], 64, &v, "count", err, errlen);
			if (rc)
				return rc;
			if (v == 0)
				return fail(err, errlen, "count must be 1..64");
			c->count = (uint32_t)v;
		}
		return 0;
	}
	if (!strcmp(w0, "policy")) {
		c->kind = CMD_POLICY;
		return parse_policy(t, c, err, errlen);
	}
	if (!strcmp(w0, "tapepolicy")) {
		c->kind = CMD_TAPEPOLICY;
		return parse_tapepolicy(t, c, err, errlen);
	}
	if (!strcmp(w0, "pool") && !strcmp(w1, "create")) {
		c->kind = CMD_POOL_CREATE;
		return parse_pool_create(t, c, err, errlen);
	}
	if (!strcmp(w0, "pool") && !strcmp(w1, "passwd")) {
		c->kind = CMD_POOL_PASSWD;
		const char *k = t->n == 4 ? kv(t->w[3], "key") : NULL;
		if (!k || k[0] != '/')
			return fail(err, errlen, "usage: pool passwd NAME key=/ABSOLUTE/FILE");
		if (strlen(k) >= sizeof(c->path))
			return fail(err, errlen, "key file path too long");
		snprintf(c->path, sizeof(c->path), "%s", k);
		return copy_name(c->name, t->w[2], "pool", err, errlen);
	}
	if (!strcmp(w0, "pool") && (!strcmp(w1, "delete") || !strcmp(w1, "import") ||
				    !strcmp(w1, "gc") || !strcmp(w1, "hosts"))) {
		c->kind = !strcmp(w1, "delete")	  ? CMD_POOL_DELETE
			  : !strcmp(w1, "import") ? CMD_POOL_IMPORT
			  : !strcmp(w1, "hosts")  ? CMD_POOL_HOSTS
						  : CMD_POOL_GC;
		if (t->n == 4 && c->kind == CMD_POOL_GC && kv(t->w[3], "grace")) {
			rc = parse_num(kv(t->w[3], "grace"), 365 * 86400ULL, &c->grace_s,
				       "grace seconds", err, errlen);
			if (rc)
				return rc;
			c->has_grace = true;
		} else if (t->n == 4 && c->kind == CMD_POOL_IMPORT && kv(t->w[3], "host")) {
			const char *h = kv(t->w[3], "host");
			size_t hl = strlen(h);
			if (hl < 1 || hl >= sizeof(c->host) ||
			    strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
				      "0123456789._-") != hl)
				return fail(err, errlen, "bad host '%.64s' (a host id or name)", h);
			memcpy(c->host, h, hl + 1);
		} else if (t->n != 3) {
			return fail(err, errlen, "usage: pool %s NAME%s", w1,
				    c->kind == CMD_POOL_GC	   ? " [grace=SECONDS]"
				    : c->kind == CMD_POOL_IMPORT ? " [host=ID|NAME]"
								 : "");
		}
		return copy_name(c->name, t->w[2], "pool", err, errlen);
	}
	return fail(err, errlen, "unknown command '%.40s'", w0);
}

/* ---- per-volume commands ---- */

#define OPT_T (1u << 0)
#define OPT_M (1u << 1)
#define OPT_B (1u << 2)
#define OPT_G (1u << 3)
#define OPT_V (1u << 4)
#define OPT_Z (1u << 5)
#define OPT_R (1u << 6)
#define OPT_BD (1u << 7)
#define OPT_ALL (1u << 8)
#define OPT_DATE (1u << 9)
#define OPT_I (1u << 10)

static const struct {
	const char *flag;
	unsigned bit;
	bool arg;
} vol_opts[] = {
	{ "-T", OPT_T, false },	 { "-m", OPT_M, true },	    { "-b", OPT_B, true },
	{ "-g", OPT_G, true },	 { "-v", OPT_V, true },	    { "-z", OPT_Z, false },
	{ "-r", OPT_R, true },	 { "-bd", OPT_BD, true },   { "-all", OPT_ALL, false },
	{ "-t", OPT_DATE, true }, { "-i", OPT_I, false },
};

static int parse_opts_from(struct toks *t, int first, unsigned allowed, struct cmd *c,
			   unsigned *seen, char *err, size_t errlen)
{
	int rc;

	*seen = 0;
	for (int i = first; i < t->n; i++) {
		size_t k;
		for (k = 0; k < ACM_ARRAY_SIZE(vol_opts); k++)
			if (!strcmp(t->w[i], vol_opts[k].flag))
				break;
		if (k == ACM_ARRAY_SIZE(vol_opts) || !(allowed & vol_opts[k].bit))
			return fail(err, errlen, "unknown option '%.40s' for %s", t->w[i],
				    cmd_name(c->kind));
		if (*seen & vol_opts[k].bit)
			return fail(err, errlen, "option %s given twice", vol_opts[k].flag);
		*seen |= vol_opts[k].bit;
		const char *a = NULL;
		if (vol_opts[k].arg) {
			if (i + 1 >= t->n)
				return fail(err, errlen, "option %s needs a value", vol_opts[k].flag);
			a = t->w[++i];
		}
		switch (vol_opts[k].bit) {
		case OPT_T:
			c->differential = true;
			break;
		case OPT_M:
			if (!strcmp(a, "DISK"))
				c->media = MEDIA_DISK;
			else if (!strcmp(a, "TAPE"))
				c->media = MEDIA_TAPE;
			else if (!strcmp(a, "BOTH") && c->kind == CMD_BACKUP)
				c->media = MEDIA_BOTH;
			else
				return fail(err, errlen, "invalid media '%.20s'", a);
			break;
		case OPT_B:
			if (!strcmp(a, "GEN"))
				c->btype = BTYPE_GEN;
			else if (!strcmp(a, "DAY"))
				c->btype = BTYPE_DAY;
			else
				return fail(err, errlen, "invalid backup type '%.20s' (GEN or DAY)", a);
			break;
		case OPT_G:
		case OPT_V:
			rc = parse_num(a, UINT32_MAX, &c->sel_value,
				       vol_opts[k].bit == OPT_G ? "generation" : "version", err,
				       errlen);
			if (rc)
				return rc;
			if (c->sel_value == 0)
				return fail(err, errlen, "%s must be at least 1",
					    vol_opts[k].bit == OPT_G ? "generation" : "version");
			c->sel = vol_opts[k].bit == OPT_G ? SEL_GEN : SEL_VERSION;
			break;
		case OPT_DATE:
			if (util_parse_date(a, &c->sel_date))
				return fail(err, errlen, "invalid date '%.40s'", a);
			c->sel = SEL_DATE;
			break;
		case OPT_Z:
			c->sel = SEL_ALL;
			break;
		case OPT_R:
			rc = parse_path(c, a, err, errlen);
			if (rc)
				return rc;
			break;
		case OPT_BD:
			rc = copy_name(c->bd, a, "backup volume", err, errlen);
			if (rc)
				return rc;
			break;
		case OPT_ALL:
			c->all = true;
			break;
		case OPT_I:
			c->instant = true;
			break;
		}
	}
	unsigned sels = *seen & (OPT_G | OPT_V | OPT_Z | OPT_DATE);
	if (sels & (sels - 1))
		return fail(err, errlen, "-g, -v, -t and -z exclude each other");
	return 0;
}

static int parse_vol_opts(struct toks *t, unsigned allowed, struct cmd *c, unsigned *seen,
			  char *err, size_t errlen)
{
	return parse_opts_from(t, 1, allowed, c, seen, err, errlen);
}

/* volume clone NAME SRC [-g N|-v V] [-m DISK|TAPE]: the options are a
 * restore's history selection */
static int parse_volume_clone(struct toks *t, struct cmd *c, char *err, size_t errlen)
{
	static const char usage[] = "usage: volume clone NAME VOL [-g N|-v V] [-m DISK|TAPE]";
	unsigned seen;
	int rc;

	if (t->n < 4)
		return fail(err, errlen, "%s", usage);
	rc = copy_name(c->name, t->w[2], "volume", err, errlen);
	if (!rc)
		rc = copy_name(c->src, t->w[3], "volume", err, errlen);
	if (rc)
		return rc;
	if (!strcmp(c->name, c->src))
		return fail(err, errlen, "a clone needs a name of its own");
	return parse_opts_from(t, 4, OPT_G | OPT_V | OPT_M, c, &seen, err, errlen);
}

static int parse_volume(struct toks *t, struct cmd *c, char *err, size_t errlen)
{
	const char *w0 = t->w[0];
	unsigned seen;
	int rc;

	if (!strcmp(w0, "backup")) {
		c->kind = CMD_BACKUP;
		rc = parse_vol_opts(t, OPT_T | OPT_M | OPT_B, c, &seen, err, errlen);
		if (rc)
			return rc;
		if (c->media == MEDIA_UNSET)
			c->media = MEDIA_BOTH;
		if (c->differential && c->media == MEDIA_TAPE)
			return fail(err, errlen, "-T cannot be used with -m TAPE");
		if (c->btype != BTYPE_UNSET && c->media == MEDIA_DISK)
			return fail(err, errlen, "-b applies to tape histories; not with -m DISK");
		return 0;
	}
	if (!strcmp(w0, "restore")) {
		c->kind = CMD_RESTORE;
		rc = parse_vol_opts(t, OPT_G | OPT_V | OPT_DATE | OPT_M | OPT_R | OPT_I, c, &seen,
				    err, errlen);
		if (rc)
			return rc;
		if (c->instant && c->has_path)
			return fail(err, errlen, "-i restores onto the volume itself; not with -r");
		return 0;
	}
	if (!strcmp(w0, "histdel")) {
		c->kind = CMD_HISTDEL;
		rc = parse_vol_opts(t, OPT_G | OPT_V | OPT_Z | OPT_M, c, &seen, err, errlen);
		if (rc)
			return rc;
		if (!(seen & (OPT_G | OPT_V | OPT_Z)))
			return fail(err, errlen, "histdel needs -g N, -v V or -z");
		return 0;
	}
	if (!strcmp(w0, "canceltrk")) {
		c->kind = CMD_CANCELTRK;
		rc = parse_vol_opts(t, OPT_BD | OPT_ALL, c, &seen, err, errlen);
		if (rc)
			return rc;
		if (!!(seen & OPT_BD) == !!(seen & OPT_ALL))
			return fail(err, errlen, "canceltrk needs exactly one of -bd BV or -all");
		return 0;
	}
	if (!strcmp(w0, "tphistcopy")) {
		c->kind = CMD_TPHISTCOPY;
		return parse_vol_opts(t, OPT_G | OPT_V | OPT_B, c, &seen, err, errlen);
	}
	if (!strcmp(w0, "cancel")) {
		c->kind = CMD_CANCEL;
		return parse_vol_opts(t, 0, c, &seen, err, errlen);
	}
	if (!strcmp(w0, "verify")) {
		c->kind = CMD_VERIFY;
		return parse_vol_opts(t, OPT_G | OPT_V | OPT_M, c, &seen, err, errlen);
	}
	return fail(err, errlen, "unknown command '%.40s'", w0);
}

int cmd_parse(enum cmd_scope scope, const char *buf, size_t len, struct cmd *out, char *err,
	      size_t errlen)
{
	static _Thread_local struct toks t;
	int rc;

	memset(out, 0, sizeof(*out));
	err[0] = 0;
	rc = tokenize(buf, len, &t, err, errlen);
	if (rc)
		return rc;
	rc = scope == CMD_GLOBAL ? parse_global(&t, out, err, errlen)
				 : parse_volume(&t, out, err, errlen);
	if (rc)
		out->kind = CMD_NONE;
	return rc;
}
