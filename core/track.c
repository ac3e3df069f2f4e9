/*
 * track.c — see track.h. On-disk formats (little-endian):
 *
 * era.map: struct map_hdr (64 bytes) then nr_grains × u32 era.
 * intent:  struct intent_hdr (64 bytes) then ceil(nr_regions/8) bytes of bits.
 */
#include "track.h"

#include <endian.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define LOG_PREFIX "track"

#define MAP_MAGIC "ACMERA01"
#define INTENT_MAGIC "ACMINT01"
#define FORMAT_VERSION 1
#define REGION_BYTES (64ULL * ACM_MiB)

struct map_hdr {
	char magic[8];
	uint32_t version;
	uint32_t grain_bytes;
	uint64_t nr_grains;
	uint32_t era;
	uint32_t data_crc;
	uint64_t seq;
	uint8_t pad[20];
	uint32_t hdr_crc; /* over the 60 bytes before it */
};
_Static_assert(sizeof(struct map_hdr) == 64, "map header is 64 bytes");

struct intent_hdr {
	char magic[8];
	uint32_t version;
	uint32_t pad0;
	uint64_t region_grains;
	uint64_t nr_regions;
	uint8_t pad[28];
	uint32_t hdr_crc;
};
_Static_assert(sizeof(struct intent_hdr) == 64, "intent header is 64 bytes");

struct track {
	char map_path[PATH_MAX];
	char intent_path[PATH_MAX];
	uint64_t nr_grains;
	uint32_t grain_bytes;
	_Atomic uint32_t *era;
	_Atomic uint32_t cur;
	uint64_t seq;
	uint32_t *snap; /* commit buffer (little-endian eras), guarded by commit_lock */
	uint32_t snap_era;
	uint32_t committed_era; /* era of the last durable map */
	bool committed;		/* a map was committed by this process */
	pthread_mutex_t commit_lock;

	int intent_fd;
	uint64_t region_grains, nr_regions;
	_Atomic uint64_t *mem_bits; /* marked since the last snapshot; set only once durable */
	uint8_t *disk_bits;	    /* what the intent file holds; guarded by intent_lock */
	pthread_mutex_t intent_lock;
	atomic_uint_fast64_t intent_syncs;

	/* Era histogram: how many grains hold each era, so that "how many grains
	 * changed since base" (Update %, read on every open of a table) costs the
	 * number of live eras instead of a scan of the map. Open addressing;
	 * keys change only in track_open and track_set_era, which run with no
	 * track_mark at the same time (the barrier's write side); counts change
	 * in track_mark with atomics. hist_ok goes false if an era is ever
	 * missing (cannot happen by design; then the scan answers). */
	uint32_t *hkey;		/* era + 1; 0 = empty slot */
	_Atomic uint64_t *hcnt;
	uint32_t hcap;		/* power of two */
	atomic_bool hist_ok;
};

static uint64_t region_grains_for(uint32_t grain_bytes)
{
	return REGION_BYTES / grain_bytes;
}

static void paths(struct track *t, const char *dir)
{
	snprintf(t->map_path, sizeof(t->map_path), "%s/era.map", dir);
	snprintf(t->intent_path, sizeof(t->intent_path), "%s/intent", dir);
}

static void intent_hdr_fill(struct intent_hdr *h, uint64_t region_grains, uint64_t nr_regions)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, INTENT_MAGIC, 8);
	h->version = htole32(FORMAT_VERSION);
	h->region_grains = htole64(region_grains);
	h->nr_regions = htole64(nr_regions);
	h->hdr_crc = htole32(util_crc32c(0, h, offsetof(struct intent_hdr, hdr_crc)));
}

/* write map buffer `le_eras` atomically */
static int map_write(const char *path, const uint32_t *le_eras, uint64_t nr_grains,
		     uint32_t grain_bytes, uint32_t era, uint64_t seq)
{
	size_t dlen = (size_t)nr_grains * 4;
	char *buf = malloc(sizeof(struct map_hdr) + dlen);
	struct map_hdr h;
	int rc;

	if (!buf)
		return -ENOMEM;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, MAP_MAGIC, 8);
	h.version = htole32(FORMAT_VERSION);
	h.grain_bytes = htole32(grain_bytes);
	h.nr_grains = htole64(nr_grains);
	h.era = htole32(era);
	h.seq = htole64(seq);
	h.data_crc = htole32(util_crc32c(0, le_eras, dlen));
	h.hdr_crc = htole32(util_crc32c(0, &h, offsetof(struct map_hdr, hdr_crc)));
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), le_eras, dlen);
	rc = util_write_file_atomic(IO_TRACK, path, buf, sizeof(h) + dlen);
	free(buf);
	return rc;
}

