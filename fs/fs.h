/*
 * fs.h — the FUSE adapter: libfuse3 low-level operations over the engine.
 *
 * It decodes each request (inode numbers encode volume, version and kind, see
 * fs.c), calls one engine function and replies. No policy lives here.
 */
#ifndef ACMFS_FS_H
#define ACMFS_FS_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "engine.h"

struct fh;

struct fs {
	struct engine *e;
	struct fuse_session *se;
	uid_t uid;
	gid_t gid;
	bool allow_other;
	bool writeback;
	char store[4096];
	char mountpoint[4096];	 /* absolute */
	unsigned readahead_kb;	 /* kernel read-ahead to set after INIT; 0 = leave it */
	atomic_bool ra_set;	 /* tried already */
	pthread_mutex_t fh_lock; /* guards fh_list */
	struct fh *fh_list;	 /* open file and directory handles */
};

extern const struct fuse_lowlevel_ops fs_ops;
/* engine callback: drop cached pages of a volume's data file */
void fs_inval_data(void *arg, uint64_t vol_id);
/* after the session ended: free handles the kernel never released */
void fs_release_all(struct fs *fs);

#endif
