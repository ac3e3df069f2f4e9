/*
 * test_track.c — core/track.c: era map and write-intent regions.
 *
 * The rules under test (track.h):
 *  - a fresh map is trusted, every grain era 0;
 *  - snapshot+commit makes eras exact and clears intents;
 *  - the crash rule: a region marked by track_intent is durable before the
 *    write; after a crash (no close, no commit) every grain of a marked region
 *    reopens with the current era, other grains keep their committed era;
 *  - any damage to era.map or intent → untrusted, every grain = current era;
 *  - one intent fdatasync per newly marked region, none for a marked one.
 *
 * A crash is simulated by copying the tracking files aside while the struct is
 * still open (nothing flushed after the copy) and opening the copies.
 *
 * Most tests use grain_bytes = 16 MiB: a 64 MiB intent region then spans 4
 * grains, so regions are cheap to reason about (no data file exists here).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "track.h"

#define GRAIN (16u * 1024 * 1024) /* region = 4 grains */
#define NR 10			  /* regions: [0-3] [4-7] [8-9] */

struct fx {
	char dir[64];	/* tracking files */
	char crash[80]; /* copies taken at a simulated crash */
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/acmfs-ut-trk-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->crash, sizeof(f->crash), "%s/crash", f->dir);
	if (mkdir(f->crash, 0700))
		return -1;
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

static void path_of(char *buf, size_t len, const char *dir, const char *name)
{
	snprintf(buf, len, "%s/%s", dir, name);
}

static void copy_file(const char *from, const char *to)
{
	size_t len;
	char *buf = slurp(from, &len);

	spit(to, buf, len);
	free(buf);
}

/* the on-disk state as it is now: what survives a crash at this instant */
static void crash_copy(struct fx *f)
{
	char a[PATH_MAX], b[PATH_MAX];

	path_of(a, sizeof(a), f->dir, "era.map");
	path_of(b, sizeof(b), f->crash, "era.map");
	copy_file(a, b);
	path_of(a, sizeof(a), f->dir, "intent");
	path_of(b, sizeof(b), f->crash, "intent");
	copy_file(a, b);
}

static struct track *open_ok(const char *dir, uint64_t nr, uint32_t grain, uint32_t era,
			     bool want_untrusted)
{
	struct track *t = NULL;
	bool untrusted = !want_untrusted;
	char why[256];

	assert_int_equal(track_open(dir, nr, grain, era, &t, &untrusted, why, sizeof(why)), 0);
	assert_non_null(t);
	if (untrusted != want_untrusted)
		fail_msg("track_open: untrusted=%d, want %d (why: '%s')", untrusted, want_untrusted,
			 why);
	if (want_untrusted && !why[0])
		fail_msg("untrusted without a reason");
	assert_int_equal(track_era(t), era);
	return t;
}

static void assert_eras(const struct track *t, const uint32_t *want, uint64_t nr)
{
	for (uint64_t g = 0; g < nr; g++)
		if (track_grain_era(t, g) != want[g])
			fail_msg("grain %llu: era %u, want %u", (unsigned long long)g,
				 track_grain_era(t, g), want[g]);
}

static void assert_all(const struct track *t, uint32_t era, uint64_t nr)
{
	for (uint64_t g = 0; g < nr; g++)
		if (track_grain_era(t, g) != era)
			fail_msg("grain %llu: era %u, want %u", (unsigned long long)g,
				 track_grain_era(t, g), era);
}

static void write_at(struct track *t, uint64_t g0, uint64_t g1)
{
	assert_int_equal(track_intent(t, g0, g1), 0);
	track_mark(t, g0, g1);
}

static void commit(struct track *t)
{
	track_snapshot(t);
	assert_int_equal(track_commit(t), 0);
}

/* ---- tests ---- */

static void test_fresh(void **state)
{
	struct fx *f = *state;
	struct track *t;

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 1, false);
	assert_all(t, 0, NR);
	assert_int_equal(track_changed(t, 0, NULL), 0);
	track_set_era(t, 5);
	assert_int_equal(track_era(t), 5);
	track_close(t); /* the map now records era 5 */
	t = open_ok(f->dir, NR, GRAIN, 5, false);
	assert_all(t, 0, NR);
	track_close(t);

	/* a fresh map opens trusted at any catalog era, even 0 */
	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 0, false);
	assert_all(t, 0, NR);
	track_close(t);
}

