/*
 * render.c — the text the mount shows: ACM tables (devdisp, trkstat,
 * histdisp), info files, status.json, Prometheus metrics, README, log tails.
 * Layouts: SPEC §6 and docs/ctl-protocol.md. Everything is rendered under
 * e->lock into an sbuf; nothing here changes state.
 */
#include "engine_int.h"
#include "fill.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_COLS 8

/* a text table: rows of cells, left-aligned columns */
struct table {
	int ncols;
	size_t nrows, cap;
	char (*cells)[MAX_COLS][72];
};

static void table_init(struct table *t, int ncols)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
}

static void table_row(struct table *t, ...)
{
	va_list ap;

	if (t->nrows == t->cap) {
		size_t nc = t->cap ? t->cap * 2 : 16;
		void *n = realloc(t->cells, nc * sizeof(*t->cells));
		if (!n)
			return;
		t->cells = n;
		t->cap = nc;
	}
	va_start(ap, t);
	for (int i = 0; i < t->ncols; i++)
		snprintf(t->cells[t->nrows][i], 72, "%s", va_arg(ap, const char *));
	va_end(ap);
	t->nrows++;
}

static void table_print(struct table *t, struct sbuf *sb)
{
	size_t w[MAX_COLS] = { 0 };

	for (size_t r = 0; r < t->nrows; r++)
		for (int c = 0; c < t->ncols; c++) {
			size_t l = strlen(t->cells[r][c]);
			if (l > w[c])
				w[c] = l;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (int c = 0; c < t->ncols; c++) {
			if (c == t->ncols - 1)
				sbuf_addf(sb, "%s\n", t->cells[r][c]);
			else
				sbuf_addf(sb, "%-*s ", (int)w[c], t->cells[r][c]);
		}
	}
	free(t->cells);
	t->cells = NULL;
}

/* ---------- derived state ---------- */

int job_execute_pct(const struct job *j)
{
	uint64_t rem = atomic_load(&j->remaining);

	if (!j->total)
		return 100;
	int pct = (int)((j->total - rem) * 100 / j->total);
	return pct >= 100 ? 99 : pct;
}

static int update_pct(struct vol *v, struct bvol *b)
{
	uint64_t n = track_changed(v->trk, b->row.track_base, NULL);

	return v->nr_grains ? (int)((n * 100 + v->nr_grains - 1) / v->nr_grains) : 0;
}

const char *bv_mode(struct vol *v, struct bvol *b, bool detailed)
{
	if (b->hist)
		return "Backup (used)";
	if (b->row.tracking)
		return detailed ? "Backup (used-T)" : "Backup (used)";
	if (b->job)
		return "Backup (used)";
	return "Backup (free)";
}

int disk_generation_of(struct vol *v, struct history *h)
{
	int n = 0;

	if (!h->bv)
		return 0;
	for (struct history *x = h; x; x = x->next)
		n += x->bv != NULL;
	return n;
}

int tape_generation_of(struct vol *v, struct history *h)
{
	int n = 0;

	if (h->row.tape_status == HS_NONE)
		return 0;
	for (struct history *x = h; x; x = x->next)
		n += x->row.tape_status != HS_NONE;
	return n;
}

static const char *hs_name(int s)
{
	switch (s) {
	case HS_EXECUTING: return "executing";
	case HS_SUCCEEDED: return "succeeded";
	case HS_FAILED: return "failed";
	default: return "none";
	}
}

static const char *media_name(int m)
{
	switch (m) {
	case MEDIA_DISK: return "DISK";
	case MEDIA_TAPE: return "TAPE";
	default: return "BOTH";
	}
}

/* a tape copy reads every grain of the volume (hashing only the changed ones) */
static int tape_pct(const struct vol *v, struct history *h)
{
	if (h->row.tape_status != HS_EXECUTING || !v->nr_grains)
		return -1;
	int p = (int)(atomic_load(&h->tape_done) * 100 / v->nr_grains);
	return p >= 100 ? 99 : p;
}

static int disk_pct(struct history *h)
{
	if (h->row.disk_status != HS_EXECUTING)
		return -1;
	return h->job ? job_execute_pct(h->job) : 0;
}

static void pct_str(int pct, char *buf, size_t len)
{
	if (pct < 0)
		snprintf(buf, len, "----");
	else
		snprintf(buf, len, "%d%%", pct);
}

