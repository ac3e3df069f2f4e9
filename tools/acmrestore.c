/*
 * acmrestore — ACM's restore command as a client of an acmfs mount.
 *
 *   acmrestore [-g N|-v V|-t DATE] [-m DISK|TAPE] [-r PATH] [-M DIR] [--json] DEVICE
 *
 * Writes `restore …` to volumes/<vol>/ctl; the daemon's write returns when
 * the data is in place. While it blocks, a second thread (only when stderr
 * is a terminal) polls volumes/<vol>/info `restore_execute` and draws the
 * progress bar; that thread owns the bar, the main thread only joins it.
 * `-r PATH` is made absolute; the ctl line is split at blanks and the daemon
 * does not decode paths, so a PATH with a blank is refused here. A -t DATE
 * written with a blank ("2026/11/25 12:00:00") is sent with '_' instead, a
 * form the daemon accepts.
 */
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: acmrestore [-g N|-v V|-t DATE] [-m DISK|TAPE] [-r PATH | -i] [-M DIR] [--json] DEVICE\n"
    "\n"
    "Restore DEVICE (a volume name or MNT/volumes/VOL/data) from a history\n"
    "(default: the newest, from disk when a disk copy exists).\n"
    "  -g N      disk generation N (1 = newest)\n"
    "  -v V      absolute version V\n"
    "  -t DATE   the newest history taken at or before DATE\n"
    "  -m MEDIA  DISK or TAPE: where to read the history from\n"
    "  -r PATH   restore to PATH (file or block device) instead of DEVICE\n"
    "  -i        live restore: DEVICE shows the history at once and is usable;\n"
    "            the rest is copied in the background (see trkstat)\n"
    "  -M DIR    the acmfs mount\n"
    "  --json    print the reply as JSON\n"
    "  --help, --version\n";

struct watcher {
	const struct acm_ctx *ctx;
	const char *vol;
	atomic_bool done; /* set by main; `ok` is written before it */
	bool ok;
	bool drew;
};

static void *watch(void *arg)
{
	struct watcher *w = arg;
	struct acm_progress bar;
	char rel[128], v[64];
	uint64_t size_bytes = 0;
	char *text;

	snprintf(rel, sizeof(rel), "volumes/%s/info", w->vol);
	if (acm_read_mnt(w->ctx, rel, &text) == 0) {
		if (acm_info_get(text, "size", v, sizeof(v)) == 0)
			size_bytes = strtoull(v, NULL, 10);
		free(text);
	}
	acm_progress_init(&bar, "restore", size_bytes);
	while (!atomic_load(&w->done)) {
		if (acm_read_mnt(w->ctx, rel, &text) == 0) {
			if (acm_info_get(text, "restore_execute", v, sizeof(v)) == 0 &&
			    v[0] >= '0' && v[0] <= '9') {
				acm_progress_draw(&bar, atoi(v), false);
				w->drew = true;
			}
			free(text);
		}
		for (int i = 0; i < 3 && !atomic_load(&w->done); i++)
			acm_sleep_ms(50);
	}
	if (w->drew && w->ok)
		acm_progress_done(&bar);
	else
		acm_progress_clear(&bar);
	return NULL;
}

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmrestore"};
	struct acm_opt opts[] = {
	    {"-g", "N", NULL},         {"-v", "V", NULL},    {"-t", "DATE", NULL},
	    {"-m", "DISK|TAPE", NULL}, {"-r", "PATH", NULL},    {"-i", NULL, NULL},
	};
	struct watcher w = {0};
	pthread_t th;
	bool watching = false;
	const char *pos[1];
	char vol[ACM_NAME_MAX + 1], cmd[4096], reply[ACM_REPLY_MAX];
	char abs[4096 - 128] = "";
	size_t nr_pos;
	int ret, nr_sel = 0;

	ret = acm_parse(&ctx, argc, argv, opts, 6, pos, 1, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (nr_pos != 1) {
		acm_error(&ctx, "a DEVICE is required (try --help)");
		return ACM_EXIT_USAGE;
	}
	for (int i = 0; i < 3; i++)
		nr_sel += opts[i].value != NULL;
	if (nr_sel > 1) {
		acm_error(&ctx, "-g, -v and -t exclude each other");
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
	if (opts[4].value) {
		if (strpbrk(opts[4].value, " \t\n")) {
			acm_error(&ctx, "-r: a path with blanks cannot be sent on a ctl line");
			return ACM_EXIT_USAGE;
		}
		if (acm_abspath(opts[4].value, abs, sizeof(abs))) {
			acm_error(&ctx, "-r: path too long");
			return ACM_EXIT_USAGE;
		}
	}
	if (opts[4].value && opts[5].value) {
		acm_error(&ctx, "-i restores DEVICE itself: it excludes -r");
		return ACM_EXIT_USAGE;
	}
	ret = acm_device(&ctx, pos[0], vol);
	if (ret)
		return acm_exit_code(ret);

	snprintf(cmd, sizeof(cmd), "restore");
	for (int i = 0; i < 4; i++)
		if (opts[i].value) {
			char word[160];
			char val[128];

			/* DATE may be written "2026/11/25 12:00:00": one word on the line */
			snprintf(val, sizeof(val), "%s", opts[i].value);
			for (char *c = val; *c; c++)
				if (*c == ' ')
					*c = '_';
			snprintf(word, sizeof(word), " %s %s", opts[i].name, val);
			strncat(cmd, word, sizeof(cmd) - strlen(cmd) - 1);
		}
	if (opts[5].value)
		strncat(cmd, " -i", sizeof(cmd) - strlen(cmd) - 1);
	if (abs[0]) {
		strncat(cmd, " -r ", sizeof(cmd) - strlen(cmd) - 1);
		strncat(cmd, abs, sizeof(cmd) - strlen(cmd) - 1);
	}

	w.ctx = &ctx;
	w.vol = vol;
	atomic_init(&w.done, false);
	if (!opts[5].value && isatty(STDERR_FILENO) == 1 && pthread_create(&th, NULL, watch, &w) == 0)
		watching = true;
	ret = acm_ctl(&ctx, vol, cmd, reply, sizeof(reply));
	if (watching) {
		w.ok = ret == 0;
		atomic_store(&w.done, true);
		pthread_join(th, NULL);
	}
	if (ret) {
		acm_error(&ctx, "%s", reply);
		return acm_exit_code(ret);
	}
	acm_print_completed(&ctx, pos[0], reply, NULL);
	return ACM_EXIT_OK;
}
