/*
 * fuzz_track_map.c — libFuzzer target for the era map loader (core/track.h):
 * the input becomes STORE/vol/<id>/era.map in a scratch directory next to a
 * valid intent file, then track_check() and track_open() load it.
 *
 * Input: 8 bytes of parameters, then the era.map bytes.
 *   p[0] bit 0  recompute both CRCs of the map (reach the checks behind them)
 *        bit 1  the volume has one grain more than the map says (geometry)
 *        bit 2  mark intent regions from p[1]
 *   p[1]        intent bits (regions 0..7)
 *   p[4..7]     the catalog's current era
 * The volume geometry is the map's own (grain_bytes if it is a valid grain,
 * else 64 KiB; nr_grains if it fits 2^16, else what the length implies).
 *
 * Oracle (docs/tracking-format.md): both loaders trust the map iff it passes
 * every documented check; untrusted ⇒ every grain has the current era;
 * trusted ⇒ every grain has its map era, or the current era inside a marked
 * intent region; after track_open the files on disk verify and carry no
 * marks. Never a crash, never a trusted map that fails a check.
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
	if (size < 8 || size - 8 > OR_HDR + 4u * (1u << 16))
		return 0;
	const uint8_t *p = data;
	size_t len = size - 8;
	uint8_t *map = malloc(len ? len : 1);
	if (!map)
		return 0;
	memcpy(map, data + 8, len);
	if (p[0] & 1)
		oracle_map_fix(map, len);

	uint32_t cur = fz_le32(p + 4);
	uint32_t gb = 65536;
	uint64_t nr = len > OR_HDR ? (len - OR_HDR) / 4 : 0;
	if (len >= OR_HDR) {
		uint32_t g = fz_le32(map + 12);
		if (g >= 4096 && g <= 16u * 1024 * 1024 && !(g & (g - 1)))
			gb = g;
		if (fz_le64(map + 16) <= (1u << 16))
			nr = fz_le64(map + 16);
	}
	if (p[0] & 2)
		nr++;
	uint64_t rg = OR_REGION_BYTES / gb, nregions = (nr + rg - 1) / rg;

	size_t ilen = OR_HDR + (nregions + 7) / 8;
	uint8_t *intent = calloc(1, ilen);
	if (!intent)
		goto out;
	oracle_intent_hdr(intent, rg, nregions);
	if ((p[0] & 4) && nregions)
		for (uint64_t r = 0; r < nregions && r < 8; r++)
			if (p[1] & (1u << r))
				intent[OR_HDR + r / 8] |= (uint8_t)(1u << (r % 8));

	bool want_trusted = oracle_map_ok(map, len, nr, gb, cur);
	CHECK(fz_write_file(dir, "era.map", map, len) == 0, "write era.map");
	CHECK(fz_write_file(dir, "intent", intent, ilen) == 0, "write intent");

	char why[256];
	uint64_t marked = ~0ull;
	int rc = track_check(dir, nr, gb, cur, &marked, why, sizeof(why));
	CHECK((rc == 0) == want_trusted, "track_check says %d, the format says %s (%s)", rc,
	      want_trusted ? "valid" : "damaged", why);
	if (rc)
		CHECK(why[0], "track_check: no reason given");

	struct track *t = NULL;
	bool untrusted = false;
	rc = track_open(dir, nr, gb, cur, &t, &untrusted, why, sizeof(why));
	CHECK(rc == 0, "track_open failed: %d", rc);
	CHECK(untrusted == !want_trusted, "track_open trusts=%d, the format says %s (%s)",
	      !untrusted, want_trusted ? "valid" : "damaged", why);
	if (untrusted)
		CHECK(why[0], "untrusted without a reason");
	for (uint64_t g = 0; g < nr; g++) {
		uint32_t want = cur;
		if (!untrusted && !oracle_region_marked(intent, g / rg))
			want = fz_le32(map + OR_HDR + g * 4);
		CHECK(track_grain_era(t, g) == want, "grain %llu era %u, want %u",
		      (unsigned long long)g, track_grain_era(t, g), want);
	}
	track_close(t);

	/* the loader rewrote a clean, trusted state */
	marked = ~0ull;
	rc = track_check(dir, nr, gb, cur, &marked, why, sizeof(why));
	CHECK(rc == 0 && marked == 0, "state after track_open: rc %d marked %llu (%s)", rc,
	      (unsigned long long)marked, why);
out:
	free(intent);
	free(map);
	return 0;
}
