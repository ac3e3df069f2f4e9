/*
 * acmfiles — file-level restore: mount the filesystems inside a history
 * image read-only, and undo it.
 *
 *   acmfiles [-g N|-v V] [-m DISK|TAPE] [-M DIR] DEVICE DIR
 *   acmfiles -u DIR
 *
 * Contract. The history's image file on the mount (`image`, or `disk.img` /
 * `tape.img` with -m) is opened O_RDONLY and attached to a free loop device
 * read-only, with partition scan and autoclear. Every partition — or the
 * whole device when it holds a filesystem itself — whose superblock magic
 * says ext2/3/4, xfs or btrfs is mounted read-only, nosuid, nodev, noexec,
 * with no journal replay (the device is read-only; a replay would have to
 * write), on DIR/p<K> (the kernel's partition number) or DIR/disk. When the
 * kernel finds no partitions (a kernel built without partition table
 * support) a GPT or MBR is read here and its partitions added with BLKPG,
 * as `partx -a` does. DIR is created 0700 when missing and must otherwise be
 * empty, ours and not writable by others; it is opened once and every
 * later step goes through that descriptor. DIR/.acmfiles (0600) records
 * what was done; `-u` undoes exactly that and nothing else: it unmounts,
 * removes the subdirectories and the state file, and makes sure the loop
 * device is gone. DIR itself stays.
 *
 * All or nothing. Any failure while setting up undoes every step so far, in
 * reverse: no half-made mount, no leftover loop device or directory. SIGINT,
 * SIGTERM, SIGHUP and SIGQUIT are held during setup and `-u`; one that
 * arrived during setup undoes it at the end. The state file is rewritten
 * (atomically) before each mount, so even a SIGKILL leaves a state that `-u`
 * can finish. The loop device is detached by the kernel once its last user
 * closes it (autoclear): our descriptor, held until every mount is made,
 * then the mounts — so a killed setup leaks no device either.
 *
 * Deliberately not here: LVM, MD RAID, LUKS and other filesystems (such a
 * partition is skipped with a note), and any write to the image. The magic
 * number is only a hint: the kernel's filesystem code parses the rest of
 * whatever the backup holds (docs/file-restore.md says when that matters).
 *
 * Needs root (CAP_SYS_ADMIN) for the loop device and mount(2). Errors: one
 * line `acmfiles: error: …` on stderr; exit status as in common.h.
 */
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/blkpg.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define MAX_FS      128 /* a GPT's default number of entries */
#define STATE_NAME  ".acmfiles"
#define STATE_MAGIC "acmfiles 1"
#define STATE_MAX   (64 * 1024)
#define WAIT_MS     5000 /* for device nodes and for the detach */
#define POLL_MS     20
#define LOOP_TRIES  16 /* another process may take the free device first */
#define MNT_FLAGS   (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

static const char usage[] =
    "usage: acmfiles [-g N|-v V] [-m DISK|TAPE] [-M DIR] DEVICE DIR\n"
    "       acmfiles -u DIR\n"
    "\n"
    "Mount the filesystems inside a history of DEVICE (a volume name or\n"
    "MNT/volumes/VOL/data) read-only on DIR/disk, or DIR/p1, DIR/p2 … for a\n"
    "partitioned image (default: the newest succeeded history).\n"
    "  -g N      disk generation N (1 = newest); with -m TAPE tape generation N\n"
    "  -v V      absolute version V\n"
    "  -m MEDIA  DISK or TAPE: mount disk.img or tape.img (default: image)\n"
    "  -u        unmount everything under DIR and detach the loop device\n"
    "  -M DIR    the acmfs mount\n"
    "  --help, --version\n";

enum { OPT_G, OPT_V, OPT_M, OPT_U, NR_OPTS };

enum fs_kind { FS_NONE, FS_EXT, FS_XFS, FS_BTRFS };

struct fs_entry {
	char sub[16]; /* "disk", "p1" … */
	enum fs_kind kind;
	bool gone; /* unmounted and its directory removed */
};

/* One setup or teardown: what exists, so that it can be undone. */
struct session {
	char dir[PATH_MAX];     /* for messages; every step goes through dfd */
	int dfd;                /* DIR, opened once: a rename of DIR or of a
	                         * parent cannot redirect a later step */
	bool made_dir;          /* DIR was created by this setup */
	bool wrote_state;       /* DIR/.acmfiles exists */
	char backing[PATH_MAX]; /* realpath of the image */
	char vol[ACM_NAME_MAX + 1];
	char version[32];
	const char *file;           /* image, disk.img, tape.img */
	int loop_nr;                /* -1: none */
	unsigned long long diskseq; /* of that attachment; 0: unknown */
	int loop_fd;                /* held until every mount is made */
	size_t nr_fs;
	struct fs_entry fs[MAX_FS];
};

static const char *const fs_names[] = {"none", "ext4", "xfs", "btrfs"};

/* ---- small helpers ---- */

