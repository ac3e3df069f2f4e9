/*
 * vol.c — the data path of a transaction volume, copy jobs (physical copy and
 * copy-on-write) and history image reads. DESIGN.md §3.
 *
 * A TV write: barrier(read) → intent mark durable → [if copy jobs: stripes,
 * copy-on-write of grains a job still needs] → era mark → pwrite. With no job
 * running a write takes no stripe lock and allocates nothing.
 *
 * A copy job owns one BV and a `pending` bitmap: grains still to be copied
 * from the TV. The copier thread and copy-on-write both clear bits under the
 * grain's stripe lock, so each grain is copied exactly once and always with
 * its content at the logical-copy instant. An image read takes the stripe and
 * reads the TV for pending grains, the BV otherwise.
 */
#include "engine_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fill.h"
#include "log.h"

#define LOG_PREFIX "vol"
#define COPY_RUN_BYTES (1 * ACM_MiB)
#define HOLE_SPAN_BYTES (1 * ACM_GiB) /* holes of the TV skipped per stripes lock */
#define PREFETCH_GRAINS 4096 /* how far ahead scattered grains are prefetched */

/* ---------- stripes ---------- */

static void stripes_range(uint64_t g0, uint64_t g1, uint64_t *s0, uint64_t *n)
{
	uint64_t cnt = g1 - g0 + 1;

	*s0 = g0 % NSTRIPES;
	*n = cnt >= NSTRIPES ? NSTRIPES : cnt;
}

void stripes_lock(struct vol *v, uint64_t g0, uint64_t g1)
{
	uint64_t s0, n;

	stripes_range(g0, g1, &s0, &n);
	if (n == NSTRIPES) {
		for (uint64_t i = 0; i < NSTRIPES; i++)
			pthread_mutex_lock(&v->stripes[i]);
		return;
	}
	/* ascending stripe order: the wrapped part [0, s0+n-N) first */
	if (s0 + n > NSTRIPES)
		for (uint64_t i = 0; i < s0 + n - NSTRIPES; i++)
			pthread_mutex_lock(&v->stripes[i]);
	for (uint64_t i = s0; i < s0 + n && i < NSTRIPES; i++)
		pthread_mutex_lock(&v->stripes[i]);
}

void stripes_unlock(struct vol *v, uint64_t g0, uint64_t g1)
{
	uint64_t s0, n;

	stripes_range(g0, g1, &s0, &n);
	if (n == NSTRIPES) {
		for (uint64_t i = 0; i < NSTRIPES; i++)
			pthread_mutex_unlock(&v->stripes[i]);
		return;
	}
	if (s0 + n > NSTRIPES)
		for (uint64_t i = 0; i < s0 + n - NSTRIPES; i++)
			pthread_mutex_unlock(&v->stripes[i]);
	for (uint64_t i = s0; i < s0 + n && i < NSTRIPES; i++)
		pthread_mutex_unlock(&v->stripes[i]);
}

/* ---------- copying bytes between files ---------- */

/* copy [off, off+len) from src to dst at the same offset; holes in src become
 * holes in dst. *data_bytes gets the bytes of data moved. */
static int copy_range(int src, int dst, uint64_t off, uint64_t len, uint64_t *data_bytes)
{
	uint64_t end = off + len;
	int frc = fault_check(IO_DATA, NULL);

	if (frc)
		return frc;

	while (off < end) {
		off_t d = lseek(src, (off_t)off, SEEK_DATA);
		uint64_t dstart = d < 0 ? end : (uint64_t)d;

		if (d < 0 && errno != ENXIO)
			return -errno;
		if (dstart > end)
			dstart = end;
		if (dstart > off) {
			if (fallocate(dst, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
				      (off_t)(dstart - off)))
				return -errno;
			off = dstart;
			if (off >= end)
				break;
		}
		off_t h = lseek(src, (off_t)off, SEEK_HOLE);
		uint64_t dend = h < 0 ? end : (uint64_t)h;
		if (dend > end)
			dend = end;
		loff_t in = (loff_t)off, out = (loff_t)off;
		while ((uint64_t)in < dend) {
			ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(dend - (uint64_t)in),
						    0);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				return -errno;
			}
			if (n == 0)
				break;
		}
		*data_bytes += dend - off;
		off = dend;
	}
	return 0;
}

