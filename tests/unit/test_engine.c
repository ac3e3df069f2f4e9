/*
 * test_engine.c — the engine without FUSE: a temp store, no tape tier, every
 * command through engine_ctl() exactly as a ctl write would send it, data
 * through vol_read/vol_write, histories through himg_*, tables through
 * engine_render(). Compared against reference buffers kept by the test.
 *
 * What is checked is what a user of the mount relies on: the bytes of the
 * volume and of every history image (point in time), the reply lines and
 * errno values of docs/ctl-protocol.md, differential copies that move exactly
 * the changed grains, generation rotation, tracking surviving histdel and a
 * restart, failed commands changing nothing, and the store lock.
 *
 * Backups return after the logical copy; tests wait (≤ 10 s) for the physical
 * copy by polling the history's info for disk_status=succeeded.
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
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

struct fx {
	char dir[64];	 /* temp base */
	char store[96];	 /* dir/store */
	struct engine *e;
	struct sbuf r;	 /* last reply */
	char host[64];
	uint64_t rnd;
};

/* ---- fixture ---- */

static void eng_open(struct fx *f)
{
	struct engine_opts o;
	char err[256] = "";
	int rc;

	memset(&o, 0, sizeof(o));
	o.store = f->store;
	o.flush_ms = 50; /* the era-map flusher runs often, concurrently with the tests */
	rc = engine_open(&o, &f->e, err, sizeof(err));
	if (rc)
		fail_msg("engine_open(%s): %d %s", f->store, rc, err);
	assert_int_equal(engine_start(f->e), 0);
}

static void eng_close(struct fx *f)
{
	engine_close(f->e);
	f->e = NULL;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/acmfs-ut-eng-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->store, sizeof(f->store), "%s/store", f->dir);
	gethostname(f->host, sizeof(f->host) - 1);
	f->rnd = 0x9e3779b97f4a7c15ULL;
	sbuf_init(&f->r, 1 << 20);
	*state = f;
	eng_open(f);
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

	if (f->e)
		eng_close(f);
	sbuf_release(&f->r);
	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static uint64_t rnd(struct fx *f)
{
	f->rnd ^= f->rnd << 13;
	f->rnd ^= f->rnd >> 7;
	f->rnd ^= f->rnd << 17;
	return f->rnd;
}

static void fill_rnd(struct fx *f, unsigned char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)(rnd(f) >> 24);
}

/* ---- commands and text ---- */

static const char *reply(struct fx *f)
{
	return f->r.buf ? f->r.buf : "";
}

static int ctl(struct fx *f, struct vol *v, const char *line)
{
	sbuf_release(&f->r);
	sbuf_init(&f->r, 1 << 20);
	return engine_ctl(f->e, v, line, strlen(line), &f->r);
}

#define CTL_OK(f, v, line)                                                                 \
	do {                                                                               \
		int rc_ = ctl(f, v, line);                                                 \
		if (rc_)                                                                   \
			fail_msg("'%s' failed: %d %s", line, rc_, reply(f));               \
		if (strncmp(reply(f), "ok ", 3))                                           \
			fail_msg("'%s': reply '%s'", line, reply(f));                      \
	} while (0)

#define CTL_ERR(f, v, line, want)                                                          \
	do {                                                                               \
		int rc_ = ctl(f, v, line);                                                 \
		if (rc_ != (want))                                                         \
			fail_msg("'%s' gave %d (%s), want %d", line, rc_, reply(f), want); \
		if (strncmp(reply(f), "error: ", 7) || strlen(reply(f)) < 9 ||            \
		    strchr(reply(f), '\n') != reply(f) + strlen(reply(f)) - 1)             \
			fail_msg("'%s': bad error reply '%s'", line, reply(f));            \
	} while (0)

/* engine_render into a malloc'd string */
static char *render(struct fx *f, struct vol *v, enum render_what w, uint64_t version)
{
	struct sbuf sb;
	char *s;

	sbuf_init(&sb, 4 << 20);
	assert_int_equal(engine_render(f->e, v, w, version, &sb), 0);
	s = strdup(sb.buf ? sb.buf : "");
	sbuf_release(&sb);
	return s;
}

/* the value of key=VALUE in a reply or info text (words end at space/newline) */
static uint64_t key_u64(const char *text, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "%s=", key);
	for (p = strstr(text, pat); p; p = strstr(p + 1, pat))
		if (p == text || p[-1] == ' ' || p[-1] == '\n')
			return strtoull(p + strlen(pat), NULL, 10);
	fail_msg("no %s= in '%s'", key, text);
	return 0;
}

static void key_str(const char *text, const char *key, char *out, size_t len)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "%s=", key);
	for (p = strstr(text, pat); p; p = strstr(p + 1, pat))
		if (p == text || p[-1] == ' ' || p[-1] == '\n') {
			p += strlen(pat);
			size_t n = strcspn(p, " \n");
			snprintf(out, len, "%.*s", (int)n, p);
			return;
		}
	fail_msg("no %s= in '%s'", key, text);
}

/* collapse runs of spaces: table rows as word lists */
static void collapse(const char *in, char *out, size_t len)
{
	size_t o = 0;
	bool sp = false;

	for (; *in && o + 1 < len; in++) {
		if (*in == ' ') {
			sp = true;
			continue;
		}
		if (sp && o)
			out[o++] = ' ';
		sp = false;
		out[o++] = *in;
	}
	out[o] = 0;
}

/* line i of text (0-based), NUL-terminated copy; "" past the end */
static void line_of(const char *text, int i, char *out, size_t len)
{
	while (i-- > 0) {
		text = strchr(text, '\n');
		if (!text) {
			out[0] = 0;
			return;
		}
		text++;
	}
	size_t n = strcspn(text, "\n");
	snprintf(out, len, "%.*s", (int)n, text);
}