/* ---------- tables ---------- */

static void render_devdisp(struct engine *e, struct vol *only, struct sbuf *sb)
{
	struct table t;
	char size[32], mp[PATH_MAX];

	table_init(&t, 6);
	table_row(&t, "Server", "Device", "Size", "Device-Mode", "Mount-Point", "Backup-Engine");
	for (struct vol *v = e->vols; v; v = v->next) {
		if (only && v != only)
			continue;
		util_fmt_size(v->row.size_bytes, size, sizeof(size));
		snprintf(mp, sizeof(mp), "volumes/%s/data", v->row.name);
		table_row(&t, e->host, v->row.name, size, "Transaction", mp, "AdvancedCopy");
		for (struct bvol *b = v->bvs; b; b = b->next)
			table_row(&t, e->host, b->name, size, bv_mode(v, b, false), "----",
				  "AdvancedCopy");
	}
	table_print(&t, sb);
}

static void render_trkstat(struct engine *e, struct vol *only, struct sbuf *sb)
{
	struct table t;
	char ex[16], up[16];

	table_init(&t, 6);
	table_row(&t, "Server", "Transaction-Disk", "Backup-Disk", "Status", "Execute", "Update");
	for (struct vol *v = e->vols; v; v = v->next) {
		if (only && v != only)
			continue;
		for (struct bvol *b = v->bvs; b; b = b->next) {
			if (!b->row.tracking)
				continue;
			if (b->job) {
				pct_str(job_execute_pct(b->job), ex, sizeof(ex));
				table_row(&t, e->host, v->row.name, b->name, "executing", ex, "----");
			} else {
				pct_str(update_pct(v, b), up, sizeof(up));
				table_row(&t, e->host, v->row.name, b->name, "tracking", "----", up);
			}
		}
	}
	table_print(&t, sb);
}

static void render_histdisp_vol(struct engine *e, struct vol *v, struct sbuf *sb)
{
	struct table t;
	char gen[24], ver[24], date[32], ex[16], blocks[24];
	int ndisk = 0, ntape = 0;

	sbuf_addf(sb, "Server=%s Device=%s Mount-Point=volumes/%s/data\n", e->host, v->row.name,
		  v->row.name);
	for (struct history *h = v->hists; h; h = h->next) {
		ndisk += h->bv != NULL;
		ntape += h->row.tape_status != HS_NONE;
	}
	table_init(&t, 6);
	table_row(&t, "Generation", "Version", "Backup-Date", "Backup-Device", "Status", "Execute");
	/* newest first: walk the ascending list into an array */
	struct history **arr = calloc((size_t)(ndisk + ntape + 1), sizeof(*arr));
	int n = 0;
	for (struct history *h = v->hists; h && arr; h = h->next)
		arr[n++] = h;
	int g = 0;
	for (int i = n - 1; arr && i >= 0; i--) {
		struct history *h = arr[i];
		if (!h->bv)
			continue;
		snprintf(gen, sizeof(gen), "%d", ++g);
		snprintf(ver, sizeof(ver), "%llu", (unsigned long long)h->row.version);
		util_fmt_acm(h->row.date, date, sizeof(date));
		pct_str(disk_pct(h), ex, sizeof(ex));
		table_row(&t, gen, ver, date, h->bv->name, hs_name(h->row.disk_status), ex);
	}
	table_print(&t, sb);
	table_init(&t, 7);
	table_row(&t, "Tape-Gen", "Version", "Backup-Date", "Pool-Name", "Status", "Execute",
		  "Blocks");
	g = 0;
	for (int i = n - 1; arr && i >= 0; i--) {
		struct history *h = arr[i];
		if (h->row.tape_status == HS_NONE)
			continue;
		snprintf(gen, sizeof(gen), "%d", ++g);
		snprintf(ver, sizeof(ver), "%llu", (unsigned long long)h->row.version);
		util_fmt_acm(h->row.date, date, sizeof(date));
		pct_str(tape_pct(v, h), ex, sizeof(ex));
		if (h->row.tape_status == HS_SUCCEEDED)
			snprintf(blocks, sizeof(blocks), "%llu", (unsigned long long)h->row.blocks);
		else
			snprintf(blocks, sizeof(blocks), "----");
		table_row(&t, gen, ver, date, h->row.pool, hs_name(h->row.tape_status), ex, blocks);
	}
	table_print(&t, sb);
	free(arr);
}