uint64_t file_zero_until(int fd, uint64_t g, uint64_t limit, uint32_t grain, uint64_t size)
{
	off_t d = lseek(fd, (off_t)(g * grain), SEEK_DATA);
	uint64_t hole_end;

	if (d < 0)
		hole_end = errno == ENXIO ? size : g * grain; /* ENXIO: a hole to the end */
	else
		hole_end = (uint64_t)d;
	uint64_t e = hole_end >= size ? limit : hole_end / grain;
	return e < g ? g : e > limit ? limit : e;
}

/* copy-on-write of one grain to a job's BV (stripe held) */
static int cow_grain(struct vol *v, struct job *j, uint64_t g)
{
	uint64_t off = g * v->row.grain_bytes, len = v->row.grain_bytes, moved = 0;
	int rc;

	if (off + len > v->row.size_bytes)
		len = v->row.size_bytes - off;
	rc = copy_range(v->tv_fd, j->bv->fd, off, len, &moved);
	if (rc)
		return rc;
	if (bitmap_clear(j->pending, g)) {
		atomic_fetch_sub(&j->remaining, 1);
		atomic_fetch_add(&j->copied, 1);
		atomic_fetch_add(&v->e->m.cow_grains, 1);
		atomic_fetch_add(&v->e->m.bytes_copied, moved);
	}
	return 0;
}

/* ---------- data file ---------- */

int vol_open_data(struct vol *v, bool write)
{
	int rc = 0;

	pthread_mutex_lock(&v->e->lock);
	if (v->deleted)
		rc = -ENOENT;
	else if (write && v->restoring)
		rc = -EBUSY;
	if (!rc) {
		v->opens++;
		if (write)
			v->writers++;
	}
	pthread_mutex_unlock(&v->e->lock);
	return rc;
}

void vol_close_data(struct vol *v, bool write)
{
	pthread_mutex_lock(&v->e->lock);
	v->opens--;
	if (write)
		v->writers--;
	pthread_mutex_unlock(&v->e->lock);
}

size_t engine_open_volumes(struct engine *e, char *buf, size_t len)
{
	size_t n = 0, at = 0;

	if (len)
		buf[0] = 0;
	pthread_mutex_lock(&e->lock);
	for (struct vol *v = e->vols; v; v = v->next) {
		if (!v->opens)
			continue;
		int w = snprintf(buf + at, at < len ? len - at : 0, "%s%s/data (%d open, %d for writing)",
				 n ? ", " : "", v->row.name, v->opens, v->writers);
		if (w > 0 && at + (size_t)w < len)
			at += (size_t)w;
		n++;
	}
	pthread_mutex_unlock(&e->lock);
	return n;
}

/* A read of a volume that fills: the grains still to fill are fetched from
 * the source first (no lock held), written into the volume under their
 * stripes (unless filled or written meanwhile), and the range read back
 * under the same stripes. */
static int read_filling(struct vol *v, struct fill *f, void *buf, size_t len, uint64_t off)
{
	uint64_t grain = v->row.grain_bytes, g0 = off / grain, g1 = (off + len - 1) / grain;
	uint64_t s0 = g0, s1 = g1;
	char *src = NULL;
	int rc = 0;

	while (s0 <= g1 && !fill_todo(f, s0))
		s0++;
	while (s1 > s0 && !fill_todo(f, s1))
		s1--;
	if (s0 <= g1) {
		src = malloc((s1 - s0 + 1) * grain);
		if (!src)
			return -ENOMEM;
		rc = fill_source_read(f, s0, s1, src);
	}
	if (!rc) {
		pthread_rwlock_rdlock(&v->barrier);
		stripes_lock(v, g0, g1);
		if (src)
			rc = fill_apply_run(f, s0, s1, src);
		if (!rc)
			rc = util_pread_full(IO_DATA, v->tv_fd, buf, len, off);
		stripes_unlock(v, g0, g1);
		pthread_rwlock_unlock(&v->barrier);
	}
	free(src);
	return rc;
}

ssize_t vol_read(struct vol *v, void *buf, size_t len, uint64_t off)
{
	struct fill *f = NULL;
	int rc;

	if (off >= v->row.size_bytes)
		return 0;
	if (len > v->row.size_bytes - off)
		len = (size_t)(v->row.size_bytes - off);
	if (atomic_load(&v->filling))
		f = fill_get(v);
	if (f && fill_any(f, off / v->row.grain_bytes, (off + len - 1) / v->row.grain_bytes)) {
		rc = read_filling(v, f, buf, len, off);
		fill_put(f);
		if (rc == -EIO)
			return rc; /* the source's error, logged */
	} else {
		fill_put(f);
		rc = util_pread_full(IO_DATA, v->tv_fd, buf, len, off);
	}
	if (rc) {
		vol_io_error(v, false, "the volume", 0, off, -rc);
		return rc;
	}
	return (ssize_t)len;
}