static int count_lines(const char *text)
{
	int n = 0;

	for (; *text; text++)
		n += *text == '\n';
	return n;
}

static void wait_disk(struct fx *f, struct vol *v, uint64_t version)
{
	for (int i = 0; i < 2000; i++) {
		char *s = render(f, v, RENDER_HIST_INFO, version);
		bool ok = strstr(s, "\ndisk_status=succeeded\n") != NULL;
		bool bad = strstr(s, "\ndisk_status=failed\n") != NULL;
		if (bad)
			fail_msg("version %llu failed: %s", (unsigned long long)version, s);
		free(s);
		if (ok)
			return;
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	fail_msg("version %llu did not finish in 10 s", (unsigned long long)version);
}

/* backup and wait; returns the version */
static uint64_t backup(struct fx *f, struct vol *v, const char *line)
{
	CTL_OK(f, v, line);
	uint64_t ver = key_u64(reply(f), "version");
	wait_disk(f, v, ver);
	return ver;
}

/* ---- data ---- */

static void vwrite(struct vol *v, unsigned char *ref, const void *buf, size_t len, uint64_t off)
{
	ssize_t n = vol_write(v, buf, len, off);

	if (n != (ssize_t)len)
		fail_msg("vol_write(%zu @ %llu) = %zd", len, (unsigned long long)off, n);
	memcpy(ref + off, buf, len);
}

static void fill_vol(struct fx *f, struct vol *v, unsigned char *ref, uint64_t size)
{
	unsigned char *buf = malloc(size);

	assert_non_null(buf);
	fill_rnd(f, buf, size);
	/* odd chunks */
	for (uint64_t off = 0; off < size;) {
		size_t n = 99991;
		if (n > size - off)
			n = (size_t)(size - off);
		vwrite(v, ref, buf + off, n, off);
		off += n;
	}
	free(buf);
}

static void first_diff(const unsigned char *a, const unsigned char *b, uint64_t len,
		       const char *what)
{
	for (uint64_t i = 0; i < len; i++)
		if (a[i] != b[i])
			fail_msg("%s differs at byte %llu (grain %llu of 64K): %02x != %02x", what,
				 (unsigned long long)i, (unsigned long long)(i / (64 * KiB)), a[i],
				 b[i]);
}

static void assert_vol(struct vol *v, const unsigned char *ref, uint64_t size)
{
	unsigned char *buf = malloc(size);

	assert_non_null(buf);
	assert_int_equal(vol_read(v, buf, size, 0), (ssize_t)size);
	if (memcmp(buf, ref, size))
		first_diff(buf, ref, size, "volume");
	free(buf);
}

/* read a history image in odd-sized pieces and compare */
static void assert_img(struct vol *v, uint64_t version, const unsigned char *ref, uint64_t size)
{
	struct himg *im = NULL;
	unsigned char *buf = malloc(size);
	char what[64];

	assert_non_null(buf);
	assert_int_equal(himg_open(v, version, HIMG_DISK, &im), 0);
	assert_true(himg_size(im) == size);
	for (uint64_t off = 0; off < size;) {
		size_t n = 77773;
		if (n > size - off)
			n = (size_t)(size - off);
		assert_int_equal(himg_read(im, buf + off, n, off), (ssize_t)n);
		off += n;
	}
	assert_int_equal(himg_read(im, buf, 10, size), 0);
	himg_close(im);
	snprintf(what, sizeof(what), "image of version %llu", (unsigned long long)version);
	if (memcmp(buf, ref, size))
		first_diff(buf, ref, size, what);
	free(buf);
}

static struct vol *create(struct fx *f, const char *line, const char *name)
{
	struct vol *v;

	CTL_OK(f, NULL, line);
	v = engine_vol_by_name(f->e, name);
	assert_non_null(v);
	return v;
}

/* ---- tests ---- */

static void test_create_and_io(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 8 * MiB;
	unsigned char *ref = calloc(1, size), *buf = malloc(300 * KiB);
	struct vol *v;

	assert_non_null(ref);
	assert_non_null(buf);
	CTL_OK(f, NULL, "volume create db 8M grain=64K save=2");
	assert_string_equal(reply(f), "ok volume=db size=8388608 grain=65536 save=2 bvs=2\n");
	v = engine_vol_by_name(f->e, "db");
	assert_non_null(v);
	assert_string_equal(vol_name(v), "db");
	assert_true(vol_size(v) == size);
	assert_null(engine_vol_by_name(f->e, "nope"));
	CTL_ERR(f, NULL, "volume create db 4M", -EEXIST);

	/* a new volume reads as zeros */
	assert_vol(v, ref, size);

	for (int i = 0; i < 400; i++) {
		uint64_t off = rnd(f) % size;
		size_t len = 1 + (size_t)(rnd(f) % (200 * KiB));
		if (len > size - off)
			len = (size_t)(size - off);
		fill_rnd(f, buf, len);
		vwrite(v, ref, buf, len, off);
		if (i % 100 == 99)
			assert_vol(v, ref, size);
		/* a read at an odd place */
		uint64_t ro = rnd(f) % size;
		size_t rl = 1 + (size_t)(rnd(f) % (300 * KiB));
		size_t want = rl > size - ro ? (size_t)(size - ro) : rl;
		assert_int_equal(vol_read(v, buf, rl, ro), (ssize_t)want);
		if (memcmp(buf, ref + ro, want))
			fail_msg("read of %zu at %llu differs", rl, (unsigned long long)ro);
	}
	assert_vol(v, ref, size);

	/* the end of the volume */
	memset(buf, 0x5a, 300);
	assert_int_equal(vol_write(v, buf, 1, size), -ENOSPC);
	assert_int_equal(vol_write(v, buf, 300, size + 12345), -ENOSPC);
	assert_int_equal(vol_write(v, buf, 300, size - 100), 100); /* short write */
	memcpy(ref + size - 100, buf, 100);
	assert_int_equal(vol_write(v, buf, 0, 10), 0);
	assert_int_equal(vol_read(v, buf, 10, size), 0);
	assert_int_equal(vol_read(v, buf, 300, size - 100), 100);
	assert_memory_equal(buf, ref + size - 100, 100);
	assert_vol(v, ref, size);

	vol_put(v);
	free(ref);
	free(buf);
}

static void test_backup_point_in_time(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 32 * MiB;
	unsigned char *ref = calloc(1, size), *snap = malloc(size), *buf = malloc(size);
	struct himg *im;
	struct vol *v;
	char want[256];

	assert_true(ref && snap && buf);
	v = create(f, "volume create db 32M grain=64K save=2", "db");
	fill_vol(f, v, ref, size);
	memcpy(snap, ref, size);

	CTL_OK(f, v, "backup -T -m DISK");
	snprintf(want, sizeof(want),
		 "ok volume=db version=1 bv=db.bv1 media=DISK differential=1 copy=full grains=512\n"
		 "db acmbackup completed\n");
	assert_string_equal(reply(f), want);

	/* the image is readable at once, and is the instant of the backup command */
	assert_int_equal(himg_open(v, 1, HIMG_DISK, &im), 0);
	/* overwrite everything, from the end backwards: the copier goes forwards, so
	 * most of these writes hit grains it has not copied yet (copy-on-write) */
	fill_rnd(f, buf, size);
	for (uint64_t off = size; off > 0;) {
		size_t n = off >= 100000 ? 100000 : (size_t)off;
		off -= n;
		vwrite(v, ref, buf + off, n, off);
	}
	for (uint64_t off = 0; off < size; off += 1 * MiB + 7) {
		size_t n = off + 1 * MiB + 7 > size ? (size_t)(size - off) : (size_t)(1 * MiB + 7);
		assert_int_equal(himg_read(im, buf + off, n, off), (ssize_t)n);
	}
	if (memcmp(buf, snap, size))
		first_diff(buf, snap, size, "image read during the copy");
	himg_close(im);

	wait_disk(f, v, 1);
	assert_img(v, 1, snap, size);
	assert_vol(v, ref, size);
	assert_true(vol_latest_version(v) == 1);
	assert_true(vol_generation(v, false, 1) == 1);
	assert_true(vol_generation_count(v, false) == 1);

	char *info = render(f, v, RENDER_HIST_INFO, 1);
	assert_non_null(strstr(info, "\ncopy=full\ngrains_copied=512\n"));
	free(info);

	/* writes after the copy finished don't reach the image either */
	fill_rnd(f, buf, 4096);
	vwrite(v, ref, buf, 4096, 12345);
	assert_img(v, 1, snap, size);

	vol_put(v);
	free(ref);
	free(snap);
	free(buf);
}

/* write into the given grains (64 KiB) so that exactly those grains change */
static void touch_grains(struct fx *f, struct vol *v, unsigned char *ref)
{
	unsigned char b[200];

	fill_rnd(f, b, sizeof(b));
	b[0] ^= 0xff; /* surely different from what is there */
	vwrite(v, ref, b, 1, 3 * 64 * KiB + 100);	 /* grain 3: one byte */
	vwrite(v, ref, b, 200, 4 * 64 * KiB);	 /* grain 4 */
	vwrite(v, ref, b, 100, 11 * 64 * KiB - 50);	 /* grains 10 and 11 */
	vwrite(v, ref, b, 1, 41 * 64 * KiB - 1); /* grain 40: its last byte */
}

static void test_differential(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 4 * MiB; /* 64 grains */
	unsigned char *ref = calloc(1, size), *snap1 = malloc(size), *snap2 = malloc(size);
	struct vol *v;

	v = create(f, "volume create d 4M grain=64K save=2", "d");
	fill_vol(f, v, ref, size);
	memcpy(snap1, ref, size);
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), " bv=d.bv1 "));
	assert_non_null(strstr(reply(f), " copy=full grains=64\n"));
	/* the second -T goes to the other, free BV: full */
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), "version=2 bv=d.bv2 "));
	assert_non_null(strstr(reply(f), " copy=full grains=64\n"));
	memcpy(snap2, ref, size);

	/* change exactly 5 grains; the third backup (save=2) reuses d.bv1: diff */
	touch_grains(f, v, ref);
	CTL_OK(f, v, "backup -T -m DISK");
	assert_string_equal(reply(f), "ok volume=d version=3 bv=d.bv1 media=DISK differential=1 "
				      "copy=diff grains=5\nd acmbackup completed\n");
	wait_disk(f, v, 3);
	assert_img(v, 3, ref, size);
	assert_img(v, 2, snap2, size);
	char *info = render(f, v, RENDER_HIST_INFO, 3);
	assert_non_null(strstr(info, "\ncopy=diff\ngrains_copied=5\n"));
	free(info);
	struct hist_entry he;
	assert_int_equal(vol_history(v, 1, &he), -ENOENT); /* released by the overflow */
	assert_true(vol_generation(v, false, 1) == 3);
	assert_true(vol_generation(v, false, 2) == 2);

	/* fourth: back to d.bv2, whose base is version 2: the same 5 grains */
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), "version=4 bv=d.bv2 "));
	assert_non_null(strstr(reply(f), " copy=diff grains=5\n"));
	assert_img(v, 4, ref, size);
	/* fifth: nothing written since version 3 on d.bv1 */
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), "version=5 bv=d.bv1 "));
	assert_non_null(strstr(reply(f), " copy=diff grains=0\n"));
	assert_img(v, 5, ref, size);

	/* a conventional backup is always a full copy */
	backup(f, v, "backup -m DISK");
	assert_non_null(strstr(reply(f), " differential=0 copy=full grains=64\n"));

	vol_put(v);
	free(ref);
	free(snap1);
	free(snap2);
}

