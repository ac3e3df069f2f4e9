/*
 * lock.c — bucket locks shared by the hosts of a pool; see lock.h.
 */
#include "lock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "../core/fault.h"
#include "log.h"
#include "pool.h"

#define LOCK_BODY_MAX 512

static int64_t mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static void lock_key(const struct pool_lock *l, char kind, char *key, size_t len)
{
	snprintf(key, len, "locks/%s-%c.lock", l->session, kind);
}

int pool_lock_key_parse(const char *key, char session[33], char *kind)
{
	if (strncmp(key, "locks/", 6))
		return -EINVAL;
	key += 6;
	for (int i = 0; i < 32; i++)
		if (!((key[i] >= '0' && key[i] <= '9') || (key[i] >= 'a' && key[i] <= 'f')))
			return -EINVAL;
	if (key[32] != '-' || (key[33] != 's' && key[33] != 'x') || strcmp(key + 34, ".lock"))
		return -EINVAL;
	memcpy(session, key, 32);
	session[32] = 0;
	*kind = key[33];
	return 0;
}

void pool_lock_init(struct pool_lock *l, int64_t stale_s, int64_t wait_s)
{
	uint8_t rnd[16];

	memset(l, 0, sizeof(*l));
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_init(&l->io_mu, NULL);
	pthread_cond_init(&l->cv, NULL);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) /* never seen; a pid-based id still works */
		for (int i = 0; i < 16; i++)
			rnd[i] = (uint8_t)(getpid() >> (i % 4 * 8)) ^ (uint8_t)(time(NULL) >> i);
	for (int i = 0; i < 16; i++)
		snprintf(l->session + 2 * i, 3, "%02x", rnd[i]);
	snprintf(l->holder, sizeof(l->holder), "unknown");
	l->stale_s = stale_s;
	l->wait_s = wait_s;
}

void pool_lock_set_holder(struct tier_pool *p, const char *holder)
{
	pthread_mutex_lock(&p->lk.mu);
	snprintf(p->lk.holder, sizeof(p->lk.holder), "%s", holder && *holder ? holder : "unknown");
	pthread_mutex_unlock(&p->lk.mu);
}

/* PUT our object of `kind`, then HEAD it: *srv = its mtime in store time */
static int lock_put(struct tier_pool *p, char kind, int64_t *srv)
{
	struct pool_lock *l = &p->lk;
	char key[80], body[LOCK_BODY_MAX];
	struct tape_obj_info oi;
	int n, rc;

	lock_key(l, kind, key, sizeof(key));
	pthread_mutex_lock(&l->mu);
	n = snprintf(body, sizeof(body), "acmfs-lock 1\nkind=%s\nhost=%s\npid=%d\n",
		     kind == 'x' ? "exclusive" : "shared", l->holder, (int)getpid());
	pthread_mutex_unlock(&l->mu);
	if (n < 0 || (size_t)n >= sizeof(body))
		n = (int)strlen(body);
	rc = p->be->ops->put(p->be, key, body, (size_t)n);
	if (rc)
		return rc;
	rc = p->be->ops->head(p->be, key, &oi);
	if (rc)
		return rc;
	*srv = oi.mtime;
	return 0;
}

static int lock_del(struct tier_pool *p, char kind)
{
	char key[80];
	lock_key(&p->lk, kind, key, sizeof(key));
	int rc = p->be->ops->del(p->be, key);
	return rc == -ENOENT ? 0 : rc;
}

struct lock_scan {
	struct tier_pool *p;
	int64_t now;
	bool excl_only;	   /* only exclusive locks conflict */
	bool reclaim;	   /* delete stale locks of other sessions */
	unsigned stale_removed;
	unsigned seen;
	char conflict[256]; /* key of the first conflicting lock */
	char conflict_kind;
	int64_t conflict_age;
};

static int scan_one(void *arg, const struct tape_obj_info *oi)
{
	struct lock_scan *s = arg;
	char session[33], kind;

	if (++s->seen > 100000) /* a listing this long is not ours: refuse to guess */
		return -E2BIG;
	if (pool_lock_key_parse(oi->key, session, &kind))
		return 0;
	if (!strcmp(session, s->p->lk.session))
		return 0;
	int64_t age = s->now - oi->mtime;
	if (age > s->p->lk.stale_s) {
		if (s->reclaim) {
			int rc = s->p->be->ops->del(s->p->be, oi->key);
			if (!rc || rc == -ENOENT) {
				s->stale_removed++;
				tape_log(TAPE_LOG_INFO, "removed stale lock %s (%lld s old)", oi->key,
					 (long long)age);
			}
		}
		return 0;
	}
	if (s->excl_only && kind != 'x')
		return 0;
	if (!s->conflict[0]) {
		snprintf(s->conflict, sizeof(s->conflict), "%s", oi->key);
		s->conflict_kind = kind;
		s->conflict_age = age;
	}
	return 0;
}

