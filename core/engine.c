/*
 * engine.c — the store: open/lock/recover, the volume registry, the command
 * dispatcher, global commands, logs and hooks. Backup/restore logic lives in
 * backup.c, the data path in vol.c, text rendering in render.c.
 */
#include "engine_int.h"
#include "fill.h"

#include <openssl/rand.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOG_PREFIX "engine"

/* ---------- logs ---------- */

static void append_log(const char *path, const char *fmt, va_list ap) ACM_PRINTF(2, 0);
static void append_log(const char *path, const char *fmt, va_list ap)
{
	char line[1024], ts[32];
	time_t now = time(NULL);
	struct tm tm;
	int n, fd;

	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s ", ts);
	n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	if (write(fd, line, (size_t)n) < 0)
		log_warn("cannot append to %s", path);
	close(fd);
}

void vol_log(struct vol *v, const char *fmt, ...)
{
	char path[PATH_MAX + 8];
	va_list ap;

	snprintf(path, sizeof(path), "%s/log", v->dir);
	pthread_mutex_lock(&v->log_lock);
	va_start(ap, fmt);
	append_log(path, fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&v->log_lock);
	va_start(ap, fmt);
	char msg[1024];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("%s: %s", v->row.name, msg);
}

void vol_io_error(struct vol *v, bool write, const char *what, uint64_t version, uint64_t off,
                  int err)
{
	struct timespec ts;
	char ver[48] = "", more[64] = "";
	int k = write ? 1 : 0;

	atomic_fetch_add(&v->e->m.io_errors, 1);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	/* + 1: never 0, which means "never logged" */
	int_fast64_t now = (int_fast64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + 1;
	int_fast64_t last = atomic_load(&v->ioerr_ms[k]);
	/* one thread wins the second; the others count themselves out */
	if ((last && now - last < 1000) ||
	    !atomic_compare_exchange_strong(&v->ioerr_ms[k], &last, now)) {
		atomic_fetch_add(&v->ioerr_quiet[k], 1);
		return;
	}
	unsigned quiet = atomic_exchange(&v->ioerr_quiet[k], 0);
	if (version)
		snprintf(ver, sizeof(ver), " of version %llu", (unsigned long long)version);
	if (quiet)
		snprintf(more, sizeof(more), " (%u more %s errors since the last line)", quiet,
		         write ? "write" : "read");
	vol_log(v, "error: %s %s%s at %llu: %s%s", write ? "writing" : "reading", what, ver,
	        (unsigned long long)off, strerror(err), more);
}

void engine_log(struct engine *e, const char *fmt, ...)
{
	char path[PATH_MAX + 8], msg[1024];
	va_list ap;

	snprintf(path, sizeof(path), "%s/log", e->store);
	va_start(ap, fmt);
	append_log(path, fmt, ap);
	va_end(ap);
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_info("%s", msg);
}

/* ---------- hooks ---------- */

/* after SIGTERM, a hook's process group has this long before SIGKILL */
#define HOOK_GRACE_S 5

/* A hook file, the hooks directory and the store must be the daemon's (or
 * root's), not group- or world-writable, and not symbolic links: a hook runs
 * with the daemon's rights. 0, or -EPERM with the reason. */
static int hook_errf(char *err, size_t errlen, int rc, const char *fmt, ...) ACM_PRINTF(4, 5);
static int hook_errf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static int hook_check_one(const char *path, bool dir, char *err, size_t errlen)
{
	struct stat st;
	uid_t me = geteuid();

	if (lstat(path, &st))
		return hook_errf(err, errlen, -errno, "cannot check %s: %s", path, strerror(errno));
	if (S_ISLNK(st.st_mode))
		return hook_errf(err, errlen, -EPERM, "%s is a symbolic link (hooks must be files)",
		                 path);
	if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
		return hook_errf(err, errlen, -EPERM, "%s is not a %s", path,
		                 dir ? "directory" : "regular file");
	if (st.st_uid != me && st.st_uid != 0)
		return hook_errf(err, errlen, -EPERM,
		                 "%s is owned by uid %u, not by the daemon's user (%u) or root",
		                 path, (unsigned)st.st_uid, (unsigned)me);
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return hook_errf(err, errlen, -EPERM, "%s is group- or world-writable (mode %04o)",
		                 path, (unsigned)(st.st_mode & 07777));
	return 0;
}

/* STORE/hooks/<hook> into path: 1 = no hook (absent, or not executable: a
 * disabled hook), 0 = one to run, -EPERM = one refused (err says why). */
static int hook_find(struct engine *e, const char *hook, char *path, size_t plen, char *err,
                     size_t errlen)
{
	char dir[sizeof(e->store) + 8], why[PATH_MAX + 128] = "";
	struct stat st;
	int rc;

	snprintf(dir, sizeof(dir), "%s/hooks", e->store);
	snprintf(path, plen, "%s/%s", dir, hook);
	if (lstat(path, &st)) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 1;
		return hook_errf(err, errlen, -EPERM, "hook %s refused: cannot check %s: %s", hook,
		                 path, strerror(errno));
	}
	if (S_ISREG(st.st_mode) && access(path, X_OK))
		return 1;
	rc = hook_check_one(e->store, true, why, sizeof(why));
	if (!rc)
		rc = hook_check_one(dir, true, why, sizeof(why));
	if (!rc)
		rc = hook_check_one(path, false, why, sizeof(why));
	if (rc)
		return hook_errf(err, errlen, -EPERM, "hook %s refused: %s", hook, why);
	return 0;
}

struct hook_env {
	char *vars[16];
	int n;
	size_t used;
	char buf[3 * PATH_MAX + 4096];
};

static void hook_env_add(struct hook_env *he, const char *name, const char *value)
{
	size_t room = sizeof(he->buf) - he->used;
	int k;

	if (!value || he->n >= (int)ACM_ARRAY_SIZE(he->vars) - 1)
		return;
	k = snprintf(he->buf + he->used, room, "%s=%s", name, value);
	if (k < 0 || (size_t)k >= room)
		return;
	he->vars[he->n++] = he->buf + he->used;
	he->vars[he->n] = NULL;
	he->used += (size_t)k + 1;
	/* one line: a reason carries no newline or other control character */
	for (char *c = he->vars[he->n - 1]; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = ' ';
}

/* The whole environment of a hook: nothing of the daemon's but PATH, HOME
 * and the locale (no credentials, no ACMFS_FAULT*, no LD_*). */
static void hook_env_fill(struct hook_env *he, struct engine *e, struct vol *v, const char *hook,
                          const char *data, const char *result, const char *why)
{
	static const char *const keep[] = {"HOME", "LANG", "LC_ALL", "TZ"};
	const char *p = getenv("PATH");
	const char *dflt = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

	he->n = 0;
	he->used = 0;
	he->vars[0] = NULL;
	hook_env_add(he, "PATH", p && *p ? p : dflt);
	for (size_t i = 0; i < ACM_ARRAY_SIZE(keep); i++)
		hook_env_add(he, keep[i], getenv(keep[i]));
	hook_env_add(he, "ACMFS_HOOK", hook);
	hook_env_add(he, "ACMFS_VOLUME", v->row.name);
	hook_env_add(he, "ACMFS_DATA", data);
	hook_env_add(he, "ACMFS_STORE", e->store);
	if (e->mountpoint[0])
		hook_env_add(he, "ACMFS_MOUNTPOINT", e->mountpoint);
	if (result)
		hook_env_add(he, "ACMFS_RESULT", result);
	if (why && why[0])
		hook_env_add(he, "ACMFS_ERROR", why);
}

static int hook_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[])
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, dfl;
	int rc;

	sigemptyset(&none);
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGHUP);
	rc = posix_spawn_file_actions_init(&fa);
	if (rc)
		return rc;
	rc = posix_spawnattr_init(&at);
	if (rc) {
		posix_spawn_file_actions_destroy(&fa);
		return rc;
	}
	rc = posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
	/* a process group of its own, so that a timeout kills all of it */
	if (!rc)
		rc = posix_spawnattr_setpgroup(&at, 0);
	if (!rc)
		rc = posix_spawnattr_setsigmask(&at, &none);
	if (!rc)
		rc = posix_spawnattr_setsigdefault(&at, &dfl);
	if (!rc)
		rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
		                                       POSIX_SPAWN_SETSIGDEF);
	if (!rc)
		rc = posix_spawn(pid, path, &fa, &at, argv, envp);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for the hook; past timeout_s its process group gets SIGTERM, then
 * SIGKILL HOOK_GRACE_S later. The leader is left a zombie until then
 * (WNOWAIT), so that its group id cannot be reused by the time of the kill. */
