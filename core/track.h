/*
 * track.h — per-volume write tracking with eras and write-intent regions
 * (DESIGN.md §2, docs/tracking-format.md).
 *
 * Each grain g carries era[g], the volume era of its last write. A backup pair
 * remembers `base`, the era at its last logical copy; the grains it must copy
 * are { g : era[g] > base }. One write costs the same whatever the number of
 * pairs.
 *
 * Durability: before a write to a region (a few MiB to 64 MiB of grains) not
 * yet marked, track_intent() sets the region's bit in STORE/.../intent and
 * fdatasyncs it. track_snapshot()+track_commit() write the era map atomically
 * (tmp+rename, CRC32C) and then clear the intent bits. After a crash,
 * track_open() gives every grain of every marked region the current era: a
 * superset of the truth, never a miss. A map that fails its checks makes
 * track_open() report untrusted: every grain gets the current era and the
 * caller must make every pair of the volume do a full copy.
 *
 * Locking: track_mark/track_intent are called on the write path under the
 * volume's barrier (read side); track_snapshot needs the barrier's write side;
 * track_commit runs without the barrier. intent_lock serialises intent I/O.
 */
#ifndef ACMFS_TRACK_H
#define ACMFS_TRACK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct track;

/* Create fresh tracking files in dir for a new volume (all grains era 0). */
int track_create(const char *dir, uint64_t nr_grains, uint32_t grain_bytes) ACM_MUST_USE;
/* Load; `cur_era` is the durable current era from the catalog. *untrusted is
 * set when the map was missing or damaged (reason in `why`). */
int track_open(const char *dir, uint64_t nr_grains, uint32_t grain_bytes, uint32_t cur_era,
	       struct track **out, bool *untrusted, char *why, size_t whylen) ACM_MUST_USE;
/* Flushes (if possible) and frees. */
void track_close(struct track *t);

/* Make grains [g0, g1] covered by a durable intent mark. */
int track_intent(struct track *t, uint64_t g0, uint64_t g1) ACM_MUST_USE;
/* era[g] = current era for g in [g0, g1]; call after track_intent. */
void track_mark(struct track *t, uint64_t g0, uint64_t g1);
uint32_t track_era(const struct track *t);
void track_set_era(struct track *t, uint32_t era);
uint32_t track_grain_era(const struct track *t, uint64_t g);

/* Under the barrier: copy the era map into the commit buffer, clear in-memory
 * intent bits. Then track_commit() (no barrier) makes it durable and clears
 * the durable intent bits. */
void track_snapshot(struct track *t);
int track_commit(struct track *t) ACM_MUST_USE;

/* how many grains have era > base; bm (if non-NULL) gets those bits OR'ed in.
 * Without bm the count comes from an era histogram (no scan); that form must
 * not run concurrently with track_set_era (the engine holds e->lock for both). */
uint64_t track_changed(const struct track *t, uint32_t base, _Atomic uint64_t *bm);

/* Read-only check of the files (for `acmfs --check`): 0 when both verify;
 * *marked_regions = intent regions left marked (an unclean stop). */
int track_check(const char *dir, uint64_t nr_grains, uint32_t grain_bytes, uint32_t cur_era,
		uint64_t *marked_regions, char *why, size_t whylen);

/* anything to flush? (intent regions marked since the last commit, or a new era) */
bool track_dirty(struct track *t);

/* test hook: count of intent fdatasyncs so far */
uint64_t track_intent_syncs(const struct track *t);

#endif