static int collect_versions(void *arg, const struct hist_entry *h)
{
	uint64_t *a = arg;

	a[++a[0]] = h->version;
	return 0;
}

static void test_rotation(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 1 * MiB;
	unsigned char *ref = calloc(1, size), *snaps[8];
	struct vol *v;
	uint64_t vers[16] = { 0 };
	char line[256], mark[16];

	v = create(f, "volume create g 1M grain=64K save=3", "g");
	for (int i = 1; i <= 7; i++) {
		snprintf(mark, sizeof(mark), "version%03d", i);
		vwrite(v, ref, mark, strlen(mark), 0);
		vwrite(v, ref, mark, strlen(mark), (uint64_t)i * 70001);
		assert_true(backup(f, v, "backup -m DISK") == (uint64_t)i);
		snaps[i] = malloc(size);
		memcpy(snaps[i], ref, size);
	}
	assert_int_equal(vol_list_histories(v, collect_versions, vers), 0);
	assert_int_equal(vers[0], 3);
	assert_int_equal(vers[1], 5);
	assert_int_equal(vers[2], 6);
	assert_int_equal(vers[3], 7);
	assert_true(vol_generation(v, false, 1) == 7);
	assert_true(vol_generation(v, false, 2) == 6);
	assert_true(vol_generation(v, false, 3) == 5);
	assert_true(vol_generation(v, false, 4) == 0);
	assert_true(vol_generation_count(v, false) == 3);
	assert_true(vol_latest_version(v) == 7);
	for (int i = 5; i <= 7; i++)
		assert_img(v, (uint64_t)i, snaps[i], size);
	struct himg *im;
	assert_int_equal(himg_open(v, 4, HIMG_DISK, &im), -ENOENT);

	char *hd = render(f, v, RENDER_HISTDISP, 0);
	for (int g = 1; g <= 3; g++) {
		line_of(hd, 1 + g, line, sizeof(line));
		char c[256], want[32];
		collapse(line, c, sizeof(c));
		snprintf(want, sizeof(want), "%d %d ", g, 8 - g);
		if (strncmp(c, want, strlen(want)))
			fail_msg("histdisp row %d: '%s'", g, line);
	}
	free(hd);

	/* histdel -g 1 removes the newest; generations renumber */
	CTL_OK(f, v, "histdel -g 1");
	assert_string_equal(reply(f), "ok volume=g deleted=7\ng acmhistdel completed\n");
	assert_true(vol_generation(v, false, 1) == 6);
	assert_true(vol_generation_count(v, false) == 2);
	for (int i = 1; i <= 7; i++)
		free(snaps[i]);
	vol_put(v);
	free(ref);
}

