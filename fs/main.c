/*
 * main.c — the acmfs daemon: `acmfs [-f] [-o opts] STORE MOUNTPOINT`.
 *
 * Parses options (ours: -o writeback, -o flush_ms=N, -o hook_timeout=S, …; the
 * rest go to libfuse),
 * opens the engine on STORE (creating it, taking its lock), mounts, runs the
 * multi-threaded FUSE loop until unmount or SIGTERM/SIGINT/SIGHUP (a plain
 * unmount, refused while the mount is in use: stop.c), then closes the
 * engine cleanly (copies finish, tracking is flushed).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "log.h"
#include "stop.h"
#include "tier.h"
#include "../tape/tier.h"

#define LOG_PREFIX "main"

struct opts {
	int writeback;
	int flush_ms;
	int readahead_kb;
	int hook_timeout;
	int show_help;
	int show_version;
	int check;
	int repair;
	char *store;
	char *host;
};

#define OPT(t, p, v) { t, offsetof(struct opts, p), v }
static const struct fuse_opt opt_spec[] = {
	OPT("writeback", writeback, 1),
	OPT("flush_ms=%d", flush_ms, 0),
	OPT("readahead_kb=%d", readahead_kb, 0),
	OPT("hook_timeout=%d", hook_timeout, 0),
	OPT("host=%s", host, 0),
	OPT("--check", check, 1),
	OPT("--repair", repair, 1),
	OPT("--version", show_version, 1),
	OPT("-V", show_version, 1),
	OPT("--help", show_help, 1),
	OPT("-h", show_help, 1),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct opts *o = data;

	if (key == FUSE_OPT_KEY_NONOPT && !o->store) {
		o->store = strdup(arg);
		return 0;
	}
	return 1;
}

static void usage(const char *prog)
{
	printf("usage: %s [-f] [-d] [-o opt[,opt...]] STORE MOUNTPOINT\n"
	       "\n"
	       "Mount the acmfs store STORE (created if missing) on MOUNTPOINT.\n"
	       "\n"
	       "acmfs options:\n"
	       "    -o writeback        use the kernel's writeback cache for volumes' data files\n"
	       "                        (a backup then holds what was flushed, as on a disk array)\n"
	       "    -o flush_ms=N       period of the tracking map flush (default 5000)\n"
	       "    -o readahead_kb=N   kernel read-ahead for the mount (default 1024; 0 keeps\n"
	       "                        the kernel's 128; setting it needs root)\n"
	       "    -o hook_timeout=S   kill a hook (its process group) still running after S\n"
	       "                        seconds; the operation then fails (default 300)\n"
	       "    -o host=NAME        this host's name in the tables and in every manifest it\n"
	       "                        writes to a shared pool (default: the machine's name)\n"
	       "    -o allow_other      let other users in (default_permissions is then forced;\n"
	       "                        only the owner or root may write any ctl)\n"
	       "    -f                  stay in the foreground\n"
	       "    -d                  debug (implies -f)\n"
	       "    --check STORE       check an unmounted store's consistency and exit\n"
	       "                        (non-zero when problems are found)\n"
	       "    --check --repair STORE  also repair, only ever more conservatively\n"
	       "    -V, --version       print the version\n"
	       "    -h, --help          this help\n"
	       "\n"
	       "The mounted tree, the control language and the tools: see README in the mount.\n",
	       prog);
}

/* is `name` one of the words of an -o option (-o a,b or -oa,b)? Paths that
 * merely contain the word do not count. */