int track_create(const char *dir, uint64_t nr_grains, uint32_t grain_bytes)
{
	struct track t;
	uint32_t *zero = calloc(nr_grains ? nr_grains : 1, 4);
	uint64_t rg = region_grains_for(grain_bytes);
	uint64_t nr = (nr_grains + rg - 1) / rg;
	struct intent_hdr ih;
	size_t blen = (size_t)(nr + 7) / 8;
	char *ibuf;
	int rc;

	if (!zero)
		return -ENOMEM;
	paths(&t, dir);
	rc = map_write(t.map_path, zero, nr_grains, grain_bytes, 0, 0);
	free(zero);
	if (rc)
		return rc;
	ibuf = calloc(1, sizeof(ih) + blen);
	if (!ibuf)
		return -ENOMEM;
	intent_hdr_fill(&ih, rg, nr);
	memcpy(ibuf, &ih, sizeof(ih));
	rc = util_write_file_atomic(IO_TRACK, t.intent_path, ibuf, sizeof(ih) + blen);
	free(ibuf);
	return rc;
}

static int map_load(struct track *t, char *why, size_t whylen)
{
	char *buf = NULL;
	size_t len;
	struct map_hdr h;
	int rc = util_read_file(IO_TRACK, t->map_path, &buf, &len);

	if (rc) {
		snprintf(why, whylen, "era map unreadable: %s", strerror(-rc));
		return -EUCLEAN;
	}
	rc = -EUCLEAN;
	if (len < sizeof(h)) {
		snprintf(why, whylen, "era map truncated");
		goto out;
	}
	memcpy(&h, buf, sizeof(h));
	if (memcmp(h.magic, MAP_MAGIC, 8) || le32toh(h.version) != FORMAT_VERSION ||
	    le32toh(h.hdr_crc) != util_crc32c(0, &h, offsetof(struct map_hdr, hdr_crc))) {
		snprintf(why, whylen, "era map header damaged");
		goto out;
	}
	if (le64toh(h.nr_grains) != t->nr_grains || le32toh(h.grain_bytes) != t->grain_bytes ||
	    len != sizeof(h) + t->nr_grains * 4) {
		snprintf(why, whylen, "era map geometry does not match the volume");
		goto out;
	}
	if (le32toh(h.data_crc) != util_crc32c(0, buf + sizeof(h), (size_t)t->nr_grains * 4)) {
		snprintf(why, whylen, "era map checksum mismatch");
		goto out;
	}
	if (le32toh(h.era) > atomic_load(&t->cur)) {
		snprintf(why, whylen, "era map is newer than the catalog");
		goto out;
	}
	for (uint64_t g = 0; g < t->nr_grains; g++) {
		uint32_t e;
		memcpy(&e, buf + sizeof(h) + g * 4, 4);
		atomic_store_explicit(&t->era[g], le32toh(e), memory_order_relaxed);
	}
	t->seq = le64toh(h.seq);
	rc = 0;
out:
	free(buf);
	return rc;
}

/* returns number of regions marked, or -EUCLEAN */
static int64_t intent_load(struct track *t, char *why, size_t whylen)
{
	char *buf = NULL;
	size_t len, blen = (size_t)(t->nr_regions + 7) / 8;
	struct intent_hdr h;
	int64_t marked = 0;
	int rc = util_read_file(IO_TRACK, t->intent_path, &buf, &len);

	if (rc) {
		snprintf(why, whylen, "intent file unreadable: %s", strerror(-rc));
		return -EUCLEAN;
	}
	memcpy(&h, buf, len < sizeof(h) ? len : sizeof(h));
	if (len != sizeof(h) + blen || memcmp(h.magic, INTENT_MAGIC, 8) ||
	    le32toh(h.version) != FORMAT_VERSION ||
	    le32toh(h.hdr_crc) != util_crc32c(0, &h, offsetof(struct intent_hdr, hdr_crc)) ||
	    le64toh(h.nr_regions) != t->nr_regions ||
	    le64toh(h.region_grains) != t->region_grains) {
		free(buf);
		snprintf(why, whylen, "intent file damaged");
		return -EUCLEAN;
	}
	uint32_t cur = atomic_load(&t->cur);
	for (uint64_t r = 0; r < t->nr_regions; r++) {
		if (!(buf[sizeof(h) + r / 8] & (1u << (r % 8))))
			continue;
		marked++;
		uint64_t end = (r + 1) * t->region_grains;
		for (uint64_t g = r * t->region_grains; g < end && g < t->nr_grains; g++)
			atomic_store_explicit(&t->era[g], cur, memory_order_relaxed);
	}
	free(buf);
	return marked;
}