/* The source content of the grains a write covers in part (its first and
 * last), fetched before any lock is taken: edge[0] for g0, edge[1] for g1
 * (NULL when covered whole or already filled). */
static int write_edges(struct vol *v, struct fill *f, uint64_t off, size_t len, char *edge[2])
{
	uint64_t grain = v->row.grain_bytes, end = off + len;
	uint64_t g[2] = { off / grain, (end - 1) / grain };

	for (int k = 0; k < 2; k++) {
		uint64_t gs = g[k] * grain, ge = gs + grain;
		if (ge > v->row.size_bytes)
			ge = v->row.size_bytes;
		bool partial = off > gs || end < ge;
		if ((k == 1 && g[1] == g[0]) || !partial || !fill_todo(f, g[k]))
			continue;
		edge[k] = malloc(grain);
		if (!edge[k])
			return -ENOMEM;
		int rc = fill_source_read(f, g[k], g[k], edge[k]);
		if (rc)
			return rc;
	}
	return 0;
}

/* Writes the segments of iov (len bytes in all; NULL: punch len bytes) at
 * off through fd, a descriptor of the TV: its own, or one opened for direct
 * I/O by a restore. The tracking and the copy jobs see the write first. */
static int write_locked(struct vol *v, int fd, const struct iovec *iov, int cnt, size_t len,
			uint64_t off)
{
	uint64_t grain = v->row.grain_bytes;
	uint64_t g0 = off / grain, g1 = (off + len - 1) / grain;
	struct fill *f = NULL;
	char *edge[2] = { NULL, NULL }; /* source content of a partly written g0 / g1 */
	bool striped;
	int rc = 0;

	if (atomic_load(&v->filling))
		f = fill_get(v);
	if (f)
		rc = write_edges(v, f, off, len, edge);
	if (rc)
		goto out_put;
	pthread_rwlock_rdlock(&v->barrier);
	rc = track_intent(v->trk, g0, g1);
	if (rc)
		goto out_unlock;
	/* the job list and the fill change only under the barrier's write lock */
	striped = v->jobs != NULL || f;
	if (striped) {
		stripes_lock(v, g0, g1);
		for (struct job *j = v->jobs; j && !rc; j = j->next)
			for (uint64_t g = g0; g <= g1 && !rc; g++)
				if (bitmap_test(j->pending, g))
					rc = cow_grain(v, j, g);
		/* a grain written in part takes the source's content first */
		if (f && !rc && edge[0])
			rc = fill_apply(f, g0, edge[0]);
		if (f && !rc && edge[1])
			rc = fill_apply(f, g1, edge[1]);
	}
	if (!rc) {
		track_mark(v->trk, g0, g1);
		if (!iov)
			rc = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
				       (off_t)len)
				     ? -errno
				     : 0;
		else
			rc = util_pwritev_full(IO_DATA, fd, iov, cnt, off);
	}
	/* grains the write covered whole are the writer's now */
	for (uint64_t g = g0; f && !rc && g <= g1; g++)
		if (fill_todo(f, g) && g * grain >= off &&
		    ((g + 1) * grain <= off + len || off + len == v->row.size_bytes))
			fill_covered(f, g);
	if (striped)
		stripes_unlock(v, g0, g1);
out_unlock:
	pthread_rwlock_unlock(&v->barrier);
out_put:
	free(edge[0]);
	free(edge[1]);
	fill_put(f);
	if (rc)
		vol_io_error(v, true, "the volume", 0, off, -rc);
	else
		atomic_store(&v->mtime, util_now());
	return rc;
}

int vol_write_internal(struct vol *v, const void *buf, size_t len, uint64_t off)
{
	struct iovec iov = { (void *)buf, len };

	return len ? write_locked(v, v->tv_fd, &iov, 1, len, off) : 0;
}

int vol_writev_internal(struct vol *v, int fd, const struct iovec *iov, int cnt, uint64_t off)
{
	size_t len = 0;

	for (int i = 0; i < cnt; i++)
		len += iov[i].iov_len;
	return len ? write_locked(v, fd, iov, cnt, len, off) : 0;
}

