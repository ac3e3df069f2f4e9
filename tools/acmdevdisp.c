/*
 * acmdevdisp — device operating status display (ACM's acmdevdisp).
 *
 *   acmdevdisp [-t|-b] [-u] [-M DIR] [--json] [DEVICE]
 *
 * Reads the mount's `devdisp` table (or volumes/<vol>/devdisp), keeps the
 * transaction (-t) or backup (-b) rows, and prints it again aligned. With
 * -u the Device-Mode of each backup volume comes from status.json `mode_u`
 * (which shows "Backup (used-T)": tracking, history deleted); the daemon's
 * text table always carries the plain mode. --json prints the rows as an
 * array of objects (server, device, size, size_bytes, device_mode,
 * mount_point, backup_engine).
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: acmdevdisp [-t|-b] [-u] [-M DIR] [--json] [DEVICE]\n"
    "\n"
    "Show transaction and backup volumes and their modes.\n"
    "  -t        transaction volumes only\n"
    "  -b        backup volumes only\n"
    "  -u        show \"Backup (used-T)\" for a tracking backup volume whose history\n"
    "            was deleted\n"
    "  -M DIR    the acmfs mount\n"
    "  --json    print the rows as a JSON array\n"
    "  --help, --version\n";

/* name → mode_u / size from status.json objects that have a "name". */
struct devinfo {
	size_t nr;
	struct {
		char name[ACM_NAME_MAX + 1];
		char mode_u[64];
		char size[32];
	} d[1024];
};

static int collect(void *arg, const struct acm_json_member *m, size_t nr)
{
	struct devinfo *di = arg;
	const char *name = NULL, *mode_u = NULL, *size = NULL;

	for (size_t i = 0; i < nr; i++) {
		if (strcmp(m[i].key, "name") == 0)
			name = m[i].val;
		else if (strcmp(m[i].key, "mode_u") == 0)
			mode_u = m[i].val;
		else if (strcmp(m[i].key, "size") == 0)
			size = m[i].val;
	}
	if (!name || !size || di->nr >= 1024)
		return 0;
	snprintf(di->d[di->nr].name, sizeof(di->d[0].name), "%.64s", name);
	snprintf(di->d[di->nr].mode_u, sizeof(di->d[0].mode_u), "%.63s", mode_u ? mode_u : "");
	snprintf(di->d[di->nr].size, sizeof(di->d[0].size), "%.31s", size);
	di->nr++;
	return 0;
}

static int find_col(const struct acm_table *t, const char *name)
{
	for (size_t c = 0; c < t->nr_cols; c++)
		if (strcmp(acm_table_cell(t, 0, c), name) == 0)
			return (int)c;
	return -1;
}

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmdevdisp"};
	struct acm_opt opts[] = {{"-t", NULL, NULL}, {"-b", NULL, NULL}, {"-u", NULL, NULL}};
	struct acm_table t, out;
	struct devinfo *di = NULL;
	const char *pos[1];
	char vol[ACM_NAME_MAX + 1], rel[128];
	char *text, *status = NULL;
	int ret, dev_col, mode_col;
	size_t nr_pos;

	ret = acm_parse(&ctx, argc, argv, opts, 3, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (opts[0].value && opts[1].value) {
		acm_error(&ctx, "-t and -b exclude each other");
		return ACM_EXIT_USAGE;
	}
	if (nr_pos == 1) {
		ret = acm_device(&ctx, pos[0], vol);
		if (ret)
			return acm_exit_code(ret);
		snprintf(rel, sizeof(rel), "volumes/%s/devdisp", vol);
	} else {
		ret = acm_find_mount(&ctx);
		if (ret)
			return acm_exit_code(ret);
		snprintf(rel, sizeof(rel), "devdisp");
	}
	ret = acm_read_mnt(&ctx, rel, &text);
	if (ret) {
		acm_error(&ctx, "cannot read %s/%s: %s", ctx.mnt, rel, strerror(-ret));
		return acm_exit_code(ret);
	}
	if (!ctx.json && !opts[0].value && !opts[1].value && !opts[2].value) {
		fputs(text, stdout); /* as the daemon aligned it */
		free(text);
		return ACM_EXIT_OK;
	}
	ret = acm_table_parse(text, &t);
	free(text);
	if (ret) {
		acm_error(&ctx, "cannot parse %s/%s", ctx.mnt, rel);
		return ACM_EXIT_FAIL;
	}
	dev_col = find_col(&t, "Device");
	mode_col = find_col(&t, "Device-Mode");
	if (dev_col < 0 || mode_col < 0) {
		acm_error(&ctx, "%s/%s has no Device or Device-Mode column", ctx.mnt, rel);
		ret = ACM_EXIT_FAIL;
		goto out_table;
	}
	if (opts[2].value || ctx.json) {
		di = calloc(1, sizeof(*di));
		if (!di) {
			acm_error(&ctx, "out of memory");
			ret = ACM_EXIT_FAIL;
			goto out_table;
		}
		ret = acm_read_mnt(&ctx, "status.json", &status);
		if (ret == 0)
			ret = acm_json_scan(status, collect, di);
		free(status);
		if (ret) {
			acm_error(&ctx, "cannot read %s/status.json: %s", ctx.mnt,
			          ret == -EPROTO ? "malformed JSON" : strerror(-ret));
			ret = acm_exit_code(ret);
			goto out_table;
		}
	}

	acm_table_init(&out, t.nr_cols);
	for (size_t r = 0; r < t.nr_rows; r++) {
		const char *cells[ACM_MAX_COLS];
		const char *mode = acm_table_cell(&t, r, (size_t)mode_col);
		bool is_tv = strcmp(mode, "Transaction") == 0;

		for (size_t c = 0; c < t.nr_cols; c++)
			cells[c] = acm_table_cell(&t, r, c);
		if (r > 0 && ((opts[0].value && !is_tv) || (opts[1].value && is_tv)))
			continue;
		if (r > 0 && opts[2].value && !is_tv)
			for (size_t i = 0; i < di->nr; i++)
				if (strcmp(di->d[i].name, cells[dev_col]) == 0 &&
				    di->d[i].mode_u[0])
					cells[mode_col] = di->d[i].mode_u;
		acm_table_add(&out, cells);
	}

	if (!ctx.json) {
		acm_table_print(&out, stdout);
	} else {
		struct acm_json j;
		char name[128];

		acm_json_init(&j, stdout);
		acm_json_arr(&j, NULL);
		for (size_t r = 1; r < out.nr_rows; r++) {
			const char *dev = acm_table_cell(&out, r, (size_t)dev_col);

			acm_json_obj(&j, NULL);
			for (size_t c = 0; c < out.nr_cols; c++) {
				const char *v = acm_table_cell(&out, r, c);
				acm_json_name(acm_table_cell(&out, 0, c), name, sizeof(name));
				if (strcmp(v, "----") == 0)
					acm_json_null(&j, name);
				else
					acm_json_str(&j, name, v);
				if (strcmp(name, "size") == 0)
					for (size_t i = 0; i < di->nr; i++)
						if (strcmp(di->d[i].name, dev) == 0)
							acm_json_auto(&j, "size_bytes",
							              di->d[i].size);
			}
			acm_json_end(&j, '}');
		}
		acm_json_end(&j, ']');
		acm_json_done(&j);
	}
	acm_table_release(&out);
	ret = ACM_EXIT_OK;
out_table:
	free(di);
	acm_table_release(&t);
	return ret;
}