/* a backup whose oldest generation is still being copied: the BV is retargeted,
 * the new image is still exactly the new instant */
static void test_backup_while_copying(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 32 * MiB;
	unsigned char *ref = calloc(1, size), *snap = malloc(size), *b = malloc(MiB);
	struct vol *v;
	const char *modes[2] = { "backup -m DISK", "backup -T -m DISK" };

	v = create(f, "volume create w 32M save=1", "w");
	for (int round = 0; round < 2; round++) {
		fill_vol(f, v, ref, size);
		CTL_OK(f, v, modes[round]);
		uint64_t first = key_u64(reply(f), "version");
		fill_rnd(f, b, MiB);
		vwrite(v, ref, b, MiB, size - MiB);
		vwrite(v, ref, b, 1000, 3 * MiB + 17);
		memcpy(snap, ref, size);
		CTL_OK(f, v, modes[round]); /* version `first` is released, maybe mid-copy */
		uint64_t second = key_u64(reply(f), "version");
		assert_true(second == first + 1);
		assert_non_null(strstr(reply(f), " bv=w.bv1 "));
		assert_true(key_u64(reply(f), "grains") <= 512);
		/* and more writes during this copy */
		vwrite(v, ref, b + 1, MiB - 1, size - 2 * MiB);
		wait_disk(f, v, second);
		assert_img(v, second, snap, size);
		struct hist_entry he;
		assert_int_equal(vol_history(v, first, &he), -ENOENT);
		assert_true(vol_generation_count(v, false) == 1);
	}
	vol_put(v);
	free(ref);
	free(snap);
	free(b);
}

static void test_histdel_differential_keeps_tracking(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 1 * MiB;
	unsigned char *ref = calloc(1, size);
	struct vol *v;
	char *s, want[256];

	v = create(f, "volume create t 1M save=2", "t");
	fill_vol(f, v, ref, size);
	backup(f, v, "backup -T -m DISK");
	CTL_OK(f, v, "histdel -v 1");
	assert_string_equal(reply(f), "ok volume=t deleted=1\nt acmhistdel completed\n");
	struct hist_entry he;
	assert_int_equal(vol_history(v, 1, &he), -ENOENT);

	s = render(f, v, RENDER_TRKSTAT, 0);
	char row[256], c[256];
	line_of(s, 1, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s t t.bv1 tracking ---- 0%%", f->host);
	assert_string_equal(c, want);
	free(s);

	s = render(f, NULL, RENDER_STATUS_JSON, 0);
	assert_non_null(strstr(s, "{\"name\":\"t.bv1\",\"size\":1048576,\"mode\":\"Backup (used)\","
				  "\"mode_u\":\"Backup (used-T)\",\"tracking\":true,"
				  "\"status\":\"tracking\""));
	assert_non_null(strstr(s, "\"histories\":[]"));
	free(s);

	/* the pair goes on tracking: the next -T copies only what changed */
	unsigned char b[10] = "changed!!";
	vwrite(v, ref, b, sizeof(b), 2 * 64 * KiB + 5);
	vwrite(v, ref, b, sizeof(b), 5 * 64 * KiB + 5);
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), "version=2 bv=t.bv1 "));
	assert_non_null(strstr(reply(f), " copy=diff grains=2\n"));
	assert_img(v, 2, ref, size);
	vol_put(v);
	free(ref);
}