static void render_histdisp(struct engine *e, struct vol *only, struct sbuf *sb)
{
	bool first = true;

	for (struct vol *v = e->vols; v; v = v->next) {
		if (only && v != only)
			continue;
		if (!first)
			sbuf_add(sb, "\n", 1);
		first = false;
		render_histdisp_vol(e, v, sb);
	}
}

/* ---------- info ---------- */

static void render_vol_info(struct engine *e, struct vol *v, struct sbuf *sb)
{
	char date[32] = "-";
	struct history *last = NULL;

	for (struct history *h = v->hists; h; h = h->next)
		last = h;
	if (last)
		util_fmt_iso(last->row.date, date, sizeof(date));
	sbuf_addf(sb,
		  "name=%s\nsize=%llu\ngrain=%u\nsave=%u\ninterval_days=%u\ntape_gens=%u\n"
		  "tape_days=%u\npool=%s\nstate=%s\nopen_writers=%d\nera=%u\n",
		  v->row.name, (unsigned long long)v->row.size_bytes, v->row.grain_bytes,
		  v->row.save, v->row.interval_days, v->row.tape_gens, v->row.tape_days,
		  v->row.pool, v->row.state, v->writers, track_era(v->trk));
	sbuf_addf(sb, "backup_volumes=");
	for (struct bvol *b = v->bvs; b; b = b->next)
		sbuf_addf(sb, "%s%s", b == v->bvs ? "" : ",", b->name);
	sbuf_addf(sb, "\nlast_backup=%s\n", date);
	int rp = atomic_load(&v->restore_pct);
	if (rp < 0)
		sbuf_addf(sb, "restore_execute=----\n");
	else
		sbuf_addf(sb, "restore_execute=%d\n", rp);
	if (last && util_now() - last->row.date > (int64_t)v->row.interval_days * 86400)
		sbuf_addf(sb, "overdue=1\n");
	else
		sbuf_addf(sb, "overdue=%d\n", last ? 0 : 1);
	if (!strcmp(v->row.state, "needs-restore"))
		sbuf_addf(sb, "note=a restore was interrupted or failed; the volume holds mixed "
			      "data until a restore completes\n");
	fill_info(v, sb);
}

static void render_hist_info(struct engine *e, struct vol *v, uint64_t version, struct sbuf *sb)
{
	struct history *h = vol_hist(v, version);
	char date[32], vd[32];
	int dg, tg, dp, tp;

	if (!h)
		return;
	util_fmt_iso(h->row.date, date, sizeof(date));
	dg = disk_generation_of(v, h);
	tg = tape_generation_of(v, h);
	dp = disk_pct(h);
	tp = tape_pct(v, h);
	sbuf_addf(sb, "version=%llu\n", (unsigned long long)version);
	if (dg)
		sbuf_addf(sb, "generation=%d\n", dg);
	else
		sbuf_addf(sb, "generation=-\n");
	if (tg)
		sbuf_addf(sb, "tape_generation=%d\n", tg);
	else
		sbuf_addf(sb, "tape_generation=-\n");
	sbuf_addf(sb, "date=%s\ndifferential=%d\nmedia=%s\nbv=%s\ndisk_status=%s\n", date,
		  h->row.differential, media_name(h->row.media), h->bv ? h->bv->name : "-",
		  h->bv ? hs_name(h->row.disk_status) : "none");
	if (!h->bv)
		sbuf_addf(sb, "disk_execute=-\n");
	else
		sbuf_addf(sb, "disk_execute=%d\n", dp < 0 ? 100 : dp);
	sbuf_addf(sb, "copy=%s\ngrains_copied=%llu\n", h->row.copy_full ? "full" : "diff",
		  (unsigned long long)(h->job ? atomic_load(&h->job->copied)
					      : h->row.grains_copied));
	sbuf_addf(sb, "tape_status=%s\n", hs_name(h->row.tape_status));
	if (h->row.tape_status == HS_NONE)
		sbuf_addf(sb, "tape_execute=-\n");
	else
		sbuf_addf(sb, "tape_execute=%d\n",
			  tp < 0 ? (h->row.tape_status == HS_EXECUTING ? 0 : 100) : tp);
	sbuf_addf(sb, "pool=%s\n", h->row.tape_status != HS_NONE ? h->row.pool : "-");
	if (h->row.tape_status == HS_SUCCEEDED)
		sbuf_addf(sb, "blocks=%llu\n", (unsigned long long)h->row.blocks);
	else
		sbuf_addf(sb, "blocks=-\n");
	if (h->row.verify_state) {
		util_fmt_iso(h->row.verify_date, vd, sizeof(vd));
		sbuf_addf(sb, "verify=%s %s\n", h->row.verify_state == 1 ? "ok" : "damaged", vd);
	} else {
		sbuf_addf(sb, "verify=-\n");
	}
}