static int hook_wait(pid_t pid, unsigned timeout_s, int *status, bool *timed_out)
{
	double t0 = mono_s(), kill_at = 0;
	long nap_us = 1000;

	*timed_out = false;
	for (;;) {
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (si.si_pid == pid)
			break;
		double now = mono_s();
		if (!*timed_out && now - t0 >= timeout_s) {
			*timed_out = true;
			kill(-pid, SIGTERM);
			kill_at = now + HOOK_GRACE_S;
		} else if (*timed_out && now >= kill_at) {
			break;
		}
		struct timespec nap = {0, nap_us * 1000};
		nanosleep(&nap, NULL);
		if (nap_us < 50000)
			nap_us *= 2;
	}
	if (*timed_out)
		kill(-pid, SIGKILL);
	while (waitpid(pid, status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return 0;
}

/* Runs STORE/hooks/<hook> (already found by hook_find) for v. 0, or
 * -ECANCELED (it failed or timed out), -EIO (it could not run; *started
 * false), with err. */
static int hook_exec(struct engine *e, struct vol *v, const char *hook, const char *path,
                     const char *result, const char *why, bool *started, char *err, size_t errlen)
{
	char data[PATH_MAX + 128], apath[PATH_MAX + 64];
	struct hook_env *he;
	char *argv[4];
	bool timed_out;
	pid_t pid;
	int status = 0, rc;

	*started = false;
	if (e->mountpoint[0])
		snprintf(data, sizeof(data), "%s/volumes/%s/data", e->mountpoint, v->row.name);
	else
		snprintf(data, sizeof(data), "%s", v->tv_path);
	he = malloc(sizeof(*he));
	if (!he)
		return hook_errf(err, errlen, -ENOMEM, "hook %s could not run: out of memory",
		                 hook);
	hook_env_fill(he, e, v, hook, data, result, why);
	snprintf(apath, sizeof(apath), "%s", path);
	argv[0] = apath;
	argv[1] = v->row.name;
	argv[2] = data;
	argv[3] = NULL;
	rc = hook_spawn(&pid, path, argv, he->vars);
	free(he);
	if (rc)
		return hook_errf(err, errlen, -EIO, "hook %s could not run: %s", hook,
		                 strerror(rc));
	*started = true;
	rc = hook_wait(pid, e->hook_timeout_s, &status, &timed_out);
	if (rc)
		return hook_errf(err, errlen, -EIO, "hook %s: wait failed: %s", hook,
		                 strerror(-rc));
	if (timed_out)
		return hook_errf(err, errlen, -ECANCELED,
		                 "hook %s timed out after %u s (killed; -o hook_timeout=)", hook,
		                 e->hook_timeout_s);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		return hook_errf(err, errlen, -ECANCELED, "hook %s failed (status %d)", hook,
		                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return 0;
}

int engine_hook_pre(struct engine *e, struct vol *v, const char *op, char *err, size_t errlen)
{
	char pre[64], post[64], path[PATH_MAX + 64], ppath[PATH_MAX + 64];
	bool started;
	int rc;

	snprintf(pre, sizeof(pre), "%s.pre", op);
	snprintf(post, sizeof(post), "%s.post", op);
	/* a .post that would be refused is refused before anything runs */
	rc = hook_find(e, post, ppath, sizeof(ppath), err, errlen);
	if (rc < 0)
		return rc;
	rc = hook_find(e, pre, path, sizeof(path), err, errlen);
	if (rc < 0)
		return rc;
	if (rc > 0)
		return 0;
	rc = hook_exec(e, v, pre, path, NULL, NULL, &started, err, errlen);
	/* it ran (and may have frozen something): its .post runs all the same */
	if (rc && started)
		engine_hook_post(e, v, op, rc, err);
	return rc;
}

void engine_hook_post(struct engine *e, struct vol *v, const char *op, int rc, const char *why)
{
	char hook[64], path[PATH_MAX + 64], err[512] = "";
	bool started;
	int k;

	snprintf(hook, sizeof(hook), "%s.post", op);
	k = hook_find(e, hook, path, sizeof(path), err, sizeof(err));
	if (k == 0)
		k = hook_exec(e, v, hook, path, rc ? "failed" : "succeeded",
		              rc ? (why && why[0] ? why : strerror(-rc)) : NULL, &started, err,
		              sizeof(err));
	/* the operation is done (or failed) already: this is only told */
	if (k < 0)
		vol_log(v, "error: %s (%s)", err, util_errname(k));
}

/* ---------- threads ---------- */

void engine_thread_start(struct engine *e)
{
	e->nr_threads++;
}

void engine_thread_end(struct engine *e)
{
	pthread_mutex_lock(&e->lock);
	e->nr_threads--;
	pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
}

/* ---------- lookups ---------- */

struct bvol *vol_bv_by_name(struct vol *v, const char *name)
{
	for (struct bvol *b = v->bvs; b; b = b->next)
		if (!strcmp(b->name, name))
			return b;
	return NULL;
}

struct history *vol_hist(struct vol *v, uint64_t version)
{
	for (struct history *h = v->hists; h; h = h->next)
		if (h->row.version == version)
			return h;
	return NULL;
}

struct pool *engine_pool(struct engine *e, const char *name)
{
	for (struct pool *p = e->pools; p; p = p->next)
		if (!strcmp(p->row.name, name))
			return p;
	return NULL;
}

int engine_pool_open(struct engine *e, struct pool *p, char *err, size_t errlen)
{
	if (p->tp)
		return 0;
	if (!e->tier) {
		snprintf(err, errlen, "tape tier not available in this build");
		return -EIO;
	}
	int rc = e->tier->pool_open(p->row.name, p->row.url, p->row.opts, &p->tp, err, errlen);
	if (!rc && e->tier->pool_identity)
		e->tier->pool_identity(p->tp, e->holder);
	return rc;
}

/* Closes a pool's tier side; what it read stays in the metrics. */
void pool_close_counted(struct engine *e, struct pool *p)
{
	if (!p->tp)
		return;
	if (e->tier->pool_bytes_read)
		atomic_fetch_add(&e->m.tape_bytes_read_closed, e->tier->pool_bytes_read(p->tp));
	e->tier->pool_close(p->tp);
	p->tp = NULL;
}

/* Bytes read from tape pools so far (e->lock held). */
uint64_t engine_tape_bytes_read(struct engine *e)
{
	uint64_t n = atomic_load(&e->m.tape_bytes_read_closed);

	for (struct pool *p = e->pools; p && e->tier && e->tier->pool_bytes_read; p = p->next)
		if (p->tp)
			n += e->tier->pool_bytes_read(p->tp);
	return n;
}

struct vol *engine_vol_by_name(struct engine *e, const char *name)
{
	struct vol *v;

	pthread_mutex_lock(&e->lock);
	for (v = e->vols; v; v = v->next)
		if (!strcmp(v->row.name, name)) {
			v->refs++;
			break;
		}
	pthread_mutex_unlock(&e->lock);
	return v;
}

struct vol *engine_vol_by_id(struct engine *e, uint64_t id)
{
	struct vol *v;

	pthread_mutex_lock(&e->lock);
	for (v = e->vols; v; v = v->next)
		if ((uint64_t)v->row.id == id) {
			v->refs++;
			break;
		}
	pthread_mutex_unlock(&e->lock);
	return v;
}

static void rm_rf_vol_dir(struct vol *v);

/* frees a volume; a deleted one's files go too, once nothing uses them */
static void vol_free(struct vol *v)
{
	struct bvol *b, *bn;
	struct history *h, *hn;
	bool deleted = v->deleted;

	for (b = v->bvs; b; b = bn) {
		bn = b->next;
		if (b->fd >= 0)
			close(b->fd);
		free(b);
	}
	for (h = v->hists; h; h = hn) {
		hn = h->next;
		free(h);
	}
	track_close(v->trk);
	if (v->tv_fd >= 0)
		close(v->tv_fd);
	pthread_rwlock_destroy(&v->barrier);
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_destroy(&v->stripes[i]);
	pthread_mutex_destroy(&v->log_lock);
	if (deleted)
		rm_rf_vol_dir(v);
	free(v);
}

void vol_put(struct vol *v)
{
	struct engine *e;
	bool free_it;

	if (!v)
		return;
	e = v->e;
	pthread_mutex_lock(&e->lock);
	free_it = --v->refs == 0 && v->deleted;
	if (v->deleted)
		pthread_cond_broadcast(&e->cond);
	pthread_mutex_unlock(&e->lock);
	if (free_it)
		vol_free(v);
}

uint64_t vol_id(const struct vol *v)
{
	return (uint64_t)v->row.id;
}

const char *vol_name(const struct vol *v)
{
	return v->row.name;
}

uint64_t vol_size(const struct vol *v)
{
	return v->row.size_bytes;
}

int64_t vol_mtime(const struct vol *v)
{
	return atomic_load(&((struct vol *)v)->mtime);
}

int engine_list_volumes(struct engine *e, int (*cb)(void *arg, uint64_t id, const char *name),
			void *arg)
{
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	for (struct vol *v = e->vols; v && !rc; v = v->next)
		rc = cb(arg, (uint64_t)v->row.id, v->row.name);
	pthread_mutex_unlock(&e->lock);
	return rc;
}

static void hist_entry_of(const struct history *h, struct hist_entry *out)
{
	out->version = h->row.version;
	out->disk = h->bv != NULL;
	out->tape = h->row.tape_status != HS_NONE;
	out->image_from_tape = !hist_disk_ok(h);
	out->date = h->row.date;
}

int vol_list_histories(struct vol *v, int (*cb)(void *arg, const struct hist_entry *h), void *arg)
{
	int rc = 0;

	pthread_mutex_lock(&v->e->lock);
	for (struct history *h = v->hists; h && !rc; h = h->next) {
		struct hist_entry he;
		hist_entry_of(h, &he);
		rc = cb(arg, &he);
	}
	pthread_mutex_unlock(&v->e->lock);
	return rc;
}

int vol_history(struct vol *v, uint64_t version, struct hist_entry *out)
{
	int rc = -ENOENT;

	pthread_mutex_lock(&v->e->lock);
	struct history *h = vol_hist(v, version);
	if (h) {
		hist_entry_of(h, out);
		rc = 0;
	}
	pthread_mutex_unlock(&v->e->lock);
	return rc;
}

uint64_t vol_latest_version(struct vol *v)
{
	uint64_t best = 0;

	pthread_mutex_lock(&v->e->lock);
	for (struct history *h = v->hists; h; h = h->next)
		if ((h->bv && h->row.disk_status == HS_SUCCEEDED) ||
		    h->row.tape_status == HS_SUCCEEDED)
			best = h->row.version;
	pthread_mutex_unlock(&v->e->lock);
	return best;
}

uint64_t vol_generation(struct vol *v, bool tape, uint64_t n)
{
	uint64_t found = 0, count = 0;

	pthread_mutex_lock(&v->e->lock);
	/* hists ascend by version: count from the newest */
	for (struct history *h = v->hists; h; h = h->next)
		if (tape ? h->row.tape_status != HS_NONE : h->bv != NULL)
			count++;
	if (n >= 1 && n <= count) {
		uint64_t want = count - n, i = 0;
		for (struct history *h = v->hists; h; h = h->next) {
			if (!(tape ? h->row.tape_status != HS_NONE : h->bv != NULL))
				continue;
			if (i++ == want) {
				found = h->row.version;
				break;
			}
		}
	}
	pthread_mutex_unlock(&v->e->lock);
	return found;
}

uint64_t vol_generation_count(struct vol *v, bool tape)
{
	uint64_t count = 0;

	pthread_mutex_lock(&v->e->lock);
	for (struct history *h = v->hists; h; h = h->next)
		if (tape ? h->row.tape_status != HS_NONE : h->bv != NULL)
			count++;
	pthread_mutex_unlock(&v->e->lock);
	return count;
}

/* ---------- persistence helpers ---------- */

int save_hist(struct engine *e, struct history *h)
{
	h->row.bv_id = h->bv ? h->bv->row.id : 0;
	return catalog_put_hist(e->cat, &h->row);
}

/* ---------- volume objects ---------- */

static struct vol *vol_alloc(struct engine *e, const struct vol_row *r)
{
	struct vol *v = calloc(1, sizeof(*v));
	pthread_rwlockattr_t ra;

	if (!v)
		return NULL;
	v->e = e;
	v->row = *r;
	v->tv_fd = -1;
	v->nr_grains = (r->size_bytes + r->grain_bytes - 1) / r->grain_bytes;
	snprintf(v->dir, sizeof(v->dir), "%s/vol/%lld", e->store, (long long)r->id);
	snprintf(v->tv_path, sizeof(v->tv_path), "%s/tv.img", v->dir);
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&v->barrier, &ra);
	pthread_rwlockattr_destroy(&ra);
	for (int i = 0; i < NSTRIPES; i++)
		pthread_mutex_init(&v->stripes[i], NULL);
	pthread_mutex_init(&v->log_lock, NULL);
	atomic_init(&v->restore_pct, -1);
	atomic_init(&v->mtime, (int_fast64_t)r->created);
	for (int k = 0; k < 2; k++) {
		atomic_init(&v->ioerr_ms[k], 0);
		atomic_init(&v->ioerr_quiet[k], 0u);
	}
	return v;
}

static struct bvol *bv_alloc(struct vol *v, const struct bv_row *r)
{
	struct bvol *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->row = *r;
	b->fd = -1;
	snprintf(b->name, sizeof(b->name), "%s.bv%u", v->row.name, r->idx);
	snprintf(b->path, sizeof(b->path), "%s/bv%u.img", v->dir, r->idx);
	return b;
}

static void bv_append(struct vol *v, struct bvol *b)
{
	struct bvol **pp = &v->bvs;

	while (*pp)
		pp = &(*pp)->next;
	*pp = b;
}

static int bv_open_file(struct bvol *b, uint64_t size, bool create)
{
	b->fd = open(b->path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0600);
	if (b->fd < 0)
		return -errno;
	if (create && ftruncate(b->fd, (off_t)size)) {
		int rc = -errno;
		close(b->fd);
		b->fd = -1;
		unlink(b->path);
		return rc;
	}
	return 0;
}

/* fsync a directory, through the fault layer (IO_STORE) */
static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (io_fsync(IO_STORE, fd))
		rc = -errno;
	close(fd);
	return rc;
}

/* Before the catalog commit that names them: the new files of v (tv.img when
 * tv, the BVs in added), their sizes and their directory entries are durable
 * (and v's directory in STORE/vol when tv: it is new too), so that a power
 * cut cannot leave a committed volume or BV whose file is gone or short. */
static int sync_new_files(struct engine *e, struct vol *v, bool tv, struct bvol *added)
{
	char path[sizeof(e->store) + 8];
	int rc;

	if (tv && io_fsync(IO_DATA, v->tv_fd))
		return -errno;
	for (struct bvol *b = added; b; b = b->next)
		if (io_fsync(IO_DATA, b->fd))
			return -errno;
	rc = fsync_dir(v->dir);
	if (!rc && tv) {
		snprintf(path, sizeof(path), "%s/vol", e->store);
		rc = fsync_dir(path);
	}
	return rc;
}

/* ---------- load & recover ---------- */

struct load_ctx {
	struct engine *e;
	int rc;
};

static int load_pool(void *arg, const struct pool_row *r)
{
	struct load_ctx *lc = arg;
	struct pool *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->row = *r;
	p->next = lc->e->pools;
	lc->e->pools = p;
	return 0;
}

static int load_volume(void *arg, const struct vol_row *r)
{
	struct load_ctx *lc = arg;
	struct vol *v = vol_alloc(lc->e, r), **pp;

	if (!v)
		return -ENOMEM;
	for (pp = &lc->e->vols; *pp; pp = &(*pp)->next)
		;
	*pp = v;
	return 0;
}

static struct vol *vol_by_row_id(struct engine *e, int64_t id)
{
	for (struct vol *v = e->vols; v; v = v->next)
		if (v->row.id == id)
			return v;
	return NULL;
}

static int load_bv(void *arg, const struct bv_row *r)
{
	struct load_ctx *lc = arg;
	struct vol *v = vol_by_row_id(lc->e, r->vol_id);
	struct bvol *b;

	if (!v)
		return 0;
	b = bv_alloc(v, r);
	if (!b)
		return -ENOMEM;
	bv_append(v, b);
	return 0;
}

static int load_hist(void *arg, const struct hist_row *r)
{
	struct load_ctx *lc = arg;
	struct vol *v = vol_by_row_id(lc->e, r->vol_id);
	struct history *h, **pp;

	if (!v)
		return 0;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->row = *r;
	for (struct bvol *b = v->bvs; b; b = b->next)
		if (b->row.id == r->bv_id) {
			h->bv = b;
			b->hist = h;
		}
	for (pp = &v->hists; *pp; pp = &(*pp)->next)
		;
	*pp = h;
	return 0;
}

/* open files, replay tracking, turn interrupted work into failures */
/* What a stop in the middle left in a volume's directory: -m TAPE overlays
 * (no tape copy survives a restart: their histories are failed below) and
 * the temporaries of atomic writes. Nothing runs yet, so all of it is
 * garbage. */
static void sweep_volume_dir(struct vol *v)
{
	DIR *d = opendir(v->dir);
	struct dirent *de;
	unsigned n = 0;

	if (!d)
		return;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		bool overlay = !strncmp(de->d_name, "overlay-", 8) && l > 12 &&
			       !strcmp(de->d_name + l - 4, ".img");
		bool tmp = l > 4 && !strcmp(de->d_name + l - 4, ".tmp");
		if ((overlay || tmp) && !unlinkat(dirfd(d), de->d_name, 0))
			n++;
	}
	closedir(d);
	if (n)
		vol_log(v, "removed %u leftover file%s of an interrupted run (overlays, temporaries)",
			n, n == 1 ? "" : "s");
}

