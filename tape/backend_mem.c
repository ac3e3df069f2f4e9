/*
 * backend_mem.c — an in-memory object store for unit tests.
 *
 * Objects live in a singly linked list under one mutex (tests hold tens of
 * objects, not millions). Fault injection: tape_mem_fail_op(be, k, err)
 * makes the k-th following operation fail with err without side effects.
 * Counters (tape_mem_stats_get) let tests assert what was uploaded.
 */
#include "backend.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct mem_obj {
	struct mem_obj *next;
	char key[256];
	uint8_t *data;
	size_t len;
	int64_t mtime;
};

struct mem_backend {
	struct tape_backend base;
	pthread_mutex_t lock;
	struct mem_obj *objs;	 /* protected by lock */
	uint64_t fail_at;	 /* op number that fails, 0 = none; protected by lock */
	int fail_err;
	uint64_t nr_ops;
	struct tape_mem_stats st;
	int64_t clock_skew;	 /* seconds added to the clock; protected by lock */
	atomic_int refs;	 /* pools sharing it (tape_backend_mem_share) */
};

static struct mem_backend *mem(struct tape_backend *be)
{
	return (struct mem_backend *)be;
}

/* Called with lock held: counts the op and returns the injected error. */
static int tick(struct mem_backend *m)
{
	m->nr_ops++;
	atomic_fetch_add(&m->base.requests, 1);
	if (m->fail_at && m->nr_ops == m->fail_at) {
		m->fail_at = 0;
		return m->fail_err;
	}
	return 0;
}

/* the pool's bucket locks (tape/lock.c): counted apart, so that tests of
 * the data traffic see only packs and manifests */
static bool is_lock(const char *key)
{
	return !strncmp(key, "locks/", 6);
}

static struct mem_obj **find(struct mem_backend *m, const char *key)
{
	struct mem_obj **pp = &m->objs;
	while (*pp && strcmp((*pp)->key, key) != 0)
		pp = &(*pp)->next;
	return pp;
}

static int mem_put(struct tape_backend *be, const char *key, const void *buf, size_t len)
{
	struct mem_backend *m = mem(be);
	int rc;
	if (strlen(key) >= sizeof(((struct mem_obj *)0)->key))
		return -ENAMETOOLONG;
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, buf, len);
	pthread_mutex_lock(&m->lock);
	rc = tick(m);
	if (rc)
		goto out_unlock;
	if (is_lock(key)) {
		m->st.lock_ops++;
	} else {
		m->st.puts++;
		m->st.bytes_put += len;
	}
	struct mem_obj **pp = find(m, key);
	if (!*pp) {
		*pp = calloc(1, sizeof(**pp));
		if (!*pp) {
			rc = -ENOMEM;
			goto out_unlock;
		}
		strcpy((*pp)->key, key);
	}
	free((*pp)->data);
	(*pp)->data = copy;
	(*pp)->len = len;
	(*pp)->mtime = time(NULL) + m->clock_skew;
	copy = NULL;
out_unlock:
	pthread_mutex_unlock(&m->lock);
	free(copy);
	return rc;
}

/* Copies under the lock, then reports progress in 16 KiB steps (as a
 * network transfer would), so callers' incremental paths get exercised. */
static ssize_t mem_getv(struct tape_backend *be, const char *key, uint64_t off,
			const struct iovec *iov, int iovcnt, tape_progress_cb progress, void *arg)
{
	struct mem_backend *m = mem(be);
	ssize_t rc;
	size_t len = 0;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	pthread_mutex_lock(&m->lock);
	rc = tick(m);
	if (rc)
		goto out_unlock;
	m->st.gets++;
	struct mem_obj *o = *find(m, key);
	if (!o) {
		rc = -ENOENT;
		goto out_unlock;
	}
	size_t n = off >= o->len ? 0 : o->len - off;
	if (n > len)
		n = len;
	tape_iov_store(iov, iovcnt, 0, o->data + off, n);
	m->st.bytes_got += n;
	rc = (ssize_t)n;
out_unlock:
	pthread_mutex_unlock(&m->lock);
	for (size_t done = 0; rc > 0 && progress && done < (size_t)rc;) {
		done += 16384;
		progress(arg, done < (size_t)rc ? done : (size_t)rc);
	}
	return rc;
}


static ssize_t mem_get(struct tape_backend *be, const char *key, uint64_t off, void *buf,
		   size_t len)
{
	return mem_getv(be, key, off, &(struct iovec){buf, len}, 1, NULL, NULL);
}