/* ---------- status.json ---------- */

static void json_pct(struct sbuf *sb, const char *key, int pct, bool comma)
{
	if (pct < 0)
		sbuf_addf(sb, "\"%s\":null%s", key, comma ? "," : "");
	else
		sbuf_addf(sb, "\"%s\":%d%s", key, pct, comma ? "," : "");
}

static void render_status_json(struct engine *e, struct sbuf *sb)
{
	char date[32];

	sbuf_add(sb, "{\"server\":", 10);
	sbuf_add_json_str(sb, e->host);
	sbuf_addf(sb, ",\"host\":{\"name\":");
	sbuf_add_json_str(sb, e->host);
	sbuf_addf(sb, ",\"id\":\"%s\"}", e->host_id);
	sbuf_addf(sb, ",\"version\":\"%s\",\"volumes\":[", ACMFS_VERSION);
	for (struct vol *v = e->vols; v; v = v->next) {
		int rp = atomic_load(&v->restore_pct);
		sbuf_addf(sb, "%s{\"name\":", v == e->vols ? "" : ",");
		sbuf_add_json_str(sb, v->row.name);
		sbuf_addf(sb,
			  ",\"size\":%llu,\"grain\":%u,\"save\":%u,\"interval_days\":%u,"
			  "\"state\":\"%s\",\"era\":%u,\"open_writers\":%d,",
			  (unsigned long long)v->row.size_bytes, v->row.grain_bytes, v->row.save,
			  v->row.interval_days, v->row.state, track_era(v->trk), v->writers);
		sbuf_addf(sb, "\"tape_policy\":{\"gens\":%u,\"days\":%u,\"pool\":",
			  v->row.tape_gens, v->row.tape_days);
		sbuf_add_json_str(sb, v->row.pool);
		sbuf_addf(sb, "},\"restore\":");
		if (rp < 0)
			sbuf_addf(sb, "null");
		else
			sbuf_addf(sb, "{\"execute\":%d}", rp);
		sbuf_addf(sb, ",\"backup_volumes\":[");
		for (struct bvol *b = v->bvs; b; b = b->next) {
			sbuf_addf(sb, "%s{\"name\":", b == v->bvs ? "" : ",");
			sbuf_add_json_str(sb, b->name);
			sbuf_addf(sb, ",\"size\":%llu,\"mode\":\"%s\",\"mode_u\":\"%s\","
				      "\"tracking\":%s,",
				  (unsigned long long)v->row.size_bytes, bv_mode(v, b, false),
				  bv_mode(v, b, true), b->row.tracking ? "true" : "false");
			if (!b->row.tracking)
				sbuf_addf(sb, "\"status\":\"----\",\"execute\":null,\"update\":null,");
			else if (b->job)
				sbuf_addf(sb, "\"status\":\"executing\",\"execute\":%d,\"update\":null,",
					  job_execute_pct(b->job));
			else
				sbuf_addf(sb, "\"status\":\"tracking\",\"execute\":null,\"update\":%d,",
					  update_pct(v, b));
			sbuf_addf(sb, "\"history\":");
			if (b->hist)
				sbuf_addf(sb, "%llu}", (unsigned long long)b->hist->row.version);
			else
				sbuf_addf(sb, "null}");
		}
		sbuf_addf(sb, "],\"histories\":[");
		/* generations count from the newest: walk ascending, counting down */
		int dleft = 0, tleft = 0;
		for (struct history *h = v->hists; h; h = h->next) {
			dleft += h->bv != NULL;
			tleft += h->row.tape_status != HS_NONE;
		}
		for (struct history *h = v->hists; h; h = h->next) {
			int dg = h->bv ? dleft-- : 0;
			int tg = h->row.tape_status != HS_NONE ? tleft-- : 0;
			util_fmt_iso(h->row.date, date, sizeof(date));
			sbuf_addf(sb, "%s{\"version\":%llu,", h == v->hists ? "" : ",",
				  (unsigned long long)h->row.version);
			if (dg)
				sbuf_addf(sb, "\"generation\":%d,", dg);
			else
				sbuf_addf(sb, "\"generation\":null,");
			if (tg)
				sbuf_addf(sb, "\"tape_generation\":%d,", tg);
			else
				sbuf_addf(sb, "\"tape_generation\":null,");
			sbuf_addf(sb, "\"date\":\"%s\",\"differential\":%s,\"media\":\"%s\",\"disk\":",
				  date, h->row.differential ? "true" : "false",
				  media_name(h->row.media));
			if (h->bv) {
				int dp = disk_pct(h);
				sbuf_addf(sb, "{\"bv\":");
				sbuf_add_json_str(sb, h->bv->name);
				sbuf_addf(sb, ",\"status\":\"%s\",", hs_name(h->row.disk_status));
				json_pct(sb, "execute", dp < 0 ? 100 : dp, true);
				sbuf_addf(sb, "\"copy\":\"%s\",\"grains_copied\":%llu}",
					  h->row.copy_full ? "full" : "diff",
					  (unsigned long long)(h->job ? atomic_load(&h->job->copied)
								      : h->row.grains_copied));
			} else {
				sbuf_addf(sb, "null");
			}
			sbuf_addf(sb, ",\"tape\":");
			if (h->row.tape_status != HS_NONE) {
				int tp = tape_pct(v, h);
				sbuf_addf(sb, "{\"pool\":");
				sbuf_add_json_str(sb, h->row.pool);
				sbuf_addf(sb, ",\"status\":\"%s\",", hs_name(h->row.tape_status));
				json_pct(sb, "execute",
					 tp < 0 ? (h->row.tape_status == HS_EXECUTING ? 0 : 100) : tp,
					 true);
				sbuf_addf(sb, "\"blocks\":%llu}", (unsigned long long)h->row.blocks);
			} else {
				sbuf_addf(sb, "null");
			}
			sbuf_addf(sb, ",\"verify\":%s}",
				  h->row.verify_state == 0   ? "null"
				  : h->row.verify_state == 1 ? "\"ok\""
							     : "\"damaged\"");
		}
		sbuf_addf(sb, "]}");
	}
	sbuf_addf(sb, "],\"pools\":[");
	for (struct pool *p = e->pools; p; p = p->next) {
		sbuf_addf(sb, "%s{\"name\":", p == e->pools ? "" : ",");
		sbuf_add_json_str(sb, p->row.name);
		sbuf_addf(sb, ",\"url\":");
		sbuf_add_json_str(sb, p->row.url);
		sbuf_addf(sb, "}");
	}
	sbuf_addf(sb, "]}\n");
}