static int recover_volume(struct engine *e, struct vol *v)
{
	bool untrusted, dirty = false;
	char why[256];
	int rc;

	v->tv_fd = open(v->tv_path, O_RDWR | O_CLOEXEC);
	if (v->tv_fd < 0) {
		rc = -errno;
		log_err("%s: cannot open %s: %s", v->row.name, v->tv_path, strerror(errno));
		return rc;
	}
	for (struct bvol *b = v->bvs; b; b = b->next) {
		rc = bv_open_file(b, v->row.size_bytes, false);
		if (rc) {
			log_err("%s: cannot open %s: %s", v->row.name, b->path, strerror(-rc));
			return rc;
		}
	}
	sweep_volume_dir(v);
	rc = track_open(v->dir, v->nr_grains, v->row.grain_bytes, v->row.era, &v->trk,
			&untrusted, why, sizeof(why));
	if (rc) {
		log_err("%s: tracking state: %s", v->row.name, strerror(-rc));
		return rc;
	}
	if (untrusted) {
		for (struct bvol *b = v->bvs; b; b = b->next) {
			if (!b->row.tracking)
				continue;
			b->row.tracking = false;
			dirty = true;
			rc = catalog_put_bv(e->cat, &b->row);
			if (rc)
				return rc;
		}
		vol_log(v, "warning: tracking state not trusted (%s): next differential backups "
			   "to every backup volume are full copies", why);
		/* every grain now has the current era: the next tape copy re-hashes all */
	}
	for (struct history *h = v->hists; h; h = h->next) {
		if (h->row.disk_status == HS_EXECUTING) {
			h->row.disk_status = HS_FAILED;
			if (h->bv && h->bv->row.tracking) {
				h->bv->row.tracking = false;
				rc = catalog_put_bv(e->cat, &h->bv->row);
				if (rc)
					return rc;
			}
			vol_log(v, "error: backup version %llu was interrupted (daemon stopped "
				   "during its physical copy): status failed; the next backup to "
				   "%s is a full copy",
				(unsigned long long)h->row.version, h->bv ? h->bv->name : "-");
			dirty = true;
		}
		if (h->row.tape_status == HS_EXECUTING) {
			h->row.tape_status = HS_FAILED;
			/* its manifest may have been stored before the stop: it goes */
			if (h->row.manifest[0]) {
				rc = catalog_trash_add(e->cat, h->row.pool, h->row.manifest);
				e->trash_gen++;
				if (rc)
					return rc;
				h->row.manifest[0] = 0;
			}
			vol_log(v, "error: tape copy of version %llu was interrupted: status failed",
				(unsigned long long)h->row.version);
			dirty = true;
		}
		if (dirty) {
			rc = save_hist(e, h);
			if (rc)
				return rc;
		}
	}
	/* BVs whose disk history was deleted while a copy ran: their copy is gone */
	for (struct bvol *b = v->bvs; b; b = b->next) {
		if (b->row.tracking && !b->hist && b->row.track_base >= v->row.era) {
			b->row.tracking = false;
			rc = catalog_put_bv(e->cat, &b->row);
			if (rc)
				return rc;
		}
	}
	if (!strcmp(v->row.state, "restoring")) {
		snprintf(v->row.state, sizeof(v->row.state), "needs-restore");
		vol_log(v, "error: a restore was interrupted; the volume holds partly restored "
			   "data: state needs-restore until a restore completes");
		dirty = true;
	}
	if (dirty) {
		rc = catalog_put_volume(e->cat, &v->row);
		if (rc)
			return rc;
	}
	/* a live restore or a clone that was filling goes on (fill.h) */
	bool resume;
	return fill_recover(e, v, &resume);
}

