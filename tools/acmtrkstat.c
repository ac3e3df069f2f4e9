/*
 * acmtrkstat — tracking status display (ACM's acmtrkstat).
 *
 *   acmtrkstat [-M DIR] [--json] [DEVICE]
 *
 * Prints the mount's `trkstat` table (all volumes), or volumes/<vol>/trkstat
 * for one DEVICE, as the daemon writes it. --json parses that table into an
 * array of objects: server, transaction_disk, backup_disk, status, execute,
 * update (the percentages as numbers, "----" as null).
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

static const char usage[] = "usage: acmtrkstat [-M DIR] [--json] [DEVICE]\n"
                            "\n"
                            "Show the differential snapshot pairs that track (or copy and track).\n"
                            "  -M DIR    the acmfs mount\n"
                            "  --json    print the rows as a JSON array\n"
                            "  --help, --version\n";

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmtrkstat"};
	struct acm_table t;
	struct acm_json j;
	const char *pos[1];
	char vol[ACM_NAME_MAX + 1], rel[128], name[128];
	char *text;
	size_t nr_pos;
	int ret;

	ret = acm_parse(&ctx, argc, argv, NULL, 0, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (nr_pos == 1) {
		ret = acm_device(&ctx, pos[0], vol);
		if (ret)
			return acm_exit_code(ret);
		snprintf(rel, sizeof(rel), "volumes/%s/trkstat", vol);
	} else {
		ret = acm_find_mount(&ctx);
		if (ret)
			return acm_exit_code(ret);
		snprintf(rel, sizeof(rel), "trkstat");
	}
	ret = acm_read_mnt(&ctx, rel, &text);
	if (ret) {
		acm_error(&ctx, "cannot read %s/%s: %s", ctx.mnt, rel, strerror(-ret));
		return acm_exit_code(ret);
	}
	if (!ctx.json) {
		fputs(text, stdout);
		free(text);
		return ACM_EXIT_OK;
	}
	ret = acm_table_parse(text, &t);
	free(text);
	if (ret) {
		acm_error(&ctx, "cannot parse %s/%s", ctx.mnt, rel);
		return ACM_EXIT_FAIL;
	}
	acm_json_init(&j, stdout);
	acm_json_arr(&j, NULL);
	for (size_t r = 1; r < t.nr_rows; r++) {
		acm_json_obj(&j, NULL);
		for (size_t c = 0; c < t.nr_cols; c++) {
			acm_json_name(acm_table_cell(&t, 0, c), name, sizeof(name));
			acm_json_auto(&j, name, acm_table_cell(&t, r, c));
		}
		acm_json_end(&j, '}');
	}
	acm_json_end(&j, ']');
	acm_json_done(&j);
	acm_table_release(&t);
	return ACM_EXIT_OK;
}