int vol_punch_internal(struct vol *v, uint64_t off, uint64_t len)
{
	return len ? write_locked(v, v->tv_fd, NULL, 0, (size_t)len, off) : 0;
}

ssize_t vol_write(struct vol *v, const void *buf, size_t len, uint64_t off)
{
	int rc;

	if (len == 0)
		return 0;
	if (off >= v->row.size_bytes)
		return -ENOSPC;
	if (len > v->row.size_bytes - off)
		len = (size_t)(v->row.size_bytes - off);
	rc = write_locked(v, v->tv_fd, &(struct iovec){ (void *)buf, len }, 1, len, off);
	return rc ? rc : (ssize_t)len;
}

int vol_fsync(struct vol *v, bool datasync)
{
	struct fill *f = atomic_load(&v->filling) ? fill_get(v) : NULL;

	if (f) {
		/* the volume file, and then the grains filled or written whole
		 * leave the map: after a crash they read as they are now */
		int rc = fill_sync(f);
		fill_put(f);
		if (rc || datasync)
			return rc;
	}
	if (datasync ? io_fdatasync(IO_DATA, v->tv_fd) : io_fsync(IO_DATA, v->tv_fd))
		return -errno;
	return 0;
}

int64_t vol_seek_data(struct vol *v, uint64_t off, int whence)
{
	off_t r;

	if (off >= v->row.size_bytes)
		return -ENXIO;
	/* while it fills, the file's holes say nothing of the content */
	if (atomic_load(&v->filling))
		return whence == SEEK_DATA ? (int64_t)off : (int64_t)v->row.size_bytes;
	r = lseek(v->tv_fd, (off_t)off, whence);
	if (r < 0)
		return errno == ENXIO && whence == SEEK_HOLE ? (int64_t)v->row.size_bytes : -errno;
	return r > (off_t)v->row.size_bytes ? (int64_t)v->row.size_bytes : r;
}

/* ---------- allocation (st_blocks) ---------- */

static uint64_t blocks_cap(uint64_t size)
{
	return (size + 511) / 512;
}

/* 512-byte blocks the file fd (size bytes long) has allocated, at most
 * blocks_cap(size). A file that reports none although SEEK_DATA finds data
 * in it (inline data, a file system that does not count blocks), or whose
 * allocation cannot be had, counts as fully allocated: overstating costs a
 * reader a slow copy, understating may cost it data. (lseek moves the
 * shared file offset: every I/O on these descriptors is positional.) */
static uint64_t fd_blocks(int fd, uint64_t size)
{
	struct stat st;
	uint64_t b;

	if (fstat(fd, &st))
		return blocks_cap(size);
	b = st.st_blocks > 0 ? (uint64_t)st.st_blocks : 0;
	if (b == 0 && size) {
		off_t d = lseek(fd, 0, SEEK_DATA);
		if (!(d < 0 && errno == ENXIO) && !(d >= 0 && (uint64_t)d >= size))
			return blocks_cap(size);
	}
	return b < blocks_cap(size) ? b : blocks_cap(size);
}

uint64_t vol_data_blocks(struct vol *v)
{
	if (atomic_load(&v->filling))
		return blocks_cap(v->row.size_bytes); /* the source's data is not counted */
	return fd_blocks(v->tv_fd, v->row.size_bytes);
}

int vol_image_blocks(struct vol *v, uint64_t version, enum himg_kind kind, uint64_t *out)
{
	struct engine *e = v->e;
	uint64_t size = v->row.size_bytes, b;
	struct history *h;
	int rc = 0;

	/* e->lock: h->bv and h->job change under it, and the BV stays open */
	pthread_mutex_lock(&e->lock);
	h = vol_hist(v, version);
	if (!h) {
		rc = -ENOENT;
		goto out;
	}
	if (kind == HIMG_BEST)
		kind = hist_disk_ok(h) ? HIMG_DISK : HIMG_TAPE;
	if (kind == HIMG_DISK) {
		if (!h->bv) {
			rc = -ENOENT;
			goto out;
		}
		/* Read from the BV; while its copy job runs, the grains still
		 * pending come from the TV: the image's data lies in the union of
		 * both files' allocations, so their sum is an upper bound (the
		 * larger of the two is not: the pending part of the TV and the
		 * copied part of the BV may not overlap). */
		b = fd_blocks(h->bv->fd, size);
		if (h->job)
			b += fd_blocks(v->tv_fd, size);
	} else if (h->row.tape_status != HS_SUCCEEDED) {
		/* not readable yet (or failed): claim nothing about its holes */
		b = blocks_cap(size);
	} else {
		/* every non-zero grain is one block of the manifest (the tier
		 * checks blocks_total against the references when it decodes
		 * one; the catalog keeps that count): no manifest read here. A
		 * count of 0 is reported as 1 block, so that a catalog that were
		 * wrong could not make tar skip the file's contents. */
		b = h->row.blocks * (v->row.grain_bytes / 512);
		if (b == 0 && size)
			b = 1;
	}
	*out = b < blocks_cap(size) ? b : blocks_cap(size);
out:
	pthread_mutex_unlock(&e->lock);
	return rc;
}

