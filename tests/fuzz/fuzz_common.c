/*
 * fuzz_common.c — a private scratch directory (tmpfs when available, so the
 * fsyncs of the code under test stay cheap; $ACMFS_FUZZ_TMP overrides),
 * removed at exit, and a plain whole-file writer for placing fuzz inputs
 * where the loaders look.
 */
#include "fuzz_common.h"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

static char scratch[PATH_MAX];

static void scratch_cleanup(void)
{
	static const char *const names[] = { "era.map", "era.map.tmp", "intent", "intent.tmp" };
	char p[PATH_MAX + 32];

	if (!scratch[0])
		return;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", scratch, names[i]);
		unlink(p);
	}
	rmdir(scratch);
}

int fz_tmpdir(char *out, size_t outlen)
{
	if (!scratch[0]) {
		/* scripts/fuzz-run points ACMFS_FUZZ_TMP into its own work dir, which
		 * it removes even when a crash skips our atexit cleanup */
		const char *base = getenv("ACMFS_FUZZ_TMP");
		if (!base || !*base)
			base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
		snprintf(scratch, sizeof(scratch), "%s/acmfs-fuzz.XXXXXX", base ? base : "/tmp");
		if (!mkdtemp(scratch)) {
			scratch[0] = 0;
			return -errno;
		}
		atexit(scratch_cleanup);
	}
	snprintf(out, outlen, "%s", scratch);
	return 0;
}

int fz_write_file(const char *dir, const char *name, const void *buf, size_t len)
{
	char p[PATH_MAX + 64];
	const uint8_t *b = buf;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", dir, name);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	while (len) {
		ssize_t n = write(fd, b, len);
		if (n < 0) {
			int e = errno;
			close(fd);
			return -e;
		}
		b += n;
		len -= (size_t)n;
	}
	close(fd);
	return 0;
}