/* ---- era histogram (see struct track) ---- */

static uint32_t hist_slot0(const struct track *t, uint32_t era)
{
	return (era * 0x9e3779b1u) & (t->hcap - 1);
}

/* slot of era, or -1 */
static long hist_find(const struct track *t, uint32_t era)
{
	for (uint32_t i = 0, s = hist_slot0(t, era); i < t->hcap; i++, s = (s + 1) & (t->hcap - 1)) {
		if (t->hkey[s] == era + 1)
			return s;
		if (!t->hkey[s])
			return -1;
	}
	return -1;
}

/* exclusive (no track_mark running): slot of era, inserted with count 0 */
static long hist_insert(struct track *t, uint32_t era)
{
	long s = era == UINT32_MAX ? -1 : hist_find(t, era);

	if (s >= 0 || era == UINT32_MAX)
		return s;
	for (uint32_t i = 0, k = hist_slot0(t, era); i < t->hcap; i++, k = (k + 1) & (t->hcap - 1))
		if (!t->hkey[k]) {
			t->hkey[k] = era + 1;
			atomic_store(&t->hcnt[k], 0);
			return k;
		}
	return -1;
}

/* exclusive: rebuild from the map with room for twice the live eras plus the
 * current one; on failure the histogram is off (the scan answers) */
static void hist_rebuild(struct track *t)
{
	uint32_t cap = 64, live = 0;

	if (t->hkey)
		for (uint32_t i = 0; i < t->hcap; i++)
			live += t->hkey[i] && atomic_load(&t->hcnt[i]) ? 1 : 0;
	else
		live = 1;
	while (cap < 4 * (live + 1) && cap < (1u << 24))
		cap *= 2;
	free(t->hkey);
	free(t->hcnt);
	t->hcap = cap;
	t->hkey = calloc(cap, sizeof(*t->hkey));
	t->hcnt = calloc(cap, sizeof(*t->hcnt));
	bool ok = t->hkey && t->hcnt;
	for (uint64_t g = 0; ok && g < t->nr_grains; g++) {
		long s = hist_insert(t, atomic_load_explicit(&t->era[g], memory_order_relaxed));
		if (s < 0)
			ok = false;
		else
			atomic_fetch_add_explicit(&t->hcnt[s], 1, memory_order_relaxed);
	}
	ok = ok && hist_insert(t, atomic_load(&t->cur)) >= 0;
	atomic_store(&t->hist_ok, ok);
}

static void hist_move(struct track *t, uint32_t from, uint32_t to)
{
	long a = hist_find(t, from), b = hist_find(t, to);

	if (a < 0 || b < 0) {
		atomic_store(&t->hist_ok, false);
		return;
	}
	atomic_fetch_sub_explicit(&t->hcnt[a], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&t->hcnt[b], 1, memory_order_relaxed);
}

int track_open(const char *dir, uint64_t nr_grains, uint32_t grain_bytes, uint32_t cur_era,
	       struct track **out, bool *untrusted, char *why, size_t whylen)
{
	struct track *t = calloc(1, sizeof(*t));
	int rc = -ENOMEM;
	int64_t marked;

	*untrusted = false;
	why[0] = 0;
	if (!t)
		return -ENOMEM;
	paths(t, dir);
	t->nr_grains = nr_grains;
	t->grain_bytes = grain_bytes;
	t->region_grains = region_grains_for(grain_bytes);
	t->nr_regions = (nr_grains + t->region_grains - 1) / t->region_grains;
	atomic_init(&t->cur, cur_era);
	pthread_mutex_init(&t->intent_lock, NULL);
	pthread_mutex_init(&t->commit_lock, NULL);
	t->intent_fd = -1;
	t->era = calloc(nr_grains ? nr_grains : 1, sizeof(*t->era));
	t->snap = malloc((nr_grains ? nr_grains : 1) * 4);
	t->mem_bits = calloc(bitmap_words(t->nr_regions) + 1, 8);
	t->disk_bits = calloc((t->nr_regions + 7) / 8 + 1, 1);
	if (!t->era || !t->snap || !t->mem_bits || !t->disk_bits)
		goto out_free;

