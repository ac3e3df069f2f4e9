/*
 * acmhistdisp — history information display (ACM's acmhistdisp).
 *
 *   acmhistdisp [-l] [-m DISK|TAPE] [-M DIR] [--json] [DEVICE]
 *
 * Reads the mount's `histdisp` (or volumes/<vol>/histdisp): per volume a
 * "Server=… Device=… Mount-Point=…" line, the disk table (header
 * "Generation …") and the tape table (header "Tape-Gen …"). -m keeps one of
 * the two tables; -l adds columns from each history's info file
 * (Diff, Copy, Grains, Verify). --json prints
 *   {"server": S, "volumes": [{"device", "mount_point", "disk": [...], "tape": [...]}]}
 * with every row's table cells plus its info fields (differential, copy,
 * grains_copied, verify, date).
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: acmhistdisp [-l] [-m DISK|TAPE] [-M DIR] [--json] [DEVICE]\n"
    "\n"
    "Show the disk and tape backup histories of DEVICE, or of every volume.\n"
    "  -l        long: add differential, copy kind, grains copied, verify result\n"
    "  -m MEDIA  DISK or TAPE: show only that kind of history\n"
    "  -M DIR    the acmfs mount\n"
    "  --json    print the histories as JSON\n"
    "  --help, --version\n";

enum section { SEC_NONE, SEC_DISK, SEC_TAPE };

struct histdisp {
	struct acm_ctx *ctx;
	bool longfmt, want_disk, want_tape;
	struct acm_json j;
	bool json_vol_open; /* a volume object is open */
	enum section sec;   /* open JSON array, or table being collected */
	char header[1024];  /* the daemon's header line of the current table */
	char vol[ACM_NAME_MAX + 1];
	struct acm_table t; /* text mode: the current table, re-rendered */
	bool have_table;
};

static const char *const disk_extra[] = {"Diff", "Copy", "Grains", "Verify"};
static const char *const tape_extra[] = {"Diff", "Verify"};

/* Extra cells of one history from its info file. */
static void history_extra(struct histdisp *h, const char *version, char cells[6][128],
                          char **info_out)
{
	char rel[256], v[128];
	char *info = NULL;

	for (int i = 0; i < 6; i++)
		snprintf(cells[i], 128, "-");
	*info_out = NULL;
	snprintf(rel, sizeof(rel), "volumes/%s/history/%s/info", h->vol, version);
	if (!h->vol[0] || acm_read_mnt(h->ctx, rel, &info))
		return;
	if (acm_info_get(info, "differential", v, sizeof(v)) == 0)
		snprintf(cells[0], 128, "%s", strcmp(v, "1") == 0 ? "yes" : "no");
	if (acm_info_get(info, "copy", v, sizeof(v)) == 0)
		snprintf(cells[1], 128, "%s", v);
	if (acm_info_get(info, "grains_copied", v, sizeof(v)) == 0)
		snprintf(cells[2], 128, "%s", v);
	if (acm_info_get(info, "verify", v, sizeof(v)) == 0) {
		v[strcspn(v, " ")] = '\0';
		snprintf(cells[3], 128, "%s", v);
	}
	*info_out = info;
}

static void flush_table(struct histdisp *h)
{
	if (!h->have_table)
		return;
	if (!h->ctx->json)
		acm_table_print(&h->t, stdout);
	acm_table_release(&h->t);
	h->have_table = false;
}

static void close_section(struct histdisp *h)
{
	if (h->ctx->json && h->sec != SEC_NONE &&
	    ((h->sec == SEC_DISK && h->want_disk) || (h->sec == SEC_TAPE && h->want_tape)))
		acm_json_end(&h->j, ']');
	flush_table(h);
	h->sec = SEC_NONE;
}

static void close_volume(struct histdisp *h)
{
	close_section(h);
	if (h->ctx->json && h->json_vol_open) {
		acm_json_end(&h->j, '}');
		h->json_vol_open = false;
	}
}

static int open_section(struct histdisp *h, enum section sec, const char *line)
{
	char names[ACM_MAX_COLS][128];
	const char *cells[ACM_MAX_COLS];
	int nr;
	bool want = sec == SEC_DISK ? h->want_disk : h->want_tape;

	close_section(h);
	h->sec = sec;
	snprintf(h->header, sizeof(h->header), "%.*s", (int)strcspn(line, "\n"), line);
	if (!want)
		return 0;
	if (h->ctx->json) {
		acm_json_arr(&h->j, sec == SEC_DISK ? "disk" : "tape");
		return 0;
	}
	nr = acm_table_header(h->header, names, ACM_MAX_COLS);
	if (nr <= 0)
		return -EPROTO;
	for (int c = 0; c < nr; c++)
		cells[c] = names[c];
	if (h->longfmt) {
		size_t extra = sec == SEC_DISK ? 4 : 2;
		for (size_t e = 0; e < extra && nr < ACM_MAX_COLS; e++)
			cells[nr++] = sec == SEC_DISK ? disk_extra[e] : tape_extra[e];
	}
	acm_table_init(&h->t, (size_t)nr);
	h->have_table = true;
	return acm_table_add(&h->t, cells);
}