static void note(const struct acm_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note(const struct acm_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: note: ", ctx->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* The first line of a small sysfs file, without its newline. */
static int read_line(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static void sub_path(const struct session *s, const struct fs_entry *f, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", s->dir, f->sub);
}

/* A name in DIR as a path for the calls that have no *at() form (mount,
 * umount2): the magic link resolves to the directory dfd holds. */
static void fd_path(const struct session *s, const char *name, char *out, size_t len)
{
	snprintf(out, len, "/proc/self/fd/%d/%s", s->dfd, name);
}

static void state_path(const struct session *s, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", s->dir, STATE_NAME);
}

/* ---- which image ---- */

/* The history directory the options name, relative to the mount. */
static void history_rel(const struct acm_opt *opts, const char *vol, char *rel, size_t len,
                        char *what, size_t wlen)
{
	const char *m = opts[OPT_M].value;
	const char *gens = m && strcmp(m, "TAPE") == 0 ? "tape-generations" : "generations";
	const char *side = m && strcmp(m, "TAPE") == 0 ? "tape" : "disk";

	if (opts[OPT_V].value) {
		snprintf(rel, len, "volumes/%s/history/%s", vol, opts[OPT_V].value);
		snprintf(what, wlen, "version %s", opts[OPT_V].value);
	} else if (opts[OPT_G].value || m) {
		const char *g = opts[OPT_G].value ? opts[OPT_G].value : "1";
		snprintf(rel, len, "volumes/%s/%s/%s", vol, gens, g);
		snprintf(what, wlen, "%s generation %s", side, g);
	} else {
		/* history/latest: the newest succeeded history, as restore picks */
		snprintf(rel, len, "volumes/%s/history/latest", vol);
		snprintf(what, wlen, "succeeded history");
	}
}

/* Refuse a history whose side we would read ended `failed`: its image is not
 * the volume at any point in time. */
static int check_status(const struct acm_ctx *ctx, const struct session *s, const char *hist)
{
	char path[PATH_MAX + 32], st[32];
	const char *key = "disk_status";
	char *info;
	struct stat sb;

	if (strcmp(s->file, "tape.img") == 0)
		key = "tape_status";
	else if (strcmp(s->file, "image") == 0) {
		snprintf(path, sizeof(path), "%s/disk.img", hist);
		if (stat(path, &sb) != 0)
			key = "tape_status";
	}
	snprintf(path, sizeof(path), "%s/info", hist);
	if (acm_read_file(path, &info) != 0)
		return 0; /* the image itself is what matters; no info is no verdict */
	if (acm_info_get(info, key, st, sizeof(st)) == 0 && strcmp(st, "failed") == 0) {
		acm_error(ctx, "%s version %s: its %.4s copy failed; the image is not a backup",
		          s->vol, s->version, key);
		free(info);
		return -ENODATA;
	}
	free(info);
	return 0;
}

static int pick_image(const struct acm_ctx *ctx, struct session *s, const struct acm_opt *opts)
{
	const char *m = opts[OPT_M].value;
	char rel[256], what[64], hist[PATH_MAX], path[PATH_MAX + 512];
	struct stat st;
	char *slash;

	s->file = !m ? "image" : strcmp(m, "TAPE") == 0 ? "tape.img" : "disk.img";
	history_rel(opts, s->vol, rel, sizeof(rel), what, sizeof(what));
	snprintf(path, sizeof(path), "%s/%s", ctx->mnt, rel);
	if (!realpath(path, hist) || stat(hist, &st) != 0 || !S_ISDIR(st.st_mode)) {
		acm_error(ctx, "%s has no %s", s->vol, what);
		return -ENOENT;
	}
	snprintf(path, sizeof(path), "%s/%s", hist, s->file);
	if (!realpath(path, s->backing)) {
		int e = errno;
		slash = strrchr(hist, '/');
		if (e == ENOENT)
			acm_error(ctx, "%s version %s has no %s history (no %s)", s->vol, slash + 1,
			          strcmp(s->file, "tape.img") ? "disk" : "tape", s->file);
		else
			acm_error(ctx, "%s: %s", path, strerror(e));
		return -e;
	}
	slash = strrchr(hist, '/');
	snprintf(s->version, sizeof(s->version), "%s", slash + 1);
	if (strchr(s->backing, '\n')) {
		/* the state file and sysfs hold one path per line */
		acm_error(ctx, "the mount's path holds a newline: not supported");
		return -EINVAL;
	}
	return check_status(ctx, s, hist);
}

static int open_image(const struct acm_ctx *ctx, const struct session *s)
{
	struct stat st;
	int fd = open(s->backing, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		int e = errno;
		acm_error(ctx, "%s: %s", s->backing, strerror(e));
		return -e;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 4096) {
		acm_error(ctx, "%s is not an image (a regular file of 4 KiB or more)", s->backing);
		close(fd);
		return -EINVAL;
	}
	return fd;
}

/* ---- DIR ---- */

/* Open s->dir into s->dfd. Root mounts below it, so nobody else may be able
 * to swap its entries (a p1 replaced by a symlink to /etc would put the
 * mount there): it must be ours and not writable by group or others. */
static int open_dir(const struct acm_ctx *ctx, struct session *s)
{
	struct stat st;

	s->dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (s->dfd < 0 || fstat(s->dfd, &st) != 0) {
		int e = -errno;
		acm_error(ctx, "%s: %s", s->dir, strerror(-e));
		return e;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 022)) {
		acm_error(ctx, "%s must belong to this user and not be writable by group or others",
		          s->dir);
		return -EPERM;
	}
	return 0;
}

/* Create DIR, or accept an existing empty one. */
static int prepare_dir(const struct acm_ctx *ctx, struct session *s, const char *arg)
{
	char abs[PATH_MAX];
	struct dirent *de;
	int ret = 0;
	DIR *d;

	if (acm_abspath(arg, abs, sizeof(abs))) {
		acm_error(ctx, "%s: path too long", arg);
		return -ENAMETOOLONG;
	}
	/* 0700: a backup may hold other users' files under their old owners */
	if (mkdir(abs, 0700) == 0)
		s->made_dir = true;
	else if (errno != EEXIST) {
		int e = errno;
		acm_error(ctx, "cannot create %s: %s", abs, strerror(e));
		return -e;
	}
	if (!realpath(abs, s->dir)) {
		ret = -errno;
		acm_error(ctx, "%s: %s", abs, strerror(-ret));
		goto out_undo;
	}
	if (strchr(s->dir, '\n')) {
		acm_error(ctx, "%s: a newline in the path is not supported", abs);
		ret = -EINVAL;
		goto out_undo;
	}
	ret = open_dir(ctx, s);
	if (ret)
		goto out_undo;
	d = fdopendir(dup(s->dfd));
	if (!d) {
		ret = -errno;
		acm_error(ctx, "%s: %s", s->dir, strerror(-ret));
		goto out_undo;
	}
	/* look at every entry: our state file may come after the subdirs */
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, STATE_NAME) == 0)
			ret = -EBUSY;
		else if (!ret && strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			ret = -ENOTEMPTY;
	}
	closedir(d);
	if (ret == -EBUSY)
		acm_error(ctx, "%s already holds an acmfiles mount (acmfiles -u %s first)", s->dir,
		          s->dir);
	else if (ret)
		acm_error(ctx, "%s is not empty", s->dir);
out_undo:
	if (ret && s->dfd >= 0) {
		close(s->dfd);
		s->dfd = -1;
	}
	if (ret && s->made_dir) {
		rmdir(abs);
		s->made_dir = false;
	}
	return ret;
}