static bool has_mount_option(const struct fuse_args *args, const char *name)
{
	for (int i = 0; i < args->argc; i++) {
		const char *opts = NULL;
		if (!strcmp(args->argv[i], "-o") && i + 1 < args->argc)
			opts = args->argv[++i];
		else if (!strncmp(args->argv[i], "-o", 2))
			opts = args->argv[i] + 2;
		if (!opts)
			continue;
		char buf[4096];
		char *save = NULL;
		snprintf(buf, sizeof(buf), "%s", opts);
		for (char *w = strtok_r(buf, ",", &save); w; w = strtok_r(NULL, ",", &save))
			if (!strcmp(w, name))
				return true;
	}
	return false;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts cl;
	struct opts o = {.readahead_kb = 1024, .hook_timeout = ENGINE_HOOK_TIMEOUT_S};
	struct fs fs = { 0 };
	struct engine_opts eo = { 0 };
	struct fuse_loop_config *lc = NULL;
	char err[512] = "";
	int rc = 1;

	if (fuse_opt_parse(&args, &o, opt_spec, opt_proc) == -1)
		return 1;
	if (o.show_help) {
		usage(argv[0]);
		fuse_opt_free_args(&args);
		return 0;
	}
	if (o.show_version) {
		printf("acmfs %s (libfuse %s)\n", ACMFS_VERSION, fuse_pkgversion());
		fuse_opt_free_args(&args);
		return 0;
	}
	if (o.check) {
		struct sbuf sb;
		if (!o.store) {
			fprintf(stderr, "acmfs: usage: acmfs --check [--repair] STORE\n");
			return 2;
		}
		sbuf_init(&sb, 64 * 1024 * 1024);
		rc = engine_check_store(o.store, o.repair, &sb);
		if (sb.buf)
			fputs(sb.buf, stdout);
		sbuf_release(&sb);
		free(o.store);
	free(o.host);
		fuse_opt_free_args(&args);
		return rc == 0 ? 0 : 1;
	}
	/* allow_other forces default_permissions: the kernel then checks modes */
	if (has_mount_option(&args, "allow_other")) {
		fs.allow_other = true;
		fuse_opt_add_arg(&args, "-odefault_permissions");
	}
	if (o.hook_timeout < 1 || o.hook_timeout > 86400) {
		fprintf(stderr, "acmfs: hook_timeout=%d: must be 1 to 86400 seconds\n",
			o.hook_timeout);
		free(o.store);
		free(o.host);
		fuse_opt_free_args(&args);
		return 1;
	}
	if (fuse_parse_cmdline(&args, &cl) != 0)
		return 1;
	if (!o.store || !cl.mountpoint) {
		fprintf(stderr, "acmfs: usage: acmfs [-f] [-o opts] STORE MOUNTPOINT\n");
		goto out_args;
	}
	if (!realpath(o.store, fs.store))
		snprintf(fs.store, sizeof(fs.store), "%s", o.store);

	pthread_mutex_init(&fs.fh_lock, NULL);
	fs.uid = getuid();
	fs.gid = getgid();
	fs.writeback = o.writeback;
	fs.readahead_kb = o.readahead_kb >= 0 ? (unsigned)o.readahead_kb : 0;
	if (!realpath(cl.mountpoint, fs.mountpoint))
		snprintf(fs.mountpoint, sizeof(fs.mountpoint), "%s", cl.mountpoint);
	eo.store = o.store;
	eo.mountpoint = cl.mountpoint;
	eo.tier = &tape_tier_ops;
	eo.inval_data = fs_inval_data;
	eo.inval_arg = &fs;
	eo.flush_ms = o.flush_ms > 0 ? (unsigned)o.flush_ms : 0;
	eo.host = o.host;
	eo.hook_timeout_s = (unsigned)o.hook_timeout;
	if (engine_open(&eo, &fs.e, err, sizeof(err))) {
		fprintf(stderr, "acmfs: %s\n", err);
		goto out_args;
	}
	if (!realpath(o.store, fs.store))
		snprintf(fs.store, sizeof(fs.store), "%s", o.store);
	fs.se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), &fs);
	if (!fs.se)
		goto out_engine;
	if (fuse_set_signal_handlers(fs.se) != 0)
		goto out_session;
	/* not libfuse's: a stop unmounts plainly, and only when nothing uses the mount */
	if (fs_stop_handlers(&fs)) {
		log_err("cannot install the signal handlers");
		goto out_signals;
	}
	if (fuse_session_mount(fs.se, cl.mountpoint) != 0) {
		fprintf(stderr, "acmfs: cannot mount on %s\n", cl.mountpoint);
		goto out_signals;
	}
	log_info("mounted %s on %s", fs.store, cl.mountpoint);
	fuse_daemonize(cl.foreground);
	if (engine_start(fs.e)) {
		log_err("cannot start the engine's threads");
		rc = 1;
		fuse_session_unmount(fs.se);
		goto out_signals;
	}
	if (!cl.foreground) {
		/* daemonized: stderr went to /dev/null; the log sink goes to the store */
		char lp[PATH_MAX];
		snprintf(lp, sizeof(lp), "%.4000s/acmfs.log", fs.store);
		int fd = open(lp, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0) {
			dup2(fd, STDERR_FILENO);
			close(fd);
		}
	}
	if (cl.singlethread) {
		rc = fuse_session_loop(fs.se);
	} else {
		lc = fuse_loop_cfg_create();
		fuse_loop_cfg_set_clone_fd(lc, cl.clone_fd);
		/* libfuse leaves these at -1 (unset) unless -o max_threads= etc. */
		int mt = (int)cl.max_threads, it = (int)cl.max_idle_threads;
		fuse_loop_cfg_set_max_threads(lc, mt > 0 && mt <= 1024 ? (unsigned)mt : 16);
		fuse_loop_cfg_set_idle_threads(lc, it > 0 && it <= 1024 ? (unsigned)it : 10);
		rc = fuse_session_loop_mt(fs.se, lc);
		fuse_loop_cfg_destroy(lc);
	}
	rc = rc < 0 ? 1 : 0;
	fuse_session_unmount(fs.se);
	fs_release_all(&fs);
out_signals:
	fuse_remove_signal_handlers(fs.se);
out_session:
	fuse_session_destroy(fs.se);
	fs.se = NULL;
out_engine:
	fs_stop_fini();
	engine_close(fs.e);
	log_info("store closed");
out_args:
	free(cl.mountpoint);
	free(o.store);
	free(o.host);
	fuse_opt_free_args(&args);
	return rc;
}
