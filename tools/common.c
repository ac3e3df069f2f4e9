/*
 * common.c — shared code of the acm* tools (see common.h for the contract).
 *
 * Everything talks to the mount through ordinary file I/O: open/write/read
 * on `ctl`, whole-file reads of tables and info files. No state is kept
 * between calls except what the caller passes in.
 */
#include "common.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- arguments and errors ---- */

void acm_error(const struct acm_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: error: ", ctx->prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int acm_exit_code(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return ACM_EXIT_OK;
	case EINVAL:
	case E2BIG:
		return ACM_EXIT_USAGE;
	case ENOENT:
		return ACM_EXIT_NOENT;
	case EBUSY:
		return ACM_EXIT_BUSY;
	case ENOSPC:
		return ACM_EXIT_NOSPC;
	case EIO:
		return ACM_EXIT_IO;
	case EPERM:
	case EACCES:
		return ACM_EXIT_PERM;
	case EEXIST:
		return ACM_EXIT_EXIST;
	case ECANCELED:
		return ACM_EXIT_CANCELED;
	case ENODEV:
	case ENOTUNIQ:
		return ACM_EXIT_NOMOUNT;
	default:
		return ACM_EXIT_FAIL;
	}
}

static struct acm_opt *find_opt(struct acm_opt *opts, size_t nr, const char *name)
{
	for (size_t i = 0; i < nr; i++)
		if (strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

int acm_parse(struct acm_ctx *ctx, int argc, char **argv, struct acm_opt *opts, size_t nr_opts,
              const char **pos, size_t max_pos, size_t *nr_pos, const char *usage, bool json_ok)
{
	bool only_pos = false;

	*nr_pos = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		struct acm_opt *o;

		if (only_pos || a[0] != '-' || a[1] == '\0') {
			if (*nr_pos >= max_pos) {
				acm_error(ctx, "unexpected argument '%s' (try --help)", a);
				return -EINVAL;
			}
			pos[(*nr_pos)++] = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_pos = true;
			continue;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			fputs(usage, stdout);
			return 1;
		}
		if (strcmp(a, "--version") == 0) {
			printf("%s (acmfs) %s\n", ctx->prog, ACMFS_VERSION);
			return 1;
		}
		if (strcmp(a, "--json") == 0 && json_ok) {
			ctx->json = true;
			continue;
		}
		if (strcmp(a, "-M") == 0 || strncmp(a, "--mount=", 8) == 0) {
			if (ctx->mount_opt) {
				acm_error(ctx, "option -M given twice");
				return -EINVAL;
			}
			if (a[1] == '-') {
				ctx->mount_opt = a + 8;
				continue;
			}
			if (i + 1 >= argc) {
				acm_error(ctx, "option -M needs a directory");
				return -EINVAL;
			}
			ctx->mount_opt = argv[++i];
			continue;
		}
		o = find_opt(opts, nr_opts, a);
		if (!o) {
			acm_error(ctx, "unknown option '%s' (try --help)", a);
			return -EINVAL;
		}
		if (o->value) {
			acm_error(ctx, "option %s given twice", a);
			return -EINVAL;
		}
		if (!o->metavar) {
			o->value = "";
			continue;
		}
		if (i + 1 >= argc) {
			acm_error(ctx, "option %s needs %s", a, o->metavar);
			return -EINVAL;
		}
		o->value = argv[++i];
		if (o->value[0] == '\0') {
			acm_error(ctx, "option %s needs a non-empty %s", a, o->metavar);
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- mount discovery ---- */

static bool is_acmfs_dir(const char *dir)
{
	char p[PATH_MAX + 16];
	struct stat st;

	snprintf(p, sizeof(p), "%s/ctl", dir);
	if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
		return false;
	snprintf(p, sizeof(p), "%s/volumes", dir);
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int use_mount_dir(struct acm_ctx *ctx, const char *dir, const char *from)
{
	char real[PATH_MAX];

	if (!realpath(dir, real)) {
		acm_error(ctx, "%s: %s (%s)", dir, strerror(errno), from);
		return -ENODEV;
	}
	if (!is_acmfs_dir(real)) {
		acm_error(ctx, "%s is not an acmfs mount (%s)", real, from);
		return -ENODEV;
	}
	snprintf(ctx->mnt, sizeof(ctx->mnt), "%s", real);
	return 0;
}

/* Undo the octal escapes (\040 …) of /proc/self/mountinfo. */
static void unescape_octal(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '7' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

int acm_find_mount(struct acm_ctx *ctx)
{
	const char *env = getenv("ACMFS_MOUNT");
	char found[PATH_MAX] = "", others[1024] = "";
	int nr_found = 0;
	char *line = NULL;
	size_t cap = 0;
	FILE *f;

	if (ctx->mnt[0])
		return 0;
	if (ctx->mount_opt)
		return use_mount_dir(ctx, ctx->mount_opt, "from -M");
	if (env && env[0])
		return use_mount_dir(ctx, env, "from ACMFS_MOUNT");

	f = fopen("/proc/self/mountinfo", "re");
	if (!f) {
		acm_error(ctx, "cannot read /proc/self/mountinfo: %s; use -M DIR", strerror(errno));
		return -ENODEV;
	}
	while (getline(&line, &cap, f) > 0) {
		/* id parent maj:min root mountpoint opts [optional…] - fstype source … */
		char *save = NULL, *mp = NULL, *tok;
		int field = 0;
		bool dash = false;

		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			field++;
			if (field == 5)
				mp = tok;
			else if (dash) {
				if (strcmp(tok, "fuse.acmfs") == 0 && mp) {
					unescape_octal(mp);
					if (nr_found++ == 0) {
						snprintf(found, sizeof(found), "%s", mp);
					} else {
						size_t l = strlen(others);
						snprintf(others + l, sizeof(others) - l, "%s%s",
						         l ? ", " : "", mp);
					}
				}
				break;
			} else if (field > 6 && strcmp(tok, "-") == 0) {
				dash = true;
			}
		}
	}
	free(line);
	fclose(f);
	if (nr_found == 0) {
		acm_error(ctx, "no acmfs mount found; mount one, or give -M DIR or ACMFS_MOUNT");
		return -ENODEV;
	}
	if (nr_found > 1) {
		acm_error(ctx,
		          "several acmfs mounts (%s, %s); choose one with -M DIR or ACMFS_MOUNT",
		          found, others);
		return -ENOTUNIQ;
	}
	snprintf(ctx->mnt, sizeof(ctx->mnt), "%s", found);
	return 0;
}

bool acm_number_ok(const char *s)
{
	if (!*s || strlen(s) > 18)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

bool acm_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > ACM_NAME_MAX || !isalnum((unsigned char)name[0]))
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return false;
	}
	return true;
}

int acm_device(struct acm_ctx *ctx, const char *device, char vol[ACM_NAME_MAX + 1])
{
	char real[PATH_MAX], dir[PATH_MAX + 128];
	struct stat st;
	int ret;

	if (strchr(device, '/')) {
		char *slash;
		size_t ml;

		if (!realpath(device, real)) {
			int e = errno;
			acm_error(ctx, "%s: %s", device, strerror(e));
			return e == ENOENT ? -ENOENT : -EINVAL;
		}
		/* real = MNT/volumes/<vol>/data */
		slash = strrchr(real, '/');
		if (!slash || strcmp(slash, "/data") != 0)
			goto not_data;
		*slash = '\0';
		slash = strrchr(real, '/');
		if (!slash || (size_t)(slash - real) < 8 || strncmp(slash - 8, "/volumes", 8) != 0)
			goto not_data;
		if (strlen(slash + 1) > ACM_NAME_MAX || !acm_name_ok(slash + 1))
			goto not_data;
		snprintf(vol, ACM_NAME_MAX + 1, "%s", slash + 1);
		ml = (size_t)(slash - 8 - real);
		snprintf(dir, sizeof(dir), "%.*s", (int)ml, real);
		if (!ctx->mnt[0] && !ctx->mount_opt &&
		    !(getenv("ACMFS_MOUNT") && *getenv("ACMFS_MOUNT"))) {
			ret = use_mount_dir(ctx, dir[0] ? dir : "/", "from the device path");
			if (ret)
				return ret;
		} else {
			ret = acm_find_mount(ctx);
			if (ret)
				return ret;
			if (strcmp(ctx->mnt, dir) != 0) {
				acm_error(ctx, "%s is not on the acmfs mount %s", device, ctx->mnt);
				return -EINVAL;
			}
		}
		return 0;
	not_data:
		acm_error(ctx, "%s is not the data file of an acmfs volume (MNT/volumes/VOL/data)",
		          device);
		return -EINVAL;
	}

	if (!acm_name_ok(device)) {
		acm_error(ctx, "bad device name '%s'", device);
		return -EINVAL;
	}
	ret = acm_find_mount(ctx);
	if (ret)
		return ret;
	snprintf(dir, sizeof(dir), "%s/volumes/%s", ctx->mnt, device);
	if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		acm_error(ctx, "no such volume: %s", device);
		return -ENOENT;
	}
	snprintf(vol, ACM_NAME_MAX + 1, "%s", device);
	return 0;
}

/* ---- ctl round trip ---- */

static void chomp(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' '))
		s[--n] = '\0';
}

