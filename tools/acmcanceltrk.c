/*
 * acmcanceltrk — stop tracking (ACM's tracking cancel command).
 *
 *   acmcanceltrk DEVICE (-bd BD|-all) [-M DIR] [--json]
 *
 * Writes `canceltrk -bd BD` or `canceltrk -all` to volumes/<vol>/ctl. As in
 * ACM the options may follow DEVICE. BD is a backup volume name (db.bv1).
 * A running physical copy goes on; only tracking stops.
 */
#include "common.h"

#include <string.h>

static const char usage[] = "usage: acmcanceltrk DEVICE (-bd BD|-all) [-M DIR] [--json]\n"
                            "\n"
                            "Stop the tracking of differential snapshot pairs of DEVICE.\n"
                            "  -bd BD    the backup volume of the pair (e.g. db.bv1)\n"
                            "  -all      every pair of DEVICE\n"
                            "  -M DIR    the acmfs mount\n"
                            "  --json    print the reply as JSON\n"
                            "  --help, --version\n";

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmcanceltrk"};
	struct acm_opt opts[] = {{"-bd", "BD", NULL}, {"-all", NULL, NULL}};
	const char *pos[1];
	char vol[ACM_NAME_MAX + 1], cmd[256], reply[ACM_REPLY_MAX];
	size_t nr_pos;
	int ret;

	ret = acm_parse(&ctx, argc, argv, opts, 2, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (nr_pos != 1) {
		acm_error(&ctx, "a DEVICE is required (try --help)");
		return ACM_EXIT_USAGE;
	}
	if (!opts[0].value == !opts[1].value) {
		acm_error(&ctx, "give exactly one of -bd BD or -all");
		return ACM_EXIT_USAGE;
	}
	if (opts[0].value && !acm_name_ok(opts[0].value)) {
		acm_error(&ctx, "bad backup volume name '%s'", opts[0].value);
		return ACM_EXIT_USAGE;
	}
	ret = acm_device(&ctx, pos[0], vol);
	if (ret)
		return acm_exit_code(ret);

	if (opts[0].value)
		snprintf(cmd, sizeof(cmd), "canceltrk -bd %s", opts[0].value);
	else
		snprintf(cmd, sizeof(cmd), "canceltrk -all");
	ret = acm_volume_command(&ctx, vol, cmd, reply, sizeof(reply));
	if (ret)
		return ret;
	acm_print_completed(&ctx, pos[0], reply, NULL);
	return ACM_EXIT_OK;
}