/* ---- the state file ---- */

static int write_state(const struct acm_ctx *ctx, struct session *s)
{
	static const char tmp[] = STATE_NAME ".tmp";
	char path[PATH_MAX + 32];
	FILE *f;
	int fd, ret = 0;

	state_path(s, path, sizeof(path));
	fd = openat(s->dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || fchmod(fd, 0600) != 0 || !(f = fdopen(fd, "w"))) {
		ret = -errno;
		if (fd >= 0)
			close(fd);
		goto out;
	}
	fprintf(f, "%s\nloop %d\ndiskseq %llu\nbacking %s\nvolume %s\nversion %s\nfile %s\n",
	        STATE_MAGIC, s->loop_nr, s->diskseq, s->backing, s->vol, s->version, s->file);
	for (size_t i = 0; i < s->nr_fs; i++)
		if (!s->fs[i].gone)
			fprintf(f, "fs %s %s\n", s->fs[i].sub, fs_names[s->fs[i].kind]);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0)
		ret = -errno;
	if (fclose(f) != 0 && !ret)
		ret = -errno;
	if (!ret && renameat(s->dfd, tmp, s->dfd, STATE_NAME) != 0)
		ret = -errno;
out:
	if (ret) {
		unlinkat(s->dfd, tmp, 0);
		acm_error(ctx, "cannot write %s: %s", path, strerror(-ret));
		return ret;
	}
	s->wrote_state = true;
	return 0;
}

static bool sub_ok(const char *sub)
{
	size_t n = strlen(sub);

	if (strcmp(sub, "disk") == 0)
		return true;
	if (n < 2 || n > 5 || sub[0] != 'p' || sub[1] == '0')
		return false;
	return acm_number_ok(sub + 1);
}

static int parse_fs_line(struct session *s, const char *rest)
{
	char sub[16], type[16];
	struct fs_entry *f;

	if (s->nr_fs >= MAX_FS || sscanf(rest, "%15s %15s", sub, type) != 2 || !sub_ok(sub))
		return -EPROTO;
	f = &s->fs[s->nr_fs++];
	snprintf(f->sub, sizeof(f->sub), "%s", sub);
	for (int k = FS_EXT; k <= FS_BTRFS; k++)
		if (strcmp(type, fs_names[k]) == 0)
			f->kind = (enum fs_kind)k;
	return f->kind == FS_NONE ? -EPROTO : 0;
}

static int parse_file(struct session *s, const char *name)
{
	static const char *const files[] = {"image", "disk.img", "tape.img"};

	for (size_t i = 0; i < 3; i++)
		if (strcmp(name, files[i]) == 0) {
			s->file = files[i];
			return 0;
		}
	return -EPROTO;
}

static int parse_state(struct session *s, char *text)
{
	char *save = NULL, *line = strtok_r(text, "\n", &save);

	if (!line || strcmp(line, STATE_MAGIC) != 0)
		return -EPROTO;
	while ((line = strtok_r(NULL, "\n", &save))) {
		char *rest = strchr(line, ' ');
		int ret = 0;

		if (!rest)
			return -EPROTO;
		*rest++ = '\0';
		if (strcmp(line, "loop") == 0) {
			if (!acm_number_ok(rest) || strlen(rest) > 7)
				return -EPROTO;
			s->loop_nr = atoi(rest);
		} else if (strcmp(line, "diskseq") == 0) {
			if (!acm_number_ok(rest))
				return -EPROTO;
			s->diskseq = strtoull(rest, NULL, 10);
		} else if (strcmp(line, "backing") == 0) {
			if (rest[0] != '/' || strlen(rest) >= sizeof(s->backing))
				return -EPROTO;
			snprintf(s->backing, sizeof(s->backing), "%s", rest);
		} else if (strcmp(line, "fs") == 0) {
			ret = parse_fs_line(s, rest);
		} else if (strcmp(line, "volume") == 0) {
			snprintf(s->vol, sizeof(s->vol), "%s", rest);
		} else if (strcmp(line, "version") == 0) {
			snprintf(s->version, sizeof(s->version), "%s", rest);
		} else if (strcmp(line, "file") == 0) {
			ret = parse_file(s, rest);
		} else {
			return -EPROTO;
		}
		if (ret)
			return ret;
	}
	return s->loop_nr >= 0 && s->backing[0] && s->file ? 0 : -EPROTO;
}

/* Read and check DIR/.acmfiles. As root we act on what it says, so it must
 * be a plain file of ours that nobody else could have written, and it names
 * only DIR/disk or DIR/p<K> and a loop device still backed by its image. */
