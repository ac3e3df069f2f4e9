/*
 * fill.h — instant recovery (issue 20): a volume whose content is a history's
 * image from the moment a fill starts, while the grains are copied into it in
 * the background, on their first read, or before a write that covers part of
 * one. `restore -i` fills a volume from one of its own histories, `volume
 * clone` a new volume from another volume's history.
 *
 * State. `todo` has a bit per grain whose content is still the source's (the
 * volume file holds anything there). Bits only ever clear. The durable copy
 * is STORE/vol/ID/fill.map (docs/fill-format.md): a header naming the source
 * and a bitmap; a bit is cleared on disk only after the volume file's grain
 * was made durable (fdatasync), so after a crash at any instant a grain reads
 * either from the volume file (filled, or written and synced since) or from
 * the source (its image) — never anything else. The catalog's volume state
 * is "filling" for as long as the map exists.
 *
 * Locks. v->fill is set and cleared under e->lock and the barrier's write
 * side; readers of it hold the barrier's read side, or a reference taken
 * under it (fill_get). Source reads (which may wait on an object store) are
 * done holding no lock; the result is applied under the grains' stripes,
 * where a grain still in `todo` gets it and one filled or written meanwhile
 * keeps what it has.
 */
#ifndef ACMFS_FILL_H
#define ACMFS_FILL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine.h"

struct engine;
struct vol;
struct history;
struct fill;

/* Under e->lock. Starts filling v from (src, version) on media kind (HIMG_DISK
 * or HIMG_TAPE): records the fill durably, marks the grains in v's tracking
 * and installs it. Drops and retakes e->lock (the source image is opened
 * without it); v must be held (refs) and marked restoring by the caller, so
 * that nothing else starts on it meanwhile. When src is v itself, grains
 * unchanged since the history's cut are not fetched (today's differential
 * restore rule). *grains gets the number of grains to fill. */
int fill_start(struct engine *e, struct vol *v, struct vol *src, uint64_t version,
	       enum himg_kind kind, uint64_t *grains, char *err, size_t errlen);

/* At mount (recover_volume, catalog transaction open): a volume in state
 * "filling" whose map is valid keeps filling (0, *resume set); else the
 * volume becomes needs-restore and the map goes. */
int fill_recover(struct engine *e, struct vol *v, bool *resume);
/* After all volumes are loaded (engine_start): pin the sources of resumed
 * fills and start their threads. */
void fill_resume_all(struct engine *e);
/* engine_close: stop the threads (they end with their state durable), then
 * release sources and free the fills. */
void fill_cancel_all(struct engine *e);
void fill_free_all(struct engine *e);
/* Under e->lock (dropped and retaken): v's fill ends unfinished, for a
 * volume being deleted. */
void fill_stop(struct engine *e, struct vol *v);
/* Under e->lock: v's own fill reads h (a live restore from v's history). */
bool fill_reads(struct vol *v, struct history *h);
/* Under e->lock: info's lines of a running fill (fill_source=, ...), if any. */
void fill_info(struct vol *v, struct sbuf *sb);

/* The data path (vol.c). fill_get: a reference to v's fill, or NULL; the
 * caller holds nothing (takes the barrier's read side briefly). */
struct fill *fill_get(struct vol *v);
void fill_put(struct fill *f);
/* whether any grain of [g0, g1] is still to fill */
bool fill_any(struct fill *f, uint64_t g0, uint64_t g1);
bool fill_todo(struct fill *f, uint64_t g);
/* Reads the source's grains [g0, g1] into buf ((g1-g0+1) grains, the last
 * clipped and zero-padded), no lock held. -EIO (logged) when the source
 * cannot be read. */
int fill_source_read(struct fill *f, uint64_t g0, uint64_t g1, void *buf);
/* Under the stripes of g: if g is still to fill, write its source content
 * (src: the grain's bytes) into the volume file and clear it. */
int fill_apply(struct fill *f, uint64_t g, const void *src);
int fill_apply_run(struct fill *f, uint64_t g0, uint64_t g1, const void *src);
/* Under the stripes of g, after a write that covered all of g: g holds the
 * writer's bytes now, not the source's. */
void fill_covered(struct fill *f, uint64_t g);
/* fsync of the volume while it fills: the volume file, then the map. */
int fill_sync(struct fill *f);
/* for tables: percent done, or -1 */
int fill_pct(struct vol *v);
/* a fill's source history: a message why it cannot go, or NULL (e->lock) */
const char *fill_pin_reason(struct vol *v, struct history *h, char *buf, size_t len);

#endif