/* "host=…" of a lock object, for messages */
static void lock_holder_of(struct tier_pool *p, const char *key, char *out, size_t len)
{
	char body[LOCK_BODY_MAX + 1];
	ssize_t n = p->be->ops->get(p->be, key, 0, body, LOCK_BODY_MAX);

	snprintf(out, len, "another host");
	if (n <= 0)
		return;
	body[n] = 0;
	char *h = strstr(body, "\nhost=");
	if (!h)
		return;
	h += 6;
	size_t hl = strcspn(h, "\n");
	char *colon = memchr(h, ':', hl); /* "<id>:<name>": show the name */
	if (colon && (size_t)(colon - h) < hl) {
		hl -= (size_t)(colon + 1 - h);
		h = colon + 1;
	}
	if (hl >= len)
		hl = len - 1;
	for (size_t i = 0; i < hl; i++)
		out[i] = (h[i] >= 0x20 && h[i] < 0x7f) ? h[i] : '?';
	out[hl] = 0;
}

static int lock_scan_run(struct tier_pool *p, struct lock_scan *s)
{
	s->p = p;
	return p->be->ops->list(p->be, "locks/", scan_one, s);
}

static void *refresher(void *arg);
static void pool_unlock_shared_ref0(struct tier_pool *p);

static void start_refresher_locked(struct tier_pool *p)
{
	struct pool_lock *l = &p->lk;
	if (l->thr_started)
		return;
	if (pthread_create(&l->thr, NULL, refresher, p) == 0)
		l->thr_started = true;
	else
		tape_log(TAPE_LOG_WARN, "cannot start the lock refresher: locks go stale after %lld s",
			 (long long)l->stale_s);
}

/* with io_mu: PUT our shared object; 0 held, 1 a fresh exclusive lock of
 * another session is there (ours removed again, its key in conflict) */
static int try_shared_io(struct tier_pool *p, char *conflict, size_t clen, char *err,
			 size_t errlen)
{
	struct pool_lock *l = &p->lk;
	struct lock_scan s = {.excl_only = true};
	int64_t srv;
	int rc = lock_put(p, 's', &srv);
	if (rc) {
		snprintf(err, errlen, "cannot write the pool's lock: %s", strerror(-rc));
		return rc;
	}
	s.now = srv;
	rc = lock_scan_run(p, &s);
	if (rc) {
		lock_del(p, 's');
		snprintf(err, errlen, "cannot list the pool's locks: %s", strerror(-rc));
		return rc;
	}
	if (s.conflict[0]) {
		lock_del(p, 's');
		snprintf(conflict, clen, "%s", s.conflict);
		return 1;
	}
	pthread_mutex_lock(&l->mu);
	l->shared_held = true;
	l->shared_lost = false;
	l->shared_epoch++;
	l->shared_srv = srv;
	l->shared_mono = mono_s();
	pthread_mutex_unlock(&l->mu);
	return 0;
}

/* Takes io_mu for each try and drops it while waiting, so that readers
 * (which do not wait) get their answer at once. With io_mu held on return
 * when *held_io; otherwise released. held: our shared object exists. */
static int acquire_shared(struct tier_pool *p, int64_t wait_s, char *err, size_t errlen)
{
	struct pool_lock *l = &p->lk;
	int64_t deadline = mono_s() + wait_s;
	char conflict[256];

	for (unsigned attempt = 0;; attempt++) {
		pthread_mutex_lock(&l->io_mu);
		pthread_mutex_lock(&l->mu);
		bool held = l->shared_held && !l->shared_lost;
		pthread_mutex_unlock(&l->mu);
		int rc = held ? 0 : try_shared_io(p, conflict, sizeof(conflict), err, errlen);
		pthread_mutex_unlock(&l->io_mu);
		if (rc <= 0)
			return rc;
		if (mono_s() >= deadline) {
			char who[128];
			lock_holder_of(p, conflict, who, sizeof(who));
			snprintf(err, errlen, "pool is being collected (gc) by %s: try again later", who);
			return -EBUSY;
		}
		if (attempt == 0)
			tape_log(TAPE_LOG_INFO, "waiting for %s (gc) to end", conflict);
		unsigned nap = attempt < 4 ? 1u + attempt : 5u;
		int64_t left = deadline - mono_s();
		if (left < (int64_t)nap)
			nap = left > 0 ? (unsigned)left : 1;
		sleep(nap);
	}
}

