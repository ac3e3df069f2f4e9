/*
 * tapectl.c — acmfs-tapectl, a thin command-line driver of the tape tier.
 *
 * For tests and disaster recovery by hand; the daemon does not use it.
 *   acmfs-tapectl [-g GRAIN] [-c CHANGED] upload URL OPTS IMAGE VOLUME VERSION [PARENT]
 *   acmfs-tapectl read   URL OPTS MANIFEST OUT
 *   acmfs-tapectl verify URL OPTS MANIFEST
 *   acmfs-tapectl list   URL OPTS
 *   acmfs-tapectl rm     URL OPTS MANIFEST
 *   acmfs-tapectl gc     URL OPTS GRACE_SECONDS
 * CHANGED is a file of grain numbers (one per line) that differ from PARENT.
 * Results are printed as key=value lines; exit 0 on success, 1 on failure
 * (with one line on stderr), 2 on usage errors.
 */
#include "tier.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const struct tier_ops *T = &tape_tier_ops;

struct img_src {
	int fd;
	uint64_t size;
	uint32_t grain;
};

static int src_read_grain(void *arg, uint64_t g, void *buf)
{
	struct img_src *s = arg;
	uint64_t off = g * s->grain;
	size_t want = s->grain, got = 0;
	if (off + want > s->size)
		want = (size_t)(s->size - off);
	while (got < want) {
		ssize_t n = pread(s->fd, (char *)buf + got, want - got, (off_t)(off + got));
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	memset((char *)buf + got, 0, s->grain - got);
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: acmfs-tapectl [-g GRAIN] [-c CHANGED] upload URL OPTS IMAGE VOLUME VERSION "
		"[PARENT]\n"
		"       acmfs-tapectl read URL OPTS MANIFEST OUT\n"
		"       acmfs-tapectl verify URL OPTS MANIFEST\n"
		"       acmfs-tapectl list URL OPTS\n"
		"       acmfs-tapectl rm URL OPTS MANIFEST\n"
		"       acmfs-tapectl gc URL OPTS GRACE_SECONDS\n");
	return 2;
}

static int cmd_upload(struct tier_pool *p, uint32_t grain, const char *changed_path, int argc,
		      char **argv)
{
	struct img_src s = {.grain = grain};
	struct stat st;
	uint8_t *changed = NULL;
	char err[256] = "", host[256] = "";
	int rc = 1;
	if (argc < 3)
		return usage();
	s.fd = open(argv[0], O_RDONLY | O_CLOEXEC);
	if (s.fd < 0 || fstat(s.fd, &st)) {
		fprintf(stderr, "acmfs-tapectl: %s: %s\n", argv[0], strerror(errno));
		return 1;
	}
	s.size = (uint64_t)st.st_size;
	uint64_t nr_grains = (s.size + grain - 1) / grain;
	if (changed_path) {
		changed = calloc(nr_grains / 8 + 1, 1);
		FILE *f = fopen(changed_path, "r");
		if (!changed || !f) {
			fprintf(stderr, "acmfs-tapectl: %s: %s\n", changed_path, strerror(errno));
			goto out_close;
		}
		unsigned long long g;
		while (fscanf(f, "%llu", &g) == 1)
			if (g < nr_grains)
				changed[g / 8] |= (uint8_t)(1u << (g % 8));
		fclose(f);
	}
	gethostname(host, sizeof(host) - 1);
	atomic_uint_fast64_t done = 0;
	struct tier_upload_req req = {
		.volume = argv[1],
		.version = strtoull(argv[2], NULL, 10),
		.size_bytes = s.size,
		.grain_bytes = grain,
		.date = time(NULL),
		.host = host,
		.parent = argc > 3 ? argv[3] : NULL,
		.changed = changed,
		.src = {.read_grain = src_read_grain, .arg = &s},
		.done_grains = &done,
	};
	struct tier_upload_res res;
	int r = T->upload(p, &req, &res, err, sizeof(err));
	if (r) {
		fprintf(stderr, "acmfs-tapectl: upload: %s\n", err);
		goto out_close;
	}
	printf("manifest=%s\nblocks_total=%" PRIu64 "\nblocks_new=%" PRIu64
	       "\nbytes_uploaded=%" PRIu64 "\ngrains_read=%" PRIu64 "\ndone_grains=%" PRIu64 "\n",
	       res.manifest, res.blocks_total, res.blocks_new, res.bytes_uploaded, res.grains_read,
	       (uint64_t)done);
	rc = 0;
out_close:
	free(changed);
	close(s.fd);
	return rc;
}