static int recover_all(struct engine *e)
{
	int rc = catalog_begin(e->cat);

	if (rc)
		return rc;
	for (struct vol *v = e->vols; v; v = v->next) {
		rc = recover_volume(e, v);
		if (rc) {
			catalog_rollback(e->cat);
			return rc;
		}
	}
	return catalog_commit(e->cat);
}

/* jobs that interrupted copies marked on disk must not be resumed: a BV whose
 * copy was interrupted and which still tracks would give a wrong differential.
 * recover_volume clears tracking for those; nothing more here. */

static void *flusher_main(void *arg)
{
	struct engine *e = arg;
	struct timespec ts;
	/* every volume is flushed each period, however many there are: the
	 * list grows to the volume count and is kept between periods */
	struct vol **list = NULL;
	size_t cap = 0;

	pthread_mutex_lock(&e->lock);
	while (!e->stopping) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += e->flush_ms / 1000;
		ts.tv_nsec += (long)(e->flush_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&e->cond, &e->lock, &ts);
		if (e->stopping)
			break;
		size_t n = 0;
		for (struct vol *v = e->vols; v; v = v->next)
			n++;
		if (n > cap) {
			size_t want = n + n / 4 + 16;
			struct vol **nl = realloc(list, want * sizeof(*list));
			if (!nl) {
				/* none flushed rather than some: the next period retries */
				log_err("era map flush of %zu volumes skipped: out of memory", n);
				continue;
			}
			list = nl;
			cap = want;
		}
		n = 0;
		for (struct vol *v = e->vols; v; v = v->next) {
			v->refs++;
			list[n++] = v;
		}
		pthread_mutex_unlock(&e->lock);
		for (size_t i = 0; i < n; i++) {
			if (!list[i]->deleted && vol_track_flush(list[i]))
				log_warn("%s: era map flush failed", list[i]->row.name);
			vol_put(list[i]);
		}
		pthread_mutex_lock(&e->lock);
	}
	pthread_mutex_unlock(&e->lock);
	free(list);
	return NULL;
}

static int ensure_default_pool(struct engine *e)
{
	struct pool_row r;
	struct pool *p;
	char dir[3100];
	int rc;

	if (engine_pool(e, "default"))
		return 0;
	memset(&r, 0, sizeof(r));
	snprintf(dir, sizeof(dir), "%s/tape", e->store);
	rc = util_mkdir_p(dir, 0700);
	if (rc)
		return rc;
	snprintf(r.name, sizeof(r.name), "default");
	snprintf(r.url, sizeof(r.url), "file://%s", dir);
	rc = catalog_put_pool(e->cat, &r);
	if (rc)
		return rc;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->row = r;
	p->next = e->pools;
	e->pools = p;
	return 0;
}

bool engine_host_name_ok(const char *name)
{
	size_t n = strlen(name);
	if (n < 1 || n > 63)
		return false;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '.' || *c == '-' || *c == '_'))
			return false;
	return true;
}

/* The store's host id: drawn at its first mount, kept in the catalog. It,
 * not the name, says which host owns a history in a shared pool (two
 * machines may share a name; a renamed one keeps its id). */
static int load_host_id(struct engine *e)
{
	char id[64];
	int rc = catalog_get_meta(e->cat, "host_id", id, sizeof(id));
	if (rc == -ENOENT) {
		uint8_t rnd[16];
		if (RAND_bytes(rnd, sizeof(rnd)) != 1)
			return -EIO;
		for (int i = 0; i < 16; i++)
			snprintf(id + 2 * i, 3, "%02x", rnd[i]);
		rc = catalog_set_meta(e->cat, "host_id", id);
	}
	if (rc)
		return rc;
	if (strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32)
		return -EUCLEAN;
	memcpy(e->host_id, id, 33);
	snprintf(e->holder, sizeof(e->holder), "%s:%s", e->host_id, e->host);
	return 0;
}