/* ---------- metrics ---------- */

static void counter(struct sbuf *sb, const char *name, const char *help, uint64_t val)
{
	sbuf_addf(sb, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
		  (unsigned long long)val);
}

static void render_metrics(struct engine *e, struct sbuf *sb)
{
	struct metrics *m = &e->m;

	counter(sb, "acmfs_backups_started_total", "Backups whose logical copy was made.",
		atomic_load(&m->backups_started));
	counter(sb, "acmfs_backups_succeeded_total", "Disk backups whose physical copy completed.",
		atomic_load(&m->backups_succeeded));
	counter(sb, "acmfs_backups_failed_total", "Disk backups that ended failed.",
		atomic_load(&m->backups_failed));
	counter(sb, "acmfs_copy_bytes_total", "Bytes physically copied TV to BV.",
		atomic_load(&m->bytes_copied));
	counter(sb, "acmfs_copy_grains_total", "Grains copied by the background copier.",
		atomic_load(&m->grains_copied));
	counter(sb, "acmfs_cow_grains_total", "Grains copied on write.",
		atomic_load(&m->cow_grains));
	counter(sb, "acmfs_restores_total", "Completed restores.", atomic_load(&m->restores));
	counter(sb, "acmfs_restore_grains_total", "Grains written by restores.",
		atomic_load(&m->restore_grains));
	counter(sb, "acmfs_restore_bytes_total", "Bytes written by restores.",
		atomic_load(&m->restore_bytes));
	counter(sb, "acmfs_tape_copies_total", "Tape histories stored.",
		atomic_load(&m->tape_uploads));
	counter(sb, "acmfs_tape_bytes_uploaded_total", "Bytes uploaded to tape pools.",
		atomic_load(&m->tape_bytes));
	counter(sb, "acmfs_tape_bytes_read_total",
		"Bytes read from tape pools (blocks, indexes, manifests).",
		engine_tape_bytes_read(e));
	counter(sb, "acmfs_tape_blocks_new_total", "Blocks a pool did not hold before.",
		atomic_load(&m->tape_blocks_new));
	counter(sb, "acmfs_tape_failed_total", "Tape copies that ended failed.",
		atomic_load(&m->tape_failed));
	counter(sb, "acmfs_ctl_errors_total", "Rejected or failed control commands.",
		atomic_load(&m->ctl_errors));
	counter(sb, "acmfs_io_errors_total", "I/O errors returned to readers or writers.",
		atomic_load(&m->io_errors));
	sbuf_addf(sb, "# HELP acmfs_volume_size_bytes Transaction volume size.\n"
		      "# TYPE acmfs_volume_size_bytes gauge\n");
	for (struct vol *v = e->vols; v; v = v->next)
		sbuf_addf(sb, "acmfs_volume_size_bytes{volume=\"%s\"} %llu\n", v->row.name,
			  (unsigned long long)v->row.size_bytes);
	sbuf_addf(sb, "# HELP acmfs_copy_progress_percent Physical copy progress per backup "
		      "volume.\n# TYPE acmfs_copy_progress_percent gauge\n");
	for (struct vol *v = e->vols; v; v = v->next)
		for (struct bvol *b = v->bvs; b; b = b->next)
			if (b->job)
				sbuf_addf(sb, "acmfs_copy_progress_percent{volume=\"%s\",bv=\"%s\"} %d\n",
					  v->row.name, b->name, job_execute_pct(b->job));
	sbuf_addf(sb, "# HELP acmfs_tracking_update_percent Share of grains written since the "
		      "pair's logical copy.\n# TYPE acmfs_tracking_update_percent gauge\n");
	for (struct vol *v = e->vols; v; v = v->next)
		for (struct bvol *b = v->bvs; b; b = b->next)
			if (b->row.tracking)
				sbuf_addf(sb,
					  "acmfs_tracking_update_percent{volume=\"%s\",bv=\"%s\"} %d\n",
					  v->row.name, b->name, update_pct(v, b));
	sbuf_addf(sb, "# HELP acmfs_histories Histories per volume and media.\n"
		      "# TYPE acmfs_histories gauge\n");
	for (struct vol *v = e->vols; v; v = v->next) {
		int d = 0, t = 0;
		for (struct history *h = v->hists; h; h = h->next) {
			d += h->bv != NULL;
			t += h->row.tape_status != HS_NONE;
		}
		sbuf_addf(sb, "acmfs_histories{volume=\"%s\",media=\"disk\"} %d\n", v->row.name, d);
		sbuf_addf(sb, "acmfs_histories{volume=\"%s\",media=\"tape\"} %d\n", v->row.name, t);
	}
	sbuf_addf(sb, "# HELP acmfs_restore_progress_percent Progress of a running restore.\n"
		      "# TYPE acmfs_restore_progress_percent gauge\n");
	for (struct vol *v = e->vols; v; v = v->next) {
		int rp = atomic_load(&v->restore_pct);
		if (rp >= 0)
			sbuf_addf(sb, "acmfs_restore_progress_percent{volume=\"%s\"} %d\n",
				  v->row.name, rp);
	}
	sbuf_addf(sb, "# HELP acmfs_tape_copy_progress_percent Progress of running tape copies.\n"
		      "# TYPE acmfs_tape_copy_progress_percent gauge\n");
	for (struct vol *v = e->vols; v; v = v->next)
		for (struct history *h = v->hists; h; h = h->next)
			if (tape_pct(v, h) >= 0)
				sbuf_addf(sb,
					  "acmfs_tape_copy_progress_percent{volume=\"%s\",version=\"%llu\"} "
					  "%d\n",
					  v->row.name, (unsigned long long)h->row.version, tape_pct(v, h));
}