static int cmd_read(struct tier_pool *p, const char *manifest, const char *outpath)
{
	struct tier_image *im;
	int r = T->image_open(p, manifest, NULL, &im);
	if (r) {
		fprintf(stderr, "acmfs-tapectl: open %s: %s\n", manifest, strerror(-r));
		return 1;
	}
	int fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	size_t bl = 1 << 20;
	char *buf = malloc(bl);
	int rc = 1;
	uint64_t off = 0;
	if (fd < 0 || !buf) {
		fprintf(stderr, "acmfs-tapectl: %s: %s\n", outpath, strerror(errno));
		goto out;
	}
	for (;;) {
		ssize_t n = T->image_read(im, buf, bl, off);
		if (n < 0) {
			fprintf(stderr, "acmfs-tapectl: read at %" PRIu64 ": %s\n", off,
				strerror((int)-n));
			goto out;
		}
		if (n == 0)
			break;
		if (pwrite(fd, buf, (size_t)n, (off_t)off) != n) {
			fprintf(stderr, "acmfs-tapectl: write: %s\n", strerror(errno));
			goto out;
		}
		off += (uint64_t)n;
	}
	printf("bytes=%" PRIu64 "\n", off);
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	T->image_close(im);
	return rc;
}

static int cmd_verify(struct tier_pool *p, const char *manifest)
{
	struct tier_image *im;
	uint64_t bad = 0;
	int r = T->image_open(p, manifest, NULL, &im);
	if (r) {
		fprintf(stderr, "acmfs-tapectl: open %s: %s\n", manifest, strerror(-r));
		return 1;
	}
	r = T->image_verify(im, &bad);
	T->image_close(im);
	if (r) {
		fprintf(stderr, "acmfs-tapectl: verify: %s\n", strerror(-r));
		return 1;
	}
	printf("bad_grains=%" PRIu64 "\n", bad);
	return bad ? 1 : 0;
}

static int list_cb(void *arg, const struct tier_manifest_info *mi)
{
	(void)arg;
	if (!mi->volume) {
		printf("%s unreadable\n", mi->manifest);
		return 0;
	}
	printf("%s volume=%s version=%" PRIu64 " size=%" PRIu64 " grain=%u blocks=%" PRIu64
	       " host=%s date=%" PRId64 "\n",
	       mi->manifest, mi->volume, mi->version, mi->size_bytes, mi->grain_bytes,
	       mi->blocks_total, mi->host, mi->date);
	return 0;
}

int main(int argc, char **argv)
{
	uint32_t grain = 65536;
	const char *changed = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "+g:c:h")) != -1) {
		switch (opt) {
		case 'g':
			grain = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'c':
			changed = optarg;
			break;
		default:
			return usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 3 || !grain)
		return usage();
	const char *cmd = argv[0];
	struct tier_pool *p;
	char err[256] = "";
	int r = T->pool_open("tapectl", argv[1], argv[2], &p, err, sizeof(err));
	if (r) {
		fprintf(stderr, "acmfs-tapectl: pool: %s\n", err);
		return 1;
	}
	int rc = 2;
	argc -= 3;
	argv += 3;
	if (!strcmp(cmd, "upload")) {
		rc = cmd_upload(p, grain, changed, argc, argv);
	} else if (!strcmp(cmd, "read") && argc == 2) {
		rc = cmd_read(p, argv[0], argv[1]);
	} else if (!strcmp(cmd, "verify") && argc == 1) {
		rc = cmd_verify(p, argv[0]);
	} else if (!strcmp(cmd, "list") && argc == 0) {
		r = T->list(p, list_cb, NULL);
		rc = r ? 1 : 0;
		if (r)
			fprintf(stderr, "acmfs-tapectl: list: %s\n", strerror(-r));
	} else if (!strcmp(cmd, "rm") && argc == 1) {
		r = T->remove(p, argv[0]);
		rc = r ? 1 : 0;
		if (r)
			fprintf(stderr, "acmfs-tapectl: rm: %s\n", strerror(-r));
	} else if (!strcmp(cmd, "gc") && argc == 1) {
		struct tier_gc_stats st;
		r = T->gc(p, strtoll(argv[0], NULL, 10), &st);
		rc = r ? 1 : 0;
		if (r)
			fprintf(stderr, "acmfs-tapectl: gc: %s\n", strerror(-r));
		else
			printf("packs_deleted=%" PRIu64 "\npacks_repacked=%" PRIu64
			       "\nblocks_freed=%" PRIu64 "\nbytes_freed=%" PRIu64 "\n",
			       st.packs_deleted, st.packs_repacked, st.blocks_freed, st.bytes_freed);
	} else {
		usage();
	}
	T->pool_close(p);
	return rc;
}
