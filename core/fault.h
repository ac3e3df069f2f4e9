/*
 * fault.h — the I/O the engine's durability rests on goes through here, so
 * tests can fail or crash it at the k-th operation (as SQLite's test VFS does).
 *
 * Classes: IO_TRACK (era map and intent files), IO_CATALOG (SQLite, through a
 * VFS shim in catalog.c), IO_DATA (TV/BV reads and writes, copies), IO_STORE
 * (other store files), IO_TAPE (the file:// tape backend). Injection is
 * configured once from the environment:
 *
 *   ACMFS_FAULT=<class>:<n>[+]:<action>[,<class>:<n>[+]:<action>...]
 *       class  track | catalog | data | store | tape | any
 *       n      the n-th operation of that class (1-based); "n+" = n and after
 *       action eio | enospc | short (half a write, then EIO) | crash (_exit(137)
 *              before the operation: a kill -9 at that instant)
 *   ACMFS_FAULT_COUNT=1   log each class's operation count at exit
 *   ACMFS_FAULT_NODIRECT=1  reads and writes through an O_DIRECT descriptor
 *                           fail with EINVAL (a file system that opens
 *                           O_DIRECT but refuses page-aligned I/O), so the
 *                           buffered fallbacks run
 *   ACMFS_FAULT_HASHV=selftest  the multi-buffer SHA-256 check (tape/hashv.c)
 *                           fails its self-test, so blocks are checked
 *                           with OpenSSL
 *   ACMFS_FAULT_HASHV=refuse    it runs, but every job comes back refused,
 *                           so each block falls back to OpenSSL
 *   ACMFS_FAULT_PAUSE=DIR:point[,point...]  the first time the process
 *                           reaches a named pause point (fault_pause) it
 *                           creates DIR/<point>.reached and waits until
 *                           DIR/<point>.go exists (at most 120 s, then it
 *                           goes on and logs so): tests force the
 *                           interleavings of concurrent hosts with it.
 *                           Points: upload-deduped (an upload has placed
 *                           every block, before its manifest), upload-stored
 *                           (after the manifest's PUT), gc-listed (gc has
 *                           read the manifests, before it deletes),
 *                           lock-refresh (the lock refresher, each round)
 *
 * Unarmed, the wrappers cost two predictable branches (the rules, and
 * ACMFS_FAULT_NODIRECT).
 */
#ifndef ACMFS_FAULT_H
#define ACMFS_FAULT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

enum io_class { IO_TRACK, IO_CATALOG, IO_DATA, IO_STORE, IO_TAPE, IO_NCLASS };

void fault_init_from_env(void);
/* the same, once per process (for modules with no init of their own) */
void fault_init_once(void);
bool fault_active(enum io_class c);
/* count one operation of class c; returns 0 to go on, or -errno to fail it
 * (crash actions never return). *short_ok is set for a short-write fault. */
int fault_check(enum io_class c, bool *short_write);
uint64_t fault_count(enum io_class c);
void fault_report(void);
enum fault_hashv { FAULT_HASHV_NONE, FAULT_HASHV_SELFTEST, FAULT_HASHV_REFUSE };
/* ACMFS_FAULT_HASHV, read once per process */
enum fault_hashv fault_hashv(void);
/* ACMFS_FAULT_PAUSE: waits at `point` if armed for it (once per point) */
void fault_pause(const char *point);

ssize_t io_pread(enum io_class c, int fd, void *buf, size_t len, off_t off);
ssize_t io_preadv(enum io_class c, int fd, const struct iovec *iov, int iovcnt, off_t off);
ssize_t io_pwrite(enum io_class c, int fd, const void *buf, size_t len, off_t off);
/* Walking an iovec for partial preadv/pwritev: a position is (segment i,
 * bytes seg into it). io_iov_at fills out with up to max segments from the
 * position on and returns how many; io_iov_skip moves it on by n bytes. */
int io_iov_at(const struct iovec *iov, int cnt, int i, size_t seg, struct iovec *out, int max);
void io_iov_skip(const struct iovec *iov, int *i, size_t *seg, size_t n);
/* whether an I/O of iov at off suits an O_DIRECT descriptor: offset, every
 * address and every length a multiple of IO_DIRECT_ALIGN */
#define IO_DIRECT_ALIGN 4096u
bool io_iov_aligned(const struct iovec *iov, int cnt, uint64_t off);
/* an injected short write writes half the first segment, in whole 4 KiB
 * pages where it has them (so that a direct-I/O descriptor takes it) */
ssize_t io_pwritev(enum io_class c, int fd, const struct iovec *iov, int iovcnt, off_t off);
int io_fsync(enum io_class c, int fd);
int io_fdatasync(enum io_class c, int fd);
int io_rename(enum io_class c, const char *from, const char *to);

#endif
