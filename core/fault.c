/*
 * fault.c — see fault.h.
 */
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

#define LOG_PREFIX "fault"
#define MAX_RULES 8

struct rule {
	int cls; /* -1 = any */
	uint64_t n;
	bool from_n;
	enum { A_EIO, A_ENOSPC, A_SHORT, A_CRASH } action;
};

static struct rule rules[MAX_RULES];
static int nrules;
static bool any_active, report_counts, no_direct;
static enum fault_hashv hashv_mode;
static atomic_uint_fast64_t counts[IO_NCLASS];
static const char *const class_names[IO_NCLASS] = { "track", "catalog", "data", "store", "tape" };

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static void init_once(void)
{
	fault_init_from_env();
}

void fault_init_once(void)
{
	pthread_once(&env_once, init_once);
}

void fault_init_from_env(void)
{
	const char *spec = getenv("ACMFS_FAULT");
	char buf[512], *save = NULL;

	nrules = 0;
	any_active = false;
	report_counts = getenv("ACMFS_FAULT_COUNT") != NULL;
	no_direct = getenv("ACMFS_FAULT_NODIRECT") != NULL;
	if (no_direct)
		log_warn("fault injection armed: direct I/O refused (EINVAL)");
	const char *hv = getenv("ACMFS_FAULT_HASHV");
	hashv_mode = FAULT_HASHV_NONE;
	if (hv && !strcmp(hv, "selftest"))
		hashv_mode = FAULT_HASHV_SELFTEST;
	else if (hv && !strcmp(hv, "refuse"))
		hashv_mode = FAULT_HASHV_REFUSE;
	else if (hv && *hv)
		log_warn("ignoring bad ACMFS_FAULT_HASHV '%s' (selftest or refuse)", hv);
	if (hashv_mode)
		log_warn("fault injection armed: multi-buffer SHA-256 %s", hv);
	if (!spec || !*spec)
		return;
	snprintf(buf, sizeof(buf), "%s", spec);
	for (char *r = strtok_r(buf, ",", &save); r && nrules < MAX_RULES;
	     r = strtok_r(NULL, ",", &save)) {
		char cls[16], nbuf[32], act[16];
		struct rule ru = { 0 };
		if (sscanf(r, "%15[a-z]:%31[0-9+]:%15[a-z]", cls, nbuf, act) != 3) {
			log_warn("ignoring bad ACMFS_FAULT rule '%s'", r);
			continue;
		}
		ru.cls = -2;
		if (!strcmp(cls, "any"))
			ru.cls = -1;
		for (int i = 0; i < IO_NCLASS; i++)
			if (!strcmp(cls, class_names[i]))
				ru.cls = i;
		ru.n = strtoull(nbuf, NULL, 10);
		ru.from_n = strchr(nbuf, '+') != NULL;
		if (!strcmp(act, "eio"))
			ru.action = A_EIO;
		else if (!strcmp(act, "enospc"))
			ru.action = A_ENOSPC;
		else if (!strcmp(act, "short"))
			ru.action = A_SHORT;
		else if (!strcmp(act, "crash"))
			ru.action = A_CRASH;
		else
			ru.cls = -2;
		if (ru.cls == -2 || ru.n == 0) {
			log_warn("ignoring bad ACMFS_FAULT rule '%s'", r);
			continue;
		}
		rules[nrules++] = ru;
		any_active = true;
		log_warn("fault injection armed: %s", r);
	}
}

bool fault_active(enum io_class c)
{
	for (int i = 0; i < nrules; i++)
		if (rules[i].cls == -1 || rules[i].cls == (int)c)
			return true;
	return report_counts;
}

int fault_check(enum io_class c, bool *short_write)
{
	uint64_t k;

	if (!any_active && !report_counts)
		return 0;
	k = atomic_fetch_add(&counts[c], 1) + 1;
	for (int i = 0; i < nrules; i++) {
		struct rule *r = &rules[i];
		if (r->cls != -1 && r->cls != (int)c)
			continue;
		if (!(k == r->n || (r->from_n && k > r->n)))
			continue;
		switch (r->action) {
		case A_CRASH:
			/* a kill -9 at this instant: nothing after this runs */
			_exit(137);
		case A_EIO:
			return -EIO;
		case A_ENOSPC:
			return -ENOSPC;
		case A_SHORT:
			if (short_write)
				*short_write = true;
			return -EIO;
		}
	}
	return 0;
}

uint64_t fault_count(enum io_class c)
{
	return atomic_load(&counts[c]);
}

void fault_report(void)
{
	if (!report_counts)
		return;
	for (int i = 0; i < IO_NCLASS; i++)
		log_warn("io ops: %s=%llu", class_names[i], (unsigned long long)fault_count(i));
}

/* ACMFS_FAULT_PAUSE=DIR:a,b: each named point pauses once */
static pthread_mutex_t pause_mu = PTHREAD_MUTEX_INITIALIZER;
static char pause_done[512];

