/*
 * iomem.h — memory for direct I/O.
 *
 * A direct read or write hands the disk the caller's pages; the block layer
 * makes one segment per physically contiguous run of them and a request
 * takes at most max_segments (254 on virtio-blk). Buffers from malloc are
 * 4 KiB pages scattered over memory, so a 16 MiB O_DIRECT read leaves as
 * sixteen 1 MiB requests; the page cache's large folios leave as 4 MiB ones.
 * Measured on this project's machine: the same 2 GiB read from tape packs
 * made 2,200 requests and kept the disk busy 2.0 s with malloc'd cache
 * entries, 690 requests and 1.1 s from huge pages.
 *
 * So the memory here comes in IOMEM_CHUNK-aligned mappings advised for
 * transparent huge pages (MADV_HUGEPAGE; THP "madvise" mode, the default, is
 * enough). Where the kernel gives none, the memory is ordinary pages: the
 * bytes are the same, only the requests are smaller. Mappings are touched
 * lazily, so only what is used becomes resident.
 *
 *   iomem_alloc / iomem_free   one buffer, page aligned (length rounded up)
 *   struct iomem_slab          fixed-size objects, page aligned, carved from
 *                              such chunks: an object whose size divides the
 *                              chunk (a 64 KiB cache block) lies inside one huge
 *                              page, one disk segment. No locking: the owner's
 *                              lock guards it.
 *                              Chunks are released only by iomem_slab_release.
 */
#ifndef ACMFS_IOMEM_H
#define ACMFS_IOMEM_H

#include <stddef.h>

#define IOMEM_CHUNK (2u << 20) /* x86-64's transparent huge page */

/* len bytes (rounded up to whole pages), zero-filled, page aligned (chunk
 * aligned when len ≥ IOMEM_CHUNK); NULL with errno set when out of memory */
void *iomem_alloc(size_t len);
/* frees what iomem_alloc(len) returned; NULL is ignored */
void iomem_free(void *p, size_t len);

struct iomem_slab {
	size_t obj_bytes;   /* object stride: the size asked, rounded up to pages */
	size_t chunk_bytes; /* max(IOMEM_CHUNK, obj_bytes) */
	void **chunks;      /* mappings, chunk_bytes each */
	size_t nr_chunks, cap_chunks;
	void *free;  /* freed objects, linked through their first bytes */
	size_t next; /* objects of the last chunk handed out so far */
};

/* -EINVAL for a zero (or absurd) obj_bytes */
int iomem_slab_init(struct iomem_slab *s, size_t obj_bytes);
/* an object (contents undefined), or NULL when out of memory */
void *iomem_slab_get(struct iomem_slab *s);
void iomem_slab_put(struct iomem_slab *s, void *obj);
/* unmaps every chunk: objects still out become invalid */
void iomem_slab_release(struct iomem_slab *s);

#endif