static int read_state(const struct acm_ctx *ctx, struct session *s)
{
	char path[PATH_MAX + 32], *text = NULL;
	struct stat st;
	ssize_t n = -1;
	int fd, ret;

	state_path(s, path, sizeof(path));
	fd = openat(s->dfd, STATE_NAME, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			acm_error(ctx, "%s holds no acmfiles mount (no %s)", s->dir, STATE_NAME);
		else
			acm_error(ctx, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
	    (st.st_mode & 022) || st.st_size > STATE_MAX) {
		acm_error(ctx,
		          "%s is not a state file of acmfiles (not a regular file of "
		          "this user, or writable by others): nothing done",
		          path);
		close(fd);
		return -EPERM;
	}
	text = malloc(STATE_MAX + 1);
	if (text)
		n = read(fd, text, STATE_MAX);
	close(fd);
	if (n < 0) {
		ret = text ? -errno : -ENOMEM;
		acm_error(ctx, "%s: %s", path, strerror(-ret));
		free(text);
		return ret;
	}
	text[n] = '\0';
	ret = parse_state(s, text);
	free(text);
	if (ret)
		acm_error(ctx, "%s is not a valid acmfiles state file: nothing done", path);
	return ret;
}

/* ---- the loop device ---- */

static unsigned long long loop_diskseq(int nr)
{
	char p[64], v[32];

	snprintf(p, sizeof(p), "/sys/block/loop%d/diskseq", nr);
	return read_line(p, v, sizeof(v)) == 0 ? strtoull(v, NULL, 10) : 0;
}

/* Whether loopN is still the attachment this session made: the same image,
 * and (Linux 5.15+) the same disk sequence number, which every attach
 * increments — a number reused for the same image by a later acmfiles is
 * not ours. */
static bool loop_is_ours(const struct session *s)
{
	char p[64], back[PATH_MAX];

	snprintf(p, sizeof(p), "/sys/block/loop%d/loop/backing_file", s->loop_nr);
	if (read_line(p, back, sizeof(back)) != 0 || strcmp(back, s->backing) != 0)
		return false;
	return s->diskseq == 0 || loop_diskseq(s->loop_nr) == s->diskseq;
}

/* Wait until `node` is the block device /sys says `sysdev` is. devtmpfs
 * makes nodes as the kernel adds devices; udev may still be renaming or
 * re-permissioning them on a busy system. */
static int wait_node(const char *node, const char *sysdev, double deadline)
{
	char majmin[32];
	unsigned int maj, min;
	struct stat st;

	for (;;) {
		if (read_line(sysdev, majmin, sizeof(majmin)) == 0 &&
		    sscanf(majmin, "%u:%u", &maj, &min) == 2 && stat(node, &st) == 0 &&
		    S_ISBLK(st.st_mode) && st.st_rdev == makedev(maj, min))
			return 0;
		if (acm_now() > deadline)
			return -ETIMEDOUT;
		acm_sleep_ms(POLL_MS);
	}
}

static int open_loop(int nr)
{
	char node[32], sysdev[64];
	int ret;

	snprintf(node, sizeof(node), "/dev/loop%d", nr);
	snprintf(sysdev, sizeof(sysdev), "/sys/block/loop%d/dev", nr);
	ret = wait_node(node, sysdev, acm_now() + 1.0);
	if (ret)
		return ret;
	/* read-only open: the kernel then makes the device read-only too */
	ret = open(node, O_RDONLY | O_CLOEXEC);
	return ret < 0 ? -errno : ret;
}

static int loop_configure(int fd, int image_fd, const char *name)
{
	struct loop_config cfg;
	size_t n = strlen(name);

	memset(&cfg, 0, sizeof(cfg));
	cfg.fd = (__u32)image_fd;
	cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_PARTSCAN | LO_FLAGS_AUTOCLEAR;
	if (n >= LO_NAME_SIZE)
		n = LO_NAME_SIZE - 1;
	memcpy(cfg.info.lo_file_name, name, n);
	if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOTTY)
		return -errno;
	/* Before Linux 5.8: two steps. READ_ONLY is not settable but follows
	 * from the O_RDONLY descriptors. */
	if (ioctl(fd, LOOP_SET_FD, image_fd) != 0)
		return -errno;
	cfg.info.lo_flags = LO_FLAGS_PARTSCAN | LO_FLAGS_AUTOCLEAR;
	if (ioctl(fd, LOOP_SET_STATUS64, &cfg.info) != 0) {
		int e = -errno;
		ioctl(fd, LOOP_CLR_FD, 0);
		return e;
	}
	return 0;
}

static int loop_attach(const struct acm_ctx *ctx, struct session *s, int image_fd)
{
	int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC), ret = -EBUSY;

	if (ctl < 0) {
		ret = -errno;
		acm_error(ctx, "cannot open /dev/loop-control: %s%s", strerror(-ret),
		          ret == -EACCES || ret == -EPERM ? " (acmfiles needs root)" : "");
		return ret;
	}
	for (int i = 0; i < LOOP_TRIES && ret == -EBUSY; i++) {
		int nr = ioctl(ctl, LOOP_CTL_GET_FREE), fd;

		if (nr < 0) {
			ret = -errno;
			break;
		}
		fd = open_loop(nr);
		if (fd < 0) {
			ret = fd;
			break;
		}
		ret = loop_configure(fd, image_fd, s->backing);
		if (ret == 0) {
			s->loop_nr = nr;
			s->loop_fd = fd;
			s->diskseq = loop_diskseq(nr);
			break;
		}
		close(fd);
	}
	close(ctl);
	if (ret)
		acm_error(ctx, "cannot attach a loop device to %s: %s", s->backing, strerror(-ret));
	return ret;
}

/* Detach the loop device if it is still ours. With autoclear it is
 * normally gone already (the last umount closed it). */
static int loop_detach(const struct acm_ctx *ctx, const struct session *s)
{
	double deadline = acm_now() + WAIT_MS / 1000.0;
	char node[32];
	int fd;

	if (!loop_is_ours(s))
		return 0;
	snprintf(node, sizeof(node), "/dev/loop%d", s->loop_nr);
	fd = open(node, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		/* still open elsewhere: the kernel turns this into autoclear */
		ioctl(fd, LOOP_CLR_FD, 0);
		close(fd);
	}
	while (loop_is_ours(s)) {
		if (acm_now() > deadline) {
			acm_error(ctx, "%s is still attached to %s (opened by another process?)",
			          node, s->backing);
			return -EBUSY;
		}
		acm_sleep_ms(POLL_MS);
	}
	return 0;
}

/* ---- filesystems ---- */