void fault_pause(const char *point)
{
	const char *spec = getenv("ACMFS_FAULT_PAUSE");
	char dir[512], path[640];
	const char *colon, *list;
	size_t pl = strlen(point);

	if (!spec || !(colon = strrchr(spec, ':')) || (size_t)(colon - spec) >= sizeof(dir))
		return;
	list = colon + 1;
	for (const char *q = list;; q += pl) {
		q = strstr(q, point);
		if (!q)
			return;
		if ((q == list || q[-1] == ',') && (q[pl] == 0 || q[pl] == ','))
			break;
	}
	pthread_mutex_lock(&pause_mu);
	char tag[80];
	snprintf(tag, sizeof(tag), ",%s,", point);
	bool done = strstr(pause_done, tag) != NULL;
	if (!done && strlen(pause_done) + strlen(tag) < sizeof(pause_done))
		strcat(pause_done, tag);
	pthread_mutex_unlock(&pause_mu);
	if (done)
		return;
	memcpy(dir, spec, (size_t)(colon - spec));
	dir[colon - spec] = 0;
	snprintf(path, sizeof(path), "%s/%s.reached", dir, point);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
	log_warn("fault injection: paused at %s", point);
	snprintf(path, sizeof(path), "%s/%s.go", dir, point);
	for (int i = 0; i < 12000 && access(path, F_OK); i++)
		usleep(10000);
	if (access(path, F_OK))
		log_warn("fault injection: %s not released in 120 s, going on", point);
}

enum fault_hashv fault_hashv(void)
{
	fault_init_once();
	return hashv_mode;
}

/* ACMFS_FAULT_NODIRECT: an O_DIRECT descriptor's reads and writes fail
 * with EINVAL (no operation counted), as on a file system that opens
 * O_DIRECT but wants a larger alignment than the caller's */
static bool refuse_direct(int fd)
{
	if (!no_direct || !(fcntl(fd, F_GETFL) & O_DIRECT))
		return false;
	errno = EINVAL;
	return true;
}

ssize_t io_pread(enum io_class c, int fd, void *buf, size_t len, off_t off)
{
	if (refuse_direct(fd))
		return -1;
	int rc = fault_check(c, NULL);

	if (rc) {
		errno = -rc;
		return -1;
	}
	return pread(fd, buf, len, off);
}

ssize_t io_preadv(enum io_class c, int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	if (refuse_direct(fd))
		return -1;
	int rc = fault_check(c, NULL);

	if (rc) {
		errno = -rc;
		return -1;
	}
	return preadv(fd, iov, iovcnt, off);
}

ssize_t io_pwrite(enum io_class c, int fd, const void *buf, size_t len, off_t off)
{
	if (refuse_direct(fd))
		return -1;
	bool half = false;
	int rc = fault_check(c, &half);

	if (rc && half && len > 1) {
		ssize_t n = pwrite(fd, buf, len / 2, off);
		if (n < 0)
			return n;
		return n; /* short: the caller sees a short count */
	}
	if (rc) {
		errno = -rc;
		return -1;
	}
	return pwrite(fd, buf, len, off);
}

int io_iov_at(const struct iovec *iov, int cnt, int i, size_t seg, struct iovec *out, int max)
{
	int n = 0;

	for (int k = i; k < cnt && n < max; k++, n++) {
		size_t skip = k == i ? seg : 0;
		out[n] = (struct iovec){ (char *)iov[k].iov_base + skip, iov[k].iov_len - skip };
	}
	return n;
}

void io_iov_skip(const struct iovec *iov, int *i, size_t *seg, size_t n)
{
	while (n) {
		size_t take = iov[*i].iov_len - *seg < n ? iov[*i].iov_len - *seg : n;
		*seg += take;
		n -= take;
		if (*seg == iov[*i].iov_len) {
			(*i)++;
			*seg = 0;
		}
	}
}

bool io_iov_aligned(const struct iovec *iov, int cnt, uint64_t off)
{
	if (off % IO_DIRECT_ALIGN)
		return false;
	for (int i = 0; i < cnt; i++)
		if ((uintptr_t)iov[i].iov_base % IO_DIRECT_ALIGN || iov[i].iov_len % IO_DIRECT_ALIGN)
			return false;
	return true;
}

ssize_t io_pwritev(enum io_class c, int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	if (refuse_direct(fd))
		return -1;
	bool half = false;
	int rc = fault_check(c, &half);

	if (rc && half && iovcnt > 0 && iov[0].iov_len > 1) {
		size_t n = iov[0].iov_len / 2;
		if (n >= IO_DIRECT_ALIGN)
			n -= n % IO_DIRECT_ALIGN;
		return pwrite(fd, iov[0].iov_base, n, off); /* short */
	}
	if (rc) {
		errno = -rc;
		return -1;
	}
	return pwritev(fd, iov, iovcnt, off);
}

int io_fsync(enum io_class c, int fd)
{
	int rc = fault_check(c, NULL);

	if (rc) {
		errno = -rc;
		return -1;
	}
	return fsync(fd);
}

int io_fdatasync(enum io_class c, int fd)
{
	int rc = fault_check(c, NULL);

	if (rc) {
		errno = -rc;
		return -1;
	}
	return fdatasync(fd);
}

int io_rename(enum io_class c, const char *from, const char *to)
{
	int rc = fault_check(c, NULL);

	if (rc) {
		errno = -rc;
		return -1;
	}
	return rename(from, to);
}
