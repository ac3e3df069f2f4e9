/*
 * backend_file.c — a pool in a local directory (file:///abs/dir).
 *
 * Key "a/b/c" is the file DIR/a/b/c. A put writes DIR/a/b/.c.tmp.<random>,
 * fsyncs it, renames it over the final name and fsyncs the directory, so a
 * crash leaves the old object, no object or the new one — never a torn one.
 * Temporary files (names starting with '.') are invisible to list. No locks:
 * the kernel serialises what needs serialising. Errors: -errno of the failing
 * syscall, logged once with the path.
 */
#include "backend.h"
#include "log.h"
#include "fault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

struct file_backend {
	struct tape_backend base;
	char root[PATH_MAX]; /* immutable after open */
};

static struct file_backend *fb(struct tape_backend *be)
{
	return (struct file_backend *)be;
}

static int key_ok(const char *key)
{
	/* no absolute keys, no "..", no empty components */
	if (!*key || key[0] == '/' || strstr(key, "..") || strstr(key, "//"))
		return 0;
	return 1;
}

static int make_path(struct file_backend *f, const char *key, char *out)
{
	if (!key_ok(key))
		return -EINVAL;
	int n = snprintf(out, PATH_MAX, "%s/%s", f->root, key);
	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static int mkdirs(char *path) /* creates every directory in path's dirname */
{
	for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		int rc = mkdir(path, 0755);
		*p = '/';
		if (rc && errno != EEXIST)
			return -errno;
	}
	return 0;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = io_fsync(IO_TAPE, fd) ? -errno : 0;
	close(fd);
	return rc;
}

/* turns O_DIRECT on or off for fd; 0 or -1 (errno) */
static int set_direct(int fd, bool on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	return fcntl(fd, F_SETFL, on ? fl | O_DIRECT : fl & ~O_DIRECT);
}

static int file_put(struct tape_backend *be, const char *key, const void *buf, size_t len)
{
	atomic_fetch_add(&be->requests, 1);
	struct file_backend *f = fb(be);
	char path[PATH_MAX], tmp[PATH_MAX + 64], dir[PATH_MAX];
	uint64_t rnd = 0;
	int fd, rc = make_path(f, key, path);
	if (rc)
		return rc;
	rc = mkdirs(path);
	if (rc)
		goto out_log;
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	*slash = '\0';
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd ^= (uint64_t)getpid() << 32 ^ (uint64_t)(uintptr_t)buf;
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp.%016llx", dir, slash + 1, (unsigned long long)rnd);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		goto out_log;
	}
	/* A page-aligned buffer (the upload's packs) goes around the page cache:
	 * its whole pages with O_DIRECT, the last partial page buffered. Filling
	 * fresh page-cache pages was 39 % of the daemon's CPU in a file://
	 * upload, and a pack written once is read (with O_DIRECT) much later.
	 * Where the file system refuses, everything is written buffered. */
	const uint8_t *p = buf;
	size_t done = 0, direct = (uintptr_t)buf % IO_DIRECT_ALIGN ? 0 : len - len % IO_DIRECT_ALIGN;
	bool dio = direct && set_direct(fd, true) == 0; /* O_DIRECT is on */
	while (done < len) {
		ssize_t n;
		if (dio && done < direct) {
			struct iovec v = {(void *)(p + done), direct - done};
			n = io_pwritev(IO_TAPE, fd, &v, 1, (off_t)done);
			if (n < 0 && errno == EINVAL && set_direct(fd, false) == 0) {
				dio = false; /* not for this file system: buffered from here */
				continue;
			}
		} else {
			if (dio && set_direct(fd, false)) { /* the partial last page */
				rc = -errno;
				goto out_unlink;
			}
			dio = false;
			n = io_pwrite(IO_TAPE, fd, p + done, len - done, (off_t)done);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			goto out_unlink;
		}
		done += (size_t)n;
	}
	if (io_fsync(IO_TAPE, fd)) {
		rc = -errno;
		goto out_unlink;
	}
	if (close(fd)) {
		fd = -1;
		rc = -errno;
		goto out_unlink;
	}
	fd = -1;
	if (io_rename(IO_TAPE, tmp, path)) {
		rc = -errno;
		goto out_unlink;
	}
	rc = fsync_dir(dir);
	if (rc)
		goto out_log;
	return 0;