static void test_histdel_conventional_frees_bv(void **state)
{
	struct fx *f = *state;
	struct vol *v;
	char *s, want[256], row[256], c[256];

	v = create(f, "volume create c 1M save=2", "c");
	backup(f, v, "backup -m DISK");
	s = render(f, v, RENDER_DEVDISP, 0);
	line_of(s, 2, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s c.bv1 1.0 Mbyte Backup (used) ---- AdvancedCopy",
		 f->host);
	assert_string_equal(c, want);
	free(s);

	CTL_OK(f, v, "histdel -g 1");
	s = render(f, v, RENDER_DEVDISP, 0);
	line_of(s, 2, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s c.bv1 1.0 Mbyte Backup (free) ---- AdvancedCopy",
		 f->host);
	assert_string_equal(c, want);
	free(s);
	s = render(f, NULL, RENDER_STATUS_JSON, 0);
	assert_non_null(strstr(s, "{\"name\":\"c.bv1\",\"size\":1048576,\"mode\":\"Backup (free)\","
				  "\"mode_u\":\"Backup (free)\",\"tracking\":false,"));
	free(s);
	s = render(f, v, RENDER_TRKSTAT, 0);
	assert_int_equal(count_lines(s), 1); /* header only */
	free(s);
	vol_put(v);
}

static void test_canceltrk(void **state)
{
	struct fx *f = *state;
	struct vol *v;
	char *s;

	v = create(f, "volume create k 1M save=1", "k");
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), " copy=full grains=16\n"));
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), " copy=diff grains=0\n"));
	assert_int_equal(vol_write(v, "x", 1, 100), 1);

	CTL_OK(f, v, "canceltrk -bd k.bv1");
	assert_string_equal(reply(f), "ok volume=k bv=k.bv1\nk acmcanceltrk completed\n");
	s = render(f, v, RENDER_TRKSTAT, 0);
	assert_int_equal(count_lines(s), 1);
	free(s);
	CTL_ERR(f, v, "canceltrk -bd k.bv1", -ENOENT); /* no longer tracking */
	CTL_ERR(f, v, "canceltrk -bd k.bv9", -ENOENT);
	CTL_ERR(f, v, "canceltrk -bd other.bv1", -ENOENT);

	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), " copy=full grains=16\n"));
	CTL_OK(f, v, "canceltrk -all");
	assert_string_equal(reply(f), "ok volume=k bv=k.bv1\nk acmcanceltrk completed\n");
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), " copy=full grains=16\n"));
	vol_put(v);
}

static void test_errors(void **state)
{
	struct fx *f = *state;
	struct vol *v;
	struct himg *im;
	struct hist_entry he;
	char *before, *after, *log;

	v = create(f, "volume create e 1M save=1", "e");
	before = render(f, NULL, RENDER_STATUS_JSON, 0);

	CTL_ERR(f, NULL, "volume delete nope", -ENOENT);
	CTL_ERR(f, NULL, "bv add nope", -ENOENT);
	CTL_ERR(f, NULL, "policy nope save=1", -ENOENT);
	CTL_ERR(f, NULL, "tapepolicy nope gens=1", -ENOENT);
	CTL_ERR(f, NULL, "tapepolicy e pool=nope", -ENOENT);
	CTL_ERR(f, NULL, "pool delete nope", -ENOENT);
	CTL_ERR(f, NULL, "pool gc nope", -ENOENT);
	CTL_ERR(f, NULL, "volume create e 2M", -EEXIST);
	CTL_ERR(f, NULL, "policy e save=2", -ENOSPC); /* only one BV */
	CTL_ERR(f, NULL, "frobnicate", -EINVAL);
	CTL_ERR(f, NULL, "volume create x 1M grain=3K", -EINVAL);
	char big[5000];
	memset(big, 'a', sizeof(big));
	big[sizeof(big) - 1] = 0;
	CTL_ERR(f, NULL, big, -E2BIG);

	CTL_ERR(f, v, "histdel -v 9", -ENOENT);
	CTL_ERR(f, v, "histdel -g 1", -ENOENT);
	CTL_ERR(f, v, "restore", -ENOENT);
	CTL_ERR(f, v, "restore -v 9", -ENOENT);
	CTL_ERR(f, v, "verify", -ENOENT);
	CTL_ERR(f, v, "tphistcopy", -ENOENT);
	CTL_ERR(f, v, "backup -T -m TAPE", -EINVAL);
	assert_string_equal(reply(f), "error: -T cannot be used with -m TAPE\n");
	CTL_ERR(f, v, "volume create y 1M", -EINVAL); /* global command on a volume ctl */
	assert_int_equal(himg_open(v, 9, HIMG_DISK, &im), -ENOENT);
	assert_int_equal(vol_history(v, 9, &he), -ENOENT);

	after = render(f, NULL, RENDER_STATUS_JSON, 0);
	assert_string_equal(before, after);
	free(before);
	free(after);

	/* every failure leaves one line in the log: "... error: <word>: <reason> (<ERRNO>)" */
	log = render(f, v, RENDER_LOG, 0);
	assert_non_null(strstr(log, " error: histdel: "));
	assert_non_null(strstr(log, " (ENOENT)\n"));
	assert_non_null(strstr(log, " error: backup: -T cannot be used with -m TAPE (EINVAL)\n"));
	free(log);
	log = render(f, NULL, RENDER_LOG, 0);
	assert_non_null(strstr(log, " error: volume delete: no volume nope (ENOENT)\n"));
	assert_non_null(strstr(log, " error: frobnicate: "));
	assert_non_null(strstr(log, "(E2BIG)\n"));
	free(log);
	vol_put(v);
}