static const char readme_text[] =
	"acmfs — ETERNUS AdvancedCopy Manager style backups as a filesystem\n"
	"\n"
	"README                    this text\n"
	"ctl                       global commands: volume create NAME SIZE [save=N] [grain=SIZE]\n"
	"                          [from=PATH] | volume delete NAME | bv add VOL [N] |\n"
	"                          policy VOL save=N [interval=DAYS] |\n"
	"                          tapepolicy VOL [gens=N] [days=D] [pool=NAME] |\n"
	"                          pool create NAME URL [key=value...] | pool delete NAME |\n"
	"                          pool import NAME [host=ID|NAME] | pool gc NAME [grace=S] |\n"
	"                          pool hosts NAME | pool passwd NAME key=FILE\n"
	"devdisp trkstat histdisp  the ACM tables for all volumes\n"
	"status.json metrics       the same for machines (JSON, Prometheus text)\n"
	"volumes/<vol>/data        the transaction volume: read/write, fixed size\n"
	"volumes/<vol>/ctl         backup [-T] [-m DISK|TAPE|BOTH] [-b GEN|DAY] |\n"
	"                          restore [-g N|-v V|-t DATE] [-m DISK|TAPE] [-r PATH] |\n"
	"                          histdel (-g N|-v V|-z) [-m DISK|TAPE] | canceltrk (-bd BV|-all) |\n"
	"                          tphistcopy [-g N|-v V] [-b GEN|DAY] | cancel | verify [-g N|-v V]\n"
	"volumes/<vol>/info log    state (key=value) and recent events\n"
	"volumes/<vol>/history/<version>/{image,disk.img,tape.img,info}\n"
	"                          read an image = restore it (cp --sparse=always works)\n"
	"volumes/<vol>/history/latest, generations/<n>, tape-generations/<n>  symlinks\n"
	"\n"
	"Write one command per write; open the ctl O_RDWR and read to get 'ok ...' or\n"
	"'error: ...'. Example: echo 'backup -T -m DISK' > volumes/db/ctl\n";