int vol_track_flush(struct vol *v)
{
	/* a write marks its region's intent bit before it changes any era: with no
	 * bit marked and the same era, the durable map is current */
	if (!track_dirty(v->trk))
		return 0;
	pthread_rwlock_wrlock(&v->barrier);
	track_snapshot(v->trk);
	pthread_rwlock_unlock(&v->barrier);
	return track_commit(v->trk);
}

/* ---------- copy jobs ---------- */

static void *copier_main(void *arg);

struct job *job_create(struct vol *v, struct bvol *bv, struct history *h, bool full, uint32_t base)
{
	struct job *j = bv->job;
	uint64_t added = 0;

	if (!j) {
		j = calloc(1, sizeof(*j));
		if (!j)
			return NULL;
		j->pending = calloc(bitmap_words(v->nr_grains) + 1, sizeof(uint64_t));
		if (!j->pending) {
			free(j);
			return NULL;
		}
		j->v = v;
		j->bv = bv;
		j->nr_grains = v->nr_grains;
	}
	/* (re)target: a job still copying to this BV for a released history
	 * continues, with the new history's grains added */
	if (full) {
		for (uint64_t g = 0; g < v->nr_grains; g++)
			if (!bitmap_test(j->pending, g)) {
				bitmap_set(j->pending, g);
				added++;
			}
	} else {
		for (uint64_t g = 0; g < v->nr_grains; g++)
			if (track_grain_era(v->trk, g) > base && !bitmap_test(j->pending, g)) {
				bitmap_set(j->pending, g);
				added++;
			}
	}
	atomic_fetch_add(&j->remaining, added);
	atomic_store(&j->cancel, 0);
	j->total = atomic_load(&j->remaining);
	atomic_store(&j->copied, 0);
	j->h = h;
	if (!bv->job) {
		j->next = v->jobs;
		v->jobs = j;
		bv->job = j;
	}
	if (h)
		h->job = j;
	return j;
}

int job_start(struct job *j)
{
	pthread_t t;
	pthread_attr_t a;
	int rc;

	if (j->started)
		return 0; /* retargeted: its thread is already running */
	j->started = true;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	engine_thread_start(j->v->e);
	rc = pthread_create(&t, &a, copier_main, j);
	pthread_attr_destroy(&a);
	if (rc) {
		j->v->e->nr_threads--;
		return -rc;
	}
	return 0;
}

static int copy_run(struct vol *v, struct job *j, uint64_t g0, uint64_t g1)
{
	uint64_t grain = v->row.grain_bytes;
	int rc = 0;

	stripes_lock(v, g0, g1);
	for (uint64_t g = g0; g <= g1 && !rc;) {
		uint64_t s, moved = 0, cnt;
		if (!bitmap_test(j->pending, g)) {
			g++;
			continue;
		}
		for (s = g; g <= g1 && bitmap_test(j->pending, g); g++)
			;
		uint64_t off = s * grain, len = (g - s) * grain;
		if (off + len > v->row.size_bytes)
			len = v->row.size_bytes - off;
		rc = copy_range(v->tv_fd, j->bv->fd, off, len, &moved);
		if (rc)
			break;
		cnt = 0;
		for (uint64_t x = s; x < g; x++)
			if (bitmap_clear(j->pending, x))
				cnt++;
		/* a grain counts as copied when its content is in place, data or hole */
		atomic_fetch_sub(&j->remaining, cnt);
		atomic_fetch_add(&j->copied, cnt);
		atomic_fetch_add(&v->e->m.bytes_copied, moved);
		atomic_fetch_add(&v->e->m.grains_copied, cnt);
	}
	stripes_unlock(v, g0, g1);
	return rc;
}

