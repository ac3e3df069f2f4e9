/*
 * acmadm — administration of an acmfs mount through its global ctl.
 *
 *   acmadm [-M DIR] [--json] volume create NAME SIZE [save=N] [grain=SIZE] [from=PATH]
 *   acmadm volume delete NAME
 *   acmadm bv add VOL [COUNT]
 *   acmadm policy VOL save=N [interval=DAYS]
 *   acmadm tapepolicy VOL [gens=N] [days=D] [pool=NAME]
 *   acmadm pool create NAME URL [key=value…] | pool delete NAME | pool import NAME
 *   acmadm verify VOL [ARGS…]      (the volume ctl's `verify`)
 *   acmadm cancel VOL              (the volume ctl's `cancel`)
 *   acmadm status
 *
 * Every command but status is one line written to a ctl; the words pass
 * through unchanged (the daemon validates them), except that `from=PATH` is
 * made absolute. The daemon splits the line at blanks and does not decode
 * paths, so a word with a blank is refused here. Success prints the reply's key=value
 * pairs (or a JSON object); failure one error line and the exit status of
 * common.h. `status` prints the three tables, or status.json with --json.
 */
#include "common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: acmadm [-M DIR] [--json] COMMAND ...\n"
    "\n"
    "  volume create NAME SIZE [save=N] [grain=SIZE] [from=PATH]\n"
    "  volume delete NAME\n"
    "  bv add VOL [COUNT]\n"
    "  policy VOL save=N [interval=DAYS]\n"
    "  tapepolicy VOL [gens=N] [days=D] [pool=NAME]\n"
    "  pool create NAME URL [key=value...]\n"
    "  pool delete NAME\n"
    "  pool import NAME\n"
    "  verify VOL [-g N|-v V] [-m DISK|TAPE]\n"
    "  cancel VOL\n"
    "  status\n"
    "\n"
    "  -M DIR    the acmfs mount (default: $ACMFS_MOUNT or the only acmfs mount)\n"
    "  --json    print the reply (or status.json) as JSON\n"
    "  --help, --version\n";

struct form {
	const char *word; /* first word */
	const char *sub;  /* second word, or NULL */
	size_t min, max;  /* positional words after word (and sub) */
	bool per_volume;  /* sent to volumes/<first arg>/ctl without the volume */
};

static const struct form forms[] = {
    {"volume", "create", 2, 5, false}, {"volume", "delete", 1, 1, false},
    {"bv", "add", 1, 2, false},        {"policy", NULL, 2, 3, false},
    {"tapepolicy", NULL, 1, 4, false}, {"pool", "create", 2, 16, false},
    {"pool", "delete", 1, 1, false},   {"pool", "import", 1, 1, false},
    {"verify", NULL, 1, 16, true},     {"cancel", NULL, 1, 1, true},
    {"status", NULL, 0, 0, false},
};

static int status(struct acm_ctx *ctx)
{
	static const char *const files[] = {"devdisp", "trkstat", "histdisp"};
	char *text;
	int ret;

	if (ctx->json) {
		ret = acm_read_mnt(ctx, "status.json", &text);
		if (ret) {
			acm_error(ctx, "cannot read %s/status.json: %s", ctx->mnt, strerror(-ret));
			return acm_exit_code(ret);
		}
		fputs(text, stdout);
		if (!*text || text[strlen(text) - 1] != '\n')
			fputc('\n', stdout);
		free(text);
		return ACM_EXIT_OK;
	}
	printf("mount: %s\n", ctx->mnt);
	for (size_t i = 0; i < 3; i++) {
		ret = acm_read_mnt(ctx, files[i], &text);
		if (ret) {
			acm_error(ctx, "cannot read %s/%s: %s", ctx->mnt, files[i], strerror(-ret));
			return acm_exit_code(ret);
		}
		printf("\n[%s]\n%s", files[i], text);
		free(text);
	}
	return ACM_EXIT_OK;
}