static void test_commit_reopen_exact(void **state)
{
	struct fx *f = *state;
	struct track *t;
	const uint32_t want[NR] = { 0, 0, 1, 0, 0, 2, 2, 0, 0, 3 };

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 1, false);
	write_at(t, 2, 2);
	track_set_era(t, 2);
	write_at(t, 5, 6);
	track_set_era(t, 3);
	write_at(t, 9, 9);
	assert_eras(t, want, NR);
	commit(t);
	/* crash right after the commit: eras exact, no intent replayed even at a later era */
	crash_copy(f);
	struct track *c = open_ok(f->crash, NR, GRAIN, 7, false);
	assert_eras(c, want, NR);
	track_close(c);

	track_close(t);
	t = open_ok(f->dir, NR, GRAIN, 3, false);
	assert_eras(t, want, NR);
	track_close(t);
}

/* the write-intent crash rule */
static void test_crash_replays_intents(void **state)
{
	struct fx *f = *state;
	struct track *t, *c;

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 5, false);
	write_at(t, 0, 0); /* era 5 */
	commit(t);	   /* durable, intents cleared */
	track_set_era(t, 6);
	write_at(t, 5, 5); /* region 1, era 6, only in memory + intent */
	crash_copy(f);	   /* crash: no commit, no close */

	c = open_ok(f->crash, NR, GRAIN, 6, false);
	const uint32_t want[NR] = { 5, 0, 0, 0, 6, 6, 6, 6, 0, 0 };
	assert_eras(c, want, NR);
	track_close(c);

	/* reopening the crashed copy again: the replay was committed, same eras */
	c = open_ok(f->crash, NR, GRAIN, 6, false);
	assert_eras(c, want, NR);
	track_close(c);

	track_close(t);
	/* the clean close committed the exact state */
	t = open_ok(f->dir, NR, GRAIN, 6, false);
	const uint32_t exact[NR] = { 5, 0, 0, 0, 0, 6, 0, 0, 0, 0 };
	assert_eras(t, exact, NR);
	track_close(t);
}

/* a crash after track_intent but before track_mark (the write never happened):
 * the region is still counted as written — a superset, never a miss */
static void test_crash_after_intent_before_mark(void **state)
{
	struct fx *f = *state;
	struct track *t, *c;

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 2, false);
	assert_int_equal(track_intent(t, 8, 9), 0);
	crash_copy(f);
	c = open_ok(f->crash, NR, GRAIN, 2, false);
	const uint32_t want[NR] = { 0, 0, 0, 0, 0, 0, 0, 0, 2, 2 };
	assert_eras(c, want, NR);
	track_close(c);
	track_close(t);
}

/* an intent made between snapshot and commit stays durable through the commit */
static void test_intent_during_commit_window(void **state)
{
	struct fx *f = *state;
	struct track *t, *c;

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 3, false);
	write_at(t, 1, 1);
	track_snapshot(t);
	write_at(t, 8, 8); /* after the snapshot: not in the map being written */
	assert_int_equal(track_commit(t), 0);
	crash_copy(f);
	c = open_ok(f->crash, NR, GRAIN, 3, false);
	/* grain 1 from the map; region 2 (grains 8, 9) from the kept intent */
	const uint32_t want[NR] = { 0, 3, 0, 0, 0, 0, 0, 0, 3, 3 };
	assert_eras(c, want, NR);
	track_close(c);

	/* the next commit includes grain 8 and clears region 2 */
	commit(t);
	crash_copy(f);
	c = open_ok(f->crash, NR, GRAIN, 4, false);
	const uint32_t exact[NR] = { 0, 3, 0, 0, 0, 0, 0, 0, 3, 0 };
	assert_eras(c, exact, NR);
	track_close(c);
	track_close(t);
}

static void test_intent_syncs(void **state)
{
	struct fx *f = *state;
	struct track *t;
	uint64_t s;

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 1, false);
	s = track_intent_syncs(t);
	assert_int_equal(track_intent(t, 0, 0), 0);
	assert_int_equal(track_intent_syncs(t), s + 1);
	assert_int_equal(track_intent(t, 1, 3), 0); /* same region */
	assert_int_equal(track_intent(t, 0, 0), 0);
	assert_int_equal(track_intent_syncs(t), s + 1);
	assert_int_equal(track_intent(t, 3, 8), 0); /* regions 0 (marked), 1, 2 */
	assert_int_equal(track_intent_syncs(t), s + 3);
	assert_int_equal(track_intent(t, 0, 9), 0);
	assert_int_equal(track_intent_syncs(t), s + 3);

	/* a commit clears the marks: the next write to a region syncs again */
	commit(t);
	s = track_intent_syncs(t);
	assert_int_equal(track_intent(t, 4, 4), 0);
	assert_int_equal(track_intent_syncs(t), s + 1);
	assert_int_equal(track_intent(t, 7, 7), 0);
	assert_int_equal(track_intent_syncs(t), s + 1);

	/* between snapshot and commit the disk bit is still set: no sync needed */
	track_snapshot(t);
	assert_int_equal(track_intent(t, 5, 5), 0);
	assert_int_equal(track_intent_syncs(t), s + 1);
	assert_int_equal(track_commit(t), 0);
	track_close(t);
}

