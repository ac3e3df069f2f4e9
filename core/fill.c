/*
 * fill.c — instant recovery: live restore and writable clones (fill.h).
 *
 * A fill runs one thread that walks `todo` from the start, reads runs of
 * grains still to fill from the source (RUN_BYTES at a time, the tape tier
 * told PREFETCH_BYTES ahead), and applies them under their stripes. Every
 * PERSIST_BYTES filled, and at every fsync of the volume, fill_sync makes
 * the volume file durable and then clears the map's bits of the grains
 * filled before it started. When the source fails, the thread waits (1 s,
 * doubling to 30 s) and tries again, for as long as the fill exists; reads
 * of grains still to fill fail with EIO meanwhile, and everything else
 * works.
 */
#include "fill.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine_int.h"
#include "log.h"

#define LOG_PREFIX "fill"

#define MAP_MAGIC	"ACMFILL1"
#define MAP_FORMAT	1
#define MAP_HDR_BYTES	72
#define MAP_BITS_OFF	4096
#define RUN_BYTES	(4 * ACM_MiB)
#define PREFETCH_BYTES	(64 * ACM_MiB) /* within the tape image cache: more is evicted unread */
#define PERSIST_BYTES	(256 * ACM_MiB)
#define PERSIST_MS	1000
#define BACKOFF_MIN_MS	1000
#define BACKOFF_MAX_MS	30000
#define OPEN_RETRY_MS	1000 /* a failed source open is not retried sooner by readers */

/* ACMFS_FILL_RATE=BYTES_PER_SECOND caps the background fill (reads that
 * fetch what they need are not capped): for sites where the fill must not
 * crowd out the applications' I/O, and for tests that watch a fill run. */
static uint64_t fill_rate(void)
{
	const char *s = getenv("ACMFS_FILL_RATE");
	char *end;
	unsigned long long r;

	if (!s || !*s)
		return 0;
	errno = 0;
	r = strtoull(s, &end, 10);
	return errno || *end ? 0 : (uint64_t)r;
}

struct fill {
	struct vol *v;
	struct vol *src;	/* the source's volume (v itself for restore -i) */
	struct history *h;	/* the source history, pinned (readers, fills) */
	uint64_t version;
	enum himg_kind kind;	/* HIMG_DISK or HIMG_TAPE */
	uint64_t nr_grains;
	_Atomic uint64_t *todo; /* set: still the source's */
	uint64_t *disk;		/* the map's bits as on disk; under persist_lock */
	uint64_t total;
	atomic_uint_fast64_t remaining;
	atomic_uint_fast64_t since_persist; /* bytes filled since the last persist */
	atomic_int refs;
	atomic_int cancel;
	bool pinned;		/* h->readers/fills and src->refs taken */
	bool thread;		/* its thread runs (under e->lock) */
	int map_fd;
	char map_path[PATH_MAX];
	pthread_mutex_t persist_lock;
	pthread_mutex_t src_lock; /* opening im */
	struct himg *im;	/* NULL until opened (or after an open failed) */
	int64_t src_id;		/* read from the map, until resume_one finds src */
	int64_t open_failed_ms;
	atomic_uint_fast64_t src_errors;
};

struct map_hdr {
	char magic[8];
	uint32_t format, grain_bytes;
	uint64_t nr_grains, size_bytes;
	int64_t src_vol_id;
	uint64_t version;
	uint32_t kind, pad;
	uint64_t total;
	uint32_t pad2, crc; /* crc32c of the 68 bytes before it */
};
_Static_assert(sizeof(struct map_hdr) == MAP_HDR_BYTES, "fill map header");

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void map_path(struct vol *v, char *buf, size_t len)
{
	snprintf(buf, len, "%s/fill.map", v->dir);
}

/* ---------- lifetime ---------- */

static struct fill *fill_alloc(struct vol *v)
{
	struct fill *f = calloc(1, sizeof(*f));
	size_t words = bitmap_words(v->nr_grains) + 1;

	if (!f)
		return NULL;
	f->todo = calloc(words, sizeof(uint64_t));
	f->disk = calloc(words, sizeof(uint64_t));
	if (!f->todo || !f->disk) {
		free(f->todo);
		free(f->disk);
		free(f);
		return NULL;
	}
	f->v = v;
	f->nr_grains = v->nr_grains;
	f->map_fd = -1;
	atomic_init(&f->refs, 1);
	map_path(v, f->map_path, sizeof(f->map_path));
	pthread_mutex_init(&f->persist_lock, NULL);
	pthread_mutex_init(&f->src_lock, NULL);
	return f;
}