int engine_open(const struct engine_opts *o, struct engine **out, char *err, size_t errlen)
{
	struct engine *e = calloc(1, sizeof(*e));
	char path[PATH_MAX + 32];
	struct load_ctx lc;
	int rc;

	if (!e)
		return -ENOMEM;
	e->lock_fd = -1;
	fault_init_once();
	char real[PATH_MAX];
	if (!realpath(o->store, real)) {
		rc = util_mkdir_p(o->store, 0700);
		if (rc || !realpath(o->store, real)) {
			snprintf(err, errlen, "cannot create store %s: %s", o->store,
				 strerror(rc ? -rc : errno));
			free(e);
			return rc ? rc : -errno;
		}
	}
	if (strlen(real) >= sizeof(e->store) - 64) {
		snprintf(err, errlen, "store path too long");
		free(e);
		return -ENAMETOOLONG;
	}
	memcpy(e->store, real, strlen(real) + 1);
	if (o->mountpoint && !realpath(o->mountpoint, e->mountpoint))
		snprintf(e->mountpoint, sizeof(e->mountpoint), "%s", o->mountpoint);
	if (o->host) {
		if (!engine_host_name_ok(o->host)) {
			snprintf(err, errlen, "bad host name '%.64s' (1-63 of A-Z a-z 0-9 . _ -)",
				 o->host);
			free(e);
			return -EINVAL;
		}
		snprintf(e->host, sizeof(e->host), "%s", o->host);
	} else {
		gethostname(e->host, sizeof(e->host) - 1);
		/* a name the manifests and locks can carry as it is */
		for (char *c = e->host; *c; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
			      (*c >= '0' && *c <= '9') || *c == '.' || *c == '-' || *c == '_'))
				*c = '_';
		if (!e->host[0])
			snprintf(e->host, sizeof(e->host), "localhost");
	}
	e->tier = o->tier;
	e->inval_data = o->inval_data;
	e->inval_arg = o->inval_arg;
	e->flush_ms = o->flush_ms ? o->flush_ms : 5000;
	e->hook_timeout_s = o->hook_timeout_s ? o->hook_timeout_s : ENGINE_HOOK_TIMEOUT_S;
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->cond, NULL);

	snprintf(path, sizeof(path), "%s/lock", e->store);
	e->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (e->lock_fd < 0 || flock(e->lock_fd, LOCK_EX | LOCK_NB)) {
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		snprintf(err, errlen, "store %s is locked by another acmfs daemon", e->store);
		goto out_free;
	}
	if (ftruncate(e->lock_fd, 0) == 0) {
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
		if (pwrite(e->lock_fd, pid, (size_t)n, 0) < 0)
			log_warn("cannot write pid to lock file");
	}
	snprintf(path, sizeof(path), "%s/vol", e->store);
	util_mkdir_p(path, 0700);
	snprintf(path, sizeof(path), "%s/hooks", e->store);
	util_mkdir_p(path, 0700);
	chmod(e->store, 0700);

	snprintf(path, sizeof(path), "%s/catalog.db", e->store);
	rc = catalog_open(path, &e->cat);
	if (rc) {
		snprintf(err, errlen, "catalog %s: %s", path,
			 rc == -EUCLEAN ? "integrity check failed" : strerror(-rc));
		goto out_free;
	}
	rc = load_host_id(e);
	if (rc) {
		snprintf(err, errlen, "cannot read or create the store's host id: %s", strerror(-rc));
		goto out_free;
	}
	lc.e = e;
	lc.rc = 0;
	struct catalog_loader ld = { &lc, load_volume, load_bv, load_hist, load_pool };
	rc = catalog_load(e->cat, &ld);
	if (!rc)
		rc = ensure_default_pool(e);
	if (!rc)
		rc = recover_all(e);
	if (rc) {
		snprintf(err, errlen, "loading the store failed: %s", strerror(-rc));
		goto out_free;
	}
	*out = e;
	return 0;
out_free:
	engine_close(e);
	return rc;
}

int engine_start(struct engine *e)
{
	if (e->flusher_started)
		return 0;
	/* manifests whose histories were forgotten just before a stop */
	tape_empty_trash(e);
	fill_resume_all(e);
	if (pthread_create(&e->flusher, NULL, flusher_main, e))
		return -EAGAIN;
	e->flusher_started = true;
	return 0;
}

void engine_close(struct engine *e)
{
	struct vol *v, *vn;
	struct pool *p, *pn;

	if (!e)
		return;
	pthread_mutex_lock(&e->lock);
	/* running physical copies finish (a clean stop keeps their histories);
	 * tape copies are cancelled and end failed */
	e->stopping = true;
	pthread_mutex_unlock(&e->lock);
	tape_cancel_all(e);
	fill_cancel_all(e); /* fills stop with their progress durable */
	pthread_mutex_lock(&e->lock);
	pthread_cond_broadcast(&e->cond);
	while (e->nr_threads > 0)
		pthread_cond_wait(&e->cond, &e->lock);
	pthread_mutex_unlock(&e->lock);
	if (e->flusher_started)
		pthread_join(e->flusher, NULL);
	fill_free_all(e);
	for (v = e->vols; v; v = vn) {
		vn = v->next;
		vol_free(v);
	}
	for (p = e->pools; p; p = pn) {
		pn = p->next;
		if (p->tp && e->tier)
			e->tier->pool_close(p->tp);
		free(p);
	}
	catalog_close(e->cat);
	fault_report();
	if (e->lock_fd >= 0)
		close(e->lock_fd);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->cond);
	free(e);
}

/* ---------- global commands ---------- */

static bool same_dev(const struct statx *a, const struct statx *b)
{
	return a->stx_dev_major == b->stx_dev_major && a->stx_dev_minor == b->stx_dev_minor;
}

/*
 * volume create from=: the source must not be a file of this mount. The copy
 * runs under e->lock and every read of the mount needs that lock, so such a
 * copy would wait on itself for good. Checked in engine_ctl before the lock is
 * taken, and without sending a request to the mount itself (the loop may run
 * single-threaded, -s): the path is walked one component at a time with O_PATH
 * and statx(AT_STATX_DONT_SYNC), following symlinks by hand, and refused as
 * soon as a step lands on the mount's device — the mountpoint itself, a
 * symlink to it or a bind mount of it. A component that does not resolve ends
 * the check; import_from then reports the open's error. (A path changed by
 * someone else between this check and the copy is not caught.)
 */
