/*
 * acmtphistcopy — copy a disk history to tape (ACM's tape history copy).
 *
 *   acmtphistcopy [-g N|-v V] [-b GEN|DAY] [-M DIR] [--json] DEVICE
 *
 * Writes `tphistcopy …` to volumes/<vol>/ctl and waits until the tape copy
 * of the reply's version is no longer executing (progress bar on a
 * terminal). Without -g/-v the newest disk history is copied.
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: acmtphistcopy [-g N|-v V] [-b GEN|DAY] [-M DIR] [--json] DEVICE\n"
    "\n"
    "Copy a disk history of DEVICE to tape (default: the newest).\n"
    "  -g N      disk generation N (1 = newest)\n"
    "  -v V      absolute version V\n"
    "  -b KIND   tape retention kind: GEN or DAY\n"
    "  -M DIR    the acmfs mount\n"
    "  --json    print the reply and the final history state as JSON\n"
    "  --help, --version\n";

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmtphistcopy"};
	struct acm_opt opts[] = {
	    {"-g", "N", NULL},
	    {"-v", "V", NULL},
	    {"-b", "GEN|DAY", NULL},
	};
	const char *pos[1], *failed = NULL;
	char vol[ACM_NAME_MAX + 1], cmd[256], reply[ACM_REPLY_MAX], version[32];
	char *info = NULL;
	size_t nr_pos;
	int ret;

	ret = acm_parse(&ctx, argc, argv, opts, 3, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (nr_pos != 1) {
		acm_error(&ctx, "a DEVICE is required (try --help)");
		return ACM_EXIT_USAGE;
	}
	if (opts[0].value && opts[1].value) {
		acm_error(&ctx, "-g and -v exclude each other");
		return ACM_EXIT_USAGE;
	}
	for (int i = 0; i < 2; i++)
		if (opts[i].value && !acm_number_ok(opts[i].value)) {
			acm_error(&ctx, "%s takes a number, not '%s'", opts[i].name, opts[i].value);
			return ACM_EXIT_USAGE;
		}
	if (opts[2].value && strcmp(opts[2].value, "GEN") && strcmp(opts[2].value, "DAY")) {
		acm_error(&ctx, "-b takes GEN or DAY, not '%s'", opts[2].value);
		return ACM_EXIT_USAGE;
	}
	ret = acm_device(&ctx, pos[0], vol);
	if (ret)
		return acm_exit_code(ret);

	snprintf(cmd, sizeof(cmd), "tphistcopy%s%s%s%s%s%s", opts[0].value ? " -g " : "",
	         opts[0].value ? opts[0].value : "", opts[1].value ? " -v " : "",
	         opts[1].value ? opts[1].value : "", opts[2].value ? " -b " : "",
	         opts[2].value ? opts[2].value : "");
	ret = acm_volume_command(&ctx, vol, cmd, reply, sizeof(reply));
	if (ret)
		return ret;
	if (acm_reply_get(reply, "version", version, sizeof(version)) == 0) {
		ret = acm_wait_history(&ctx, vol, version, true, 3.0, &info, &failed);
		if (ret == -ECANCELED && strcmp(failed, "tape") == 0) {
			acm_error(&ctx, "tape copy of version %s of %s failed", version, vol);
			free(info);
			return ACM_EXIT_FAILED;
		}
		if (ret && ret != -ECANCELED) {
			acm_error(&ctx, "cannot follow history %s of %s: %s", version, vol,
			          strerror(-ret));
			return acm_exit_code(ret);
		}
	}
	acm_print_completed(&ctx, pos[0], reply, info);
	free(info);
	return ACM_EXIT_OK;
}