	if (map_load(t, why, whylen)) {
		*untrusted = true;
	} else {
		marked = intent_load(t, why, whylen);
		if (marked < 0)
			*untrusted = true;
		else if (marked > 0)
			log_info("%s: %lld intent region(s) were marked: their grains count as "
				 "written", dir, (long long)marked);
	}
	if (*untrusted) {
		for (uint64_t g = 0; g < nr_grains; g++)
			atomic_store_explicit(&t->era[g], cur_era, memory_order_relaxed);
		/* rebuild a clean intent file */
		struct intent_hdr ih;
		size_t blen = (size_t)(t->nr_regions + 7) / 8;
		char *ibuf = calloc(1, sizeof(ih) + blen);
		if (!ibuf)
			goto out_free;
		intent_hdr_fill(&ih, t->region_grains, t->nr_regions);
		memcpy(ibuf, &ih, sizeof(ih));
		rc = util_write_file_atomic(IO_TRACK, t->intent_path, ibuf, sizeof(ih) + blen);
		free(ibuf);
		if (rc)
			goto out_free;
	}
	t->intent_fd = open(t->intent_path, O_RDWR | O_CLOEXEC);
	if (t->intent_fd < 0) {
		rc = -errno;
		goto out_free;
	}
	hist_rebuild(t);
	/* the intents we replayed stay on disk until this commit makes the map durable */
	memset(t->disk_bits, 0xff, (t->nr_regions + 7) / 8);
	track_snapshot(t);
	if (track_commit(t)) {
		/* e.g. a full store: the old map and the marked intents stay on disk,
		 * which recovers to the same eras; the flusher retries later */
		log_warn("%s: could not rewrite the era map at load; the intent marks stay",
			 dir);
		for (size_t i = 0; i < bitmap_words(t->nr_regions); i++)
			atomic_store(&t->mem_bits[i], ~0ULL);
	}
	*out = t;
	return 0;
out_free:
	track_close(t);
	return rc;
}

void track_close(struct track *t)
{
	if (!t)
		return;
	if (t->intent_fd >= 0) {
		track_snapshot(t);
		if (track_commit(t))
			log_warn("%s: final flush failed; intents stay marked", t->map_path);
		close(t->intent_fd);
	}
	free(t->era);
	free(t->hkey);
	free(t->hcnt);
	free(t->snap);
	free(t->mem_bits);
	free(t->disk_bits);
	pthread_mutex_destroy(&t->intent_lock);
	pthread_mutex_destroy(&t->commit_lock);
	free(t);
}

int track_intent(struct track *t, uint64_t g0, uint64_t g1)
{
	uint64_t r0 = g0 / t->region_grains, r1 = g1 / t->region_grains;
	int rc = 0;

	for (uint64_t r = r0; r <= r1; r++) {
		if (bitmap_test(t->mem_bits, r))
			continue;
		pthread_mutex_lock(&t->intent_lock);
		if (!(t->disk_bits[r / 8] & (1u << (r % 8)))) {
			uint8_t b = t->disk_bits[r / 8] | (uint8_t)(1u << (r % 8));
			rc = util_pwrite_full(IO_TRACK, t->intent_fd, &b, 1,
					      sizeof(struct intent_hdr) + r / 8);
			if (!rc && io_fdatasync(IO_TRACK, t->intent_fd))
				rc = -errno;
			if (rc) {
				pthread_mutex_unlock(&t->intent_lock);
				log_err("%s: intent mark failed: %s", t->intent_path,
					strerror(-rc));
				return rc;
			}
			t->disk_bits[r / 8] = b;
			atomic_fetch_add(&t->intent_syncs, 1);
		}
		bitmap_set(t->mem_bits, r);
		pthread_mutex_unlock(&t->intent_lock);
	}
	return 0;
}

void track_mark(struct track *t, uint64_t g0, uint64_t g1)
{
	uint32_t e = atomic_load_explicit(&t->cur, memory_order_relaxed);

	for (uint64_t g = g0; g <= g1 && g < t->nr_grains; g++) {
		/* most writes hit grains already in the current era: just a load */
		if (atomic_load_explicit(&t->era[g], memory_order_relaxed) == e)
			continue;
		uint32_t old = atomic_exchange_explicit(&t->era[g], e, memory_order_relaxed);
		if (old != e)
			hist_move(t, old, e);
	}
}

uint32_t track_era(const struct track *t)
{
	return atomic_load(&t->cur);
}

void track_set_era(struct track *t, uint32_t era)
{
	atomic_store(&t->cur, era);
	/* exclusive (the barrier's write side): the new era gets its slot now,
	 * and the table is compacted when it fills with eras no grain holds */
	if (!atomic_load(&t->hist_ok))
		return;
	uint32_t used = 0;
	for (uint32_t i = 0; i < t->hcap; i++)
		used += t->hkey[i] != 0;
	if (4 * (used + 1) > 3 * t->hcap || hist_insert(t, era) < 0)
		hist_rebuild(t);
}