static ssize_t read_all_fd(int fd, char *buf, size_t len, off_t off)
{
	size_t got = 0;

	while (got + 1 < len) {
		ssize_t n = pread(fd, buf + got, len - 1 - got, off + (off_t)got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	return (ssize_t)got;
}

int acm_ctl(const struct acm_ctx *ctx, const char *vol, const char *cmd, char *reply,
            size_t reply_len)
{
	char path[PATH_MAX + 16];
	char line[4200];
	size_t n;
	ssize_t w;
	int fd, err = 0;

	reply[0] = '\0';
	if (vol)
		snprintf(path, sizeof(path), "%s/volumes/%s/ctl", ctx->mnt, vol);
	else
		snprintf(path, sizeof(path), "%s/ctl", ctx->mnt);
	n = (size_t)snprintf(line, sizeof(line), "%s\n", cmd);
	if (n >= sizeof(line)) {
		snprintf(reply, reply_len, "command longer than 4096 bytes");
		return -E2BIG;
	}
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		if (err == -ENOENT && vol)
			snprintf(reply, reply_len, "no such volume: %s", vol);
		else
			snprintf(reply, reply_len, "%s: %s", path, strerror(-err));
		return err;
	}
	do {
		w = write(fd, line, n);
	} while (w < 0 && errno == EINTR);
	if (w < 0)
		err = -errno;
	else if ((size_t)w != n)
		err = -EIO;

	if (read_all_fd(fd, reply, reply_len, 0) < 0)
		reply[0] = '\0';
	close(fd);
	chomp(reply);
	if (err) {
		if (strncmp(reply, "error: ", 7) == 0) {
			char *nl = strchr(reply, '\n');
			if (nl)
				*nl = '\0';
			memmove(reply, reply + 7, strlen(reply + 7) + 1);
		} else {
			snprintf(reply, reply_len, "%s", strerror(-err));
		}
	}
	return err;
}

int acm_read_file(const char *path, char **out)
{
	size_t cap = 4096, len = 0;
	char *buf = malloc(cap);
	int fd, err = 0;

	*out = NULL;
	if (!buf)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		goto out_free;
	}
	for (;;) {
		ssize_t n;

		if (len + 1 >= cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				err = -ENOMEM;
				goto out_close;
			}
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - 1 - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			goto out_close;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	*out = buf;
	return 0;
out_close:
	close(fd);
out_free:
	free(buf);
	return err;
}

int acm_read_mnt(const struct acm_ctx *ctx, const char *rel, char **out)
{
	char path[PATH_MAX + 256];

	snprintf(path, sizeof(path), "%s/%s", ctx->mnt, rel);
	return acm_read_file(path, out);
}

/* ---- key=value ---- */

static int kv_get(const char *text, const char *key, char *val, size_t len, bool lines)
{
	size_t kl = strlen(key);

	for (const char *p = text; *p; p++) {
		bool at_start =
		    p == text || p[-1] == '\n' || (!lines && (p[-1] == ' ' || p[-1] == '\t'));
		size_t vl;

		if (!at_start || strncmp(p, key, kl) != 0 || p[kl] != '=')
			continue;
		p += kl + 1;
		vl = lines ? strcspn(p, "\n") : strcspn(p, " \t\n");
		if (lines)
			while (vl && (p[vl - 1] == ' ' || p[vl - 1] == '\r' || p[vl - 1] == '\t'))
				vl--;
		if (vl >= len)
			return -ENAMETOOLONG;
		memcpy(val, p, vl);
		val[vl] = '\0';
		if (!lines)
			acm_pct_decode(val);
		return 0;
	}
	return -ENOENT;
}

int acm_reply_get(const char *text, const char *key, char *val, size_t len)
{
	return kv_get(text, key, val, len, false);
}

int acm_info_get(const char *text, const char *key, char *val, size_t len)
{
	return kv_get(text, key, val, len, true);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void acm_pct_decode(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0) {
			*w++ = (char)(hexval(r[1]) * 16 + hexval(r[2]));
			r += 2;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

int acm_abspath(const char *path, char *out, size_t len)
{
	char cwd[PATH_MAX];

	if (path[0] == '/') {
		if ((size_t)snprintf(out, len, "%s", path) >= len)
			return -ENAMETOOLONG;
		return 0;
	}
	if (!getcwd(cwd, sizeof(cwd)))
		return -errno;
	if ((size_t)snprintf(out, len, "%s/%s", strcmp(cwd, "/") ? cwd : "", path) >= len)
		return -ENAMETOOLONG;
	return 0;
}

/* ---- tables ---- */

void acm_table_init(struct acm_table *t, size_t nr_cols)
{
	t->nr_cols = nr_cols;
	t->nr_rows = 0;
	t->cap_rows = 0;
	t->cells = NULL;
}

void acm_table_release(struct acm_table *t)
{
	for (size_t i = 0; i < t->nr_rows * t->nr_cols; i++)
		free(t->cells[i]);
	free(t->cells);
	t->cells = NULL;
	t->nr_rows = t->cap_rows = 0;
}

int acm_table_add(struct acm_table *t, const char *const *cells)
{
	if (t->nr_rows == t->cap_rows) {
		size_t cap = t->cap_rows ? t->cap_rows * 2 : 16;
		char **nc = realloc(t->cells, cap * t->nr_cols * sizeof(*nc));
		if (!nc)
			return -ENOMEM;
		t->cells = nc;
		t->cap_rows = cap;
	}
	for (size_t c = 0; c < t->nr_cols; c++) {
		char *s = strdup(cells[c] ? cells[c] : "");
		if (!s) {
			for (size_t k = 0; k < c; k++)
				free(t->cells[t->nr_rows * t->nr_cols + k]);
			return -ENOMEM;
		}
		t->cells[t->nr_rows * t->nr_cols + c] = s;
	}
	t->nr_rows++;
	return 0;
}

const char *acm_table_cell(const struct acm_table *t, size_t row, size_t col)
{
	return t->cells[row * t->nr_cols + col];
}

void acm_table_print(const struct acm_table *t, FILE *f)
{
	size_t width[ACM_MAX_COLS] = {0};

	for (size_t r = 0; r < t->nr_rows; r++)
		for (size_t c = 0; c < t->nr_cols && c < ACM_MAX_COLS; c++) {
			size_t l = strlen(acm_table_cell(t, r, c));
			if (l > width[c])
				width[c] = l;
		}
	for (size_t r = 0; r < t->nr_rows; r++) {
		for (size_t c = 0; c < t->nr_cols && c < ACM_MAX_COLS; c++) {
			const char *s = acm_table_cell(t, r, c);
			if (c + 1 == t->nr_cols)
				fprintf(f, "%s", s);
			else
				fprintf(f, "%-*s ", (int)width[c], s);
		}
		fputc('\n', f);
	}
}

static void trim_copy(char *dst, size_t len, const char *src, size_t n)
{
	while (n && (*src == ' ' || *src == '\t')) {
		src++;
		n--;
	}
	while (n && (src[n - 1] == ' ' || src[n - 1] == '\t' || src[n - 1] == '\n' ||
	             src[n - 1] == '\r'))
		n--;
	if (n >= len)
		n = len - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static size_t words(const char *s, size_t *starts, size_t *ends, size_t max)
{
	size_t nr = 0, i = 0, n = strcspn(s, "\n");

	while (i < n) {
		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
			i++;
		if (i >= n)
			break;
		if (nr < max)
			starts[nr] = i;
		while (i < n && s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			i++;
		if (nr < max)
			ends[nr] = i;
		nr++;
	}
	return nr;
}

int acm_table_header(const char *header, char names[][128], size_t max_cols)
{
	size_t st[ACM_MAX_COLS], en[ACM_MAX_COLS];
	size_t nr = words(header, st, en, ACM_MAX_COLS);

	if (nr > max_cols || nr > ACM_MAX_COLS)
		return -EPROTO;
	for (size_t i = 0; i < nr; i++)
		trim_copy(names[i], 128, header + st[i], en[i] - st[i]);
	return (int)nr;
}

int acm_table_split(const char *header, const char *line, char cells[][128], size_t max_cols)
{
	size_t hs[ACM_MAX_COLS], he[ACM_MAX_COLS], ws[64], we[64];
	size_t nr = words(header, hs, he, ACM_MAX_COLS);
	size_t ll = strcspn(line, "\n");
	size_t nw;
	bool aligned = true;

	if (nr == 0 || nr > max_cols || nr > ACM_MAX_COLS)
		return -EPROTO;
	/* Aligned: every column start (but the first) is preceded by a space and
	 * starts a word or lies past the end for an empty trailing cell. */
	for (size_t c = 1; c < nr && aligned; c++) {
		if (hs[c] > ll)
			aligned = false;
		else if (hs[c] < ll && (line[hs[c]] == ' ' || line[hs[c] - 1] != ' '))
			aligned = false;
	}
	if (aligned && ll > 0 && line[0] != ' ') {
		for (size_t c = 0; c < nr; c++) {
			size_t s = hs[c], e = c + 1 < nr ? hs[c + 1] : ll;
			if (s > ll)
				s = ll;
			if (e > ll)
				e = ll;
			trim_copy(cells[c], 128, line + s, e - s);
		}
		return (int)nr;
	}
	nw = words(line, ws, we, 64);
	if (nw != nr)
		return -EPROTO;
	for (size_t c = 0; c < nr; c++)
		trim_copy(cells[c], 128, line + ws[c], we[c] - ws[c]);
	return (int)nr;
}

/* ---- JSON output ---- */

void acm_json_init(struct acm_json *j, FILE *f)
{
	j->f = f;
	j->depth = 0;
	j->first[0] = true;
}

static void indent(struct acm_json *j)
{
	for (int i = 0; i < j->depth; i++)
		fputs("  ", j->f);
}

static void put_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"':
			fputs("\\\"", f);
			break;
		case '\\':
			fputs("\\\\", f);
			break;
		case '\n':
			fputs("\\n", f);
			break;
		case '\t':
			fputs("\\t", f);
			break;
		case '\r':
			fputs("\\r", f);
			break;
		default:
			if (*p < 0x20)
				fprintf(f, "\\u%04x", *p);
			else
				fputc(*p, f);
		}
	}
	fputc('"', f);
}

/* Separator, indentation and key before a member or element. */
static void member(struct acm_json *j, const char *key)
{
	if (j->depth > 0) {
		if (!j->first[j->depth])
			fputc(',', j->f);
		fputc('\n', j->f);
		indent(j);
	}
	j->first[j->depth] = false;
	if (key) {
		put_string(j->f, key);
		fputs(": ", j->f);
	}
}

static void open_container(struct acm_json *j, const char *key, char c)
{
	member(j, key);
	fputc(c, j->f);
	if (j->depth < 31)
		j->depth++;
	j->first[j->depth] = true;
}

void acm_json_obj(struct acm_json *j, const char *key)
{
	open_container(j, key, '{');
}

void acm_json_arr(struct acm_json *j, const char *key)
{
	open_container(j, key, '[');
}

void acm_json_end(struct acm_json *j, char close)
{
	bool empty = j->first[j->depth];

	if (j->depth > 0)
		j->depth--;
	if (!empty) {
		fputc('\n', j->f);
		indent(j);
	}
	fputc(close, j->f);
}

void acm_json_str(struct acm_json *j, const char *key, const char *val)
{
	member(j, key);
	put_string(j->f, val);
}

void acm_json_int(struct acm_json *j, const char *key, long long val)
{
	member(j, key);
	fprintf(j->f, "%lld", val);
}

void acm_json_bool(struct acm_json *j, const char *key, bool val)
{
	member(j, key);
	fputs(val ? "true" : "false", j->f);
}

void acm_json_null(struct acm_json *j, const char *key)
{
	member(j, key);
	fputs("null", j->f);
}

void acm_json_auto(struct acm_json *j, const char *key, const char *val)
{
	size_t n = strlen(val), d = 0;

	if (n == 0 || strcmp(val, "-") == 0 || strcmp(val, "----") == 0 ||
	    strcmp(val, "---") == 0) {
		acm_json_null(j, key);
		return;
	}
	while (d < n && isdigit((unsigned char)val[d]))
		d++;
	if (d > 0 && d <= 18 && (d == n || (d + 1 == n && val[d] == '%')) &&
	    (val[0] != '0' || d == 1)) {
		acm_json_int(j, key, strtoll(val, NULL, 10));
		return;
	}
	acm_json_str(j, key, val);
}

void acm_json_kv(struct acm_json *j, const char *text, bool lines)
{
	const char *p = text;
	const char *end = lines ? text + strlen(text) : text + strcspn(text, "\n");

	if (!lines && strncmp(p, "ok", 2) == 0 && (p + 2 == end || p[2] == ' '))
		p += 2;
	while (p < end) {
		size_t wl, kl;
		char key[64], val[1024];
		const char *eq;

		while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
			p++;
		if (p >= end)
			break;
		wl = lines ? strcspn(p, "\n") : strcspn(p, " \t\n");
		eq = memchr(p, '=', wl);
		if (eq && (kl = (size_t)(eq - p)) > 0 && kl < sizeof(key)) {
			size_t vl = wl - kl - 1;
			memcpy(key, p, kl);
			key[kl] = '\0';
			if (vl >= sizeof(val))
				vl = sizeof(val) - 1;
			memcpy(val, eq + 1, vl);
			val[vl] = '\0';
			while (vl && (val[vl - 1] == ' ' || val[vl - 1] == '\r'))
				val[--vl] = '\0';
			if (!lines)
				acm_pct_decode(val);
			acm_json_auto(j, key, val);
		}
		p += wl;
	}
}

void acm_json_done(struct acm_json *j)
{
	fputc('\n', j->f);
	fflush(j->f);
}

/* ---- JSON scanning ---- */

struct scan_frame {
	bool is_obj;
	size_t nr;
	struct acm_json_member m[32];
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

/* Parse a JSON string at p (at the quote) into out; return the end or NULL. */
static const char *scan_string(const char *p, char *out, size_t len)
{
	size_t o = 0;

	if (*p != '"')
		return NULL;
	for (p++; *p && *p != '"'; p++) {
		char c = *p;
		if (c == '\\') {
			p++;
			switch (*p) {
			case 'n':
				c = '\n';
				break;
			case 't':
				c = '\t';
				break;
			case 'r':
				c = '\r';
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'u':
				for (int k = 1; k <= 4; k++)
					if (hexval(p[k]) < 0)
						return NULL;
				c = '?';
				p += 4;
				break;
			case '\0':
				return NULL;
			default:
				c = *p;
			}
		}
		if (o + 1 < len)
			out[o++] = c;
	}
	if (*p != '"')
		return NULL;
	if (len)
		out[o] = '\0';
	return p + 1;
}

int acm_json_scan(const char *text,
                  int (*fn)(void *arg, const struct acm_json_member *m, size_t nr), void *arg)
{
	struct scan_frame *st;
	int depth = -1, ret = -EPROTO;
	const char *p = skip_ws(text);
	char key[64] = "";
	bool have_key = false;

	st = calloc(32, sizeof(*st));
	if (!st)
		return -ENOMEM;
	while (*p) {
		if (*p == '{' || *p == '[') {
			if (++depth >= 32)
				goto out;
			st[depth].is_obj = *p == '{';
			st[depth].nr = 0;
			have_key = false;
			p++;
		} else if (*p == '}' || *p == ']') {
			if (depth < 0 || st[depth].is_obj != (*p == '}'))
				goto out;
			if (st[depth].is_obj) {
				int r = fn(arg, st[depth].m, st[depth].nr);
				if (r) {
					ret = r;
					goto out;
				}
			}
			depth--;
			have_key = false;
			p++;
			if (depth < 0) {
				p = skip_ws(p);
				ret = *p ? -EPROTO : 0;
				goto out;
			}
		} else if (*p == ',') {
			have_key = false;
			p++;
		} else if (*p == ':') {
			p++;
		} else if (*p == '"') {
			char val[256];
			const char *e;

			if (depth < 0)
				goto out;
			if (st[depth].is_obj && !have_key) {
				e = scan_string(p, key, sizeof(key));
				if (!e)
					goto out;
				have_key = true;
				p = skip_ws(e);
				if (*p != ':')
					goto out;
				p++;
				p = skip_ws(p);
				continue;
			}
			e = scan_string(p, val, sizeof(val));
			if (!e)
				goto out;
			if (st[depth].is_obj && st[depth].nr < 32) {
				struct acm_json_member *m = &st[depth].m[st[depth].nr++];
				snprintf(m->key, sizeof(m->key), "%s", key);
				snprintf(m->val, sizeof(m->val), "%s", val);
			}
			have_key = false;
			p = e;
		} else if (*p == '-' || isalnum((unsigned char)*p)) {
			size_t n = 0;
			char val[256];

			if (depth < 0)
				goto out;
			while (p[n] == '-' || p[n] == '+' || p[n] == '.' ||
			       isalnum((unsigned char)p[n]))
				n++;
			if (n >= sizeof(val))
				goto out;
			memcpy(val, p, n);
			val[n] = '\0';
			if (st[depth].is_obj && st[depth].nr < 32) {
				struct acm_json_member *m = &st[depth].m[st[depth].nr++];
				snprintf(m->key, sizeof(m->key), "%s", key);
				snprintf(m->val, sizeof(m->val), "%s", val);
			}
			have_key = false;
			p += n;
		} else if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
			p++;
		} else {
			goto out;
		}
	}
out:
	free(st);
	return ret;
}

/* ---- progress ---- */

double acm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void acm_sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

void acm_progress_init(struct acm_progress *p, const char *label, uint64_t total_bytes)
{
	p->on = isatty(STDERR_FILENO) == 1;
	p->start = acm_now();
	p->last_draw = 0;
	p->total = total_bytes;
	p->last_pct = -1;
	snprintf(p->label, sizeof(p->label), "%s", label);
}

static void fmt_rate(char *out, size_t len, double bps)
{
	const char *unit[] = {"B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"};
	int u = 0;

	while (bps >= 1024 && u < 4) {
		bps /= 1024;
		u++;
	}
	snprintf(out, len, "%.1f %s", bps, unit[u]);
}

void acm_progress_draw(struct acm_progress *p, int pct, bool force)
{
	double now = acm_now(), el = now - p->start;
	char bar[31], rate[32] = "--", eta[32] = "--:--";
	int fill;

	if (!p->on)
		return;
	if (pct < 0)
		pct = 0;
	if (pct > 100)
		pct = 100;
	if (!force && pct == p->last_pct && now - p->last_draw < 0.5)
		return;
	if (!force && now - p->last_draw < 0.1)
		return;
	p->last_draw = now;
	p->last_pct = pct;
	fill = pct * 30 / 100;
	for (int i = 0; i < 30; i++)
		bar[i] = i < fill ? '#' : '-';
	bar[30] = '\0';
	if (p->total && el > 0.05)
		fmt_rate(rate, sizeof(rate), (double)p->total * pct / 100.0 / el);
	if (pct >= 100) {
		snprintf(eta, sizeof(eta), "00:00");
	} else if (pct > 0 && el > 0.05) {
		long s = (long)(el * (100 - pct) / pct + 0.5);
		snprintf(eta, sizeof(eta), "%02ld:%02ld", s / 60, s % 60);
	}
	fprintf(stderr, "\r%-5s [%s] %3d%%  %12s  ETA %s\033[K", p->label, bar, pct, rate, eta);
	fflush(stderr);
}

void acm_progress_clear(struct acm_progress *p)
{
	if (!p->on || p->last_pct < 0)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	p->last_pct = -1;
}

void acm_progress_done(struct acm_progress *p)
{
	if (!p->on)
		return;
	acm_progress_draw(p, 100, true);
	fputc('\n', stderr);
	fflush(stderr);
	p->last_pct = -1;
}

/* ---- table parsing ---- */

int acm_table_parse(const char *text, struct acm_table *t)
{
	char names[ACM_MAX_COLS][128], cells[ACM_MAX_COLS][128];
	const char *hdr = NULL, *ptrs[ACM_MAX_COLS];
	int nr, ret;

	t->cells = NULL;
	t->nr_rows = t->cap_rows = 0;
	t->nr_cols = 0;
	for (const char *p = text; *p; p += strcspn(p, "\n"), p += *p == '\n') {
		size_t ll = strcspn(p, "\n");
		bool blank = true;

		for (size_t i = 0; i < ll; i++)
			if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
				blank = false;
		if (blank)
			continue;
		if (!hdr) {
			hdr = p;
			nr = acm_table_header(hdr, names, ACM_MAX_COLS);
			if (nr <= 0)
				return -EPROTO;
			acm_table_init(t, (size_t)nr);
			for (int c = 0; c < nr; c++)
				ptrs[c] = names[c];
			ret = acm_table_add(t, ptrs);
			if (ret)
				goto out_release;
			continue;
		}
		nr = acm_table_split(hdr, p, cells, ACM_MAX_COLS);
		if (nr < 0 || (size_t)nr != t->nr_cols) {
			ret = -EPROTO;
			goto out_release;
		}
		for (int c = 0; c < nr; c++)
			ptrs[c] = cells[c];
		ret = acm_table_add(t, ptrs);
		if (ret)
			goto out_release;
	}
	if (!hdr)
		return -EPROTO;
	return 0;
out_release:
	acm_table_release(t);
	return ret;
}

void acm_json_name(const char *header, char *out, size_t len)
{
	size_t o = 0;

	for (const char *p = header; *p && o + 1 < len; p++)
		out[o++] = *p == '-' ? '_' : (char)tolower((unsigned char)*p);
	out[o] = '\0';
}

/* ---- the ACM command tools' shared path ---- */

int acm_volume_command(struct acm_ctx *ctx, const char *vol, const char *cmd, char *reply,
                       size_t reply_len)
{
	int ret = acm_ctl(ctx, vol, cmd, reply, reply_len);

	if (ret) {
		acm_error(ctx, "%s", reply);
		return acm_exit_code(ret);
	}
	return 0;
}

int acm_wait_history(const struct acm_ctx *ctx, const char *vol, const char *version,
                     bool wait_tape, double tape_grace, char **info, const char **failed_side)
{
	struct acm_progress bar;
	char rel[256], v[64], media[16] = "", ds[32], ts[32];
	uint64_t size_bytes = 0, grain = 0, grains = 0;
	char *vinfo = NULL;
	double tape_none_since = 0;
	int ret;

	*info = NULL;
	*failed_side = NULL;
	snprintf(rel, sizeof(rel), "volumes/%s/info", vol);
	if (acm_read_mnt(ctx, rel, &vinfo) == 0) {
		if (acm_info_get(vinfo, "size", v, sizeof(v)) == 0)
			size_bytes = strtoull(v, NULL, 10);
		if (acm_info_get(vinfo, "grain", v, sizeof(v)) == 0)
			grain = strtoull(v, NULL, 10);
		free(vinfo);
	}
	acm_progress_init(&bar, "copy", 0);
	snprintf(rel, sizeof(rel), "volumes/%s/history/%s/info", vol, version);
	for (;;) {
		char *text;
		bool disk_run, tape_run, tape_pending;

		ret = acm_read_mnt(ctx, rel, &text);
		if (ret) {
			acm_progress_clear(&bar);
			return ret;
		}
		if (acm_info_get(text, "disk_status", ds, sizeof(ds)))
			snprintf(ds, sizeof(ds), "none");
		if (acm_info_get(text, "tape_status", ts, sizeof(ts)))
			snprintf(ts, sizeof(ts), "none");
		if (!media[0] && acm_info_get(text, "media", media, sizeof(media)))
			snprintf(media, sizeof(media), "DISK");
		if (!grains && acm_info_get(text, "grains_copied", v, sizeof(v)) == 0)
			grains = strtoull(v, NULL, 10);
		disk_run = strcmp(ds, "executing") == 0;
		tape_run = wait_tape && strcmp(ts, "executing") == 0;
		tape_pending = false;
		if (wait_tape && !disk_run && strcmp(ts, "none") == 0 &&
		    strcmp(media, "DISK") != 0 && strcmp(ds, "failed") != 0) {
			if (tape_none_since == 0)
				tape_none_since = acm_now();
			tape_pending = acm_now() - tape_none_since < tape_grace;
		}
		if (disk_run || tape_run) {
			bool tape_phase = !disk_run;
			const char *key = tape_phase ? "tape_execute" : "disk_execute";
			const char *label = tape_phase ? "tape" : "disk";

			if (strcmp(bar.label, label) != 0) {
				acm_progress_clear(&bar);
				acm_progress_init(
				    &bar, label,
				    tape_phase ? size_bytes
				               : (grains && grain ? grains * grain : size_bytes));
			}
			if (acm_info_get(text, key, v, sizeof(v)) == 0)
				acm_progress_draw(&bar, atoi(v), false);
		}
		if (!disk_run && !tape_run && !tape_pending) {
			if (bar.last_pct >= 0 || bar.on)
				acm_progress_done(&bar);
			*info = text;
			if (strcmp(ds, "failed") == 0)
				*failed_side = "disk";
			else if (wait_tape && strcmp(ts, "failed") == 0)
				*failed_side = "tape";
			return *failed_side ? -ECANCELED : 0;
		}
		free(text);
		acm_sleep_ms(150);
	}
}

void acm_print_completed(const struct acm_ctx *ctx, const char *device, const char *reply,
                         const char *info)
{
	struct acm_json j;

	if (!ctx->json) {
		printf("%s %s completed\n", device, ctx->prog);
		fflush(stdout);
		return;
	}
	acm_json_init(&j, stdout);
	acm_json_obj(&j, NULL);
	acm_json_str(&j, "device", device);
	acm_json_str(&j, "command", ctx->prog);
	acm_json_str(&j, "result", "completed");
	acm_json_obj(&j, "reply");
	acm_json_kv(&j, reply, false);
	acm_json_end(&j, '}');
	if (info) {
		acm_json_obj(&j, "history");
		acm_json_kv(&j, info, true);
		acm_json_end(&j, '}');
	}
	acm_json_end(&j, '}');
	acm_json_done(&j);
}
