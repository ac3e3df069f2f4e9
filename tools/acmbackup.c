/*
 * acmbackup — ACM's backup command as a client of an acmfs mount.
 *
 *   acmbackup [-T] [-m DISK|TAPE|BOTH] [-b GEN|DAY] [-w] [-M DIR] [--json] DEVICE
 *
 * Writes `backup …` to volumes/<vol>/ctl. The daemon returns once the
 * point-in-time copy exists; this tool then waits (polling the history's
 * info file) until the physical disk copy and any tape copy have finished,
 * with a progress bar when stderr is a terminal. `-w` returns as soon as the
 * disk history exists. Prints "<DEVICE> acmbackup completed" or one error
 * line; the exit status follows common.h.
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: acmbackup [-T] [-m DISK|TAPE|BOTH] [-b GEN|DAY] [-w] [-M DIR] [--json] DEVICE\n"
    "\n"
    "Back up the transaction volume DEVICE (a volume name or MNT/volumes/VOL/data).\n"
    "  -T        differential snapshot (QuickOPC): the pair keeps tracking\n"
    "  -m MEDIA  DISK, TAPE or BOTH (default BOTH: disk, then a tape copy)\n"
    "  -b KIND   tape retention kind: GEN (generations) or DAY (days)\n"
    "  -w        return once the disk history exists; do not wait for the copies\n"
    "  -M DIR    the acmfs mount (default: $ACMFS_MOUNT or the only acmfs mount)\n"
    "  --json    print the reply and the final history state as JSON\n"
    "  --help, --version\n";

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmbackup"};
	struct acm_opt opts[] = {
	    {"-T", NULL, NULL},
	    {"-m", "DISK|TAPE|BOTH", NULL},
	    {"-b", "GEN|DAY", NULL},
	    {"-w", NULL, NULL},
	};
	const char *pos[1], *failed = NULL;
	char vol[ACM_NAME_MAX + 1], cmd[256], reply[ACM_REPLY_MAX], version[32];
	char *info = NULL;
	size_t nr_pos;
	int ret;

	ret = acm_parse(&ctx, argc, argv, opts, 4, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (nr_pos != 1) {
		acm_error(&ctx, "a DEVICE is required (try --help)");
		return ACM_EXIT_USAGE;
	}
	if (opts[1].value && strcmp(opts[1].value, "DISK") && strcmp(opts[1].value, "TAPE") &&
	    strcmp(opts[1].value, "BOTH")) {
		acm_error(&ctx, "-m takes DISK, TAPE or BOTH, not '%s'", opts[1].value);
		return ACM_EXIT_USAGE;
	}
	if (opts[2].value && strcmp(opts[2].value, "GEN") && strcmp(opts[2].value, "DAY")) {
		acm_error(&ctx, "-b takes GEN or DAY, not '%s'", opts[2].value);
		return ACM_EXIT_USAGE;
	}
	if (opts[3].value && opts[1].value && strcmp(opts[1].value, "TAPE") == 0) {
		acm_error(&ctx, "-w cannot be used with -m TAPE (there is no disk history)");
		return ACM_EXIT_USAGE;
	}
	ret = acm_device(&ctx, pos[0], vol);
	if (ret)
		return acm_exit_code(ret);

	snprintf(cmd, sizeof(cmd), "backup%s%s%s%s%s", opts[0].value ? " -T" : "",
	         opts[1].value ? " -m " : "", opts[1].value ? opts[1].value : "",
	         opts[2].value ? " -b " : "", opts[2].value ? opts[2].value : "");
	ret = acm_volume_command(&ctx, vol, cmd, reply, sizeof(reply));
	if (ret)
		return ret;

	if (!opts[3].value) {
		if (acm_reply_get(reply, "version", version, sizeof(version))) {
			acm_error(&ctx, "the daemon's reply has no version: %s", reply);
			return ACM_EXIT_FAIL;
		}
		ret = acm_wait_history(&ctx, vol, version, true, 3.0, &info, &failed);
		if (ret == -ECANCELED) {
			acm_error(&ctx, "backup version %s of %s failed (%s copy)", version, vol,
			          failed);
			free(info);
			return ACM_EXIT_FAILED;
		}
		if (ret) {
			acm_error(&ctx, "cannot follow history %s of %s: %s", version, vol,
			          strerror(-ret));
			return acm_exit_code(ret);
		}
	}
	acm_print_completed(&ctx, pos[0], reply, info);
	free(info);
	return ACM_EXIT_OK;
}
