/*
 * fs.c — libfuse low-level operations for acmfs (see fs.h).
 *
 * Inode numbers are computed, not allocated: fixed numbers for the root's
 * entries, and for everything under volumes/<vol>:
 *     ino = vol_id << 40 | num << 8 | kind
 * where num is a history version or a generation number. Lookups therefore
 * need no table and forget needs no bookkeeping; a stale inode simply fails
 * its engine lookup with ENOENT.
 *
 * File handles (fi->fh) point to a struct fh that keeps what the open needs:
 * a held volume, an image, or a rendered text buffer / ctl reply.
 */
#include "fs.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"

#define LOG_PREFIX "fs"

/* largest read or write the kernel sends in one request (FUSE_MAX_PAGES) */
#define FS_MAX_IO (1024 * 1024)

enum kind {
	K_NONE,
	K_VOLDIR,
	K_DATA,
	K_CTL,
	K_DEVDISP,
	K_TRKSTAT,
	K_HISTDISP,
	K_INFO,
	K_LOG,
	K_HISTDIR,
	K_LATEST,
	K_GENDIR,
	K_TGENDIR,
	K_GENLINK,
	K_TGENLINK,
	K_VERDIR,
	K_IMAGE,
	K_DISKIMG,
	K_TAPEIMG,
	K_VINFO,
	K_STATUS_JSON, /* volume-level status is not in SPEC; root only */
};

/* root-level fixed inodes */
enum {
	INO_ROOT = 1,
	INO_README,
	INO_CTL,
	INO_DEVDISP,
	INO_TRKSTAT,
	INO_HISTDISP,
	INO_STATUS,
	INO_METRICS,
	INO_VOLUMES,
	INO_LOG,
	INO_FIXED_END
};

static const struct {
	const char *name;
	fuse_ino_t ino;
} root_entries[] = {
	{ "README", INO_README },     { "ctl", INO_CTL },	    { "devdisp", INO_DEVDISP },
	{ "trkstat", INO_TRKSTAT },   { "histdisp", INO_HISTDISP }, { "status.json", INO_STATUS },
	{ "metrics", INO_METRICS },   { "volumes", INO_VOLUMES },   { "log", INO_LOG },
};

static const struct {
	const char *name;
	enum kind kind;
} vol_entries[] = {
	{ "data", K_DATA },	    { "ctl", K_CTL },	      { "devdisp", K_DEVDISP },
	{ "trkstat", K_TRKSTAT },   { "histdisp", K_HISTDISP }, { "info", K_INFO },
	{ "log", K_LOG },	    { "history", K_HISTDIR },   { "generations", K_GENDIR },
	{ "tape-generations", K_TGENDIR },
};

struct ino_parts {
	uint64_t vol;
	uint64_t num;
	enum kind kind;
};

static fuse_ino_t mkino(uint64_t vol, uint64_t num, enum kind k)
{
	return (fuse_ino_t)(vol << 40 | (num & 0xffffffffULL) << 8 | (uint64_t)k);
}

static struct ino_parts split(fuse_ino_t ino)
{
	struct ino_parts p = { (uint64_t)ino >> 40, ((uint64_t)ino >> 8) & 0xffffffffULL,
			       (enum kind)(ino & 0xff) };
	return p;
}

