/*
 * stop.c — what SIGTERM, SIGINT and SIGHUP do: unmount the way `umount`
 * does, not lazily, and stop only if that worked.
 *
 * libfuse's own handlers end the session loop, after which the mount is
 * detached lazily: a loop device over a volume's `data`, or a program that
 * still has it open, then gets ENOTCONN from one moment to the next. Here the
 * signal only wakes a thread that asks the kernel for a plain unmount
 * (umount2 without MNT_DETACH as root, `fusermount3 -u` otherwise). The
 * kernel refuses while anything uses the mount (EBUSY): the daemon then keeps
 * serving, says so in its log, and tries again every two seconds. Once the
 * unmount is done the session loop ends and main() closes the engine: running
 * disk copies finish, tape copies are cancelled and recorded failed, the
 * tracking state is flushed.
 */
#include "stop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

#define LOG_PREFIX "main"

extern char **environ;

static int stop_pipe[2] = {-1, -1};
/* main() is closing the engine: the stopper must not touch it any more */
static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static bool engine_gone;

static void on_signal(int sig)
{
	unsigned char c = (unsigned char)sig;
	int saved = errno;
	if (write(stop_pipe[1], &c, 1) < 0) {
		/* full pipe: a stop request is pending already */
	}
	errno = saved;
}

/* 0 when unmounted, else -errno (EBUSY: in use) */
static int plain_unmount(const char *mnt)
{
	if (geteuid() == 0)
		return umount2(mnt, UMOUNT_NOFOLLOW) ? -errno : 0;
	char *argv[] = {"fusermount3", "-u", "-q", (char *)mnt, NULL};
	pid_t pid;
	int st;
	if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ))
		return -ENOENT;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -ECHILD;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EBUSY;
}

/* Once asked to stop, the unmount is tried again every STOP_RETRY_MS until
 * the mount is free (systemd sends its SIGTERM once and then waits); the
 * refusal is logged at the first try and then once a minute. */
#define STOP_RETRY_MS 2000

static void *stopper(void *arg)
{
	struct fs *fs = arg;
	unsigned char sig = 0;
	bool asked = false;
	unsigned tries = 0;

	for (;;) {
		struct pollfd pfd = {.fd = stop_pipe[0], .events = POLLIN};
		int pr = poll(&pfd, 1, asked ? STOP_RETRY_MS : -1);
		if (pr < 0 && errno != EINTR)
			return NULL;
		if (pr > 0) {
			ssize_t n = read(stop_pipe[0], &sig, 1);
			if (n == 0)
				return NULL;
			if (n > 0 && !asked)
				log_info("signal %d: unmounting %s", sig, fs->mountpoint);
			if (n > 0)
				asked = true;
		}
		if (!asked)
			continue;
		int rc = plain_unmount(fs->mountpoint);
		if (rc == -EINVAL) /* not mounted any more: unmounted from outside */
			return NULL;
		if (!rc) {
			/* the kernel ends the connection: the session loop returns on
			 * its own (ENODEV), and main() closes the engine */
			log_info("unmounted %s", fs->mountpoint);
			return NULL;
		}
		if (tries++ % (60000 / STOP_RETRY_MS) == 0) {
			char who[512] = "";
			size_t nv = 0;
			pthread_mutex_lock(&stop_mu);
			if (engine_gone) {
				pthread_mutex_unlock(&stop_mu);
				return NULL;
			}
			nv = engine_open_volumes(fs->e, who, sizeof(who));
			pthread_mutex_unlock(&stop_mu);
			log_warn("not stopping yet: %s is in use (%s%s%s); the daemon unmounts as "
				 "soon as it is free (close it, detach loop devices, unmount what "
				 "is mounted on them)",
				 fs->mountpoint, strerror(-rc), nv ? "; open: " : "", nv ? who : "");
		}
	}
}

int fs_stop_handlers(struct fs *fs)
{
	struct sigaction sa;
	pthread_t th;

	if (pipe2(stop_pipe, O_CLOEXEC | O_NONBLOCK))
		return -errno;
	/* the reader blocks; only the handler's end stays non-blocking */
	int fl = fcntl(stop_pipe[0], F_GETFL);
	fcntl(stop_pipe[0], F_SETFL, fl & ~O_NONBLOCK);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGTERM, &sa, NULL) || sigaction(SIGINT, &sa, NULL) ||
	    sigaction(SIGHUP, &sa, NULL))
		return -errno;
	if (pthread_create(&th, NULL, stopper, fs))
		return -EAGAIN;
	pthread_detach(th);
	return 0;
}

void fs_stop_fini(void)
{
	pthread_mutex_lock(&stop_mu);
	engine_gone = true;
	pthread_mutex_unlock(&stop_mu);
}