out_unlink:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out_log:
	tape_log(TAPE_LOG_ERR, "file pool: put %s: %s", path, strerror(-rc));
	return rc;
}

/* Reads with preadv, up to FILE_IOV_BATCH segments a call (io_preadv keeps
 * the fault shim in the path), and reports progress about every MiB. An
 * aligned read goes around the page cache (O_DIRECT): the disk writes into
 * the caller's buffers, sparing a copy that costs as much CPU as verifying
 * the blocks, and a pack read once does not push other data out of the
 * cache; one call per run keeps the requests to the disk large. The kernel
 * writes back any cached dirty pages of the range first, so the bytes are
 * those a buffered read would see. Where the file system refuses O_DIRECT,
 * the read is buffered. */
#define FILE_IOV_BATCH 256
static ssize_t file_getv(struct tape_backend *be, const char *key, uint64_t off,
			 const struct iovec *iov, int iovcnt, tape_progress_cb progress, void *arg)
{
	atomic_fetch_add(&be->requests, 1);
	char path[PATH_MAX];
	int rc = make_path(fb(be), key, path);
	if (rc)
		return rc;
	int fd = -1;
	if (io_iov_aligned(iov, iovcnt, off)) /* packs' blocks are (tape-format.md) */
		fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct iovec cur[FILE_IOV_BATCH];
	size_t got = 0, told = 0, seg = 0; /* seg: bytes of iov[i] already read */
	ssize_t ret = 0;
	int i = 0;
	while (i < iovcnt) {
		int n = io_iov_at(iov, iovcnt, i, seg, cur, FILE_IOV_BATCH);
		ssize_t r = io_preadv(IO_TAPE, fd, cur, n, (off_t)(off + got));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EINVAL && (fcntl(fd, F_GETFL) & O_DIRECT) &&
		    set_direct(fd, false) == 0)
			continue; /* the device wants larger alignment: go on buffered */
		if (r < 0) {
			ret = -errno;
			tape_log(TAPE_LOG_ERR, "file pool: read %s: %s", path, strerror(errno));
			break;
		}
		if (r == 0)
			break; /* end of the object */
		got += (size_t)r;
		io_iov_skip(iov, &i, &seg, (size_t)r);
		if (progress && got - told >= (1u << 20)) {
			progress(arg, got);
			told = got;
		}
	}
	close(fd);
	if (ret)
		return ret;
	if (progress && got > told)
		progress(arg, got);
	return (ssize_t)got;
}

static ssize_t file_get(struct tape_backend *be, const char *key, uint64_t off, void *buf,
		    size_t len)
{
	return file_getv(be, key, off, &(struct iovec){buf, len}, 1, NULL, NULL);
}

static int file_head(struct tape_backend *be, const char *key, struct tape_obj_info *oi)
{
	atomic_fetch_add(&be->requests, 1);
	char path[PATH_MAX];
	struct stat st;
	int rc = make_path(fb(be), key, path);
	if (rc)
		return rc;
	if (stat(path, &st))
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -ENOENT;
	snprintf(oi->key, sizeof(oi->key), "%s", key);
	oi->size_bytes = (uint64_t)st.st_size;
	oi->mtime = st.st_mtime;
	return 0;
}

/* Walks DIR/rel recursively, reporting regular files whose key has prefix. */
static int walk(struct file_backend *f, const char *rel, const char *prefix, tape_list_cb cb,
		void *arg)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s/%s", f->root, rel);
	if (n < 0 || n >= PATH_MAX)
		return -ENAMETOOLONG;
	DIR *d = opendir(path);
	if (!d)
		return errno == ENOENT || errno == ENOTDIR ? 0 : -errno;
	int rc = 0;
	struct dirent *de;
	while (!rc && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char key[512];
		n = snprintf(key, sizeof(key), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
		if (n < 0 || n >= (int)sizeof(key))
			continue;
		/* prune subtrees that cannot match */
		size_t kl = strlen(key), pl = strlen(prefix);
		if (strncmp(key, prefix, kl < pl ? kl : pl) != 0)
			continue;
		struct stat st;
		char full[PATH_MAX + 512];
		snprintf(full, sizeof(full), "%s/%s", f->root, key);
		if (lstat(full, &st))
			continue;
		if (S_ISDIR(st.st_mode)) {
			rc = walk(f, key, prefix, cb, arg);
		} else if (S_ISREG(st.st_mode) && kl >= pl && kl < 256) {
			struct tape_obj_info oi;
			snprintf(oi.key, sizeof(oi.key), "%s", key);
			oi.size_bytes = (uint64_t)st.st_size;
			oi.mtime = st.st_mtime;
			rc = cb(arg, &oi);
		}
	}
	closedir(d);
	return rc;
}