static void test_changed(void **state)
{
	struct fx *f = *state;
	struct track *t;
	_Atomic uint64_t bm[1];

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 1, false);
	write_at(t, 1, 2);
	track_set_era(t, 2);
	write_at(t, 5, 5);
	track_set_era(t, 3);
	write_at(t, 9, 9);
	write_at(t, 1, 1); /* rewritten: now era 3 */

	atomic_init(&bm[0], 1); /* bit 0 preset: OR'ed, not replaced */
	assert_int_equal(track_changed(t, 0, bm), 4);
	assert_int_equal(atomic_load(&bm[0]), (1u << 0) | (1u << 1) | (1u << 2) | (1u << 5) |
						     (1u << 9));
	atomic_store(&bm[0], 0);
	assert_int_equal(track_changed(t, 1, bm), 3);
	assert_int_equal(atomic_load(&bm[0]), (1u << 1) | (1u << 5) | (1u << 9));
	atomic_store(&bm[0], 0);
	assert_int_equal(track_changed(t, 2, bm), 2);
	assert_int_equal(atomic_load(&bm[0]), (1u << 1) | (1u << 9));
	assert_int_equal(track_changed(t, 3, NULL), 0);
	assert_int_equal(track_changed(t, 99, NULL), 0);

	/* mark clamps at the last grain */
	track_set_era(t, 4);
	track_mark(t, 9, 1000);
	assert_int_equal(track_grain_era(t, 9), 4);
	track_close(t);
}

/* The count alone (Update %) comes from the era histogram; it must equal the
 * map scan for every base, across many eras (the table compacts and grows),
 * rewrites, and a reopen (rebuilt from the map). */
static void test_changed_count_matches_scan(void **state)
{
	struct fx *f = *state;
	enum { N = 300 };
	_Atomic uint64_t bm[(N + 63) / 64];
	struct track *t;
	uint32_t era = 1;
	unsigned seed = 7;

	assert_int_equal(track_create(f->dir, N, 4096), 0);
	t = open_ok(f->dir, N, 4096, era, false);
	for (int round = 0; round < 400; round++) {
		uint64_t g0 = rand_r(&seed) % N, g1 = g0 + rand_r(&seed) % 5;
		write_at(t, g0, g1 < N ? g1 : N - 1);
		if (rand_r(&seed) % 3 == 0)
			track_set_era(t, ++era);
		if (round % 25 == 0 || round == 399) {
			for (uint32_t base = 0; base <= era + 1; base++) {
				memset(bm, 0, sizeof(bm));
				assert_int_equal(track_changed(t, base, NULL),
						 track_changed(t, base, bm));
			}
		}
	}
	assert_true(era > 100); /* more eras than the first table holds */
	commit(t);
	uint64_t before[160];
	for (uint32_t base = 0; base < 160; base++)
		before[base] = track_changed(t, base, NULL);
	track_close(t);
	t = open_ok(f->dir, N, 4096, era, false);
	for (uint32_t base = 0; base < 160; base++)
		assert_int_equal(track_changed(t, base, NULL), before[base]);
	track_close(t);
}

/* ---- damage ---- */

static void damage_file(const char *dir, const char *name, long off, int how)
{
	char p[PATH_MAX], *buf;
	size_t len;

	path_of(p, sizeof(p), dir, name);
	buf = slurp(p, &len);
	switch (how) {
	case 0: /* flip a byte (negative offset: from the end) */
		buf[off < 0 ? (long)len + off : off] ^= 0x40;
		break;
	case 1: /* truncate to off bytes */
		len = (size_t)off;
		break;
	case 2: /* append a byte */
		buf = realloc(buf, len + 1);
		buf[len++] = 0;
		break;
	}
	spit(p, buf, len);
	free(buf);
}

/* build a map with distinct eras, close, damage, reopen: untrusted, all = cur */
static void damaged_reopen(struct fx *f, const char *file, long off, int how)
{
	struct track *t;

	nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	assert_int_equal(mkdir(f->dir, 0700), 0);
	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 1, false);
	write_at(t, 3, 3);
	track_set_era(t, 2);
	write_at(t, 6, 6);
	track_close(t);

	damage_file(f->dir, file, off, how);
	t = open_ok(f->dir, NR, GRAIN, 4, true);
	assert_all(t, 4, NR);
	assert_int_equal(track_changed(t, 3, NULL), NR);
	track_close(t);

	/* the rebuilt files open trusted, keeping the conservative eras */
	t = open_ok(f->dir, NR, GRAIN, 4, false);
	assert_all(t, 4, NR);
	track_close(t);
}