uint32_t track_grain_era(const struct track *t, uint64_t g)
{
	return atomic_load_explicit(&t->era[g], memory_order_relaxed);
}

void track_snapshot(struct track *t)
{
	pthread_mutex_lock(&t->commit_lock);
	for (uint64_t g = 0; g < t->nr_grains; g++)
		t->snap[g] = htole32(atomic_load_explicit(&t->era[g], memory_order_relaxed));
	t->snap_era = atomic_load(&t->cur);
	for (size_t i = 0; i < bitmap_words(t->nr_regions); i++)
		atomic_store(&t->mem_bits[i], 0);
	/* commit_lock stays held until track_commit */
}

int track_commit(struct track *t)
{
	int rc;
	size_t blen = (size_t)(t->nr_regions + 7) / 8;

	rc = map_write(t->map_path, t->snap, t->nr_grains, t->grain_bytes, t->snap_era, ++t->seq);
	if (!rc) {
		t->committed = true;
		t->committed_era = t->snap_era;
	}
	if (rc) {
		log_err("%s: era map write failed: %s", t->map_path, strerror(-rc));
		goto out;
	}
	pthread_mutex_lock(&t->intent_lock);
	uint8_t *nb = calloc(blen + 1, 1);
	if (!nb) {
		rc = -ENOMEM;
		goto out_unlock;
	}
	for (uint64_t r = 0; r < t->nr_regions; r++)
		if (bitmap_test(t->mem_bits, r))
			nb[r / 8] |= (uint8_t)(1u << (r % 8));
	if (memcmp(nb, t->disk_bits, blen)) {
		rc = util_pwrite_full(IO_TRACK, t->intent_fd, nb, blen, sizeof(struct intent_hdr));
		if (!rc && io_fdatasync(IO_TRACK, t->intent_fd))
			rc = -errno;
		if (!rc)
			memcpy(t->disk_bits, nb, blen);
	}
	free(nb);
out_unlock:
	pthread_mutex_unlock(&t->intent_lock);
out:
	pthread_mutex_unlock(&t->commit_lock);
	return rc;
}

uint64_t track_changed(const struct track *t, uint32_t base, _Atomic uint64_t *bm)
{
	uint64_t n = 0;

	if (!bm && atomic_load(&((struct track *)t)->hist_ok)) {
		for (uint32_t i = 0; i < t->hcap; i++)
			if (t->hkey[i] > base + 1ull)
				n += atomic_load_explicit(&t->hcnt[i], memory_order_relaxed);
		/* counts of concurrent writes may be caught half moved */
		return n > t->nr_grains ? t->nr_grains : n;
	}

	for (uint64_t g = 0; g < t->nr_grains; g++) {
		if (atomic_load_explicit(&t->era[g], memory_order_relaxed) > base) {
			n++;
			if (bm)
				bitmap_set(bm, g);
		}
	}
	return n;
}

bool track_dirty(struct track *t)
{
	bool dirty = !t->committed || t->committed_era != atomic_load(&t->cur);

	for (size_t i = 0; !dirty && i < bitmap_words(t->nr_regions); i++)
		dirty = atomic_load(&t->mem_bits[i]) != 0;
	return dirty;
}

uint64_t track_intent_syncs(const struct track *t)
{
	return atomic_load(&((struct track *)t)->intent_syncs);
}

int track_check(const char *dir, uint64_t nr_grains, uint32_t grain_bytes, uint32_t cur_era,
		uint64_t *marked_regions, char *why, size_t whylen)
{
	struct track t;
	int64_t marked;
	int rc = 0;

	memset(&t, 0, sizeof(t));
	why[0] = 0;
	paths(&t, dir);
	t.nr_grains = nr_grains;
	t.grain_bytes = grain_bytes;
	t.region_grains = region_grains_for(grain_bytes);
	t.nr_regions = (nr_grains + t.region_grains - 1) / t.region_grains;
	atomic_init(&t.cur, cur_era);
	t.era = calloc(nr_grains ? nr_grains : 1, sizeof(*t.era));
	if (!t.era)
		return -ENOMEM;
	if (map_load(&t, why, whylen)) {
		rc = -EUCLEAN;
	} else {
		marked = intent_load(&t, why, whylen);
		if (marked < 0)
			rc = -EUCLEAN;
		else if (marked_regions)
			*marked_regions = (uint64_t)marked;
	}
	free(t.era);
	return rc;
}