int pool_lock_shared(struct tier_pool *p, int64_t wait_s, uint64_t *epoch, char *err,
		     size_t errlen)
{
	struct pool_lock *l = &p->lk;

	pthread_mutex_lock(&l->mu);
	if (l->shared_held) {
		l->shared_refs++;
		if (epoch)
			*epoch = l->shared_epoch;
		pthread_mutex_unlock(&l->mu);
		return 0;
	}
	/* counted before the I/O, so that a concurrent last unlock keeps it */
	l->shared_refs++;
	pthread_mutex_unlock(&l->mu);
	int rc = acquire_shared(p, wait_s, err, errlen);
	pthread_mutex_lock(&l->mu);
	if (rc) {
		l->shared_refs--;
	} else {
		if (epoch)
			*epoch = l->shared_epoch;
		start_refresher_locked(p);
	}
	bool orphan = rc && l->shared_refs == 0 && l->shared_held;
	pthread_mutex_unlock(&l->mu);
	if (orphan) /* another acquirer got it meanwhile and has gone */
		pool_unlock_shared_ref0(p);
	return rc;
}

/* the last reference went: delete our object unless taken again */
static void pool_unlock_shared_ref0(struct tier_pool *p)
{
	struct pool_lock *l = &p->lk;
	pthread_mutex_lock(&l->io_mu);
	pthread_mutex_lock(&l->mu);
	bool drop = l->shared_refs == 0 && l->shared_held;
	if (drop)
		l->shared_held = false;
	pthread_mutex_unlock(&l->mu);
	if (drop) {
		int rc = lock_del(p, 's');
		if (rc) /* it goes stale by itself */
			tape_log(TAPE_LOG_WARN, "cannot remove the pool's lock: %s", strerror(-rc));
	}
	pthread_mutex_unlock(&l->io_mu);
}

void pool_unlock_shared(struct tier_pool *p)
{
	struct pool_lock *l = &p->lk;
	bool last;

	pthread_mutex_lock(&l->mu);
	if (l->shared_refs)
		l->shared_refs--;
	last = l->shared_refs == 0;
	pthread_mutex_unlock(&l->mu);
	if (last)
		pool_unlock_shared_ref0(p);
}

