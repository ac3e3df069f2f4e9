/*
 * track_oracle.h — an independent reading of docs/tracking-format.md for the
 * tracking fuzz targets: what a loader must accept, and the eras it must
 * then hold. Written from the document, not from core/track.c.
 */
#ifndef ACMFS_FUZZ_TRACK_ORACLE_H
#define ACMFS_FUZZ_TRACK_ORACLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "util.h"

#define OR_HDR 64u
#define OR_REGION_BYTES (64ull * 1024 * 1024)

/* era.map: magic, version, geometry, both CRCs, era not newer than the catalog */
static inline bool oracle_map_ok(const uint8_t *b, size_t len, uint64_t nr, uint32_t gb,
				 uint32_t cur)
{
	if (len < OR_HDR || len != OR_HDR + nr * 4)
		return false;
	if (memcmp(b, "ACMERA01", 8) || fz_le32(b + 8) != 1)
		return false;
	if (fz_le32(b + 60) != util_crc32c(0, b, 60))
		return false;
	if (fz_le32(b + 12) != gb || fz_le64(b + 16) != nr)
		return false;
	if (fz_le32(b + 28) != util_crc32c(0, b + OR_HDR, nr * 4))
		return false;
	return fz_le32(b + 24) <= cur;
}

static inline void oracle_map_fix(uint8_t *b, size_t len)
{
	if (len < OR_HDR)
		return;
	fz_put_le32(b + 28, util_crc32c(0, b + OR_HDR, len - OR_HDR));
	fz_put_le32(b + 60, util_crc32c(0, b, 60));
}

/* intent: magic, version, geometry, header CRC, exact length */
static inline bool oracle_intent_ok(const uint8_t *b, size_t len, uint64_t region_grains,
				    uint64_t nr_regions)
{
	if (len != OR_HDR + (nr_regions + 7) / 8)
		return false;
	if (memcmp(b, "ACMINT01", 8) || fz_le32(b + 8) != 1)
		return false;
	if (fz_le32(b + 60) != util_crc32c(0, b, 60))
		return false;
	return fz_le64(b + 16) == region_grains && fz_le64(b + 24) == nr_regions;
}

static inline void oracle_intent_hdr(uint8_t *b, uint64_t region_grains, uint64_t nr_regions)
{
	memset(b, 0, OR_HDR);
	memcpy(b, "ACMINT01", 8);
	fz_put_le32(b + 8, 1);
	fz_put_le64(b + 16, region_grains);
	fz_put_le64(b + 24, nr_regions);
	fz_put_le32(b + 60, util_crc32c(0, b, 60));
}

static inline bool oracle_region_marked(const uint8_t *intent, uint64_t r)
{
	return intent[OR_HDR + r / 8] & (1u << (r % 8));
}

#endif