static int mem_head(struct tape_backend *be, const char *key, struct tape_obj_info *oi)
{
	struct mem_backend *m = mem(be);
	int rc;
	pthread_mutex_lock(&m->lock);
	rc = tick(m);
	if (rc)
		goto out_unlock;
	if (is_lock(key))
		m->st.lock_ops++;
	else
		m->st.heads++;
	struct mem_obj *o = *find(m, key);
	if (!o) {
		rc = -ENOENT;
		goto out_unlock;
	}
	strcpy(oi->key, o->key);
	oi->size_bytes = o->len;
	oi->mtime = o->mtime;
out_unlock:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static int mem_list(struct tape_backend *be, const char *prefix, tape_list_cb cb, void *arg)
{
	struct mem_backend *m = mem(be);
	struct tape_obj_info *v = NULL;
	size_t n = 0, cap = 0;
	int rc;
	pthread_mutex_lock(&m->lock);
	rc = tick(m);
	if (rc)
		goto out_unlock;
	if (is_lock(prefix))
		m->st.lock_ops++;
	else
		m->st.lists++;
	/* snapshot first: the callback may call back into the backend */
	for (struct mem_obj *o = m->objs; o; o = o->next) {
		if (strncmp(o->key, prefix, strlen(prefix)) != 0)
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			struct tape_obj_info *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				goto out_unlock;
			}
			v = nv;
		}
		strcpy(v[n].key, o->key);
		v[n].size_bytes = o->len;
		v[n].mtime = o->mtime;
		n++;
	}
out_unlock:
	pthread_mutex_unlock(&m->lock);
	for (size_t i = 0; !rc && i < n; i++)
		rc = cb(arg, &v[i]);
	free(v);
	return rc;
}

static int mem_del(struct tape_backend *be, const char *key)
{
	struct mem_backend *m = mem(be);
	int rc;
	pthread_mutex_lock(&m->lock);
	rc = tick(m);
	if (rc)
		goto out_unlock;
	if (is_lock(key))
		m->st.lock_ops++;
	else
		m->st.dels++;
	struct mem_obj **pp = find(m, key), *o = *pp;
	if (!o) {
		rc = -ENOENT;
		goto out_unlock;
	}
	*pp = o->next;
	free(o->data);
	free(o);
out_unlock:
	pthread_mutex_unlock(&m->lock);
	return rc;
}

static void mem_close(struct tape_backend *be)
{
	struct mem_backend *m = mem(be);
	if (atomic_fetch_sub(&m->refs, 1) > 1)
		return;
	struct mem_obj *o = m->objs;
	while (o) {
		struct mem_obj *next = o->next;
		free(o->data);
		free(o);
		o = next;
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static const struct tape_backend_ops mem_ops = {
	.name = "mem",
	.put = mem_put,
	.get = mem_get,
	.getv = mem_getv,
	.head = mem_head,
	.list = mem_list,
	.del = mem_del,
	.close = mem_close,
};

struct tape_backend *tape_backend_mem_new(void)
{
	struct mem_backend *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->base.ops = &mem_ops;
	pthread_mutex_init(&m->lock, NULL);
	atomic_init(&m->refs, 1);
	return &m->base;
}

void tape_mem_fail_op(struct tape_backend *be, uint64_t k, int err)
{
	struct mem_backend *m = mem(be);
	pthread_mutex_lock(&m->lock);
	m->fail_at = k ? m->nr_ops + k : 0;
	m->fail_err = err;
	pthread_mutex_unlock(&m->lock);
}

void tape_mem_stats_get(struct tape_backend *be, struct tape_mem_stats *st)
{
	struct mem_backend *m = mem(be);
	pthread_mutex_lock(&m->lock);
	*st = m->st;
	pthread_mutex_unlock(&m->lock);
}

int tape_mem_corrupt(struct tape_backend *be, const char *key, uint64_t off)
{
	struct mem_backend *m = mem(be);
	int rc = 0;
	pthread_mutex_lock(&m->lock);
	struct mem_obj *o = *find(m, key);
	if (!o)
		rc = -ENOENT;
	else if (off >= o->len)
		rc = -EINVAL;
	else
		o->data[off] ^= 0x5a;
	pthread_mutex_unlock(&m->lock);
	return rc;
}

void tape_mem_set_mtime_all(struct tape_backend *be, int64_t t)
{
	struct mem_backend *m = mem(be);
	pthread_mutex_lock(&m->lock);
	for (struct mem_obj *o = m->objs; o; o = o->next)
		o->mtime = t;
	pthread_mutex_unlock(&m->lock);
}

struct tape_backend *tape_backend_mem_share(struct tape_backend *be)
{
	atomic_fetch_add(&mem(be)->refs, 1);
	return be;
}

void tape_mem_clock_advance(struct tape_backend *be, int64_t seconds)
{
	struct mem_backend *m = mem(be);
	pthread_mutex_lock(&m->lock);
	m->clock_skew += seconds;
	pthread_mutex_unlock(&m->lock);
}