static bool magic_at(int fd, off_t off, const void *magic, size_t len)
{
	unsigned char buf[16];

	return pread(fd, buf, len, off) == (ssize_t)len && memcmp(buf, magic, len) == 0;
}

/* What the superblock magic numbers say; several at once is no answer. */
static int probe(const char *dev, enum fs_kind *kind)
{
	static const unsigned char ext[] = {0x53, 0xef}; /* s_magic, le16 */
	int fd = open(dev, O_RDONLY | O_CLOEXEC), hits = 0;
	unsigned char b;

	*kind = FS_NONE;
	if (fd < 0)
		return -errno;
	/* a device that cannot be read at all is an I/O error, not "no fs" */
	if (pread(fd, &b, 1, 0) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	if (magic_at(fd, 1024 + 56, ext, 2)) {
		*kind = FS_EXT;
		hits++;
	}
	if (magic_at(fd, 0, "XFSB", 4)) {
		*kind = FS_XFS;
		hits++;
	}
	if (magic_at(fd, 65536 + 64, "_BHRfS_M", 8)) {
		*kind = FS_BTRFS;
		hits++;
	}
	close(fd);
	if (hits > 1)
		*kind = FS_NONE;
	return hits > 1 ? -ENOTUNIQ : 0;
}

static int add_fs(const struct acm_ctx *ctx, struct session *s, const char *sub, const char *dev)
{
	enum fs_kind kind;
	int ret = probe(dev, &kind);

	if (ret == -ENOTUNIQ) {
		note(ctx, "%s: signatures of several filesystems; skipped", sub);
		return 0;
	}
	if (ret) {
		acm_error(ctx, "cannot read %s (%s): %s", dev, sub, strerror(-ret));
		return ret;
	}
	if (kind == FS_NONE) {
		if (strcmp(sub, "disk") != 0)
			note(ctx, "%s: no ext2/3/4, xfs or btrfs filesystem; skipped", sub);
		return 0;
	}
	snprintf(s->fs[s->nr_fs].sub, sizeof(s->fs[0].sub), "%s", sub);
	s->fs[s->nr_fs++].kind = kind;
	return 0;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* The partition numbers the kernel found, ascending. Its scan ran inside
 * LOOP_CONFIGURE (LO_FLAGS_PARTSCAN), so /sys already lists them. */
static int list_partitions(const struct session *s, int *parts, size_t *nr)
{
	char sys[64], prefix[32];
	struct dirent *de;
	size_t pl;
	DIR *d;

	snprintf(sys, sizeof(sys), "/sys/block/loop%d", s->loop_nr);
	pl = (size_t)snprintf(prefix, sizeof(prefix), "loop%dp", s->loop_nr);
	d = opendir(sys);
	if (!d)
		return -errno;
	*nr = 0;
	while ((de = readdir(d)) && *nr < MAX_FS)
		if (strncmp(de->d_name, prefix, pl) == 0 && acm_number_ok(de->d_name + pl))
			parts[(*nr)++] = atoi(de->d_name + pl);
	closedir(d);
	qsort(parts, *nr, sizeof(*parts), cmp_int);
	return 0;
}

/* ---- partition tables, for kernels without their parsers ---- */

struct part {
	int nr;              /* as the kernel numbers it: GPT slot, MBR 1-4, logicals from 5 */
	uint64_t start, len; /* bytes */
};

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* CRC-32 (IEEE, reflected), as GPT uses; bitwise: a few KiB once. */
static uint32_t crc32_le(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffffu;

	while (n--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = c >> 1 ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}

static void add_part(struct part *parts, size_t *nr, int pno, uint64_t start, uint64_t len,
                     uint64_t size)
{
	if (*nr >= MAX_FS || len == 0 || start >= size || len > size - start)
		return; /* outside the image: the kernel would not add it either */
	parts[*nr].nr = pno;
	parts[*nr].start = start;
	parts[*nr].len = len;
	(*nr)++;
}

/* A GPT header in sector `lba` of `ssz`-byte sectors, both CRCs checked as
 * the kernel does. -ENOENT: none there; -EBADMSG: a damaged one. */
static int read_gpt(int fd, uint64_t size, unsigned int ssz, uint64_t lba, struct part *parts,
                    size_t *nr)
{
	unsigned char hdr[512], *ents;
	uint32_t hsize, crc, n, esz;
	uint64_t bytes;
	int ret = 0;

	if (pread(fd, hdr, sizeof(hdr), (off_t)(lba * ssz)) != (ssize_t)sizeof(hdr) ||
	    memcmp(hdr, "EFI PART", 8))
		return -ENOENT;
	hsize = le32(hdr + 12);
	crc = le32(hdr + 16);
	memset(hdr + 16, 0, 4);
	if (hsize < 92 || hsize > sizeof(hdr) || crc32_le(hdr, hsize) != crc)
		return -EBADMSG;
	n = le32(hdr + 80);
	esz = le32(hdr + 84);
	bytes = (uint64_t)n * esz;
	if (esz < 128 || esz % 8 || n == 0 || bytes > (1u << 20))
		return -EBADMSG;
	ents = malloc(bytes);
	if (!ents)
		return -ENOMEM;
	if (pread(fd, ents, bytes, (off_t)(le64(hdr + 72) * ssz)) != (ssize_t)bytes ||
	    crc32_le(ents, bytes) != le32(hdr + 88)) {
		ret = -EBADMSG;
		goto out_free;
	}
	for (uint32_t i = 0; i < n; i++) {
		const unsigned char *e = ents + (size_t)i * esz;
		static const unsigned char unused[16];
		uint64_t first = le64(e + 32), last = le64(e + 40);

		if (memcmp(e, unused, 16) != 0 && last >= first)
			add_part(parts, nr, (int)i + 1, first * ssz, (last - first + 1) * ssz,
			         size);
	}
out_free:
	free(ents);
	return ret;
}

static bool mbr_sig(const unsigned char *sec)
{
	return sec[510] == 0x55 && sec[511] == 0xaa;
}

/* The chain of extended boot records from the extended partition at `ext`. */
static void read_logicals(int fd, uint64_t size, uint64_t ext, struct part *parts, size_t *nr)
{
	uint64_t ebr = ext;
	int pno = 5;

	for (int hops = 0; hops < MAX_FS; hops++) {
		unsigned char sec[512];
		const unsigned char *l = sec + 446, *next = sec + 462;

		if (pread(fd, sec, 512, (off_t)(ebr * 512)) != 512 || !mbr_sig(sec))
			return;
		if (l[4] && le32(l + 12))
			add_part(parts, nr, pno++, (ebr + le32(l + 8)) * 512,
			         (uint64_t)le32(l + 12) * 512, size);
		if (!next[4] || !le32(next + 8))
			return;
		ebr = ext + le32(next + 8);
	}
}

static int read_mbr(int fd, uint64_t size, struct part *parts, size_t *nr)
{
	unsigned char sec[512];

	if (pread(fd, sec, 512, 0) != 512 || !mbr_sig(sec))
		return -ENOENT;
	/* as the kernel: a boot flag other than 0x00/0x80 is a boot sector (FAT…) */
	for (int i = 0; i < 4; i++)
		if (sec[446 + 16 * i] & 0x7f)
			return -ENOENT;
	for (int i = 0; i < 4; i++) {
		const unsigned char *e = sec + 446 + 16 * i;
		uint64_t start = le32(e + 8), cnt = le32(e + 12);

		if (e[4] == 0xee)
			return -EBADMSG; /* protective MBR, but no valid GPT */
		if (e[4] == 0x05 || e[4] == 0x0f || e[4] == 0x85)
			read_logicals(fd, size, start, parts, nr);
		else if (e[4] && cnt)
			add_part(parts, nr, i + 1, start * 512, cnt * 512, size);
	}
	return 0;
}

static int add_partition(int fd, const struct part *p)
{
	struct blkpg_partition bp = {
	    .start = (long long)p->start, .length = (long long)p->len, .pno = p->nr};
	struct blkpg_ioctl_arg a = {.op = BLKPG_ADD_PARTITION, .datalen = sizeof(bp), .data = &bp};

	return ioctl(fd, BLKPG, &a) == 0 ? 0 : -errno;
}

/* The kernel's scan found nothing, yet the image may hold a table it cannot
 * read: kernels built without CONFIG_EFI_PARTITION / CONFIG_MSDOS_PARTITION
 * (minimal VM kernels). Read a GPT or MBR here and add its partitions with
 * BLKPG, as `partx -a` does; from then on it is as if the kernel had. */
static int scan_table(const struct acm_ctx *ctx, const struct session *s)
{
	struct part *parts = calloc(MAX_FS, sizeof(*parts));
	uint64_t size = 0;
	size_t nr = 0;
	int ret;

	if (!parts)
		return -ENOMEM;
	if (ioctl(s->loop_fd, BLKGETSIZE64, &size) != 0) {
		ret = -errno;
		goto out_free;
	}
	/* primary GPT, else the backup in the last sector (as the kernel), for
	 * 512- and 4096-byte sectors; else an MBR */
	ret = -ENOENT;
	for (int i = 0; i < 4 && ret != 0; i++) {
		unsigned int ssz = i % 2 ? 4096 : 512;
		int r = read_gpt(s->loop_fd, size, ssz, i < 2 ? 1 : size / ssz - 1, parts, &nr);
		if (r == 0 || (r != -ENOENT && ret == -ENOENT))
			ret = r;
	}
	if (ret == -ENOENT)
		ret = read_mbr(s->loop_fd, size, parts, &nr);
	if (ret == -EBADMSG)
		note(ctx, "the image's partition table is damaged; ignored");
	if (ret == -ENOENT || ret == -EBADMSG)
		ret = 0;
	for (size_t i = 0; i < nr && !ret; i++) {
		int err = add_partition(s->loop_fd, &parts[i]);
		if (err)
			note(ctx, "partition %d: cannot add it: %s; skipped", parts[i].nr,
			     strerror(-err));
	}
out_free:
	free(parts);
	return ret;
}

/* Whole device when it holds a filesystem itself, else its partitions. */
static int find_filesystems(const struct acm_ctx *ctx, struct session *s)
{
	double deadline = acm_now() + WAIT_MS / 1000.0;
	int parts[MAX_FS], ret;
	char dev[48], sysdev[96], sub[16];
	size_t nr = 0;

	ret = list_partitions(s, parts, &nr);
	if (!ret && nr == 0) {
		snprintf(dev, sizeof(dev), "/dev/loop%d", s->loop_nr);
		ret = add_fs(ctx, s, "disk", dev);
		if (ret || s->nr_fs > 0)
			return ret;
		ret = scan_table(ctx, s);
		if (!ret)
			ret = list_partitions(s, parts, &nr);
	}
	if (ret) {
		acm_error(ctx, "cannot read the partitions of /dev/loop%d: %s", s->loop_nr,
		          strerror(-ret));
		return ret;
	}
	for (size_t i = 0; i < nr; i++) {
		snprintf(dev, sizeof(dev), "/dev/loop%dp%d", s->loop_nr, parts[i]);
		snprintf(sysdev, sizeof(sysdev), "/sys/block/loop%d/loop%dp%d/dev", s->loop_nr,
		         s->loop_nr, parts[i]);
		snprintf(sub, sizeof(sub), "p%d", parts[i]);
		ret = wait_node(dev, sysdev, deadline);
		if (ret) {
			acm_error(ctx, "%s did not appear within %d s", dev, WAIT_MS / 1000);
			return ret;
		}
		ret = add_fs(ctx, s, sub, dev);
		if (ret)
			return ret;
	}
	return 0;
}

static void fs_dev(const struct session *s, const struct fs_entry *f, char *out, size_t len)
{
	if (strcmp(f->sub, "disk") == 0)
		snprintf(out, len, "/dev/loop%d", s->loop_nr);
	else
		snprintf(out, len, "/dev/loop%d%s", s->loop_nr, f->sub);
}

/* No journal replay: the device is read-only, and replaying would change
 * what the backup says. xfs: `nouuid`, since the live filesystem of the same
 * UUID is usually mounted too. btrfs: a dirty log tree would otherwise fail
 * the read-only mount; kernels before 5.9 know only the old option name. */
static int mount_fs(const struct session *s, const struct fs_entry *f)
{
	static const char *const data[][2] = {
	    [FS_EXT] = {"noload", NULL},
	    [FS_XFS] = {"norecovery,nouuid", NULL},
	    [FS_BTRFS] = {"rescue=nologreplay", "nologreplay"},
	};
	char dev[48], path[64];
	int ret = -EINVAL;

	fs_dev(s, f, dev, sizeof(dev));
	fd_path(s, f->sub, path, sizeof(path));
	for (int i = 0; i < 2 && data[f->kind][i] && ret == -EINVAL; i++)
		ret = mount(dev, path, fs_names[f->kind], MNT_FLAGS, data[f->kind][i]) == 0
		          ? 0
		          : -errno;
	return ret;
}

static void mount_error(const struct acm_ctx *ctx, const struct session *s,
                        const struct fs_entry *f, int err)
{
	const char *type = fs_names[f->kind];

	if (err == -ENODEV)
		acm_error(ctx, "%s: this kernel has no %s driver (modprobe %s?)", f->sub, type,
		          type);
	else
		acm_error(ctx, "%s: the %s filesystem of %s version %s cannot be mounted: %s%s",
		          f->sub, type, s->vol, s->version, strerror(-err),
		          err == -EPERM || err == -EACCES
		              ? ""
		              : " (damaged, or features this kernel lacks; see dmesg)");
}

/* ---- undo ---- */

/* Unmount and remove each subdirectory still listed; returns how many
 * remain (busy), their names in `busy`. Plain umount, never lazy: a lazy
 * one would hide a user and let the loop device outlive us silently. */
static size_t remove_mounts(const struct acm_ctx *ctx, struct session *s, char *busy, size_t len)
{
	size_t left = 0;

	busy[0] = '\0';
	for (size_t i = s->nr_fs; i-- > 0;) {
		struct fs_entry *f = &s->fs[i];
		char path[PATH_MAX + 16], at[64];
		int err;

		if (f->gone)
			continue;
		sub_path(s, f, path, sizeof(path));
		fd_path(s, f->sub, at, sizeof(at));
		/* EINVAL: not a mount point (never mounted, or already unmounted) */
		err = umount2(at, UMOUNT_NOFOLLOW) == 0 ? 0 : errno;
		if (err && err != EINVAL && err != ENOENT) {
			size_t l = strlen(busy);
			if (err != EBUSY)
				acm_error(ctx, "cannot unmount %s: %s", path, strerror(err));
			snprintf(busy + l, len - l, "%s%s", l ? ", " : "", path);
			left++;
			continue;
		}
		if (unlinkat(s->dfd, f->sub, AT_REMOVEDIR) != 0 && errno != ENOENT)
			note(ctx, "cannot remove %s: %s", path, strerror(errno));
		f->gone = true;
	}
	return left;
}

/* Undo a setup that failed or was interrupted, in reverse order. */
static void undo(const struct acm_ctx *ctx, struct session *s)
{
	char busy[1024];

	if (remove_mounts(ctx, s, busy, sizeof(busy)) > 0) {
		acm_error(ctx, "could not undo the mount of %s: run acmfiles -u %s", busy, s->dir);
		return; /* keep the state, the loop device and DIR for -u */
	}
	if (s->loop_fd >= 0) {
		ioctl(s->loop_fd, LOOP_CLR_FD, 0);
		close(s->loop_fd);
		s->loop_fd = -1;
		if (loop_detach(ctx, s) != 0)
			return;
	}
	if (s->wrote_state)
		unlinkat(s->dfd, STATE_NAME, 0);
	if (s->made_dir)
		rmdir(s->dir);
}

/* ---- the two commands ---- */

static struct session *session_new(void)
{
	struct session *s = calloc(1, sizeof(*s));

	if (s)
		s->loop_nr = s->loop_fd = s->dfd = -1;
	return s;
}

static void session_free(struct session *s)
{
	if (s->loop_fd >= 0)
		close(s->loop_fd);
	if (s->dfd >= 0)
		close(s->dfd);
	free(s);
}

static void hold_signals(sigset_t *held)
{
	sigemptyset(held);
	sigaddset(held, SIGINT);
	sigaddset(held, SIGTERM);
	sigaddset(held, SIGHUP);
	sigaddset(held, SIGQUIT);
	sigprocmask(SIG_BLOCK, held, NULL);
}

static bool signal_pending(const sigset_t *held)
{
	sigset_t pend;

	sigpending(&pend);
	for (int sig = 1; sig < NSIG; sig++)
		if (sigismember(held, sig) == 1 && sigismember(&pend, sig) == 1)
			return true;
	return false;
}

static int mount_all(const struct acm_ctx *ctx, struct session *s)
{
	for (size_t i = 0; i < s->nr_fs; i++) {
		struct fs_entry *f = &s->fs[i];
		char path[PATH_MAX + 16];
		int ret;

		sub_path(s, f, path, sizeof(path));
		if (mkdirat(s->dfd, f->sub, 0700) != 0) {
			ret = -errno;
			acm_error(ctx, "cannot create %s: %s", path, strerror(-ret));
			f->gone = true;
			return ret;
		}
		/* listed before it is mounted: -u after a SIGKILL finds it */
		ret = write_state(ctx, s);
		if (ret)
			return ret;
		ret = mount_fs(s, f);
		if (ret) {
			mount_error(ctx, s, f, ret);
			return ret;
		}
	}
	return 0;
}

static int setup(const struct acm_ctx *ctx, struct session *s, int image_fd, const char *dir)
{
	int ret = prepare_dir(ctx, s, dir);

	if (ret)
		return ret;
	ret = loop_attach(ctx, s, image_fd);
	if (ret)
		return ret;
	ret = write_state(ctx, s);
	if (ret)
		return ret;
	ret = find_filesystems(ctx, s);
	if (ret)
		return ret;
	if (s->nr_fs == 0) {
		acm_error(ctx,
		          "no filesystem found in %s (no ext2/3/4, xfs or btrfs on the whole "
		          "image or on a partition)",
		          s->backing);
		return -EMEDIUMTYPE;
	}
	return mount_all(ctx, s);
}

/* The exit status of a failed setup. The kernel's errnos there do not mean
 * what common.h's mapping assumes (EINVAL from mount(2) is a bad
 * filesystem, not bad options; ENODEV a missing driver, not a missing
 * acmfs mount), so only the few that keep their meaning are passed on. */
static int setup_exit(int err)
{
	switch (err) {
	case 0:
	case -EIO:
	case -EBUSY:
	case -EPERM:
	case -EACCES:
	case -ECANCELED:
		return acm_exit_code(err);
	default:
		return ACM_EXIT_FAIL;
	}
}

static int do_mount(struct acm_ctx *ctx, const struct acm_opt *opts, const char *device,
                    const char *dir)
{
	struct session *s = session_new();
	sigset_t held;
	int ret, image_fd = -1, code;

	if (!s)
		return ACM_EXIT_FAIL;
	ret = acm_device(ctx, device, s->vol);
	if (!ret)
		ret = pick_image(ctx, s, opts);
	if (!ret)
		ret = image_fd = open_image(ctx, s);
	if (ret < 0) {
		/* -ENODATA: the history ran and ended failed (check_status) */
		code = ret == -ENODATA ? ACM_EXIT_FAILED : acm_exit_code(ret);
		goto out_free;
	}
	hold_signals(&held);
	ret = setup(ctx, s, image_fd, dir);
	close(image_fd); /* the loop device holds its own reference */
	if (!ret && signal_pending(&held)) {
		acm_error(ctx, "interrupted: everything undone");
		ret = -ECANCELED;
	}
	code = setup_exit(ret);
	if (ret) {
		undo(ctx, s);
		goto out_free;
	}
	/* from here the mounts alone keep the loop device (autoclear) */
	close(s->loop_fd);
	s->loop_fd = -1;
	for (size_t i = 0; i < s->nr_fs; i++)
		printf("%s/%s %s\n", s->dir, s->fs[i].sub, fs_names[s->fs[i].kind]);
	fflush(stdout);
out_free:
	session_free(s);
	return code;
}

static int do_unmount(const struct acm_ctx *ctx, const char *dir)
{
	struct session *s = session_new();
	char busy[2048], path[PATH_MAX + 32];
	sigset_t held;
	int ret = 0;

	if (!s)
		return ACM_EXIT_FAIL;
	if (!realpath(dir, s->dir) ||
	    (s->dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		ret = -errno;
		acm_error(ctx, "%s: %s", dir, strerror(-ret));
		goto out_free;
	}
	ret = read_state(ctx, s);
	if (ret)
		goto out_free;
	hold_signals(&held);
	if (remove_mounts(ctx, s, busy, sizeof(busy)) > 0) {
		acm_error(ctx, "still in use, left mounted: %s", busy);
		write_state(ctx, s);
		ret = -EBUSY;
		goto out_free;
	}
	ret = loop_detach(ctx, s);
	if (ret) {
		write_state(ctx, s);
		goto out_free;
	}
	if (unlinkat(s->dfd, STATE_NAME, 0) != 0 && errno != ENOENT) {
		ret = -errno;
		state_path(s, path, sizeof(path));
		acm_error(ctx, "cannot remove %s: %s", path, strerror(-ret));
	}
out_free:
	session_free(s);
	return acm_exit_code(ret);
}

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmfiles"};
	struct acm_opt opts[NR_OPTS] = {
	    [OPT_G] = {"-g", "N", NULL},
	    [OPT_V] = {"-v", "V", NULL},
	    [OPT_M] = {"-m", "DISK|TAPE", NULL},
	    [OPT_U] = {"-u", NULL, NULL},
	};
	const char *pos[2];
	size_t nr_pos;
	int ret;

	ret = acm_parse(&ctx, argc, argv, opts, NR_OPTS, pos, 2, &nr_pos, usage, false);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (opts[OPT_U].value) {
		if (opts[OPT_G].value || opts[OPT_V].value || opts[OPT_M].value || nr_pos != 1) {
			acm_error(&ctx, "-u takes just DIR (try --help)");
			return ACM_EXIT_USAGE;
		}
		return do_unmount(&ctx, pos[0]);
	}
	if (nr_pos != 2) {
		acm_error(&ctx, "a DEVICE and a DIR are required (try --help)");
		return ACM_EXIT_USAGE;
	}
	if (opts[OPT_G].value && opts[OPT_V].value) {
		acm_error(&ctx, "-g and -v exclude each other");
		return ACM_EXIT_USAGE;
	}
	for (int i = OPT_G; i <= OPT_V; i++)
		if (opts[i].value && (!acm_number_ok(opts[i].value) || atoll(opts[i].value) == 0)) {
			acm_error(&ctx, "%s takes a number from 1, not '%s'", opts[i].name,
			          opts[i].value);
			return ACM_EXIT_USAGE;
		}
	if (opts[OPT_M].value && strcmp(opts[OPT_M].value, "DISK") &&
	    strcmp(opts[OPT_M].value, "TAPE")) {
		acm_error(&ctx, "-m takes DISK or TAPE, not '%s'", opts[OPT_M].value);
		return ACM_EXIT_USAGE;
	}
	return do_mount(&ctx, opts, pos[0], pos[1]);
}