static struct fs *FS(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

struct fh {
	enum kind kind;
	struct vol *v;
	struct himg *im;
	bool write;
	struct sbuf text;   /* rendered file, ctl reply, or directory listing */
	uint64_t reply_base; /* ctl: file offset where the reply starts (after the write) */
	int reply_mode;	     /* ctl: 0 undecided, 1 offsets from 0 (pread), 2 from reply_base */
	pthread_mutex_t lock; /* ctl: one command at a time per open file */
	struct fh *prev, *next; /* fs->fh_list */
	/* the open's reference plus one per read in progress (see op_read) */
	atomic_uint refs;
};

static void fh_track(struct fs *fs, struct fh *fh)
{
	pthread_mutex_lock(&fs->fh_lock);
	fh->prev = NULL;
	fh->next = fs->fh_list;
	if (fs->fh_list)
		fs->fh_list->prev = fh;
	fs->fh_list = fh;
	pthread_mutex_unlock(&fs->fh_lock);
}

static void fh_untrack(struct fs *fs, struct fh *fh)
{
	pthread_mutex_lock(&fs->fh_lock);
	if (fh->prev)
		fh->prev->next = fh->next;
	else
		fs->fh_list = fh->next;
	if (fh->next)
		fh->next->prev = fh->prev;
	pthread_mutex_unlock(&fs->fh_lock);
}

static void fh_free(struct fh *fh)
{
	if (fh->kind == K_DATA && fh->v)
		vol_close_data(fh->v, fh->write);
	if (fh->im)
		himg_close(fh->im);
	if (fh->v)
		vol_put(fh->v);
	sbuf_release(&fh->text);
	pthread_mutex_destroy(&fh->lock);
	free(fh);
}

static void fh_put(struct fh *fh)
{
	if (atomic_fetch_sub(&fh->refs, 1) == 1)
		fh_free(fh);
}

void fs_release_all(struct fs *fs)
{
	pthread_mutex_lock(&fs->fh_lock);
	struct fh *fh = fs->fh_list;
	fs->fh_list = NULL;
	pthread_mutex_unlock(&fs->fh_lock);
	while (fh) {
		struct fh *next = fh->next;
		fh_free(fh);
		fh = next;
	}
}

/* ---------- attributes ---------- */

static bool is_dir(enum kind k)
{
	return k == K_VOLDIR || k == K_HISTDIR || k == K_GENDIR || k == K_TGENDIR ||
	       k == K_VERDIR;
}

static void fill_attr(struct fs *fs, fuse_ino_t ino, mode_t mode, uint64_t size, int64_t mtime,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_size = (off_t)size;
	st->st_blksize = 65536;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_mtime = st->st_ctime = st->st_atime = (time_t)mtime;
}

static mode_t dmode(struct fs *fs)
{
	return S_IFDIR | (fs->allow_other ? 0755 : 0700);
}

static mode_t rmode(struct fs *fs)
{
	return S_IFREG | (fs->allow_other ? 0444 : 0400);
}

/* resolve ino → attributes; returns 0 or -errno */
static int do_getattr(struct fs *fs, fuse_ino_t ino, struct stat *st)
{
	struct ino_parts p;
	struct vol *v;
	struct hist_entry he;
	int64_t now = util_now();
	int rc = 0;

	switch (ino) {
	case INO_ROOT:
	case INO_VOLUMES:
		fill_attr(fs, ino, dmode(fs), 0, now, st);
		return 0;
	case INO_CTL:
		fill_attr(fs, ino, S_IFREG | 0600, 0, now, st);
		return 0;
	case INO_README:
	case INO_DEVDISP:
	case INO_TRKSTAT:
	case INO_HISTDISP:
	case INO_STATUS:
	case INO_METRICS:
	case INO_LOG:
		fill_attr(fs, ino, rmode(fs), 0, now, st);
		return 0;
	default:
		break;
	}
	p = split(ino);
	if (p.vol == 0)
		return -ENOENT;
	v = engine_vol_by_id(fs->e, p.vol);
	if (!v)
		return -ENOENT;
	switch (p.kind) {
	case K_VOLDIR:
	case K_HISTDIR:
	case K_GENDIR:
	case K_TGENDIR:
		fill_attr(fs, ino, dmode(fs), 0, now, st);
		break;
	case K_DATA:
		fill_attr(fs, ino, S_IFREG | (fs->allow_other ? 0644 : 0600), vol_size(v),
			  vol_mtime(v), st);
		/* what the TV has allocated: cp, rsync, tar and qemu-img look for
		 * holes (SEEK_DATA) only in a file with fewer blocks than bytes */
		st->st_blocks = (blkcnt_t)vol_data_blocks(v);
		break;
	case K_CTL:
		fill_attr(fs, ino, S_IFREG | 0600, 0, now, st);
		break;
	case K_DEVDISP:
	case K_TRKSTAT:
	case K_HISTDISP:
	case K_INFO:
	case K_LOG:
		fill_attr(fs, ino, rmode(fs), 0, now, st);
		break;
	case K_LATEST:
		if (!vol_latest_version(v))
			rc = -ENOENT;
		else
			fill_attr(fs, ino, S_IFLNK | 0777, 20, now, st);
		break;
	case K_GENLINK:
	case K_TGENLINK:
		if (!vol_generation(v, p.kind == K_TGENLINK, p.num))
			rc = -ENOENT;
		else
			fill_attr(fs, ino, S_IFLNK | 0777, 32, now, st);
		break;
	case K_VERDIR:
	case K_IMAGE:
	case K_DISKIMG:
	case K_TAPEIMG:
	case K_VINFO:
		rc = vol_history(v, p.num, &he);
		if (rc)
			break;
		if ((p.kind == K_DISKIMG && !he.disk) || (p.kind == K_TAPEIMG && !he.tape)) {
			rc = -ENOENT;
			break;
		}
		if (p.kind == K_VERDIR)
			fill_attr(fs, ino, dmode(fs), 0, he.date, st);
		else if (p.kind == K_VINFO)
			fill_attr(fs, ino, rmode(fs), 0, he.date, st);
		else {
			uint64_t blocks;
			rc = vol_image_blocks(v, p.num,
					      p.kind == K_IMAGE	   ? HIMG_BEST
					      : p.kind == K_DISKIMG ? HIMG_DISK
								    : HIMG_TAPE,
					      &blocks);
			if (rc)
				break;
			fill_attr(fs, ino, rmode(fs), vol_size(v), he.date, st);
			st->st_blocks = (blkcnt_t)blocks;
			/* A tape image is read without the page cache (see op_open):
			 * each read(2) is one FUSE request, and cp and friends read
			 * st_blksize at a time, so make that the largest request.
			 * (Through the page cache, reads as large as the kernel's
			 * read-ahead defeat it: a disk image keeps the grain.) */
			if (p.kind == K_TAPEIMG || (p.kind == K_IMAGE && he.image_from_tape))
				st->st_blksize = FS_MAX_IO;
		}
		break;
	default:
		rc = -ENOENT;
	}
	vol_put(v);
	return rc;
}

static double attr_timeout(enum kind k)
{
	/* The data file's size never changes, and its st_blocks (allocation)
	 * does only through writes and restores: the kernel drops the
	 * allocation it cached on each write through the mount (with -o
	 * writeback: when the write reaches us), and a restore invalidates the
	 * inode (fs_inval_data). History entries
	 * come and go; a disk image's st_blocks shrinks, never grows, once its
	 * copy job ends (an upper bound cached a while stays one). */
	return k == K_DATA ? 60.0 : k == K_IMAGE || k == K_DISKIMG || k == K_TAPEIMG ? 5.0 : 0.0;
}

/* The device number ("maj:min") of the mount on fs->mountpoint, from
 * /proc/self/mountinfo (no request to ourselves); the last match wins, as
 * with stacked mounts. */
static int mount_devno(const struct fs *fs, char *out, size_t outlen)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192], dev[32], mp[4096];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%*u %*u %31s %*s %4095s", dev, mp) != 2)
			continue;
		/* mountinfo escapes blanks and backslashes as \ooo */
		char *w = mp;
		for (const char *r = mp; *r; r++) {
			unsigned c;
			if (r[0] == '\\' && sscanf(r + 1, "%3o", &c) == 1) {
				*w++ = (char)c;
				r += 3;
			} else {
				*w++ = *r;
			}
		}
		*w = '\0';
		if (strcmp(mp, fs->mountpoint) == 0) {
			snprintf(out, outlen, "%s", dev);
			rc = 0;
		}
	}
	fclose(f);
	return rc;
}