/* e->lock held */
static void pin(struct fill *f)
{
	f->h->readers++;
	f->h->fills++;
	f->src->refs++;
	f->pinned = true;
}

static void fill_free(struct fill *f)
{
	struct engine *e = f->v->e;

	if (f->im)
		himg_close(f->im);
	if (f->pinned) {
		pthread_mutex_lock(&e->lock);
		f->h->readers--;
		f->h->fills--;
		pthread_mutex_unlock(&e->lock);
		vol_put(f->src);
	}
	if (f->map_fd >= 0)
		close(f->map_fd);
	pthread_mutex_destroy(&f->persist_lock);
	pthread_mutex_destroy(&f->src_lock);
	free(f->todo);
	free(f->disk);
	free(f);
}

struct fill *fill_get(struct vol *v)
{
	struct fill *f;

	pthread_rwlock_rdlock(&v->barrier);
	f = v->fill;
	if (f)
		atomic_fetch_add(&f->refs, 1);
	pthread_rwlock_unlock(&v->barrier);
	return f;
}

void fill_put(struct fill *f)
{
	if (f && atomic_fetch_sub(&f->refs, 1) == 1)
		fill_free(f);
}

/* ---------- the map ---------- */

static void hdr_fill(struct fill *f, struct map_hdr *hd)
{
	struct vol *v = f->v;

	memset(hd, 0, sizeof(*hd));
	memcpy(hd->magic, MAP_MAGIC, 8);
	hd->format = MAP_FORMAT;
	hd->grain_bytes = v->row.grain_bytes;
	hd->nr_grains = v->nr_grains;
	hd->size_bytes = v->row.size_bytes;
	hd->src_vol_id = f->src->row.id;
	hd->version = f->version;
	hd->kind = f->kind == HIMG_TAPE ? 2 : 1;
	hd->total = f->total;
	hd->crc = util_crc32c(0, hd, offsetof(struct map_hdr, crc));
}

/* the map, new: written whole (tmp, fsync, rename, directory fsync) */
static int map_create(struct fill *f)
{
	size_t words = bitmap_words(f->nr_grains), len = MAP_BITS_OFF + words * 8;
	char *buf = calloc(1, len);
	int rc;

	if (!buf)
		return -ENOMEM;
	hdr_fill(f, (struct map_hdr *)buf);
	for (size_t w = 0; w < words; w++) {
		f->disk[w] = atomic_load(&f->todo[w]);
		memcpy(buf + MAP_BITS_OFF + w * 8, &f->disk[w], 8);
	}
	rc = util_write_file_atomic(IO_TRACK, f->map_path, buf, len);
	free(buf);
	if (rc)
		return rc;
	f->map_fd = open(f->map_path, O_RDWR | O_CLOEXEC);
	return f->map_fd < 0 ? -errno : 0;
}