static int from_outside_mount(const struct engine *e, const char *src, char *err, size_t errlen)
{
	const unsigned at = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC;
	struct statx mst, pst, st;
	char parent[PATH_MAX], todo[2 * PATH_MAX + 2], next[2 * PATH_MAX + 2], comp[NAME_MAX + 1];
	const char *p;
	char *slash;
	int dfd, fd, hops = 0, rc = 0;

	if (!e->mountpoint[0] || e->mountpoint[0] != '/')
		return 0;
	/* the mount's device, and whether it is mounted at all (engine tests
	 * open an engine with a mountpoint that nothing is mounted on) */
	snprintf(parent, sizeof(parent), "%s", e->mountpoint);
	slash = strrchr(parent, '/');
	if (slash == parent)
		parent[1] = 0;
	else
		*slash = 0;
	if (statx(AT_FDCWD, e->mountpoint, AT_STATX_DONT_SYNC, STATX_TYPE, &mst) ||
	    statx(AT_FDCWD, parent, AT_STATX_DONT_SYNC, STATX_TYPE, &pst) || same_dev(&mst, &pst))
		return 0;
	dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return 0;
	snprintf(todo, sizeof(todo), "%s", src);
	p = todo;
	for (;;) {
		size_t len;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		len = strcspn(p, "/");
		if (len > NAME_MAX)
			break;
		memcpy(comp, p, len);
		comp[len] = 0;
		p += len;
		fd = openat(dfd, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			break;
		if (statx(fd, "", at, STATX_TYPE, &st)) {
			close(fd);
			break;
		}
		if (same_dev(&st, &mst)) {
			close(fd);
			rc = -EINVAL;
			snprintf(err, errlen,
				 "from= must not be inside the mount (%.150s is a file of %.150s): the "
				 "copy would wait on the mount's own reads; copy the image out first",
				 src, e->mountpoint);
			break;
		}
		if (S_ISLNK(st.stx_mode)) {
			char target[PATH_MAX];
			ssize_t n = readlinkat(fd, "", target, sizeof(target) - 1);

			close(fd);
			if (n <= 0 || ++hops > 40)
				break;
			target[n] = 0;
			snprintf(next, sizeof(next), "%s/%s", target, p);
			snprintf(todo, sizeof(todo), "%s", next);
			p = todo;
			if (target[0] == '/') {
				close(dfd);
				dfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
				if (dfd < 0)
					return rc;
			}
			continue;
		}
		close(dfd);
		dfd = fd;
	}
	close(dfd);
	return rc;
}

static int import_from(const char *src, int dst_fd, uint64_t size, char *err, size_t errlen)
{
	int fd = open(src, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint64_t src_size, off = 0;
	int rc = 0;

	if (fd < 0) {
		snprintf(err, errlen, "cannot open %s: %s", src, strerror(errno));
		return -errno;
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		goto out;
	}
	if (S_ISBLK(st.st_mode)) {
		off_t end = lseek(fd, 0, SEEK_END);
		src_size = end < 0 ? 0 : (uint64_t)end;
	} else if (S_ISREG(st.st_mode)) {
		src_size = (uint64_t)st.st_size;
	} else {
		snprintf(err, errlen, "%s is neither a file nor a block device", src);
		rc = -EINVAL;
		goto out;
	}
	if (src_size > size) {
		snprintf(err, errlen, "%s (%llu bytes) is larger than the volume", src,
			 (unsigned long long)src_size);
		rc = -EINVAL;
		goto out;
	}
	/* copy data extents only, so a sparse source stays sparse */
	while (off < src_size) {
		off_t d = S_ISREG(st.st_mode) ? lseek(fd, (off_t)off, SEEK_DATA) : (off_t)off;
		if (d < 0)
			break; /* ENXIO: only a hole remains */
		off_t h = S_ISREG(st.st_mode) ? lseek(fd, d, SEEK_HOLE) : (off_t)src_size;
		if (h < 0)
			h = (off_t)src_size;
		loff_t in = d, outo = d;
		while (in < h) {
			ssize_t n = copy_file_range(fd, &in, dst_fd, &outo, (size_t)(h - in), 0);
			if (n <= 0) {
				/* fall back to read/write (block devices, cross-fs) */
				char *buf = malloc(ACM_MiB);
				if (!buf) {
					rc = -ENOMEM;
					goto out;
				}
				while (in < h) {
					size_t chunk = (size_t)(h - in) < ACM_MiB ? (size_t)(h - in)
										  : ACM_MiB;
					rc = util_pread_full(IO_DATA, fd, buf, chunk, (uint64_t)in);
					if (!rc && !util_is_zero(buf, chunk))
						rc = util_pwrite_full(IO_DATA, dst_fd, buf, chunk,
								      (uint64_t)in);
					if (rc)
						break;
					in += (loff_t)chunk;
				}
				free(buf);
				if (rc)
					goto out;
				break;
			}
		}
		off = (uint64_t)h;
	}
	if (fsync(dst_fd))
		rc = -errno;
out:
	if (rc && !err[0])
		snprintf(err, errlen, "import from %s failed: %s", src, strerror(-rc));
	close(fd);
	return rc;
}

static int add_bvs(struct engine *e, struct vol *v, uint32_t count, struct bvol **added)
{
	int rc = 0;

	*added = NULL;
	for (uint32_t i = 0; i < count; i++) {
		struct bv_row r = { 0 };
		struct bvol *b;

		r.vol_id = v->row.id;
		r.idx = v->row.next_bv++;
		rc = catalog_put_bv(e->cat, &r);
		if (rc)
			break;
		b = bv_alloc(v, &r);
		if (!b) {
			rc = -ENOMEM;
			break;
		}
		rc = bv_open_file(b, v->row.size_bytes, true);
		if (rc) {
			free(b);
			break;
		}
		b->next = *added;
		*added = b;
	}
	if (!rc)
		rc = catalog_put_volume(e->cat, &v->row);
	return rc;
}

static void drop_added_bvs(struct bvol *added)
{
	for (struct bvol *b = added, *n; b; b = n) {
		n = b->next;
		close(b->fd);
		unlink(b->path);
		free(b);
	}
}

static void commit_added_bvs(struct vol *v, struct bvol *added)
{
	/* added is newest-first; append in index order */
	struct bvol *rev = NULL;

	for (struct bvol *b = added, *n; b; b = n) {
		n = b->next;
		b->next = rev;
		rev = b;
	}
	for (struct bvol *b = rev, *n; b; b = n) {
		n = b->next;
		b->next = NULL;
		bv_append(v, b);
	}
}

static void rm_rf_vol_dir(struct vol *v)
{
	char path[PATH_MAX + 32];
	static const char *const files[] = { "tv.img", "era.map", "era.map.tmp", "intent", "log" };

	for (size_t i = 0; i < ACM_ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", v->dir, files[i]);
		unlink(path);
	}
	for (uint32_t i = 1; i < v->row.next_bv; i++) {
		snprintf(path, sizeof(path), "%s/bv%u.img", v->dir, i);
		unlink(path);
	}
	rmdir(v->dir);
}

int engine_volume_create(struct engine *e, const struct cmd *c, char *err, size_t errlen,
			     struct sbuf *reply)
{
	struct vol_row r;
	struct vol *v = NULL, **pp;
	struct bvol *added = NULL;
	bool untrusted;
	char why[128];
	int rc;

	for (struct vol *x = e->vols; x; x = x->next)
		if (!strcmp(x->row.name, c->name)) {
			snprintf(err, errlen, "volume %s exists", c->name);
			return -EEXIST;
		}
	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", c->name);
	r.size_bytes = c->size_bytes;
	r.grain_bytes = (uint32_t)(c->grain_bytes ? c->grain_bytes : 64 * ACM_KiB);
	r.save = c->has_save ? c->save : 2;
	r.interval_days = 30;
	r.era = 1;
	r.next_version = 1;
	r.next_bv = 1;
	snprintf(r.pool, sizeof(r.pool), "default");
	snprintf(r.state, sizeof(r.state), "ok");
	r.created = util_now();

	rc = catalog_begin(e->cat);
	if (rc)
		return rc;
	rc = catalog_put_volume(e->cat, &r);
	if (rc)
		goto out_rollback;
	v = vol_alloc(e, &r);
	if (!v) {
		rc = -ENOMEM;
		goto out_rollback;
	}
	rc = util_mkdir_p(v->dir, 0700);
	if (rc)
		goto out_rollback;
	v->tv_fd = open(v->tv_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (v->tv_fd < 0 || ftruncate(v->tv_fd, (off_t)r.size_bytes)) {
		rc = -errno;
		snprintf(err, errlen, "cannot create the volume file: %s", strerror(errno));
		goto out_rollback;
	}
	if (c->has_path) {
		rc = import_from(c->path, v->tv_fd, r.size_bytes, err, errlen);
		if (rc)
			goto out_rollback;
	}
	rc = track_create(v->dir, v->nr_grains, r.grain_bytes);
	if (!rc)
		rc = track_open(v->dir, v->nr_grains, r.grain_bytes, r.era, &v->trk, &untrusted,
				why, sizeof(why));
	if (rc)
		goto out_rollback;
	rc = add_bvs(e, v, r.save, &added);
	if (!rc)
		rc = sync_new_files(e, v, true, added);
	if (rc)
		goto out_rollback;
	rc = catalog_commit(e->cat);
	if (rc)
		goto out_files;
	commit_added_bvs(v, added);
	for (pp = &e->vols; *pp && strcmp((*pp)->row.name, v->row.name) < 0; pp = &(*pp)->next)
		;
	v->next = *pp;
	*pp = v;
	vol_log(v, "volume created: size=%llu grain=%u save=%u%s%s",
		(unsigned long long)r.size_bytes, r.grain_bytes, r.save,
		c->has_path ? " from=" : "", c->has_path ? c->path : "");
	sbuf_addf(reply, "ok volume=%s size=%llu grain=%u save=%u bvs=%u\n", r.name,
		  (unsigned long long)r.size_bytes, r.grain_bytes, r.save, r.save);
	return 0;
out_rollback:
	catalog_rollback(e->cat);
out_files:
	drop_added_bvs(added);
	if (v) {
		rm_rf_vol_dir(v);
		vol_free(v);
	}
	if (!err[0])
		snprintf(err, errlen, "volume create failed: %s", strerror(-rc));
	return rc;
}

static int cmd_volume_delete(struct engine *e, const struct cmd *c, char *err, size_t errlen,
			     struct sbuf *reply)
{
	struct vol **pp, *v;
	int rc;

	for (pp = &e->vols; *pp && strcmp((*pp)->row.name, c->name); pp = &(*pp)->next)
		;
	v = *pp;
	if (!v) {
		snprintf(err, errlen, "no volume %s", c->name);
		return -ENOENT;
	}
	bool reading = false; /* an open image or a restore reads a history */
	for (struct history *h = v->hists; h; h = h->next) {
		char why[200];
		if (fill_pin_reason(v, h, why, sizeof(why)) && !fill_reads(v, h)) {
			snprintf(err, errlen, "volume %s is in use: %s", c->name, why);
			return -EBUSY;
		}
		reading |= h->readers > (fill_reads(v, h) ? 1 : 0);
	}
	if (v->opens > 0 || reading || v->jobs || v->restoring) {
		snprintf(err, errlen, "volume %s is in use (open, or a copy or restore runs)",
			 c->name);
		return -EBUSY;
	}
	for (struct history *h = v->hists; h; h = h->next)
		if (h->tjob) {
			snprintf(err, errlen, "volume %s has a tape job running", c->name);
			return -EBUSY;
		}
	rc = catalog_begin(e->cat);
	if (!rc)
		rc = catalog_del_volume(e->cat, v->row.id);
	if (!rc)
		rc = catalog_commit(e->cat);
	else
		catalog_rollback(e->cat);
	if (rc)
		return rc;
	*pp = v->next;
	v->deleted = true; /* its files go when the last reference does */
	if (v->fill)
		fill_stop(e, v); /* a volume still filling: its fill ends with it */
	engine_log(e, "volume %s deleted", c->name);
	sbuf_addf(reply, "ok volume=%s deleted=1\n", c->name);
	/* short-lived references (the flusher, a lookup) drop soon: wait a little
	 * so that the files are gone when the reply says deleted. Whoever drops
	 * the last reference frees the volume (vol_put). */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 2;
	v->refs++;
	while (v->refs > 1 && pthread_cond_timedwait(&e->cond, &e->lock, &ts) == 0)
		;
	if (--v->refs == 0) {
		pthread_mutex_unlock(&e->lock);
		vol_free(v);
		pthread_mutex_lock(&e->lock);
	}
	return 0;
}

static struct vol *find_vol(struct engine *e, const char *name, char *err, size_t errlen)
{
	for (struct vol *v = e->vols; v; v = v->next)
		if (!strcmp(v->row.name, name))
			return v;
	snprintf(err, errlen, "no volume %s", name);
	return NULL;
}

/*
 * volume clone NAME SRC: a new volume of SRC's size and grain whose content is
 * the selected history's at once; the fill (fill.h) copies it in underneath.
 * Takes e->lock itself: fill_start drops it while the source opens.
 */
static int cmd_volume_clone(struct engine *e, const struct cmd *c, char *err, size_t errlen,
			    struct sbuf *reply)
{
	struct cmd *cc = NULL;
	struct sbuf scratch;
	struct vol *src, *v = NULL;
	struct history *h;
	uint64_t grains = 0, version;
	enum himg_kind kind;
	int rc;

	pthread_mutex_lock(&e->lock);
	src = find_vol(e, c->src, err, errlen);
	if (!src) {
		rc = -ENOENT;
		goto out;
	}
	h = hist_select(src, c, c->media, true);
	bool disk_ok = h && h->bv && hist_disk_ok(h);
	bool tape_ok = h && h->row.tape_status == HS_SUCCEEDED;
	if (!h || (c->media == MEDIA_DISK && !disk_ok) || (c->media == MEDIA_TAPE && !tape_ok) ||
	    (!disk_ok && !tape_ok)) {
		rc = -ENOENT;
		snprintf(err, errlen, "%s has no succeeded history %s", src->row.name,
			 c->sel == SEL_LATEST ? "to clone" : "of that selection on that media");
		goto out;
	}
	kind = c->media == MEDIA_TAPE || (c->media == MEDIA_UNSET && !disk_ok) ? HIMG_TAPE
									       : HIMG_DISK;
	version = h->row.version;
	cc = calloc(1, sizeof(*cc));
	if (!cc) {
		rc = -ENOMEM;
		goto out;
	}
	cc->kind = CMD_VOLUME_CREATE;
	snprintf(cc->name, sizeof(cc->name), "%s", c->name);
	cc->size_bytes = src->row.size_bytes;
	cc->grain_bytes = src->row.grain_bytes;
	sbuf_init(&scratch, 4096);
	rc = engine_volume_create(e, cc, err, errlen, &scratch);
	sbuf_release(&scratch);
	if (rc)
		goto out;
	v = find_vol(e, c->name, err, errlen);
	v->restoring = true; /* nothing else starts on it while fill_start waits */
	v->refs++;
	rc = fill_start(e, v, src, version, kind, &grains, err, errlen);
	v->restoring = false;
	v->refs--;
	if (rc) {
		char derr[256] = "";
		cc->kind = CMD_VOLUME_DELETE;
		sbuf_init(&scratch, 4096);
		if (cmd_volume_delete(e, cc, derr, sizeof(derr), &scratch))
			engine_log(e, "error: the volume of the failed clone %s stays: %s", c->name,
				   derr);
		sbuf_release(&scratch);
		goto out;
	}
	engine_log(e, "volume %s cloned from version %llu of %s (%s): %llu grains to fill",
		   c->name, (unsigned long long)version, src->row.name,
		   kind == HIMG_TAPE ? "TAPE" : "DISK", (unsigned long long)grains);
	sbuf_addf(reply, "ok volume=%s source=%s version=%llu media=%s size=%llu grain=%u "
			 "grains_to_fill=%llu\n",
		  c->name, src->row.name, (unsigned long long)version,
		  kind == HIMG_TAPE ? "TAPE" : "DISK", (unsigned long long)v->row.size_bytes,
		  v->row.grain_bytes, (unsigned long long)grains);
out:
	pthread_mutex_unlock(&e->lock);
	free(cc);
	return rc;
}

static int cmd_bv_add(struct engine *e, const struct cmd *c, char *err, size_t errlen,
		      struct sbuf *reply)
{
	struct vol *v = find_vol(e, c->name, err, errlen);
	struct bvol *added;
	uint32_t first;
	int rc;

	if (!v)
		return -ENOENT;
	first = v->row.next_bv;
	rc = catalog_begin(e->cat);
	if (rc)
		return rc;
	rc = add_bvs(e, v, c->count, &added);
	if (!rc)
		rc = sync_new_files(e, v, false, added);
	if (!rc)
		rc = catalog_commit(e->cat);
	if (rc) {
		catalog_rollback(e->cat);
		v->row.next_bv = first;
		drop_added_bvs(added);
		snprintf(err, errlen, "cannot add backup volumes: %s", strerror(-rc));
		return rc;
	}
	commit_added_bvs(v, added);
	vol_log(v, "%u backup volume(s) added", c->count);
	sbuf_addf(reply, "ok volume=%s added=%u bvs=", v->row.name, c->count);
	for (uint32_t i = first; i < v->row.next_bv; i++)
		sbuf_addf(reply, "%s%s.bv%u", i == first ? "" : ",", v->row.name, i);
	sbuf_add(reply, "\n", 1);
	return 0;
}

static int cmd_policy(struct engine *e, const struct cmd *c, char *err, size_t errlen,
		      struct sbuf *reply)
{
	struct vol *v = find_vol(e, c->name, err, errlen);
	struct vol_row old;
	uint32_t nbv = 0;
	int rc;

	if (!v)
		return -ENOENT;
	for (struct bvol *b = v->bvs; b; b = b->next)
		nbv++;
	if (c->has_save && c->save > nbv) {
		snprintf(err, errlen,
			 "save number %u needs %u backup volumes; %s has %u (bv add first)", c->save,
			 c->save, v->row.name, nbv);
		return -ENOSPC;
	}
	old = v->row;
	if (c->has_save)
		v->row.save = c->save;
	if (c->has_interval)
		v->row.interval_days = c->interval_days;
	rc = catalog_put_volume(e->cat, &v->row);
	if (rc) {
		v->row = old;
		return rc;
	}
	vol_log(v, "policy: save=%u interval=%u", v->row.save, v->row.interval_days);
	sbuf_addf(reply, "ok volume=%s save=%u interval=%u\n", v->row.name, v->row.save,
		  v->row.interval_days);
	return 0;
}

static int cmd_tapepolicy(struct engine *e, const struct cmd *c, char *err, size_t errlen,
			  struct sbuf *reply)
{
	struct vol *v = find_vol(e, c->name, err, errlen);
	struct vol_row old;
	int rc;

	if (!v)
		return -ENOENT;
	if (c->has_pool && !engine_pool(e, c->pool)) {
		snprintf(err, errlen, "no pool %s", c->pool);
		return -ENOENT;
	}
	old = v->row;
	if (c->has_gens)
		v->row.tape_gens = c->gens;
	if (c->has_days)
		v->row.tape_days = c->days;
	if (c->has_pool) {
		/* a new pool holds no parent history: its first tape copy is full */
		snprintf(v->row.pool, sizeof(v->row.pool), "%s", c->pool);
	}
	rc = catalog_put_volume(e->cat, &v->row);
	if (rc) {
		v->row = old;
		return rc;
	}
	tape_apply_retention(e, v);
	vol_log(v, "tape policy: gens=%u days=%u pool=%s", v->row.tape_gens, v->row.tape_days,
		v->row.pool);
	sbuf_addf(reply, "ok volume=%s gens=%u days=%u pool=%s\n", v->row.name, v->row.tape_gens,
		  v->row.tape_days, v->row.pool);
	return 0;
}

static int cmd_pool(struct engine *e, const struct cmd *c, char *err, size_t errlen,
		    struct sbuf *reply)
{
	struct pool *p = engine_pool(e, c->name);
	int rc;

	switch (c->kind) {
	case CMD_POOL_DELETE:
		if (!p) {
			snprintf(err, errlen, "no pool %s", c->name);
			return -ENOENT;
		}
		if (p->busy) {
			snprintf(err, errlen, "pool %s is being collected or listed", c->name);
			return -EBUSY;
		}
		for (struct vol *v = e->vols; v; v = v->next) {
			for (struct history *h = v->hists; h; h = h->next)
				if (h->row.tape_status != HS_NONE && !strcmp(h->row.pool, c->name)) {
					snprintf(err, errlen, "pool %s holds tape histories of %s",
						 c->name, v->row.name);
					return -EBUSY;
				}
			if (!strcmp(v->row.pool, c->name)) {
				snprintf(err, errlen, "pool %s is the tape pool of %s", c->name,
					 v->row.name);
				return -EBUSY;
			}
		}
		rc = catalog_del_pool(e->cat, c->name);
		if (rc)
			return rc;
		for (struct pool **pp = &e->pools; *pp; pp = &(*pp)->next)
			if (*pp == p) {
				*pp = p->next;
				break;
			}
		pool_close_counted(e, p);
		free(p);
		engine_log(e, "pool %s deleted", c->name);
		sbuf_addf(reply, "ok pool=%s deleted=1\n", c->name);
		return 0;
	default:
		return -EINVAL;
	}
}

/* pool create: the tier checks the store, the key, writes a new pool's
 * config (I/O that may take long), so without e->lock; then the pool is
 * recorded under it */
static int pool_create_unlocked(struct engine *e, const struct cmd *c, char *err, size_t errlen,
				struct sbuf *reply)
{
	struct pool *p = calloc(1, sizeof(*p));
	int rc = 0;
	if (!p)
		return -ENOMEM;
	snprintf(p->row.name, sizeof(p->row.name), "%s", c->name);
	snprintf(p->row.url, sizeof(p->row.url), "%s", c->url);
	snprintf(p->row.opts, sizeof(p->row.opts), "%s", c->opts);
	pthread_mutex_lock(&e->lock);
	if (engine_pool(e, c->name)) {
		snprintf(err, errlen, "pool %s exists", c->name);
		rc = -EEXIST;
	}
	pthread_mutex_unlock(&e->lock);
	if (!rc && e->tier) {
		rc = e->tier->pool_create(p->row.name, p->row.url, p->row.opts, &p->tp, err, errlen);
		if (!rc && e->tier->pool_identity)
			e->tier->pool_identity(p->tp, e->holder);
	}
	if (rc) {
		free(p);
		return rc;
	}
	pthread_mutex_lock(&e->lock);
	if (engine_pool(e, c->name)) { /* created meanwhile */
		snprintf(err, errlen, "pool %s exists", c->name);
		rc = -EEXIST;
	} else {
		rc = catalog_put_pool(e->cat, &p->row);
	}
	if (!rc) {
		p->next = e->pools;
		e->pools = p;
		engine_log(e, "pool %s created (%s)", c->name, c->url);
		sbuf_addf(reply, "ok pool=%s\n", c->name);
	}
	pthread_mutex_unlock(&e->lock);
	if (rc) {
		pool_close_counted(e, p);
		free(p);
	}
	return rc;
}

/* opts with key=FILE set to key (replacing the old one) */
static int opts_set_key(char *opts, size_t cap, const char *key)
{
	char out[sizeof(((struct pool_row *)0)->opts)];
	size_t used = 0;
	const char *s = opts;
	while (*s) {
		size_t wl = strcspn(s, " ");
		if (wl && strncmp(s, "key=", 4)) {
			if (used + wl + 2 > sizeof(out))
				return -ENAMETOOLONG;
			memcpy(out + used, s, wl);
			used += wl;
			out[used++] = ' ';
		}
		s += wl;
		s += strspn(s, " ");
	}
	int n = snprintf(out + used, sizeof(out) - used, "key=%s", key);
	if (n < 0 || (size_t)n >= sizeof(out) - used || used + (size_t)n >= cap)
		return -ENAMETOOLONG;
	memcpy(opts, out, used + (size_t)n + 1);
	return 0;
}

/* pool passwd: the tier re-wraps the key (scrypt, a PUT), then the catalog
 * names the new key file */
static int pool_passwd(struct engine *e, struct pool *p, const char *keyfile, struct sbuf *reply,
		       char *err, size_t errlen)
{
	if (!e->tier->pool_passwd) {
		snprintf(err, errlen, "this tape tier cannot change keys");
		return -EOPNOTSUPP;
	}
	int rc = e->tier->pool_passwd(p->tp, keyfile, err, errlen);
	if (rc)
		return rc;
	pthread_mutex_lock(&e->lock);
	struct pool_row row = p->row;
	rc = opts_set_key(row.opts, sizeof(row.opts), keyfile);
	if (!rc)
		rc = catalog_put_pool(e->cat, &row);
	if (!rc)
		p->row = row;
	pthread_mutex_unlock(&e->lock);
	if (rc) {
		snprintf(err, errlen, "the pool's key was changed but the catalog could not record "
				      "%s: %s (give key=%s at the next pool create)",
			 keyfile, strerror(-rc), keyfile);
		return rc;
	}
	engine_log(e, "pool %s: passphrase changed", p->row.name);
	sbuf_addf(reply, "ok pool=%s key=changed\n", p->row.name);
	return 0;
}

/* pool gc and pool hosts: object-store I/O that may take long (or hang), so
 * not under e->lock; the pool stays (pool delete refuses while busy), the
 * tier serialises collectors itself */
static int pool_cmd_unlocked(struct engine *e, const struct cmd *c, char *err, size_t errlen,
			     struct sbuf *reply)
{
	struct pool *p;
	int rc;

	pthread_mutex_lock(&e->lock);
	p = engine_pool(e, c->name);
	if (!p) {
		snprintf(err, errlen, "no pool %s", c->name);
		rc = -ENOENT;
	} else {
		rc = engine_pool_open(e, p, err, errlen);
		if (!rc)
			p->busy++;
	}
	pthread_mutex_unlock(&e->lock);
	if (rc)
		return rc;
	if (c->kind == CMD_POOL_HOSTS)
		rc = pool_hosts(e, p, reply, err, errlen);
	else if (c->kind == CMD_POOL_IMPORT)
		rc = pool_import(e, p, c->host[0] ? c->host : NULL, reply, err, errlen);
	else if (c->kind == CMD_POOL_PASSWD)
		rc = pool_passwd(e, p, c->path, reply, err, errlen);
	else
		rc = pool_gc(e, p, c->has_grace ? (int64_t)c->grace_s : 3600, reply, err, errlen);
	pthread_mutex_lock(&e->lock);
	p->busy--;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

static int run_global(struct engine *e, const struct cmd *c, char *err, size_t errlen,
		      struct sbuf *reply)
{
	switch (c->kind) {
	case CMD_VOLUME_CREATE: return engine_volume_create(e, c, err, errlen, reply);
	case CMD_VOLUME_DELETE: return cmd_volume_delete(e, c, err, errlen, reply);
	case CMD_BV_ADD: return cmd_bv_add(e, c, err, errlen, reply);
	case CMD_POLICY: return cmd_policy(e, c, err, errlen, reply);
	case CMD_TAPEPOLICY: return cmd_tapepolicy(e, c, err, errlen, reply);
	default: return cmd_pool(e, c, err, errlen, reply);
	}
}

int engine_ctl(struct engine *e, struct vol *v, const char *buf, size_t len, struct sbuf *reply)
{
	static _Thread_local struct cmd c;
	char err[512];
	int rc;

	err[0] = 0;
	rc = cmd_parse(v ? CMD_VOLUME : CMD_GLOBAL, buf, len, &c, err, sizeof(err));
	if (!rc && v && v->deleted) {
		snprintf(err, sizeof(err), "volume %s was deleted", v->row.name);
		rc = -ENOENT;
	}
	if (!rc) {
		if (!v) {
			/* before the lock: the check must not wait on the mount */
			if (c.kind == CMD_VOLUME_CREATE && c.has_path)
				rc = from_outside_mount(e, c.path, err, sizeof(err));
			if (!rc && c.kind == CMD_POOL_CREATE) {
				rc = pool_create_unlocked(e, &c, err, sizeof(err), reply);
			} else if (!rc && c.kind == CMD_VOLUME_CLONE) {
				rc = cmd_volume_clone(e, &c, err, sizeof(err), reply);
			} else if (!rc && (c.kind == CMD_POOL_GC || c.kind == CMD_POOL_HOSTS ||
					   c.kind == CMD_POOL_PASSWD || c.kind == CMD_POOL_IMPORT)) {
				rc = pool_cmd_unlocked(e, &c, err, sizeof(err), reply);
			} else if (!rc) {
				pthread_mutex_lock(&e->lock);
				rc = run_global(e, &c, err, sizeof(err), reply);
				pthread_mutex_unlock(&e->lock);
				/* a tighter tape policy may have deleted histories */
				if (!rc && c.kind == CMD_TAPEPOLICY)
					tape_empty_trash(e);
			}
		} else {
			switch (c.kind) {
			case CMD_BACKUP: rc = do_backup(e, v, &c, reply, err, sizeof(err)); break;
			case CMD_RESTORE: rc = do_restore(e, v, &c, reply, err, sizeof(err)); break;
			case CMD_HISTDEL: rc = do_histdel(e, v, &c, reply, err, sizeof(err)); break;
			case CMD_CANCELTRK: rc = do_canceltrk(e, v, &c, reply, err, sizeof(err)); break;
			case CMD_TPHISTCOPY: rc = do_tphistcopy(e, v, &c, reply, err, sizeof(err)); break;
			case CMD_CANCEL: rc = do_cancel(e, v, &c, reply, err, sizeof(err)); break;
			case CMD_VERIFY: rc = do_verify(e, v, &c, reply, err, sizeof(err)); break;
			default: rc = -EINVAL; break;
			}
		}
	}
	if (rc) {
		char line[CMD_MAX_LINE + 1];
		size_t n = len < CMD_MAX_LINE ? len : CMD_MAX_LINE;
		const char *word;
		char *save = NULL;

		if (!err[0])
			snprintf(err, sizeof(err), "%s", strerror(-rc));
		memcpy(line, buf, n);
		line[n] = 0;
		/* strtok_r: this runs on any FUSE thread (strtok's state is global) */
		word = c.kind != CMD_NONE ? cmd_name(c.kind) : strtok_r(line, " \t\n", &save);
		if (!word || strlen(word) > 40 || memchr(buf, 0, n))
			word = "command";
		reply->len = 0;
		if (reply->buf)
			reply->buf[0] = 0;
		sbuf_addf(reply, "error: %s\n", err);
		atomic_fetch_add(&e->m.ctl_errors, 1);
		if (v)
			vol_log(v, "error: %s: %s (%s)", word, err, util_errname(rc));
		else
			engine_log(e, "error: %s: %s (%s)", word, err, util_errname(rc));
	}
	return rc;
}