static int file_list(struct tape_backend *be, const char *prefix, tape_list_cb cb, void *arg)
{
	atomic_fetch_add(&be->requests, 1);
	return walk(fb(be), "", prefix, cb, arg);
}

static int file_del(struct tape_backend *be, const char *key)
{
	atomic_fetch_add(&be->requests, 1);
	char path[PATH_MAX];
	int rc = make_path(fb(be), key, path);
	if (rc)
		return rc;
	rc = fault_check(IO_TAPE, NULL);
	if (rc)
		return rc;
	if (unlink(path))
		return -errno;
	*strrchr(path, '/') = '\0';
	return fsync_dir(path);
}

static void file_close(struct tape_backend *be)
{
	free(fb(be));
}

/* temporaries of puts that never finished (a crash between create and
 * rename): ".<name>.tmp.<16 hex>" in any directory of the pool */
static bool is_put_temp(const char *name)
{
	const char *t = strstr(name, ".tmp.");
	if (name[0] != '.' || !t || strlen(t + 5) != 16)
		return false;
	return strspn(t + 5, "0123456789abcdef") == 16;
}

static int sweep_dir(struct file_backend *f, const char *rel, int depth, int64_t before,
		     uint64_t *removed)
{
	char path[PATH_MAX];
	int n = snprintf(path, sizeof(path), "%s/%s", f->root, rel);
	if (n < 0 || n >= PATH_MAX || depth > 4)
		return 0;
	DIR *d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	struct dirent *de;
	while ((de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char full[PATH_MAX + 512], sub[512];
		snprintf(full, sizeof(full), "%s/%s", path, de->d_name);
		struct stat st;
		if (lstat(full, &st))
			continue;
		if (S_ISDIR(st.st_mode) && de->d_name[0] != '.') {
			n = snprintf(sub, sizeof(sub), "%s%s%s", rel, *rel ? "/" : "", de->d_name);
			if (n > 0 && n < (int)sizeof(sub))
				sweep_dir(f, sub, depth + 1, before, removed);
		} else if (S_ISREG(st.st_mode) && is_put_temp(de->d_name) &&
			   st.st_mtime < before && !unlink(full)) {
			(*removed)++;
		}
	}
	closedir(d);
	return 0;
}

static int file_sweep_temps(struct tape_backend *be, int64_t before, uint64_t *removed)
{
	atomic_fetch_add(&be->requests, 1);
	*removed = 0;
	return sweep_dir(fb(be), "", 0, before, removed);
}

static const struct tape_backend_ops file_ops = {
	.sweep_temps = file_sweep_temps,
	.name = "file",
	.put = file_put,
	.get = file_get,
	.getv = file_getv,
	.head = file_head,
	.list = file_list,
	.del = file_del,
	.close = file_close,
};

int tape_backend_file_open(const char *dir, struct tape_backend **out, char *err, size_t errlen)
{
	fault_init_once(); /* ACMFS_FAULT=tape:… reaches this backend too */
	struct file_backend *f = calloc(1, sizeof(*f));
	if (!f) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	f->base.ops = &file_ops;
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (n >= sizeof(f->root) - 300) {
		free(f);
		snprintf(err, errlen, "pool path too long");
		return -ENAMETOOLONG;
	}
	memcpy(f->root, dir, n);
	f->root[n] = '\0';
	char tmp[PATH_MAX + 2];
	snprintf(tmp, sizeof(tmp), "%s/", f->root);
	int rc = mkdirs(tmp);
	struct stat st;
	if (!rc && (stat(f->root, &st) || !S_ISDIR(st.st_mode)))
		rc = -ENOTDIR;
	if (rc) {
		snprintf(err, errlen, "pool directory %s: %s", f->root, strerror(-rc));
		free(f);
		return rc;
	}
	*out = &f->base;
	return 0;
}