/*
 * The grains from g on that the TV holds as a hole: their copy is a hole in
 * the BV, done for a span at a time (HOLE_SPAN_BYTES) instead of run by run,
 * so that a full copy of a thin volume costs what it holds, not its size.
 * The hole is checked again under the span's stripes (a writer takes them,
 * and copies the old content of a pending grain, before it writes). Returns
 * the first grain not handled: g itself when g holds data.
 */
static uint64_t skip_hole(struct vol *v, struct job *j, uint64_t g, int *rc)
{
	uint64_t grain = v->row.grain_bytes, size = v->row.size_bytes;
	uint64_t span = HOLE_SPAN_BYTES / grain ? HOLE_SPAN_BYTES / grain : 1;
	uint64_t limit = g + span < j->nr_grains ? g + span : j->nr_grains;
	uint64_t g1 = file_zero_until(v->tv_fd, g, limit, grain, size); /* exclusive */

	if (g1 <= g + 1)
		return g; /* not worth it: the run copy punches a grain's hole as well */
	stripes_lock(v, g, g1 - 1);
	if (file_zero_until(v->tv_fd, g, g1, grain, size) < g1) {
		stripes_unlock(v, g, g1 - 1); /* written meanwhile: copy it run by run */
		return g;
	}
	uint64_t off = g * grain, len = (g1 - g) * grain;
	if (off + len > size)
		len = size - off;
	if (fallocate(j->bv->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
		      (off_t)len)) {
		*rc = -errno;
		stripes_unlock(v, g, g1 - 1);
		return g;
	}
	uint64_t cnt = 0;
	for (uint64_t x = bitmap_next(j->pending, g1, g); x < g1; x = bitmap_next(j->pending, g1, x + 1))
		if (bitmap_clear(j->pending, x))
			cnt++;
	atomic_fetch_sub(&j->remaining, cnt);
	atomic_fetch_add(&j->copied, cnt);
	atomic_fetch_add(&v->e->m.grains_copied, cnt);
	stripes_unlock(v, g, g1 - 1);
	return g1;
}

void prefetch_grains(int fd, const _Atomic uint64_t *bm, uint64_t nbits, uint64_t *next,
		     uint64_t upto, uint32_t grain)
{
	/* ask the kernel to start reading the set grains in [*next, upto): scattered
	 * grains (a differential copy or restore) then cost a cache hit each rather
	 * than a synchronous random read */
	uint64_t g = *next;

	if (upto > nbits)
		upto = nbits;
	while (g < upto && (g = bitmap_next(bm, nbits, g)) < upto) {
		uint64_t e = g;
		while (e + 1 < upto && e + 1 < nbits && bitmap_test(bm, e + 1))
			e++;
		posix_fadvise(fd, (off_t)(g * grain), (off_t)((e - g + 1) * grain),
			      POSIX_FADV_WILLNEED);
		g = e + 1;
	}
	if (upto > *next)
		*next = upto;
}

static void *copier_main(void *arg)
{
	struct job *j = arg;
	struct vol *v = j->v;
	uint64_t run = COPY_RUN_BYTES / v->row.grain_bytes;
	int rc = 0;

	if (run == 0)
		run = 1;
	for (;;) {
		while (!rc && atomic_load(&j->remaining) > 0 && !atomic_load(&j->cancel)) {
			uint64_t g = 0, pf = 0;
			while (!rc && !atomic_load(&j->cancel)) {
				g = bitmap_next(j->pending, j->nr_grains, g);
				if (g >= j->nr_grains)
					break;
				/* keep read-ahead a window of grains ahead of the copy */
				if (pf < g + PREFETCH_GRAINS / 2)
					prefetch_grains(v->tv_fd, j->pending, j->nr_grains, &pf,
							g + PREFETCH_GRAINS, v->row.grain_bytes);
				uint64_t next = skip_hole(v, j, g, &rc);
				if (rc || next != g) {
					g = next;
					continue;
				}
				uint64_t end = g + run - 1;
				if (end >= j->nr_grains)
					end = j->nr_grains - 1;
				rc = copy_run(v, j, g, end);
				g = end + 1;
			}
		}
		if (!rc && !atomic_load(&j->cancel) && io_fdatasync(IO_DATA, j->bv->fd))
			rc = -errno;
		if (rc) {
			vol_log(v, "error: physical copy to %s failed: %s", j->bv->name,
				strerror(-rc));
			atomic_store(&j->cancel, 1);
		}
		/* a retarget may have added grains (and cleared cancel) meanwhile */
		pthread_mutex_lock(&v->e->lock);
		if (!rc && atomic_load(&j->remaining) > 0 && !atomic_load(&j->cancel)) {
			pthread_mutex_unlock(&v->e->lock);
			continue;
		}
		job_done(j); /* unlocks e->lock, frees j */
		break;
	}
	engine_thread_end(v->e);
	return NULL;
}