/* with io_mu: re-PUT a held lock; a gap of stale/2 or more marks it lost */
static int refresh_io(struct tier_pool *p, char kind)
{
	struct pool_lock *l = &p->lk;
	int64_t srv, now = mono_s();
	int rc = lock_put(p, kind, &srv);

	pthread_mutex_lock(&l->mu);
	int64_t *last_srv = kind == 'x' ? &l->excl_srv : &l->shared_srv;
	if (rc) {
		if (kind == 's' && now - l->shared_mono >= l->stale_s / 2 && !l->shared_lost) {
			l->shared_lost = true;
			tape_log(TAPE_LOG_WARN, "pool lock not refreshed for %lld s: it may be lost",
				 (long long)(now - l->shared_mono));
		}
	} else {
		if (srv - *last_srv >= l->stale_s / 2) {
			if (kind == 's')
				l->shared_lost = true;
			tape_log(TAPE_LOG_WARN, "pool lock refreshed after %lld s (stale after %lld): "
				 "it may have been taken as stale",
				 (long long)(srv - *last_srv), (long long)l->stale_s);
			rc = -ESTALE;
		}
		*last_srv = srv;
		if (kind == 's')
			l->shared_mono = now;
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

int pool_lock_shared_valid(struct tier_pool *p, uint64_t epoch)
{
	struct pool_lock *l = &p->lk;
	char err[256];
	int rc;

	pthread_mutex_lock(&l->io_mu);
	rc = refresh_io(p, 's');
	pthread_mutex_unlock(&l->io_mu);
	if (rc && rc != -ESTALE)
		return rc;
	pthread_mutex_lock(&l->mu);
	bool ok = !l->shared_lost && l->shared_epoch == epoch && rc != -ESTALE;
	pthread_mutex_unlock(&l->mu);
	if (ok)
		return 1;
	/* a collector may be running now: acquire again, properly (a lost lock
	 * counts as not held) */
	rc = acquire_shared(p, l->wait_s, err, sizeof(err));
	if (rc) {
		tape_log(TAPE_LOG_ERR, "re-acquiring the pool's lock: %s", err);
		return rc;
	}
	return 0;
}

int pool_lock_exclusive(struct tier_pool *p, int64_t *srv_now, unsigned *stale_removed, char *err,
			size_t errlen)
{
	struct pool_lock *l = &p->lk;
	struct lock_scan s = {.reclaim = true};
	int64_t srv;
	int rc;

	pthread_mutex_lock(&l->io_mu);
	rc = lock_put(p, 'x', &srv);
	if (rc) {
		snprintf(err, errlen, "cannot write the pool's lock: %s", strerror(-rc));
		goto out;
	}
	s.now = srv;
	rc = lock_scan_run(p, &s);
	if (stale_removed)
		*stale_removed = s.stale_removed;
	if (rc) {
		lock_del(p, 'x');
		snprintf(err, errlen, "cannot list the pool's locks: %s", strerror(-rc));
		goto out;
	}
	if (s.conflict[0]) {
		char who[128];
		lock_holder_of(p, s.conflict, who, sizeof(who));
		lock_del(p, 'x');
		snprintf(err, errlen, "pool in use by %s (%s, refreshed %lld s ago): gc not run",
			 who, s.conflict_kind == 'x' ? "gc" : "backup, read or delete",
			 (long long)s.conflict_age);
		rc = -EBUSY;
		goto out;
	}
	pthread_mutex_lock(&l->mu);
	l->excl_held = true;
	l->excl_srv = srv;
	start_refresher_locked(p);
	pthread_mutex_unlock(&l->mu);
	*srv_now = srv;
out:
	pthread_mutex_unlock(&l->io_mu);
	return rc;
}

int pool_lock_exclusive_valid(struct tier_pool *p)
{
	pthread_mutex_lock(&p->lk.io_mu);
	int rc = refresh_io(p, 'x');
	pthread_mutex_unlock(&p->lk.io_mu);
	return rc;
}

void pool_unlock_exclusive(struct tier_pool *p)
{
	struct pool_lock *l = &p->lk;

	pthread_mutex_lock(&l->io_mu);
	pthread_mutex_lock(&l->mu);
	bool held = l->excl_held;
	l->excl_held = false;
	pthread_mutex_unlock(&l->mu);
	if (held) {
		int rc = lock_del(p, 'x');
		if (rc)
			tape_log(TAPE_LOG_WARN, "cannot remove the gc lock: %s", strerror(-rc));
	}
	pthread_mutex_unlock(&l->io_mu);
}

static void *refresher(void *arg)
{
	struct tier_pool *p = arg;
	struct pool_lock *l = &p->lk;
	int64_t every = l->stale_s / 6 > 0 ? l->stale_s / 6 : 1;

	pthread_mutex_lock(&l->mu);
	while (!l->stop) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += every;
		pthread_cond_timedwait(&l->cv, &l->mu, &ts);
		if (l->stop)
			break;
		bool s = l->shared_held, x = l->excl_held;
		pthread_mutex_unlock(&l->mu);
		if (s || x) {
			fault_pause("lock-refresh");
			pthread_mutex_lock(&l->io_mu);
			pthread_mutex_lock(&l->mu);
			s = l->shared_held;
			x = l->excl_held;
			pthread_mutex_unlock(&l->mu);
			if (s)
				refresh_io(p, 's');
			if (x)
				refresh_io(p, 'x');
			pthread_mutex_unlock(&l->io_mu);
		}
		pthread_mutex_lock(&l->mu);
	}
	pthread_mutex_unlock(&l->mu);
	return NULL;
}

void pool_lock_fini(struct tier_pool *p)
{
	struct pool_lock *l = &p->lk;

	pthread_mutex_lock(&l->mu);
	l->stop = true;
	pthread_cond_broadcast(&l->cv);
	bool started = l->thr_started;
	pthread_mutex_unlock(&l->mu);
	if (started)
		pthread_join(l->thr, NULL);
	if (l->shared_held)
		lock_del(p, 's');
	if (l->excl_held)
		lock_del(p, 'x');
	pthread_mutex_destroy(&l->mu);
	pthread_mutex_destroy(&l->io_mu);
	pthread_cond_destroy(&l->cv);
}