static void render_log(struct engine *e, struct vol *v, struct sbuf *sb)
{
	char path[PATH_MAX + 8];
	struct stat st;
	int fd;
	off_t from = 0;

	snprintf(path, sizeof(path), "%s/log", v ? v->dir : e->store);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (!fstat(fd, &st) && st.st_size > 64 * 1024)
		from = st.st_size - 64 * 1024;
	char *buf = malloc(64 * 1024);
	if (buf) {
		ssize_t n = pread(fd, buf, 64 * 1024, from);
		if (n > 0) {
			char *start = buf;
			if (from) { /* start at a line boundary */
				char *nl = memchr(buf, '\n', (size_t)n);
				if (nl)
					start = nl + 1;
			}
			sbuf_add(sb, start, (size_t)(buf + n - start));
		}
		free(buf);
	}
	close(fd);
}

int engine_render(struct engine *e, struct vol *v, enum render_what what, uint64_t version,
		  struct sbuf *out)
{
	pthread_mutex_lock(&e->lock);
	switch (what) {
	case RENDER_README: sbuf_add(out, readme_text, sizeof(readme_text) - 1); break;
	case RENDER_DEVDISP: render_devdisp(e, v, out); break;
	case RENDER_TRKSTAT: render_trkstat(e, v, out); break;
	case RENDER_HISTDISP: render_histdisp(e, v, out); break;
	case RENDER_STATUS_JSON: render_status_json(e, out); break;
	case RENDER_METRICS: render_metrics(e, out); break;
	case RENDER_INFO:
		if (v)
			render_vol_info(e, v, out);
		break;
	case RENDER_LOG: render_log(e, v, out); break;
	case RENDER_HIST_INFO:
		if (v)
			render_hist_info(e, v, version, out);
		break;
	}
	pthread_mutex_unlock(&e->lock);
	return out->oom ? -ENOMEM : 0;
}