/* ---------- history images ---------- */

struct himg {
	struct vol *v;
	struct history *h;
	enum himg_kind kind; /* resolved: DISK or TAPE */
	struct tier_image *ti;
	uint64_t size;
};

int grain_read_hist(struct vol *v, struct history *h, uint64_t g, void *buf)
{
	uint64_t grain = v->row.grain_bytes, off = g * grain, len = grain;
	struct job *j;
	int rc;

	if (off + len > v->row.size_bytes) {
		len = v->row.size_bytes - off;
		memset((char *)buf + len, 0, grain - len);
	}
	pthread_rwlock_rdlock(&v->barrier);
	j = h->job;
	if (j) {
		stripes_lock(v, g, g);
		rc = util_pread_full(IO_DATA, bitmap_test(j->pending, g) ? v->tv_fd : h->bv->fd, buf, len,
				     off);
		stripes_unlock(v, g, g);
	} else {
		rc = util_pread_full(IO_DATA, h->bv->fd, buf, len, off);
	}
	pthread_rwlock_unlock(&v->barrier);
	return rc;
}

int himg_open(struct vol *v, uint64_t version, enum himg_kind kind, struct himg **out)
{
	struct engine *e = v->e;
	struct himg *im = calloc(1, sizeof(*im));
	struct history *h;
	struct tier_pool *tp = NULL;
	char key[256] = "";
	struct tier_manifest_info expect = {0};
	int rc = 0;

	if (!im)
		return -ENOMEM;
	pthread_mutex_lock(&e->lock);
	h = vol_hist(v, version);
	if (!h) {
		rc = -ENOENT;
		goto out_unlock;
	}
	bool disk_ok = hist_disk_ok(h);
	bool tape_ok = h->row.tape_status == HS_SUCCEEDED;
	if (kind == HIMG_BEST)
		kind = disk_ok ? HIMG_DISK : HIMG_TAPE;
	if (kind == HIMG_DISK && !h->bv) {
		rc = -ENOENT;
		goto out_unlock;
	}
	if (kind == HIMG_DISK && !disk_ok) {
		rc = -EIO; /* a failed history has no valid image */
		goto out_unlock;
	}
	if (kind == HIMG_TAPE) {
		if (h->row.tape_status == HS_NONE) {
			rc = -ENOENT;
			goto out_unlock;
		}
		if (!tape_ok) {
			rc = h->row.tape_status == HS_EXECUTING ? -EAGAIN : -EIO;
			goto out_unlock;
		}
		struct pool *p = engine_pool(e, h->row.pool);
		char err[256];
		if (!p) {
			rc = -EIO;
			goto out_unlock;
		}
		rc = engine_pool_open(e, p, err, sizeof(err));
		if (rc) {
			vol_log(v, "error: cannot open tape image of version %llu: %s",
				(unsigned long long)version, err[0] ? err : strerror(-rc));
			goto out_unlock;
		}
		tp = p->tp;
		snprintf(key, sizeof(key), "%s", h->row.manifest);
		expect = (struct tier_manifest_info){
			.volume = v->row.name,
			.version = h->row.version,
			.size_bytes = v->row.size_bytes,
			.grain_bytes = v->row.grain_bytes,
		};
	}
	im->v = v;
	im->h = h;
	im->kind = kind;
	im->size = v->row.size_bytes;
	h->readers++; /* the history (and so its pool) stays while we read */
	v->refs++;
	pthread_mutex_unlock(&e->lock);
	if (kind == HIMG_TAPE) {
		/* the object store may be slow or not answer at all: the open waits
		 * without the engine lock, so that only this reader waits */
		rc = e->tier->image_open(tp, key, &expect, &im->ti);
		if (rc) {
			vol_log(v, "error: cannot open tape image of version %llu: %s",
				(unsigned long long)version, strerror(-rc));
			pthread_mutex_lock(&e->lock);
			h->readers--;
			pthread_mutex_unlock(&e->lock);
			vol_put(v);
			free(im);
			return rc;
		}
	}
	*out = im;
	return 0;
out_unlock: /* only on errors */
	pthread_mutex_unlock(&e->lock);
	free(im);
	return rc;
}