/* Append " word" to cmd; `from=PATH` is made absolute. */
static int append(char *cmd, size_t len, const char *word)
{
	char abs[4096];
	size_t l = strlen(cmd);

	if (strpbrk(word, " \t\n"))
		return -EINVAL;
	if (strncmp(word, "from=", 5) == 0) {
		if (acm_abspath(word + 5, abs, sizeof(abs)))
			return -E2BIG;
		if ((size_t)snprintf(cmd + l, len - l, "%sfrom=%s", l ? " " : "", abs) >= len - l)
			return -E2BIG;
		return 0;
	}
	if ((size_t)snprintf(cmd + l, len - l, "%s%s", l ? " " : "", word) >= len - l)
		return -E2BIG;
	return 0;
}

int main(int argc, char **argv)
{
	struct acm_ctx ctx = {.prog = "acmadm"};
	const struct form *f = NULL;
	const char *pos[24];
	char cmd[4200] = "", reply[ACM_REPLY_MAX];
	const char *vol = NULL;
	size_t nr_pos, first, nr_args;
	int ret;

	ret = acm_parse(&ctx, argc, argv, NULL, 0, pos, 24, &nr_pos, usage, true);
	if (ret)
		return ret > 0 ? ACM_EXIT_OK : ACM_EXIT_USAGE;
	if (nr_pos == 0) {
		acm_error(&ctx, "a command is required (try --help)");
		return ACM_EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		if (strcmp(forms[i].word, pos[0]) != 0)
			continue;
		if (forms[i].sub && (nr_pos < 2 || strcmp(forms[i].sub, pos[1]) != 0))
			continue;
		f = &forms[i];
		break;
	}
	if (!f) {
		acm_error(&ctx, "unknown command '%s%s%s' (try --help)", pos[0],
		          nr_pos > 1 ? " " : "", nr_pos > 1 ? pos[1] : "");
		return ACM_EXIT_USAGE;
	}
	first = f->sub ? 2 : 1;
	nr_args = nr_pos - first;
	if (nr_args < f->min || nr_args > f->max) {
		acm_error(&ctx, "wrong number of arguments for '%s%s%s' (try --help)", f->word,
		          f->sub ? " " : "", f->sub ? f->sub : "");
		return ACM_EXIT_USAGE;
	}
	ret = acm_find_mount(&ctx);
	if (ret)
		return acm_exit_code(ret);
	if (strcmp(f->word, "status") == 0)
		return status(&ctx);

	if (f->per_volume) {
		vol = pos[1];
		if (!acm_name_ok(vol)) {
			acm_error(&ctx, "bad volume name '%s'", vol);
			return ACM_EXIT_USAGE;
		}
		ret = append(cmd, sizeof(cmd), f->word);
		for (size_t i = 2; i < nr_pos && !ret; i++)
			ret = append(cmd, sizeof(cmd), pos[i]);
	} else {
		for (size_t i = 0; i < nr_pos && !ret; i++)
			ret = append(cmd, sizeof(cmd), pos[i]);
	}
	if (ret) {
		acm_error(&ctx, "%s",
		          ret == -E2BIG ? "command too long"
		                        : "a word with blanks cannot be sent on a ctl line");
		return ACM_EXIT_USAGE;
	}
	ret = acm_ctl(&ctx, vol, cmd, reply, sizeof(reply));
	if (ret) {
		acm_error(&ctx, "%s", reply);
		return acm_exit_code(ret);
	}
	if (ctx.json) {
		struct acm_json j;

		acm_json_init(&j, stdout);
		acm_json_obj(&j, NULL);
		acm_json_str(&j, "command", cmd);
		acm_json_obj(&j, "reply");
		acm_json_kv(&j, reply, false);
		acm_json_end(&j, '}');
		acm_json_end(&j, '}');
		acm_json_done(&j);
	} else {
		const char *p = reply;
		size_t l = strcspn(p, "\n");

		if (strncmp(p, "ok", 2) == 0 && (l == 2 || p[2] == ' ')) {
			size_t skip = l == 2 ? 2 : 3;
			p += skip;
			l -= skip;
		}
		printf("%.*s\n", (int)l, l ? p : "ok");
	}
	return ACM_EXIT_OK;
}