/* The kernel starts a FUSE mount with 128 KiB of read-ahead and, when INIT is
 * answered, caps it at what it offered then; sequential image reads (cp of a
 * history) want larger, fewer requests. The bdi can be raised only after the
 * INIT reply was processed, which any later request implies: the first one
 * does it. Needs root (sysfs); otherwise the default stays, said once. */
static void raise_readahead(struct fs *fs)
{
	char dev[32], path[96], val[16];
	int rc, fd;

	if (!fs->readahead_kb || atomic_load_explicit(&fs->ra_set, memory_order_relaxed) ||
	    atomic_exchange(&fs->ra_set, true))
		return;
	rc = mount_devno(fs, dev, sizeof(dev));
	if (!rc) {
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		int n = snprintf(val, sizeof(val), "%u", fs->readahead_kb);
		rc = fd < 0 || write(fd, val, (size_t)n) != n ? -errno : 0;
		if (fd >= 0)
			close(fd);
	}
	if (rc)
		log_info("kernel read-ahead left at its default (%s: %s)",
			 rc == -ENOENT ? "mount not found" : "sysfs", strerror(-rc));
	else
		log_debug("kernel read-ahead set to %u KiB", fs->readahead_kb);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	int rc;

	raise_readahead(FS(req));
	rc = do_getattr(FS(req), ino, &st);

	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, attr_timeout(split(ino).kind));
}

