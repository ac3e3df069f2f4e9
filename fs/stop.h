/*
 * stop.h — SIGTERM/SIGINT/SIGHUP: a plain (not lazy) unmount, refused while
 * the mount is in use; see stop.c.
 */
#ifndef ACMFS_FS_STOP_H
#define ACMFS_FS_STOP_H

#include "fs.h"

/* Installs the handlers (after fuse_set_signal_handlers, whose SIGPIPE
 * setting stays) and starts the thread that acts on them. 0 or -errno. */
int fs_stop_handlers(struct fs *fs);
/* Before the engine closes: the stop thread leaves it alone from now on. */
void fs_stop_fini(void);

#endif