static void test_no_usable_bv(void **state)
{
	struct fx *f = *state;
	struct vol *v;
	char path[256];
	sqlite3 *db;

	v = create(f, "volume create n 1M save=2", "n");
	backup(f, v, "backup -m DISK");
	backup(f, v, "backup -m DISK");
	vol_put(v);
	eng_close(f);
	/* a store whose policy asks for more generations than it has BVs */
	snprintf(path, sizeof(path), "%s/catalog.db", f->store);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "UPDATE volumes SET save=3 WHERE name='n'", NULL, NULL,
				      NULL),
			 SQLITE_OK);
	sqlite3_close(db);
	eng_open(f);
	v = engine_vol_by_name(f->e, "n");
	assert_non_null(v);

	char *hd0 = render(f, v, RENDER_HISTDISP, 0), *in0 = render(f, v, RENDER_INFO, 0);
	char *js0 = render(f, NULL, RENDER_STATUS_JSON, 0);
	CTL_ERR(f, v, "backup -m DISK", -ENOSPC);
	assert_non_null(strstr(reply(f), "no usable backup volume"));
	CTL_ERR(f, v, "backup -T -m DISK", -ENOSPC);
	char *hd1 = render(f, v, RENDER_HISTDISP, 0), *in1 = render(f, v, RENDER_INFO, 0);
	char *js1 = render(f, NULL, RENDER_STATUS_JSON, 0);
	assert_string_equal(hd0, hd1);
	assert_string_equal(in0, in1);
	assert_string_equal(js0, js1);
	free(hd0);
	free(hd1);
	free(in0);
	free(in1);
	free(js0);
	free(js1);

	/* adding a BV makes room; no version number was used up by the failures */
	CTL_OK(f, NULL, "bv add n");
	assert_string_equal(reply(f), "ok volume=n added=1 bvs=n.bv3\n");
	backup(f, v, "backup -m DISK");
	assert_non_null(strstr(reply(f), "version=3 bv=n.bv3 "));
	vol_put(v);
}

static void test_restore(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 2 * MiB; /* 32 grains */
	unsigned char *ref = calloc(1, size), *snap = malloc(size), *buf = malloc(size);
	char line[256], path[128], want[512];
	struct vol *v;
	unsigned char b[300];

	v = create(f, "volume create r 2M save=2", "r");
	fill_vol(f, v, ref, size);
	memcpy(snap, ref, size);
	backup(f, v, "backup -T -m DISK");

	fill_rnd(f, b, sizeof(b));
	vwrite(v, ref, b, 10, 1 * 64 * KiB + 3);
	vwrite(v, ref, b, 300, 8 * 64 * KiB - 150); /* grains 7, 8 */

	/* someone has the data open for writing: refused */
	assert_int_equal(vol_open_data(v, true), 0);
	CTL_ERR(f, v, "restore", -EBUSY);
	vol_close_data(v, true);
	assert_vol(v, ref, size);

	CTL_OK(f, v, "restore");
	assert_string_equal(reply(f), "ok volume=r version=1 media=DISK target=volume mode=diff "
				      "grains_copied=3 bytes_copied=196608\nr acmrestore completed\n");
	assert_vol(v, snap, size);
	memcpy(ref, snap, size);
	char *info = render(f, v, RENDER_INFO, 0);
	assert_non_null(strstr(info, "\nstate=ok\n"));
	assert_non_null(strstr(info, "\nrestore_execute=----\n"));
	free(info);

	/* restore elsewhere while the pair tracks: EBUSY, names the way out */
	snprintf(path, sizeof(path), "%s/out.img", f->dir);
	snprintf(line, sizeof(line), "restore -r %s", path);
	CTL_ERR(f, v, line, -EBUSY);
	assert_non_null(strstr(reply(f), "canceltrk -bd r.bv1"));
	assert_int_equal(access(path, F_OK), -1); /* nothing created */

	CTL_OK(f, v, "canceltrk -bd r.bv1");
	CTL_OK(f, v, line);
	snprintf(want, sizeof(want), "ok volume=r version=1 media=DISK target=path mode=full ");
	assert_int_equal(strncmp(reply(f), want, strlen(want)), 0);
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, (off_t)size);
	assert_int_equal(pread(fd, buf, size, 0), (ssize_t)size);
	close(fd);
	if (memcmp(buf, snap, size))
		first_diff(buf, snap, size, "restored file");

	/* a conventional history restores in full */
	fill_rnd(f, b, sizeof(b));
	vwrite(v, ref, b, 300, 0);
	memcpy(snap, ref, size);
	uint64_t ver = backup(f, v, "backup -m DISK");
	vwrite(v, ref, b + 1, 299, 5000);
	snprintf(line, sizeof(line), "restore -v %llu", (unsigned long long)ver);
	CTL_OK(f, v, line);
	assert_non_null(strstr(reply(f), " target=volume mode=full grains_copied=32 "));
	assert_vol(v, snap, size);

	vol_put(v);
	free(ref);
	free(snap);
	free(buf);
}

/* each header word starts a column: every row has a cell starting there */
static void assert_aligned(const char *table, int nlines)
{
	char hdr[512], row[512];

	line_of(table, 0, hdr, sizeof(hdr));
	for (int l = 1; l < nlines; l++) {
		line_of(table, l, row, sizeof(row));
		for (size_t p = 1; hdr[p]; p++) {
			if (hdr[p - 1] != ' ' || hdr[p] == ' ')
				continue;
			if (p >= strlen(row) || row[p - 1] != ' ' || row[p] == ' ')
				fail_msg("column at %zu not aligned:\n%s\n%s", p, hdr, row);
		}
	}
}