static int reply_entry(fuse_req_t req, fuse_ino_t ino)
{
	struct fuse_entry_param ep;
	int rc;

	memset(&ep, 0, sizeof(ep));
	rc = do_getattr(FS(req), ino, &ep.attr);
	if (rc)
		return rc;
	ep.ino = ino;
	ep.generation = 1;
	ep.attr_timeout = attr_timeout(split(ino).kind);
	ep.entry_timeout = ino < INO_FIXED_END ? 60.0 : attr_timeout(split(ino).kind);
	fuse_reply_entry(req, &ep);
	return 0;
}

static bool parse_num(const char *s, uint64_t *out)
{
	return util_parse_u64(s, 0xffffffffULL, out) == 0 && *out > 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = FS(req);
	struct ino_parts p = split(parent);
	fuse_ino_t ino = 0;
	uint64_t n;
	int rc = -ENOENT;

	raise_readahead(fs);
	if (parent == INO_ROOT) {
		for (size_t i = 0; i < ACM_ARRAY_SIZE(root_entries); i++)
			if (!strcmp(name, root_entries[i].name))
				ino = root_entries[i].ino;
	} else if (parent == INO_VOLUMES) {
		struct vol *v = engine_vol_by_name(fs->e, name);
		if (v) {
			ino = mkino(vol_id(v), 0, K_VOLDIR);
			vol_put(v);
		}
	} else if (p.vol) {
		switch (p.kind) {
		case K_VOLDIR:
			for (size_t i = 0; i < ACM_ARRAY_SIZE(vol_entries); i++)
				if (!strcmp(name, vol_entries[i].name))
					ino = mkino(p.vol, 0, vol_entries[i].kind);
			break;
		case K_HISTDIR:
			if (!strcmp(name, "latest"))
				ino = mkino(p.vol, 0, K_LATEST);
			else if (parse_num(name, &n))
				ino = mkino(p.vol, n, K_VERDIR);
			break;
		case K_GENDIR:
		case K_TGENDIR:
			if (parse_num(name, &n))
				ino = mkino(p.vol, n, p.kind == K_GENDIR ? K_GENLINK : K_TGENLINK);
			break;
		case K_VERDIR:
			if (!strcmp(name, "image"))
				ino = mkino(p.vol, p.num, K_IMAGE);
			else if (!strcmp(name, "disk.img"))
				ino = mkino(p.vol, p.num, K_DISKIMG);
			else if (!strcmp(name, "tape.img"))
				ino = mkino(p.vol, p.num, K_TAPEIMG);
			else if (!strcmp(name, "info"))
				ino = mkino(p.vol, p.num, K_VINFO);
			break;
		default:
			rc = -ENOTDIR;
		}
	}
	if (ino)
		rc = reply_entry(req, ino);
	if (rc)
		fuse_reply_err(req, -rc);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = FS(req);
	struct ino_parts p = split(ino);
	struct vol *v = engine_vol_by_id(fs->e, p.vol);
	char buf[64];
	uint64_t ver = 0;

	if (!v) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (p.kind == K_LATEST) {
		ver = vol_latest_version(v);
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)ver);
	} else if (p.kind == K_GENLINK || p.kind == K_TGENLINK) {
		ver = vol_generation(v, p.kind == K_TGENLINK, p.num);
		snprintf(buf, sizeof(buf), "../history/%llu", (unsigned long long)ver);
	}
	vol_put(v);
	if (!ver)
		fuse_reply_err(req, ENOENT);
	else
		fuse_reply_readlink(req, buf);
}

/* ---------- directories ---------- */

struct dent {
	fuse_ino_t ino;
	mode_t mode;
	char name[80];
};