void himg_prefetch(struct himg *im, uint64_t off, size_t len)
{
	const struct tier_ops *t = im->v->e->tier;

	if (im->kind == HIMG_TAPE && t->image_prefetch)
		t->image_prefetch(im->ti, off, len);
}

struct tier_image *im_tier(struct himg *im)
{
	return im->ti;
}

uint64_t himg_size(const struct himg *im)
{
	return im->size;
}

bool himg_from_tape(const struct himg *im)
{
	return im->kind == HIMG_TAPE;
}

static void himg_read_error(struct himg *im, uint64_t off, int err)
{
	vol_io_error(im->v, false, im->kind == HIMG_TAPE ? "tape image" : "disk image",
		     im->h->row.version, off, err);
}

ssize_t himg_read(struct himg *im, void *buf, size_t len, uint64_t off)
{
	struct vol *v = im->v;
	struct history *h = im->h;
	uint64_t grain = v->row.grain_bytes;
	struct job *j;
	int rc = 0;

	if (off >= im->size)
		return 0;
	if (len > im->size - off)
		len = (size_t)(im->size - off);
	if (im->kind == HIMG_TAPE) {
		ssize_t n = v->e->tier->image_read(im->ti, buf, len, off);
		if (n < 0)
			himg_read_error(im, off, (int)-n);
		return n;
	}
	pthread_rwlock_rdlock(&v->barrier);
	j = h->job;
	if (!j) {
		rc = util_pread_full(IO_DATA, h->bv->fd, buf, len, off);
	} else {
		uint64_t pos = off, end = off + len;
		while (pos < end && !rc) {
			uint64_t g = pos / grain;
			uint64_t gend = (g + 1) * grain < end ? (g + 1) * grain : end;
			stripes_lock(v, g, g);
			rc = util_pread_full(IO_DATA, bitmap_test(j->pending, g) ? v->tv_fd : h->bv->fd,
					     (char *)buf + (pos - off), (size_t)(gend - pos), pos);
			stripes_unlock(v, g, g);
			pos = gend;
		}
	}
	pthread_rwlock_unlock(&v->barrier);
	if (rc) {
		himg_read_error(im, off, -rc);
		return rc;
	}
	return (ssize_t)len;
}

int himg_read_iov(struct himg *im, size_t len, uint64_t off,
		  int (*reply)(void *arg, const struct iovec *iov, int iovcnt), void *arg)
{
	struct vol *v = im->v;

	if (im->kind != HIMG_TAPE || !v->e->tier->image_read_iov)
		return -EOPNOTSUPP;
	int rc = v->e->tier->image_read_iov(im->ti, len, off, reply, arg);
	if (rc < 0 && rc != -EOPNOTSUPP)
		himg_read_error(im, off, -rc);
	return rc;
}

int64_t himg_seek(struct himg *im, uint64_t off, int whence)
{
	int64_t r;

	if (off >= im->size)
		return -ENXIO;
	if (im->kind == HIMG_TAPE)
		return im->v->e->tier->image_seek(im->ti, off, whence);
	pthread_rwlock_rdlock(&im->v->barrier);
	if (im->h->job) {
		r = whence == SEEK_DATA ? (int64_t)off : (int64_t)im->size;
	} else {
		off_t x = lseek(im->h->bv->fd, (off_t)off, whence);
		if (x < 0)
			r = errno == ENXIO && whence == SEEK_HOLE ? (int64_t)im->size : -errno;
		else
			r = x > (off_t)im->size ? (int64_t)im->size : x;
	}
	pthread_rwlock_unlock(&im->v->barrier);
	return r;
}

void himg_close(struct himg *im)
{
	struct engine *e = im->v->e;

	if (im->ti)
		e->tier->image_close(im->ti);
	pthread_mutex_lock(&e->lock);
	im->h->readers--;
	pthread_mutex_unlock(&e->lock);
	vol_put(im->v);
	free(im);
}
