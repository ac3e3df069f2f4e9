/*
 * iomem.c — page- and huge-page-aligned buffers for direct I/O (iomem.h).
 */
#include "iomem.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static size_t page_round(size_t len)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	return (len + pg - 1) / pg * pg;
}

void *iomem_alloc(size_t len)
{
	if (!len || len > SIZE_MAX - 2 * (size_t)IOMEM_CHUNK) {
		errno = EINVAL;
		return NULL;
	}
	len = page_round(len);
	if (len < IOMEM_CHUNK) {
		void *p =
		    mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
	/* map a chunk more than asked and trim to a chunk boundary */
	size_t map = len + IOMEM_CHUNK;
	uint8_t *raw = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t a = ((uintptr_t)raw + IOMEM_CHUNK - 1) & ~(uintptr_t)(IOMEM_CHUNK - 1);
	uint8_t *p = (uint8_t *)a;
	size_t head = (size_t)(p - raw), tail = map - head - len;
	if (head)
		munmap(raw, head);
	if (tail)
		munmap(p + len, tail);
	/* advice only: without THP the buffer is ordinary pages */
	(void)madvise(p, len, MADV_HUGEPAGE);
	return p;
}

void iomem_free(void *p, size_t len)
{
	if (p)
		munmap(p, page_round(len));
}

int iomem_slab_init(struct iomem_slab *s, size_t obj_bytes)
{
	*s = (struct iomem_slab){0};
	if (!obj_bytes || obj_bytes > SIZE_MAX / 4)
		return -EINVAL;
	s->obj_bytes = page_round(obj_bytes); /* every object page aligned */
	s->chunk_bytes = s->obj_bytes > IOMEM_CHUNK ? s->obj_bytes : IOMEM_CHUNK;
	return 0;
}

void *iomem_slab_get(struct iomem_slab *s)
{
	if (s->free) {
		void *o = s->free;
		s->free = *(void **)o;
		return o;
	}
	size_t per = s->chunk_bytes / s->obj_bytes;
	if (!s->nr_chunks || s->next == per) {
		if (s->nr_chunks == s->cap_chunks) {
			size_t cap = s->cap_chunks ? 2 * s->cap_chunks : 8;
			void **c = realloc(s->chunks, cap * sizeof(*c));
			if (!c)
				return NULL;
			s->chunks = c;
			s->cap_chunks = cap;
		}
		void *c = iomem_alloc(s->chunk_bytes);
		if (!c)
			return NULL;
		s->chunks[s->nr_chunks++] = c;
		s->next = 0;
	}
	return (uint8_t *)s->chunks[s->nr_chunks - 1] + s->next++ * s->obj_bytes;
}

void iomem_slab_put(struct iomem_slab *s, void *obj)
{
	if (!obj)
		return;
	*(void **)obj = s->free;
	s->free = obj;
}

void iomem_slab_release(struct iomem_slab *s)
{
	for (size_t i = 0; i < s->nr_chunks; i++)
		iomem_free(s->chunks[i], s->chunk_bytes);
	free(s->chunks);
	*s = (struct iomem_slab){.obj_bytes = s->obj_bytes, .chunk_bytes = s->chunk_bytes};
}
