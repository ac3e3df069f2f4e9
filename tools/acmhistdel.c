/*
 * acmhistdel — delete backup history (ACM's history information delete).
 *
 *   acmhistdel (-g N|-v V|-z) [-m DISK|TAPE] [-M DIR] [--json] DEVICE
 *
 * Writes `histdel …` to volumes/<vol>/ctl. Exactly one of -g, -v, -z (all
 * histories). Without -m both the disk and the tape copies are deleted.
 */
#include "common.h"

#include <string.h>

static const char usage[] =
    "usage: acmhistdel (-g N|-v V|-z) [-m DISK|TAPE] [-M DIR] [--json] DEVICE\n"
    "\n"
    "Delete backup history of DEVICE.\n"
    "  -g N      disk generation N (1 = newest; with -m TAPE: tape generation N)\n"
    "  -v V      absolute version V\n"
    "  -z        all histories\n"
    "  -m MEDIA  DISK or TAPE: delete only that copy (default: both)\n"
    "  -M DIR    the acmfs mount\n"
    "  --json    print the reply as JSON\n"
    "  --help, --version\n";

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmhistdel"};
	struct acm_opt opts[] = {
	    {"-g", "N", NULL},
	    {"-v", "V", NULL},
	    {"-z", NULL, NULL},
	    {"-m", "DISK|TAPE", NULL},
	};
	const char *pos[1];
	char vol[ACM_NAME_MAX + 1], cmd[256], reply[ACM_REPLY_MAX];
	size_t nr_pos;
	int ret, nr_sel = 0;

	ret = acm_parse(&ctx, argc, argv, opts, 4, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (nr_pos != 1) {
		acm_error(&ctx, "a DEVICE is required (try --help)");
		return ACM_EXIT_USAGE;
	}
	for (int i = 0; i < 3; i++)
		nr_sel += opts[i].value != NULL;
	if (nr_sel != 1) {
		acm_error(&ctx, "give exactly one of -g N, -v V or -z");
		return ACM_EXIT_USAGE;
	}
	for (int i = 0; i < 2; i++)
		if (opts[i].value && !acm_number_ok(opts[i].value)) {
			acm_error(&ctx, "%s takes a number, not '%s'", opts[i].name, opts[i].value);
			return ACM_EXIT_USAGE;
		}
	if (opts[3].value && strcmp(opts[3].value, "DISK") && strcmp(opts[3].value, "TAPE")) {
		acm_error(&ctx, "-m takes DISK or TAPE, not '%s'", opts[3].value);
		return ACM_EXIT_USAGE;
	}
	ret = acm_device(&ctx, pos[0], vol);
	if (ret)
		return acm_exit_code(ret);

	snprintf(cmd, sizeof(cmd), "histdel%s%s%s%s%s%s%s", opts[0].value ? " -g " : "",
	         opts[0].value ? opts[0].value : "", opts[1].value ? " -v " : "",
	         opts[1].value ? opts[1].value : "", opts[2].value ? " -z" : "",
	         opts[3].value ? " -m " : "", opts[3].value ? opts[3].value : "");
	ret = acm_volume_command(&ctx, vol, cmd, reply, sizeof(reply));
	if (ret)
		return ret;
	acm_print_completed(&ctx, pos[0], reply, NULL);
	return ACM_EXIT_OK;
}