/* Reads v's map into a new fill (not pinned). -EUCLEAN: not a valid map for v. */
static int map_load(struct vol *v, struct fill **out, int64_t *src_id)
{
	struct fill *f = fill_alloc(v);
	struct map_hdr hd;
	size_t words = bitmap_words(v->nr_grains);
	int rc;

	if (!f)
		return -ENOMEM;
	f->map_fd = open(f->map_path, O_RDWR | O_CLOEXEC);
	if (f->map_fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = util_pread_full(IO_TRACK, f->map_fd, &hd, sizeof(hd), 0);
	if (rc)
		goto fail;
	rc = -EUCLEAN;
	if (memcmp(hd.magic, MAP_MAGIC, 8) || hd.format != MAP_FORMAT ||
	    hd.crc != util_crc32c(0, &hd, offsetof(struct map_hdr, crc)) ||
	    hd.grain_bytes != v->row.grain_bytes || hd.nr_grains != v->nr_grains ||
	    hd.size_bytes != v->row.size_bytes || (hd.kind != 1 && hd.kind != 2) ||
	    hd.total > v->nr_grains)
		goto fail;
	struct stat st;
	if (fstat(f->map_fd, &st) || (uint64_t)st.st_size != MAP_BITS_OFF + words * 8)
		goto fail;
	rc = util_pread_full(IO_TRACK, f->map_fd, f->disk, words * 8, MAP_BITS_OFF);
	if (rc)
		goto fail;
	uint64_t n = 0;
	for (size_t w = 0; w < words; w++) {
		if (w == words - 1 && v->nr_grains % 64)
			f->disk[w] &= (1ULL << (v->nr_grains % 64)) - 1;
		atomic_store(&f->todo[w], f->disk[w]);
		n += (uint64_t)__builtin_popcountll(f->disk[w]);
	}
	f->version = hd.version;
	f->kind = hd.kind == 2 ? HIMG_TAPE : HIMG_DISK;
	f->total = hd.total;
	atomic_store(&f->remaining, n);
	*src_id = hd.src_vol_id;
	*out = f;
	return 0;
fail:
	fill_free(f);
	return rc;
}

int fill_sync(struct fill *f)
{
	struct vol *v = f->v;
	size_t words = bitmap_words(f->nr_grains);
	uint64_t *snap;
	int rc = 0;

	pthread_mutex_lock(&f->persist_lock);
	snap = malloc(words * 8 + 8);
	if (!snap) {
		rc = -ENOMEM;
		goto out;
	}
	/* the grains filled (or written) before this point ... */
	for (size_t w = 0; w < words; w++)
		snap[w] = atomic_load(&f->todo[w]);
	atomic_store(&f->since_persist, 0);
	/* ... are durable in the volume file after this one ... */
	if (io_fdatasync(IO_DATA, v->tv_fd)) {
		rc = -errno;
		goto out;
	}
	/* ... and only then leave the map */
	bool changed = false;
	for (size_t w = 0; w < words && !rc; w++) {
		uint64_t nw = f->disk[w] & snap[w];
		if (nw == f->disk[w])
			continue;
		rc = util_pwrite_full(IO_TRACK, f->map_fd, &nw, 8, MAP_BITS_OFF + w * 8);
		if (!rc) {
			f->disk[w] = nw;
			changed = true;
		}
	}
	if (!rc && changed && io_fdatasync(IO_TRACK, f->map_fd))
		rc = -errno;
out:
	pthread_mutex_unlock(&f->persist_lock);
	free(snap);
	if (rc)
		vol_log(v, "error: cannot record the fill's progress: %s", strerror(-rc));
	return rc;
}

/* ---------- the source ---------- */

static int source_image(struct fill *f, struct himg **im)
{
	int rc = 0;

	pthread_mutex_lock(&f->src_lock);
	if (!f->im) {
		if (f->open_failed_ms && now_ms() - f->open_failed_ms < OPEN_RETRY_MS) {
			rc = -EIO;
		} else {
			rc = himg_open(f->src, f->version, f->kind, &f->im);
			if (rc) {
				f->im = NULL;
				f->open_failed_ms = now_ms();
			}
		}
	}
	*im = f->im;
	pthread_mutex_unlock(&f->src_lock);
	return rc;
}

int fill_source_read(struct fill *f, uint64_t g0, uint64_t g1, void *buf)
{
	struct vol *v = f->v;
	uint64_t grain = v->row.grain_bytes, off = g0 * grain, len = (g1 - g0 + 1) * grain;
	struct himg *im;
	int rc;

	if (off + len > v->row.size_bytes) {
		memset((char *)buf + (v->row.size_bytes - off), 0, off + len - v->row.size_bytes);
		len = v->row.size_bytes - off;
	}
	rc = f->pinned ? source_image(f, &im) : -EIO; /* resumed, source not found yet */
	if (!rc) {
		ssize_t n = himg_read(im, buf, (size_t)len, off);
		rc = n < 0 ? (int)n : (uint64_t)n == len ? 0 : -EIO;
	}
	if (rc) {
		atomic_fetch_add(&f->src_errors, 1);
		vol_io_error(v, false, f->kind == HIMG_TAPE ? "the fill's tape source"
							    : "the fill's disk source",
			     f->version, off, -rc);
		return -EIO;
	}
	return 0;
}

/* ---------- applying ---------- */

static void grain_done(struct fill *f, uint64_t g, uint64_t bytes)
{
	if (!bitmap_clear(f->todo, g))
		return;
	atomic_fetch_add(&f->since_persist, bytes);
	uint64_t left = atomic_fetch_sub(&f->remaining, 1) - 1;
	uint64_t t = f->total ? f->total : 1;
	atomic_store(&f->v->restore_pct, (int)((t - (left < t ? left : t)) * 100 / t));
}

bool fill_todo(struct fill *f, uint64_t g)
{
	return g < f->nr_grains && bitmap_test(f->todo, g);
}

bool fill_any(struct fill *f, uint64_t g0, uint64_t g1)
{
	uint64_t g = bitmap_next(f->todo, f->nr_grains, g0);

	return g <= g1 && g < f->nr_grains;
}

/* [g0, g1] of the volume file from src (the source's grains g0..g1):
 * grains still to fill, consecutive and not zero, in one write; zero ones
 * as holes. Under the grains' stripes. */
int fill_apply_run(struct fill *f, uint64_t g0, uint64_t g1, const void *src)
{
	struct vol *v = f->v;
	uint64_t grain = v->row.grain_bytes, size = v->row.size_bytes;
	const char *p = src;
	int rc = 0;

	for (uint64_t g = g0; g <= g1 && !rc;) {
		if (!fill_todo(f, g)) {
			g++;
			continue;
		}
		uint64_t off = g * grain, len = off + grain > size ? size - off : grain;
		bool zero = util_is_zero(p + (g - g0) * grain, (size_t)len);
		uint64_t e = g;
		while (e + 1 <= g1 && fill_todo(f, e + 1)) {
			uint64_t o2 = (e + 1) * grain, l2 = o2 + grain > size ? size - o2 : grain;
			if (util_is_zero(p + (e + 1 - g0) * grain, (size_t)l2) != zero)
				break;
			e++;
		}
		uint64_t end = (e + 1) * grain < size ? (e + 1) * grain : size;
		if (zero)
			rc = fallocate(v->tv_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       (off_t)off, (off_t)(end - off))
				     ? -errno
				     : 0;
		else
			rc = util_pwrite_full(IO_DATA, v->tv_fd, p + (g - g0) * grain,
					      (size_t)(end - off), off);
		for (uint64_t x = g; !rc && x <= e; x++)
			grain_done(f, x, grain);
		g = e + 1;
	}
	return rc;
}

int fill_apply(struct fill *f, uint64_t g, const void *src)
{
	return fill_apply_run(f, g, g, src);
}

void fill_covered(struct fill *f, uint64_t g)
{
	if (g < f->nr_grains)
		grain_done(f, g, f->v->row.grain_bytes);
}

int fill_pct(struct vol *v)
{
	return atomic_load(&v->restore_pct);
}

const char *fill_pin_reason(struct vol *v, struct history *h, char *buf, size_t len)
{
	if (!h->fills)
		return NULL;
	for (struct vol *x = v->e->vols; x; x = x->next)
		if (x->fill && x->fill->h == h) {
			snprintf(buf, len, "version %llu of %s is the source of %s of %s (%d%% done)",
				 (unsigned long long)h->row.version, v->row.name,
				 x == v ? "the live restore" : "the clone", x->row.name,
				 atomic_load(&x->restore_pct));
			return buf;
		}
	snprintf(buf, len, "version %llu of %s is the source of a fill",
		 (unsigned long long)h->row.version, v->row.name);
	return buf;
}

/* ---------- the thread ---------- */

static void sleep_ms(struct fill *f, unsigned ms)
{
	/* in steps, so that a cancel (engine_close) is seen within 100 ms */
	for (unsigned t = 0; t < ms && !atomic_load(&f->cancel); t += 100)
		usleep(100 * 1000);
}

/* end of the run of grains still to fill from g, at most max */
static uint64_t run_end(struct fill *f, uint64_t g, uint64_t max)
{
	uint64_t e = g;

	while (e + 1 < f->nr_grains && e + 1 - g < max && bitmap_test(f->todo, e + 1))
		e++;
	return e;
}

static void prefetch(struct fill *f, uint64_t *next, uint64_t upto)
{
	struct vol *v = f->v;
	uint64_t grain = v->row.grain_bytes, max = RUN_BYTES / grain ? RUN_BYTES / grain : 1;
	uint64_t g = *next;

	if (f->kind != HIMG_TAPE || !f->im)
		return;
	if (upto > f->nr_grains)
		upto = f->nr_grains;
	while ((g = bitmap_next(f->todo, f->nr_grains, g)) < upto) {
		uint64_t e = run_end(f, g, max);
		himg_prefetch(f->im, g * grain, (size_t)((e - g + 1) * grain));
		g = e + 1;
	}
	if (upto > *next)
		*next = upto;
}

static void finish(struct fill *f);

/* e->lock held: v shows its own content again, and the map goes (its
 * directory entry is made durable by the caller when it matters) */
static void detach(struct fill *f)
{
	struct vol *v = f->v;

	pthread_rwlock_wrlock(&v->barrier);
	v->fill = NULL;
	atomic_store(&v->filling, 0);
	pthread_rwlock_unlock(&v->barrier);
	atomic_store(&v->restore_pct, -1);
	unlink(f->map_path);
}

static void *fill_main(void *arg)
{
	struct fill *f = arg;
	struct vol *v = f->v;
	uint64_t grain = v->row.grain_bytes, max = RUN_BYTES / grain ? RUN_BYTES / grain : 1;
	uint64_t ahead = PREFETCH_BYTES / grain, g = 0, pf = 0;
	unsigned backoff = BACKOFF_MIN_MS;
	int64_t last_persist = now_ms();
	uint64_t rate = fill_rate(), moved = 0;
	int64_t t0 = now_ms();
	char *buf;
	bool failing = false;

	if (rate && rate < max * grain)
		max = rate / grain ? rate / grain : 1; /* runs of at most a second's worth */
	buf = malloc(max * grain);

	if (!buf) {
		vol_log(v, "error: the fill cannot run: %s", strerror(ENOMEM));
		atomic_store(&f->cancel, 1);
	}
	while (!atomic_load(&f->cancel) && atomic_load(&f->remaining) > 0) {
		g = bitmap_next(f->todo, f->nr_grains, g);
		if (g >= f->nr_grains) {
			g = pf = 0; /* a grain may have been skipped by a failed read */
			continue;
		}
		uint64_t e = run_end(f, g, max), g0 = g;
		if (pf < g + ahead / 2)
			prefetch(f, &pf, g + ahead);
		int rc = fill_source_read(f, g, e, buf);
		if (rc) {
			if (!failing)
				vol_log(v, "error: the fill cannot read its source (version %llu): "
					   "retrying; reads of grains not yet filled fail meanwhile",
					(unsigned long long)f->version);
			failing = true;
			sleep_ms(f, backoff);
			backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
			pf = g; /* prefetches of a failed source are lost */
			continue;
		}
		if (failing)
			vol_log(v, "the fill reads its source again");
		failing = false;
		backoff = BACKOFF_MIN_MS;
		pthread_rwlock_rdlock(&v->barrier);
		stripes_lock(v, g, e);
		rc = fill_apply_run(f, g, e, buf);
		stripes_unlock(v, g, e);
		pthread_rwlock_unlock(&v->barrier);
		if (rc) {
			vol_io_error(v, true, "the volume (fill)", 0, g * grain, -rc);
			sleep_ms(f, backoff);
			continue;
		}
		g = e + 1;
		moved += (e - g0 + 1) * grain;
		if (rate) {
			int64_t due = t0 + (int64_t)(moved * 1000 / rate), now = now_ms();
			if (due > now)
				sleep_ms(f, (unsigned)(due - now));
		}
		if (atomic_load(&f->since_persist) >= PERSIST_BYTES ||
		    now_ms() - last_persist >= PERSIST_MS) {
			fill_sync(f);
			last_persist = now_ms();
		}
	}
	free(buf);
	if (!atomic_load(&f->cancel) && atomic_load(&f->remaining) == 0)
		finish(f); /* drops v->fill's reference */
	else
		fill_sync(f); /* stopping: progress so far stays */
	pthread_mutex_lock(&v->e->lock);
	f->thread = false;
	pthread_mutex_unlock(&v->e->lock);
	fill_put(f); /* the thread's */
	engine_thread_end(v->e);
	return NULL;
}

/* The last grain is filled: make it durable, record the volume as standing
 * alone, then drop the map and the fill. */
static void finish(struct fill *f)
{
	struct vol *v = f->v;
	struct engine *e = v->e;
	int rc = fill_sync(f);

	pthread_mutex_lock(&e->lock);
	if (!rc) {
		snprintf(v->row.state, sizeof(v->row.state), "ok");
		rc = catalog_put_volume(e->cat, &v->row);
		if (rc)
			snprintf(v->row.state, sizeof(v->row.state), "filling");
	}
	if (rc) {
		/* the map stays: the next mount finishes it */
		vol_log(v, "error: the fill is done but cannot be recorded: %s", strerror(-rc));
		f->thread = false;
		pthread_mutex_unlock(&e->lock);
		return;
	}
	detach(f);
	util_fsync_dir(IO_TRACK, f->map_path);
	vol_log(v, "fill from version %llu of %s (%s) completed: %llu grains",
		(unsigned long long)f->version, f->src->row.name,
		f->kind == HIMG_TAPE ? "tape" : "disk", (unsigned long long)f->total);
	pthread_mutex_unlock(&e->lock);
	fill_put(f); /* v->fill's reference */
}

/* e->lock held */
static int start_thread(struct fill *f)
{
	pthread_t t;
	pthread_attr_t a;
	int rc;

	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	engine_thread_start(f->v->e);
	f->thread = true;
	rc = pthread_create(&t, &a, fill_main, f);
	pthread_attr_destroy(&a);
	if (rc) {
		f->thread = false;
		f->v->e->nr_threads--;
		vol_log(f->v, "error: cannot start the fill's thread: %s", strerror(rc));
		return -rc;
	}
	return 0;
}

/* ---------- starting ---------- */

/* Marks todo's grains written in v's tracking, so that the next -T backup
 * copies them, and makes that durable. */
static int mark_tracking(struct fill *f)
{
	struct vol *v = f->v;
	uint64_t g = 0;
	int rc = 0;

	pthread_rwlock_rdlock(&v->barrier);
	while (!rc && (g = bitmap_next(f->todo, f->nr_grains, g)) < f->nr_grains) {
		uint64_t e = g;
		while (e + 1 < f->nr_grains && bitmap_test(f->todo, e + 1))
			e++;
		rc = track_intent(v->trk, g, e);
		if (!rc)
			track_mark(v->trk, g, e);
		g = e + 1;
	}
	pthread_rwlock_unlock(&v->barrier);
	return rc ? rc : vol_track_flush(v);
}

/* todo = the grains of fd's data extents (a hole reads as zeros) */
/* todo = the grains of the source image's data extents: a new volume (a
 * clone) reads zeros already where the history has holes. For a tape image
 * the extents come from its manifest (its zero grains), for a disk image
 * from its BV file. */
static void mark_data(struct fill *f)
{
	uint64_t grain = f->v->row.grain_bytes, size = f->v->row.size_bytes, pos = 0;

	while (pos < size) {
		int64_t d = himg_seek(f->im, pos, SEEK_DATA);
		if (d == -ENXIO)
			return; /* only a hole is left */
		if (d < 0)
			d = (int64_t)pos; /* cannot tell: everything from here */
		int64_t hole = (uint64_t)d < size ? himg_seek(f->im, (uint64_t)d, SEEK_HOLE) : -ENXIO;
		if (hole < 0 || (uint64_t)hole > size)
			hole = (int64_t)size;
		for (uint64_t g = (uint64_t)d / grain; g * grain < (uint64_t)hole; g++)
			bitmap_set(f->todo, g);
		if ((uint64_t)hole <= pos)
			break;
		pos = (uint64_t)hole;
	}
}

int fill_start(struct engine *e, struct vol *v, struct vol *src, uint64_t version,
	       enum himg_kind kind, uint64_t *grains, char *err, size_t errlen)
{
	struct fill *f = fill_alloc(v);
	struct history *h;
	int rc;

	if (!f)
		return -ENOMEM;
	f->src = src;
	f->version = version;
	f->kind = kind;
	h = vol_hist(src, version);
	if (!h) {
		fill_free(f);
		snprintf(err, errlen, "version %llu is gone", (unsigned long long)version);
		return -ENOENT;
	}
	f->h = h;
	/* which grains may differ: onto its own volume, a grain not written since
	 * the history's cut holds its content already (as restore's rule) */
	uint32_t base = 0;
	bool diff = false;
	if (src == v && kind == HIMG_DISK && h->bv && h->bv->row.tracking) {
		diff = true;
		base = h->bv->row.track_base;
	} else if (src == v && kind == HIMG_TAPE && h->row.cut_era) {
		diff = true;
		base = h->row.cut_era;
	}
	if (diff)
		track_changed(v->trk, base, f->todo);
	else if (src == v)
		for (uint64_t g = 0; g < v->nr_grains; g++)
			bitmap_set(f->todo, g);
	/* else a clone: its grains follow from the source image (mark_data) */
	pin(f);
	pthread_mutex_unlock(&e->lock);

	/* the source must open (a tape manifest is fetched and checked) before
	 * the volume claims its content; no engine lock while it waits */
	rc = himg_open(src, version, kind, &f->im);
	if (rc) {
		f->im = NULL;
		snprintf(err, errlen, "cannot open version %llu of %s (%s): %s",
			 (unsigned long long)version, src->row.name,
			 kind == HIMG_TAPE ? "tape" : "disk", strerror(-rc));
		goto fail;
	}
	if (src != v)
		mark_data(f);
	f->total = bitmap_count(f->todo, v->nr_grains);
	atomic_store(&f->remaining, f->total);
	/* a new volume (a clone) has no tracking pair yet: its first backup
	 * is full whatever the marks say */
	rc = src == v ? mark_tracking(f) : 0;
	if (rc) {
		snprintf(err, errlen, "cannot record the tracking: %s", strerror(-rc));
		goto fail;
	}
	rc = map_create(f);
	if (rc) {
		snprintf(err, errlen, "cannot write %s: %s", f->map_path, strerror(-rc));
		goto fail;
	}
	pthread_mutex_lock(&e->lock);
	char old[sizeof(v->row.state)];
	snprintf(old, sizeof(old), "%s", v->row.state);
	snprintf(v->row.state, sizeof(v->row.state), "filling");
	rc = catalog_put_volume(e->cat, &v->row);
	if (rc) {
		snprintf(v->row.state, sizeof(v->row.state), "%s", old);
		pthread_mutex_unlock(&e->lock);
		snprintf(err, errlen, "cannot record the fill: %s", strerror(-rc));
		unlink(f->map_path);
		goto fail;
	}
	atomic_store(&v->restore_pct, f->total ? 0 : 100);
	pthread_rwlock_wrlock(&v->barrier);
	v->fill = f;
	atomic_store(&v->filling, 1);
	pthread_rwlock_unlock(&v->barrier);
	/* the thread's reference; v->fill's is the allocation's */
	atomic_fetch_add(&f->refs, 1);
	if (start_thread(f))
		fill_put(f); /* the fill stays, readers fill; the next mount restarts it */
	*grains = f->total;
	vol_log(v, "fill from version %llu of %s (%s) started: %llu grains to fill",
		(unsigned long long)version, src->row.name, kind == HIMG_TAPE ? "tape" : "disk",
		(unsigned long long)f->total);
	return 0; /* with e->lock */
fail:
	fill_free(f); /* unpins; takes e->lock */
	pthread_mutex_lock(&e->lock);
	return rc;
}

/* ---------- mount ---------- */

int fill_recover(struct engine *e, struct vol *v, bool *resume)
{
	struct fill *f = NULL;
	char path[PATH_MAX];
	int64_t src_id = 0;
	int rc;

	(void)e;
	*resume = false;
	map_path(v, path, sizeof(path));
	if (strcmp(v->row.state, "filling")) {
		/* a map of a fill whose start was never recorded: it claimed nothing */
		if (unlink(path) == 0)
			util_fsync_dir(IO_TRACK, path);
		return 0;
	}
	rc = map_load(v, &f, &src_id);
	if (rc) {
		vol_log(v, "error: the fill state %s cannot be used (%s): state needs-restore; "
			   "the volume holds partly filled data until a restore completes",
			path, rc == -EUCLEAN ? "damaged" : strerror(-rc));
		snprintf(v->row.state, sizeof(v->row.state), "needs-restore");
		unlink(path);
		return catalog_put_volume(e->cat, &v->row);
	}
	/* the source is found once every volume is loaded (fill_resume_all) */
	f->src_id = src_id;
	v->fill = f;
	atomic_store(&v->filling, 1);
	*resume = true;
	return 0;
}

static void resume_one(struct engine *e, struct vol *v)
{
	struct fill *f = v->fill;
	int64_t src_id = f->src_id;
	struct vol *src = NULL;
	struct history *h = NULL;

	for (struct vol *x = e->vols; x; x = x->next)
		if (x->row.id == src_id)
			src = x;
	if (src)
		h = vol_hist(src, f->version);
	bool ok = h && (f->kind == HIMG_TAPE ? h->row.tape_status == HS_SUCCEEDED
					     : hist_disk_ok(h));
	if (!ok) {
		vol_log(v, "error: the source of the fill (version %llu of volume id %lld) is "
			   "gone: state needs-restore",
			(unsigned long long)f->version, (long long)src_id);
		pthread_rwlock_wrlock(&v->barrier);
		v->fill = NULL;
		atomic_store(&v->filling, 0);
		pthread_rwlock_unlock(&v->barrier);
		snprintf(v->row.state, sizeof(v->row.state), "needs-restore");
		if (catalog_put_volume(e->cat, &v->row) == 0)
			unlink(f->map_path);
		fill_put(f);
		return;
	}
	f->src = src;
	f->h = h;
	pin(f);
	uint64_t left = atomic_load(&f->remaining), t = f->total ? f->total : 1;
	atomic_store(&v->restore_pct, (int)((t - (left < t ? left : t)) * 100 / t));
	vol_log(v, "fill from version %llu of %s (%s) resumed: %llu grains left",
		(unsigned long long)f->version, src->row.name,
		f->kind == HIMG_TAPE ? "tape" : "disk", (unsigned long long)left);
	/* the source opens lazily (the pool may not answer yet) */
	atomic_fetch_add(&f->refs, 1);
	if (start_thread(f))
		fill_put(f);
}

void fill_resume_all(struct engine *e)
{
	pthread_mutex_lock(&e->lock);
	for (struct vol *v = e->vols; v; v = v->next)
		if (v->fill && !v->fill->pinned)
			resume_one(e, v);
	pthread_mutex_unlock(&e->lock);
}

void fill_cancel_all(struct engine *e)
{
	pthread_mutex_lock(&e->lock);
	for (struct vol *v = e->vols; v; v = v->next)
		if (v->fill)
			atomic_store(&v->fill->cancel, 1);
	pthread_mutex_unlock(&e->lock);
}

void fill_stop(struct engine *e, struct vol *v)
{
	struct fill *f = v->fill;
	struct timespec ts;

	atomic_store(&f->cancel, 1);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10; /* a run of source reads in flight, bounded by their timeouts */
	while (f->thread && pthread_cond_timedwait(&e->cond, &e->lock, &ts) == 0)
		;
	detach(f);
	pthread_mutex_unlock(&e->lock);
	fill_put(f); /* v->fill's; the thread holds its own until it ends */
	pthread_mutex_lock(&e->lock);
}

bool fill_reads(struct vol *v, struct history *h)
{
	return v->fill && v->fill->h == h;
}

void fill_info(struct vol *v, struct sbuf *sb)
{
	struct fill *f = v->fill;

	if (!f)
		return;
	sbuf_addf(sb, "fill_source=%s\nfill_version=%llu\nfill_media=%s\nfill_grains_left=%llu\n"
		      "fill_source_errors=%llu\n",
		  f->src ? f->src->row.name : "-", (unsigned long long)f->version,
		  f->kind == HIMG_TAPE ? "TAPE" : "DISK",
		  (unsigned long long)atomic_load(&f->remaining),
		  (unsigned long long)atomic_load(&f->src_errors));
	sbuf_addf(sb, "note=the volume shows version %llu of %s; grains not filled yet are read "
		      "from it\n",
		  (unsigned long long)f->version, f->src ? f->src->row.name : "its source");
}

void fill_free_all(struct engine *e)
{
	/* threads have ended (engine_close waited for nr_threads) */
	for (struct vol *v = e->vols; v; v = v->next) {
		struct fill *f = v->fill;
		if (!f)
			continue;
		v->fill = NULL;
		atomic_store(&v->filling, 0);
		fill_put(f);
	}
}