static int split_row(const char *header, const char *line, char cells[][128])
{
	int nr = acm_table_split(header, line, cells, ACM_MAX_COLS);
	char names[ACM_MAX_COLS][128];
	int nr_hdr;

	if (nr >= 0)
		return nr;
	/* Unaligned table: the Backup-Date cell is two words. */
	nr_hdr = acm_table_header(header, names, ACM_MAX_COLS);
	if (nr_hdr <= 2)
		return -EPROTO;
	{
		char words[ACM_MAX_COLS + 1][128];
		const char *p = line;
		int nw = 0;

		while (*p && *p != '\n' && nw <= ACM_MAX_COLS) {
			size_t l;
			p += strspn(p, " \t");
			l = strcspn(p, " \t\n");
			if (!l)
				break;
			snprintf(words[nw++], 128, "%.*s", (int)l, p);
			p += l;
		}
		if (nw != nr_hdr + 1)
			return -EPROTO;
		for (int i = 0, o = 0; i < nw; i++, o++) {
			if (i == 2) {
				snprintf(cells[o], 128, "%.63s %.63s", words[2], words[3]);
				i++;
			} else {
				snprintf(cells[o], 128, "%s", words[i]);
			}
		}
		return nr_hdr;
	}
}

static int add_row(struct histdisp *h, const char *line)
{
	char cells[ACM_MAX_COLS][128], names[ACM_MAX_COLS][128], extra[6][128];
	const char *ptrs[ACM_MAX_COLS];
	char *info = NULL;
	int nr, ver_col = -1, ret = 0;
	bool want = h->sec == SEC_DISK ? h->want_disk : h->want_tape;

	if (h->sec == SEC_NONE)
		return -EPROTO;
	if (!want)
		return 0;
	nr = split_row(h->header, line, cells);
	if (nr < 0)
		return nr;
	if (acm_table_header(h->header, names, ACM_MAX_COLS) != nr)
		return -EPROTO;
	for (int c = 0; c < nr; c++)
		if (strcmp(names[c], "Version") == 0)
			ver_col = c;
	if (h->longfmt || h->ctx->json)
		history_extra(h, ver_col >= 0 ? cells[ver_col] : "-", extra, &info);

	if (h->ctx->json) {
		char key[128], v[128];

		acm_json_obj(&h->j, NULL);
		for (int c = 0; c < nr; c++) {
			acm_json_name(names[c], key, sizeof(key));
			if (strcmp(key, "backup_date") == 0 || strcmp(key, "backup_device") == 0 ||
			    strcmp(key, "pool_name") == 0 || strcmp(key, "status") == 0)
				acm_json_str(&h->j, key, cells[c]);
			else
				acm_json_auto(&h->j, key, cells[c]);
		}
		if (info) {
			if (acm_info_get(info, "date", v, sizeof(v)) == 0)
				acm_json_str(&h->j, "date", v);
			if (acm_info_get(info, "differential", v, sizeof(v)) == 0)
				acm_json_bool(&h->j, "differential", strcmp(v, "1") == 0);
			if (acm_info_get(info, "media", v, sizeof(v)) == 0)
				acm_json_str(&h->j, "media", v);
			if (h->sec == SEC_DISK) {
				if (acm_info_get(info, "copy", v, sizeof(v)) == 0)
					acm_json_auto(&h->j, "copy", v);
				if (acm_info_get(info, "grains_copied", v, sizeof(v)) == 0)
					acm_json_auto(&h->j, "grains_copied", v);
			}
			if (acm_info_get(info, "verify", v, sizeof(v)) == 0)
				acm_json_auto(&h->j, "verify", v);
		}
		acm_json_end(&h->j, '}');
		goto out;
	}
	for (int c = 0; c < nr; c++)
		ptrs[c] = cells[c];
	if (h->longfmt) {
		if (h->sec == SEC_DISK) {
			for (int e = 0; e < 4 && nr < ACM_MAX_COLS; e++)
				ptrs[nr++] = extra[e];
		} else {
			ptrs[nr++] = extra[0];
			ptrs[nr++] = extra[3];
		}
	}
	if ((size_t)nr != h->t.nr_cols)
		ret = -EPROTO;
	else
		ret = acm_table_add(&h->t, ptrs);
out:
	free(info);
	return ret;
}