static void test_tables(void **state)
{
	struct fx *f = *state;
	struct vol *v;
	char *s, row[512], c[512], want[512];

	v = create(f, "volume create db 8M save=2", "db");
	backup(f, v, "backup -T -m DISK");

	s = render(f, NULL, RENDER_DEVDISP, 0);
	assert_int_equal(count_lines(s), 4);
	line_of(s, 0, row, sizeof(row));
	collapse(row, c, sizeof(c));
	assert_string_equal(c, "Server Device Size Device-Mode Mount-Point Backup-Engine");
	line_of(s, 1, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s db 8.0 Mbyte Transaction volumes/db/data AdvancedCopy",
		 f->host);
	assert_string_equal(c, want);
	line_of(s, 2, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s db.bv1 8.0 Mbyte Backup (used) ---- AdvancedCopy", f->host);
	assert_string_equal(c, want);
	line_of(s, 3, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s db.bv2 8.0 Mbyte Backup (free) ---- AdvancedCopy", f->host);
	assert_string_equal(c, want);
	assert_aligned(s, 4);
	free(s);

	s = render(f, NULL, RENDER_TRKSTAT, 0);
	assert_int_equal(count_lines(s), 2);
	line_of(s, 0, row, sizeof(row));
	collapse(row, c, sizeof(c));
	assert_string_equal(c, "Server Transaction-Disk Backup-Disk Status Execute Update");
	line_of(s, 1, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s db db.bv1 tracking ---- 0%%", f->host);
	assert_string_equal(c, want);
	assert_aligned(s, 2);
	free(s);
	/* one grain of 128 written: 1% (rounded up) */
	assert_int_equal(vol_write(v, "x", 1, 0), 1);
	s = render(f, NULL, RENDER_TRKSTAT, 0);
	line_of(s, 1, row, sizeof(row));
	collapse(row, c, sizeof(c));
	snprintf(want, sizeof(want), "%s db db.bv1 tracking ---- 1%%", f->host);
	assert_string_equal(c, want);
	free(s);

	s = render(f, NULL, RENDER_HISTDISP, 0);
	assert_int_equal(count_lines(s), 4);
	line_of(s, 0, row, sizeof(row));
	snprintf(want, sizeof(want), "Server=%s Device=db Mount-Point=volumes/db/data", f->host);
	assert_string_equal(row, want);
	line_of(s, 1, row, sizeof(row));
	collapse(row, c, sizeof(c));
	assert_string_equal(c, "Generation Version Backup-Date Backup-Device Status Execute");
	line_of(s, 2, row, sizeof(row));
	collapse(row, c, sizeof(c));
	/* "1 1 YYYY/MM/DD HH:MM:SS db.bv1 succeeded ----" */
	int y, mo, d, h, mi, se;
	char dev[64], st[32], ex[16];
	assert_int_equal(sscanf(c, "1 1 %d/%d/%d %d:%d:%d %63s %31s %15s", &y, &mo, &d, &h, &mi, &se,
				dev, st, ex),
			 9);
	assert_string_equal(dev, "db.bv1");
	assert_string_equal(st, "succeeded");
	assert_string_equal(ex, "----");
	line_of(s, 3, row, sizeof(row));
	collapse(row, c, sizeof(c));
	assert_string_equal(c, "Tape-Gen Version Backup-Date Pool-Name Status Execute Blocks");
	free(s);

	/* volume info: the documented keys, in order */
	s = render(f, v, RENDER_INFO, 0);
	static const char *const keys[] = { "name=db\n", "size=8388608\n", "grain=65536\n",
					    "save=2\n", "interval_days=30\n", "tape_gens=0\n",
					    "tape_days=0\n", "pool=default\n", "state=ok\n",
					    "open_writers=0\n", "era=2\n",
					    "backup_volumes=db.bv1,db.bv2\n", "last_backup=",
					    "restore_execute=----\n" };
	const char *p = s;
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *q = strstr(p, keys[i]);
		if (!q || (q != s && q[-1] != '\n'))
			fail_msg("info: no '%s' after position %td in:\n%s", keys[i], p - s, s);
		p = q + 1;
	}
	free(s);

	s = render(f, v, RENDER_HIST_INFO, 1);
	assert_int_equal(strncmp(s, "version=1\ngeneration=1\ntape_generation=-\ndate=", 46), 0);
	assert_non_null(strstr(s, "\ndifferential=1\nmedia=DISK\nbv=db.bv1\ndisk_status=succeeded\n"
				  "disk_execute=100\ncopy=full\ngrains_copied="));
	assert_non_null(strstr(s, "\ntape_status=none\ntape_execute=-\npool=-\nblocks=-\n"
				  "verify=-\n"));
	free(s);

	s = render(f, NULL, RENDER_README, 0);
	assert_non_null(strstr(s, "volumes/<vol>/ctl"));
	free(s);
	vol_put(v);
}

static void test_reopen(void **state)
{
	struct fx *f = *state;
	const uint64_t size = 2 * MiB; /* 32 grains */
	unsigned char *ref = calloc(1, size), *snap = malloc(size);
	struct vol *v;
	char *hd0, *hd1, *tk0, *tk1, era0[32], era1[32];

	v = create(f, "volume create p 2M save=1", "p");
	fill_vol(f, v, ref, size);
	memcpy(snap, ref, size);
	backup(f, v, "backup -T -m DISK");
	unsigned char b[3] = { 1, 2, 3 };
	vwrite(v, ref, b, 3, 0);
	vwrite(v, ref, b, 3, 10 * 64 * KiB);
	vwrite(v, ref, b, 3, 31 * 64 * KiB);

	char *info = render(f, v, RENDER_INFO, 0);
	key_str(info, "era", era0, sizeof(era0));
	free(info);
	hd0 = render(f, v, RENDER_HISTDISP, 0);
	tk0 = render(f, v, RENDER_TRKSTAT, 0);
	assert_non_null(strstr(tk0, " 10%\n")); /* 3 of 32 grains, rounded up */
	vol_put(v);
	eng_close(f);

	eng_open(f);
	v = engine_vol_by_name(f->e, "p");
	assert_non_null(v);
	assert_vol(v, ref, size);
	assert_img(v, 1, snap, size);
	info = render(f, v, RENDER_INFO, 0);
	key_str(info, "era", era1, sizeof(era1));
	free(info);
	assert_string_equal(era0, era1);
	hd1 = render(f, v, RENDER_HISTDISP, 0);
	tk1 = render(f, v, RENDER_TRKSTAT, 0);
	assert_string_equal(hd0, hd1);
	assert_string_equal(tk0, tk1);
	free(hd0);
	free(hd1);
	free(tk0);
	free(tk1);

	/* tracking survived with its era: the next -T copies exactly the 3 grains */
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), "version=2 bv=p.bv1 "));
	assert_non_null(strstr(reply(f), " copy=diff grains=3\n"));
	assert_img(v, 2, ref, size);

	/* a differential history deleted, then a restart: the pair still tracks */
	CTL_OK(f, v, "histdel -v 2");
	vol_put(v);
	eng_close(f);
	eng_open(f);
	v = engine_vol_by_name(f->e, "p");
	assert_non_null(v);
	char *tk = render(f, v, RENDER_TRKSTAT, 0);
	assert_int_equal(count_lines(tk), 2);
	assert_non_null(strstr(tk, " p.bv1 "));
	free(tk);
	vwrite(v, ref, b, 1, 7 * 64 * KiB);
	backup(f, v, "backup -T -m DISK");
	assert_non_null(strstr(reply(f), "version=3 bv=p.bv1 "));
	assert_non_null(strstr(reply(f), " copy=diff grains=1\n"));
	assert_img(v, 3, ref, size);

	vol_put(v);
	free(ref);
	free(snap);
}