static void test_map_damage(void **state)
{
	struct fx *f = *state;

	damaged_reopen(f, "era.map", 64 + 3 * 4, 0); /* grain 3's era */
	damaged_reopen(f, "era.map", -1, 0);	     /* last data byte */
	damaged_reopen(f, "era.map", 0, 0);	     /* magic */
	damaged_reopen(f, "era.map", 8, 0);	     /* version */
	damaged_reopen(f, "era.map", 24, 0);	     /* era field */
	damaged_reopen(f, "era.map", 32, 0);	     /* seq: covered by the header CRC */
	damaged_reopen(f, "era.map", 40, 0);	     /* padding: covered too */
	damaged_reopen(f, "era.map", 60, 0);	     /* the header CRC itself */
	damaged_reopen(f, "era.map", 64 + 4 * NR - 2, 1); /* truncated data */
	damaged_reopen(f, "era.map", 30, 1);		   /* truncated header */
	damaged_reopen(f, "era.map", 0, 1);		   /* empty */
	damaged_reopen(f, "era.map", 0, 2);		   /* one byte too many */
}

static void test_map_missing_or_foreign(void **state)
{
	struct fx *f = *state;
	struct track *t;
	char p[PATH_MAX];

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 1, false);
	write_at(t, 0, 0);
	track_close(t);

	/* another geometry (e.g. a resized volume): untrusted */
	t = open_ok(f->dir, NR + 1, GRAIN, 1, true);
	assert_all(t, 1, NR + 1);
	track_close(t);

	/* a map newer than the catalog's era (catalog lost a commit): untrusted */
	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	t = open_ok(f->dir, NR, GRAIN, 9, false);
	track_close(t); /* map era 9 */
	t = open_ok(f->dir, NR, GRAIN, 8, true);
	assert_all(t, 8, NR);
	track_close(t);

	/* missing map */
	path_of(p, sizeof(p), f->dir, "era.map");
	assert_int_equal(unlink(p), 0);
	t = open_ok(f->dir, NR, GRAIN, 3, true);
	assert_all(t, 3, NR);
	track_close(t);
}

static void test_intent_damage(void **state)
{
	struct fx *f = *state;

	damaged_reopen(f, "intent", 0, 0);  /* magic */
	damaged_reopen(f, "intent", 16, 0); /* region_grains */
	damaged_reopen(f, "intent", 24, 0); /* nr_regions */
	damaged_reopen(f, "intent", 40, 0); /* padding, under the CRC */
	damaged_reopen(f, "intent", 60, 0); /* CRC */
	damaged_reopen(f, "intent", 63, 1); /* truncated */
	damaged_reopen(f, "intent", 0, 2);  /* extra byte */
	damaged_reopen(f, "intent", 0, 1);  /* empty */
}

static void test_intent_missing(void **state)
{
	struct fx *f = *state;
	struct track *t;
	char p[PATH_MAX];

	assert_int_equal(track_create(f->dir, NR, GRAIN), 0);
	path_of(p, sizeof(p), f->dir, "intent");
	assert_int_equal(unlink(p), 0);
	t = open_ok(f->dir, NR, GRAIN, 2, true);
	assert_all(t, 2, NR);
	track_close(t);
}

/* realistic grain (4 KiB: 16384 grains per region), a write across a region edge */
static void test_region_edge_4k(void **state)
{
	struct fx *f = *state;
	const uint64_t rg = 16384, nr = 2 * rg + 5;
	struct track *t, *c;
	uint64_t s;

	assert_int_equal(track_create(f->dir, nr, 4096), 0);
	t = open_ok(f->dir, nr, 4096, 1, false);
	s = track_intent_syncs(t);
	write_at(t, rg - 1, rg); /* straddles regions 0 and 1 */
	assert_int_equal(track_intent_syncs(t), s + 2);
	crash_copy(f);
	c = open_ok(f->crash, nr, 4096, 1, false);
	for (uint64_t g = 0; g < nr; g++)
		if (track_grain_era(c, g) != (g < 2 * rg ? 1u : 0u))
			fail_msg("grain %llu: era %u", (unsigned long long)g, track_grain_era(c, g));
	assert_int_equal(track_changed(c, 0, NULL), 2 * rg);
	track_close(c);
	track_close(t);
	t = open_ok(f->dir, nr, 4096, 1, false);
	assert_int_equal(track_changed(t, 0, NULL), 2);
	assert_int_equal(track_grain_era(t, rg - 1), 1);
	assert_int_equal(track_grain_era(t, rg), 1);
	track_close(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_fresh, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_reopen_exact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_replays_intents, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_after_intent_before_mark, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intent_during_commit_window, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intent_syncs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_changed_count_matches_scan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_missing_or_foreign, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intent_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_intent_missing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_region_edge_4k, setup, teardown),
	};

	log_set_level(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