static int volume_line(struct histdisp *h, const char *line, bool first)
{
	char l[1024], server[128] = "", dev[128] = "", mp[1024] = "";

	snprintf(l, sizeof(l), "%.*s", (int)strcspn(line, "\n"), line);
	close_volume(h);
	acm_reply_get(l, "Server", server, sizeof(server));
	acm_reply_get(l, "Device", dev, sizeof(dev));
	acm_reply_get(l, "Mount-Point", mp, sizeof(mp));
	snprintf(h->vol, sizeof(h->vol), "%.64s", acm_name_ok(dev) ? dev : "");
	if (!h->ctx->json) {
		printf("%s%s\n", first ? "" : "\n", l);
		return 0;
	}
	if (first) {
		acm_json_str(&h->j, "server", server);
		acm_json_arr(&h->j, "volumes");
	}
	acm_json_obj(&h->j, NULL);
	h->json_vol_open = true;
	acm_json_str(&h->j, "device", dev);
	acm_json_str(&h->j, "mount_point", mp);
	return 0;
}

static int render(struct histdisp *h, const char *text)
{
	bool first = true;
	int ret = 0;

	if (h->ctx->json) {
		acm_json_init(&h->j, stdout);
		acm_json_obj(&h->j, NULL);
	}
	for (const char *p = text; *p && !ret; p += strcspn(p, "\n"), p += *p == '\n') {
		size_t ll = strcspn(p, "\n");

		if (strspn(p, " \t\r") >= ll)
			continue;
		if (strncmp(p, "Server=", 7) == 0) {
			ret = volume_line(h, p, first);
			first = false;
		} else if (strncmp(p, "Generation ", 11) == 0) {
			ret = open_section(h, SEC_DISK, p);
		} else if (strncmp(p, "Tape-Gen ", 9) == 0) {
			ret = open_section(h, SEC_TAPE, p);
		} else {
			ret = add_row(h, p);
		}
	}
	close_volume(h);
	if (h->ctx->json) {
		if (first) {
			acm_json_arr(&h->j, "volumes");
		}
		acm_json_end(&h->j, ']');
		acm_json_end(&h->j, '}');
		acm_json_done(&h->j);
	}
	return ret;
}

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmhistdisp"};
	struct acm_opt opts[] = {{"-l", NULL, NULL}, {"-m", "DISK|TAPE", NULL}};
	struct histdisp h = {0};
	const char *pos[1];
	char vol[ACM_NAME_MAX + 1], rel[128];
	char *text;
	size_t nr_pos;
	int ret;

	ret = acm_parse(&ctx, argc, argv, opts, 2, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (opts[1].value && strcmp(opts[1].value, "DISK") && strcmp(opts[1].value, "TAPE")) {
		acm_error(&ctx, "-m takes DISK or TAPE, not '%s'", opts[1].value);
		return ACM_EXIT_USAGE;
	}
	if (nr_pos == 1) {
		ret = acm_device(&ctx, pos[0], vol);
		if (ret)
			return acm_exit_code(ret);
		snprintf(rel, sizeof(rel), "volumes/%s/histdisp", vol);
	} else {
		ret = acm_find_mount(&ctx);
		if (ret)
			return acm_exit_code(ret);
		snprintf(rel, sizeof(rel), "histdisp");
	}
	ret = acm_read_mnt(&ctx, rel, &text);
	if (ret) {
		acm_error(&ctx, "cannot read %s/%s: %s", ctx.mnt, rel, strerror(-ret));
		return acm_exit_code(ret);
	}
	if (!ctx.json && !opts[0].value && !opts[1].value) {
		fputs(text, stdout); /* as the daemon aligned it */
		free(text);
		return ACM_EXIT_OK;
	}
	h.ctx = &ctx;
	h.longfmt = opts[0].value != NULL;
	h.want_disk = !opts[1].value || strcmp(opts[1].value, "DISK") == 0;
	h.want_tape = !opts[1].value || strcmp(opts[1].value, "TAPE") == 0;
	ret = render(&h, text);
	free(text);
	if (h.have_table)
		acm_table_release(&h.t);
	if (ret) {
		fflush(stdout);
		acm_error(&ctx, "cannot parse %s/%s", ctx.mnt, rel);
		return ACM_EXIT_FAIL;
	}
	return ACM_EXIT_OK;
}