static void test_store_lock(void **state)
{
	struct fx *f = *state;
	struct engine_opts o;
	struct engine *e2 = NULL;
	char err[256] = "";
	struct vol *v;

	memset(&o, 0, sizeof(o));
	o.store = f->store;
	assert_int_equal(engine_open(&o, &e2, err, sizeof(err)), -EBUSY);
	assert_null(e2);
	assert_true(err[0]);
	/* the first engine is unharmed */
	v = create(f, "volume create x 1M", "x");
	vol_put(v);
	eng_close(f);

	err[0] = 0;
	assert_int_equal(engine_open(&o, &e2, err, sizeof(err)), 0);
	v = engine_vol_by_name(e2, "x");
	assert_non_null(v);
	vol_put(v);
	engine_close(e2);
}

static int count_fds(void)
{
	char p[64];
	int n = 0;

	for (int fd = 0; fd < 1024; fd++) {
		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		n += access(p, F_OK) == 0;
	}
	return n;
}

static void test_volume_delete(void **state)
{
	struct fx *f = *state;
	struct vol *v;
	char dir[256];
	struct stat st;

	int fds0 = count_fds();
	v = create(f, "volume create z 1M save=1", "z");
	backup(f, v, "backup -m DISK");
	snprintf(dir, sizeof(dir), "%s/vol/%llu", f->store, (unsigned long long)vol_id(v));
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(vol_open_data(v, false), 0);
	CTL_ERR(f, NULL, "volume delete z", -EBUSY);
	vol_close_data(v, false);
	vol_put(v);

	/* deleting logs no error or warning (stderr captured around the delete) */
	char errpath[128];
	snprintf(errpath, sizeof(errpath), "%s/stderr.txt", f->dir);
	int efd = open(errpath, O_RDWR | O_CREAT | O_TRUNC, 0600), saved = dup(2);
	assert_true(efd >= 0 && saved >= 0);
	fflush(stderr);
	dup2(efd, 2);
	int rc = ctl(f, NULL, "volume delete z");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char logged[4096] = "";
	ssize_t ln = pread(efd, logged, sizeof(logged) - 1, 0);
	close(efd);
	logged[ln > 0 ? ln : 0] = 0;
	assert_int_equal(rc, 0);
	assert_string_equal(reply(f), "ok volume=z deleted=1\n");
	/* a delete closes the tracking state before it removes the files:
	 * nothing may be logged as failing */
	if (strstr(logged, " error: ") || strstr(logged, " warn: "))
		fail_msg("volume delete logged:\n%s", logged);
	assert_null(engine_vol_by_name(f->e, "z"));
	/* even when the flusher holds a reference during the delete, the last
	 * reference frees the volume and removes its directory: no fd leaks */
	if (stat(dir, &st) == 0)
		fail_msg("%s still exists after volume delete", dir);
	if (count_fds() != fds0)
		fail_msg("open fds: %d before create, %d after delete", fds0, count_fds());
	/* the name is free again */
	v = create(f, "volume create z 2M save=1", "z");
	assert_true(vol_size(v) == 2 * MiB);
	vol_put(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_and_io, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backup_point_in_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_differential, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_backup_while_copying, setup, teardown),
		cmocka_unit_test_setup_teardown(test_histdel_differential_keeps_tracking, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_histdel_conventional_frees_bv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_canceltrk, setup, teardown),
		cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_usable_bv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_restore, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tables, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_store_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_volume_delete, setup, teardown),
	};

	log_set_level(LOG_LVL_WARN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
