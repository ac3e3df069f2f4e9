/*
 * fuzz_track_intent.c — libFuzzer target for the write-intent loader
 * (core/track.h): a valid era map is created with track_create(), the input
 * becomes the intent file, then track_check() and track_open() load it.
 *
 * Input: 8 bytes of parameters, then the intent bytes.
 *   p[0] bit 0  recompute the header CRC (reach the checks behind it)
 *   p[1]        grain size 4 MiB, 8 MiB or 16 MiB (16, 8 or 4 grains per
 *               64 MiB region: many regions from a small map)
 *   p[2..3]     nr_grains - 1 (mod 512)
 *   p[4..7]     the catalog's current era (forced ≥ 1)
 *
 * Oracle (docs/tracking-format.md): trusted iff the intent file passes every
 * documented check (magic, version, geometry, CRC, length); trusted ⇒ every
 * grain of a marked region has the current era and the others keep era 0
 * (never a marked grain left clean: that would be a missed write);
 * untrusted ⇒ all grains have the current era.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "log.h"
#include "track.h"
#include "track_oracle.h"

static char dir[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LVL_ERR);
	if (fz_tmpdir(dir, sizeof(dir)))
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 8 || size > 8 + 4096)
		return 0;
	const uint8_t *p = data;
	size_t len = size - 8;
	uint32_t gb = 4u * 1024 * 1024 << (p[1] % 3);
	uint64_t nr = 1 + fz_le16(p + 2) % 512;
	uint32_t cur = fz_le32(p + 4);
	if (cur == 0)
		cur = 1;
	uint64_t rg = OR_REGION_BYTES / gb, nregions = (nr + rg - 1) / rg;

	uint8_t *intent = malloc(len ? len : 1);
	if (!intent)
		return 0;
	memcpy(intent, data + 8, len);
	if ((p[0] & 1) && len >= OR_HDR)
		fz_put_le32(intent + 60, util_crc32c(0, intent, 60));
	bool want_trusted = oracle_intent_ok(intent, len, rg, nregions);

	CHECK(track_create(dir, nr, gb) == 0, "track_create");
	CHECK(fz_write_file(dir, "intent", intent, len) == 0, "write intent");

	char why[256];
	uint64_t marked = ~0ull;
	int rc = track_check(dir, nr, gb, cur, &marked, why, sizeof(why));
	CHECK((rc == 0) == want_trusted, "track_check says %d, the format says %s (%s)", rc,
	      want_trusted ? "valid" : "damaged", why);
	if (rc == 0) {
		uint64_t n = 0;
		for (uint64_t r = 0; r < nregions; r++)
			n += oracle_region_marked(intent, r);
		CHECK(marked == n, "track_check: %llu marked regions, the file has %llu",
		      (unsigned long long)marked, (unsigned long long)n);
	} else {
		CHECK(why[0], "track_check: no reason given");
	}

	struct track *t = NULL;
	bool untrusted = false;
	rc = track_open(dir, nr, gb, cur, &t, &untrusted, why, sizeof(why));
	CHECK(rc == 0, "track_open failed: %d", rc);
	CHECK(untrusted == !want_trusted, "track_open trusts=%d, the format says %s (%s)",
	      !untrusted, want_trusted ? "valid" : "damaged", why);
	for (uint64_t g = 0; g < nr; g++) {
		uint32_t want = cur;
		if (!untrusted && !oracle_region_marked(intent, g / rg))
			want = 0;
		CHECK(track_grain_era(t, g) == want, "grain %llu (region %llu) era %u, want %u",
		      (unsigned long long)g, (unsigned long long)(g / rg), track_grain_era(t, g),
		      want);
	}
	track_close(t);
	marked = ~0ull;
	rc = track_check(dir, nr, gb, cur, &marked, why, sizeof(why));
	CHECK(rc == 0 && marked == 0, "state after track_open: rc %d marked %llu (%s)", rc,
	      (unsigned long long)marked, why);
	free(intent);
	return 0;
}