struct dirbuf {
	fuse_req_t req;
	struct sbuf *sb; /* packed struct dent */
	uint64_t vol;
};

static void dir_add(struct dirbuf *d, const char *name, fuse_ino_t ino, mode_t mode)
{
	struct dent de;

	memset(&de, 0, sizeof(de));
	de.ino = ino;
	de.mode = mode;
	snprintf(de.name, sizeof(de.name), "%s", name);
	sbuf_add(d->sb, (const char *)&de, sizeof(de));
}

static int dir_vol_cb(void *arg, uint64_t id, const char *name)
{
	struct dirbuf *d = arg;

	dir_add(d, name, mkino(id, 0, K_VOLDIR), S_IFDIR);
	return 0;
}

static int dir_hist_cb(void *arg, const struct hist_entry *h)
{
	struct dirbuf *d = arg;
	char name[32];

	snprintf(name, sizeof(name), "%llu", (unsigned long long)h->version);
	dir_add(d, name, mkino(d->vol, h->version, K_VERDIR), S_IFDIR);
	return 0;
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = FS(req);
	struct ino_parts p = split(ino);
	struct fh *fh = calloc(1, sizeof(*fh));
	struct dirbuf d;
	struct vol *v = NULL;
	int rc = 0;

	if (!fh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	sbuf_init(&fh->text, 64 * ACM_MiB);
	pthread_mutex_init(&fh->lock, NULL);
	d.req = req;
	d.sb = &fh->text;
	d.vol = p.vol;
	dir_add(&d, ".", ino, S_IFDIR);
	dir_add(&d, "..", INO_ROOT, S_IFDIR);
	if (ino == INO_ROOT) {
		for (size_t i = 0; i < ACM_ARRAY_SIZE(root_entries); i++)
			dir_add(&d, root_entries[i].name, root_entries[i].ino,
				root_entries[i].ino == INO_VOLUMES ? S_IFDIR : S_IFREG);
	} else if (ino == INO_VOLUMES) {
		engine_list_volumes(fs->e, dir_vol_cb, &d);
	} else if (p.vol && (v = engine_vol_by_id(fs->e, p.vol))) {
		char name[32];
		struct hist_entry he;
		switch (p.kind) {
		case K_VOLDIR:
			for (size_t i = 0; i < ACM_ARRAY_SIZE(vol_entries); i++)
				dir_add(&d, vol_entries[i].name, mkino(p.vol, 0, vol_entries[i].kind),
					is_dir(vol_entries[i].kind) ? S_IFDIR : S_IFREG);
			break;
		case K_HISTDIR:
			vol_list_histories(v, dir_hist_cb, &d);
			if (vol_latest_version(v))
				dir_add(&d, "latest", mkino(p.vol, 0, K_LATEST), S_IFLNK);
			break;
		case K_GENDIR:
		case K_TGENDIR: {
			uint64_t n = vol_generation_count(v, p.kind == K_TGENDIR);
			for (uint64_t i = 1; i <= n; i++) {
				snprintf(name, sizeof(name), "%llu", (unsigned long long)i);
				dir_add(&d, name,
					mkino(p.vol, i, p.kind == K_GENDIR ? K_GENLINK : K_TGENLINK),
					S_IFLNK);
			}
			break;
		}
		case K_VERDIR:
			rc = vol_history(v, p.num, &he);
			if (rc)
				break;
			dir_add(&d, "image", mkino(p.vol, p.num, K_IMAGE), S_IFREG);
			if (he.disk)
				dir_add(&d, "disk.img", mkino(p.vol, p.num, K_DISKIMG), S_IFREG);
			if (he.tape)
				dir_add(&d, "tape.img", mkino(p.vol, p.num, K_TAPEIMG), S_IFREG);
			dir_add(&d, "info", mkino(p.vol, p.num, K_VINFO), S_IFREG);
			break;
		default:
			rc = -ENOTDIR;
		}
		vol_put(v);
	} else {
		rc = -ENOENT;
	}
	if (!rc && fh->text.oom)
		rc = -ENOMEM;
	if (rc) {
		sbuf_release(&fh->text);
		pthread_mutex_destroy(&fh->lock);
		free(fh);
		fuse_reply_err(req, -rc);
		return;
	}
	fh_track(fs, fh);
	fi->fh = (uint64_t)(uintptr_t)fh;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;
	size_t n = fh->text.len / sizeof(struct dent), used = 0;
	char *buf = malloc(size);

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* off = index of the next entry */
	for (size_t i = (size_t)off; i < n; i++) {
		struct dent de;
		struct stat st;
		memcpy(&de, fh->text.buf + i * sizeof(de), sizeof(de));
		memset(&st, 0, sizeof(st));
		st.st_ino = de.ino;
		st.st_mode = de.mode;
		size_t need = fuse_add_direntry(req, buf + used, size - used, de.name, &st,
						(off_t)(i + 1));
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;

	fh_untrack(FS(req), fh);
	fh_free(fh);
	fuse_reply_err(req, 0);
}

/* ---------- open / release ---------- */

static enum render_what render_of(enum kind k)
{
	switch (k) {
	case K_DEVDISP: return RENDER_DEVDISP;
	case K_TRKSTAT: return RENDER_TRKSTAT;
	case K_HISTDISP: return RENDER_HISTDISP;
	case K_INFO: return RENDER_INFO;
	case K_LOG: return RENDER_LOG;
	case K_VINFO: return RENDER_HIST_INFO;
	default: return RENDER_README;
	}
}

static bool owner_or_root(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	return ctx->uid == 0 || ctx->uid == FS(req)->uid;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = FS(req);
	struct ino_parts p = split(ino);
	struct fh *fh;
	int acc = fi->flags & O_ACCMODE;
	int rc = 0;
	enum kind kind = p.kind;

	if (ino < INO_FIXED_END)
		kind = ino == INO_CTL ? K_CTL : K_NONE;
	fh = calloc(1, sizeof(*fh));
	if (!fh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	atomic_init(&fh->refs, 1);
	fh->kind = kind;
	pthread_mutex_init(&fh->lock, NULL);
	sbuf_init(&fh->text, 256 * ACM_MiB);
	if (p.vol) {
		fh->v = engine_vol_by_id(fs->e, p.vol);
		if (!fh->v) {
			rc = -ENOENT;
			goto out;
		}
	}
	if (kind != K_CTL && kind != K_DATA && acc != O_RDONLY) {
		rc = -EACCES;
		goto out;
	}
	switch (kind) {
	case K_CTL:
		if (acc != O_RDONLY && !owner_or_root(req)) {
			rc = -EPERM;
			goto out;
		}
		fi->direct_io = 1;
		fi->nonseekable = 0;
		break;
	case K_DATA:
		if (fi->flags & O_TRUNC) {
			rc = -EPERM;
			goto out;
		}
		fh->write = acc != O_RDONLY;
		rc = vol_open_data(fh->v, fh->write);
		if (rc)
			goto out;
		fi->keep_cache = 1;
		break;
	case K_IMAGE:
	case K_DISKIMG:
	case K_TAPEIMG:
		rc = himg_open(fh->v, p.num,
			       kind == K_IMAGE ? HIMG_BEST : kind == K_DISKIMG ? HIMG_DISK : HIMG_TAPE,
			       &fh->im);
		if (rc)
			goto out;
		/* A history image never changes: the kernel may cache a disk
		 * image's pages. A tape image bypasses the page cache: the tier
		 * keeps its own cache of verified blocks, and each new page-cache
		 * page would cost the reader a page allocation (and, in a VM, often
		 * a fault to the host) on top of the copy. Such a file cannot be
		 * mmap'd (read it with read/pread, as cp, dd and qemu-img do). */
		if (himg_from_tape(fh->im))
			fi->direct_io = 1;
		else
			fi->keep_cache = 1;
		break;
	default: {
		enum render_what w = render_of(kind);
		if (ino < INO_FIXED_END) {
			static const enum render_what fixed[] = {
				[INO_README] = RENDER_README,	[INO_DEVDISP] = RENDER_DEVDISP,
				[INO_TRKSTAT] = RENDER_TRKSTAT, [INO_HISTDISP] = RENDER_HISTDISP,
				[INO_STATUS] = RENDER_STATUS_JSON, [INO_METRICS] = RENDER_METRICS,
				[INO_LOG] = RENDER_LOG,
			};
			w = fixed[ino];
		}
		rc = engine_render(fs->e, fh->v, w, p.num, &fh->text);
		fi->direct_io = 1;
		break;
	}
	}
out:
	if (rc) {
		if (fh->v)
			vol_put(fh->v);
		sbuf_release(&fh->text);
		free(fh);
		fuse_reply_err(req, -rc);
		return;
	}
	fh_track(fs, fh);
	fi->fh = (uint64_t)(uintptr_t)fh;
	fuse_reply_open(req, fi);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;

	fh_untrack(FS(req), fh);
	fh_put(fh);
	fuse_reply_err(req, 0);
}

/* ---------- read / write ---------- */

/* per-thread read buffer for volumes and disk images (libfuse's
 * fuse_reply_data does not splice here and falls back to a buffer it maps
 * and unmaps for every reply: a page fault per 4 KiB); freed when a worker
 * thread exits (a key destructor, not a bare thread-local) */
struct iobuf {
	char *buf;
	size_t len;
};
static pthread_key_t iobuf_key;
static pthread_once_t iobuf_once = PTHREAD_ONCE_INIT;

static void iobuf_free(void *p)
{
	struct iobuf *b = p;

	free(b->buf);
	free(b);
}

static void iobuf_init(void)
{
	pthread_key_create(&iobuf_key, iobuf_free);
}

static char *get_iobuf(size_t len)
{
	struct iobuf *b;

	pthread_once(&iobuf_once, iobuf_init);
	b = pthread_getspecific(iobuf_key);
	if (!b) {
		b = calloc(1, sizeof(*b));
		if (!b || pthread_setspecific(iobuf_key, b)) {
			free(b);
			return NULL;
		}
	}
	if (len > b->len) {
		char *n = realloc(b->buf, len);
		if (!n)
			return NULL;
		b->buf = n;
		b->len = len;
	}
	return b->buf;
}

/* Answers a read with n bytes of buf, or the error n (-errno). */
static void reply_read(fuse_req_t req, const char *buf, ssize_t n)
{
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

/* himg_read_iov's reply: the request is answered (and freed) here, so a
 * failing fuse_reply_iov must not be answered again: always 0. */
static int reply_iov(void *arg, const struct iovec *iov, int cnt)
{
	fuse_reply_iov(arg, iov, cnt);
	return 0;
}

static void do_read(fuse_req_t req, struct fh *fh, size_t size, off_t off)
{
	uint64_t uoff = (uint64_t)off;

	switch (fh->kind) {
	case K_DATA: {
		/* vol_read and himg_read clip at the end, and count and log errors */
		char *buf = get_iobuf(size);
		reply_read(req, buf, buf ? vol_read(fh->v, buf, size, uoff) : -ENOMEM);
		return;
	}
	case K_IMAGE:
	case K_DISKIMG:
	case K_TAPEIMG: {
		uint64_t is = himg_size(fh->im);
		if (uoff >= is) {
			fuse_reply_buf(req, NULL, 0);
			return;
		}
		if (size > is - uoff)
			size = (size_t)(is - uoff);
		int rc = himg_read_iov(fh->im, size, uoff, reply_iov, req);
		if (rc != -EOPNOTSUPP) {
			if (rc < 0)
				fuse_reply_err(req, -rc);
			return;
		}
		char *buf = get_iobuf(size);
		reply_read(req, buf, buf ? himg_read(fh->im, buf, size, uoff) : -ENOMEM);
		return;
	}
	default:
		pthread_mutex_lock(&fh->lock);
		/* a ctl reply reads from 0 (pread) or right after the command (read);
		 * the first read after a write decides which, for the whole reply */
		if (fh->kind == K_CTL) {
			if (!fh->reply_mode)
				fh->reply_mode = uoff == fh->reply_base && uoff ? 2 : 1;
			if (fh->reply_mode == 2)
				uoff = uoff >= fh->reply_base ? uoff - fh->reply_base : fh->text.len;
		}
		if (uoff >= fh->text.len)
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_buf(req, fh->text.buf + uoff,
				       size < fh->text.len - uoff ? size : fh->text.len - uoff);
		pthread_mutex_unlock(&fh->lock);
	}
}

/* Once a read is answered the kernel may release the file at once, while
 * this thread still has work after the reply (an image unpins its cache, a
 * text file drops fh->lock): the read holds the handle until it returns. */
static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;

	atomic_fetch_add(&fh->refs, 1);
	do_read(req, fh, size, off);
	fh_put(fh);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;
	struct fs *fs = FS(req);

	if (fh->kind == K_DATA) {
		ssize_t n = vol_write(fh->v, buf, size, (uint64_t)off);
		if (n < 0)
			fuse_reply_err(req, (int)-n);
		else
			fuse_reply_write(req, (size_t)n);
		return;
	}
	if (fh->kind != K_CTL) {
		fuse_reply_err(req, EBADF);
		return;
	}
	if (!owner_or_root(req)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	pthread_mutex_lock(&fh->lock);
	fh->text.len = 0;
	fh->text.oom = false;
	if (fh->text.buf)
		fh->text.buf[0] = 0;
	int rc = engine_ctl(fs->e, fh->v, buf, size, &fh->text);
	/* a failed write leaves the file position where it was */
	fh->reply_base = (uint64_t)off + (rc ? 0 : size);
	fh->reply_mode = 0;
	pthread_mutex_unlock(&fh->lock);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_write(req, size);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;

	fuse_reply_err(req, fh->kind == K_DATA ? -vol_fsync(fh->v, datasync) : 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, 0);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	struct fh *fh = (struct fh *)(uintptr_t)fi->fh;
	int64_t r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (fh->kind == K_DATA)
		r = vol_seek_data(fh->v, (uint64_t)off, whence);
	else if (fh->im)
		r = himg_seek(fh->im, (uint64_t)off, whence);
	else
		r = -EINVAL;
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, (off_t)r);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct ino_parts p = split(ino);
	enum kind k = ino < INO_FIXED_END ? (ino == INO_CTL ? K_CTL : K_NONE) : p.kind;
	struct stat st;
	int rc;

	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		/* `echo cmd > ctl` truncates first: harmless; the data file has a fixed size */
		if (k != K_CTL) {
			fuse_reply_err(req, EPERM);
			return;
		}
	}
	rc = do_getattr(FS(req), ino, &st);
	if (rc)
		fuse_reply_err(req, -rc);
	else
		fuse_reply_attr(req, &st, attr_timeout(k));
}

/* ---------- namespace changes ---------- */

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = FS(req);
	struct ino_parts p = split(parent);
	struct vol *v;
	int rc;

	if (!owner_or_root(req)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (p.vol == 0 || p.kind != K_VERDIR ||
	    (strcmp(name, "disk.img") && strcmp(name, "tape.img"))) {
		fuse_reply_err(req, EPERM);
		return;
	}
	v = engine_vol_by_id(fs->e, p.vol);
	if (!v) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	bool disk = !strcmp(name, "disk.img");
	rc = vol_histdel_version(v, p.num, disk, !disk);
	vol_put(v);
	fuse_reply_err(req, -rc);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = FS(req);
	struct ino_parts p = split(parent);
	struct vol *v;
	uint64_t ver;
	struct hist_entry he;
	int rc;

	if (!owner_or_root(req)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (p.vol == 0 || p.kind != K_HISTDIR || !parse_num(name, &ver)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	v = engine_vol_by_id(fs->e, p.vol);
	if (!v) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	rc = vol_history(v, ver, &he);
	if (!rc)
		rc = vol_histdel_version(v, ver, he.disk, he.tape);
	vol_put(v);
	fuse_reply_err(req, -rc);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EPERM);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EPERM);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	fuse_reply_err(req, EPERM);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EPERM);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (statvfs(FS(req)->store, &sv))
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			 struct fuse_file_info *fi)
{
	fuse_reply_err(req, EOPNOTSUPP);
}

/* ---------- init ---------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	conn->max_write = FS_MAX_IO;
	conn->max_readahead = FS_MAX_IO;
	if (fs->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
}

void fs_inval_data(void *arg, uint64_t vol_id)
{
	struct fs *fs = arg;

	if (fs->se)
		fuse_lowlevel_notify_inval_inode(fs->se, mkino(vol_id, 0, K_DATA), 0, 0);
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.statfs = op_statfs,
	.create = op_create,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
};
