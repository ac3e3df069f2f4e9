/*
 * test_tape_crypt.c — pool format version 2 (tape/codec.c, the version 2
 * parts of tape/format.c, and the pool over them), what users rely on:
 *  - the config object: the master key wrapped by scrypt(passphrase) opens
 *    with that passphrase only (same pool id, same keys, the key hierarchy
 *    of docs/tape-format.md), the KDF parameters are stored, authenticated
 *    and bounded, a rewrap keeps the master key;
 *  - passphrase files: 0600, ours, regular, not empty, one newline dropped;
 *  - keyed block names (not SHA-256, per pool, stable within a pool);
 *  - block seal/open: zstd when it pays, raw when not, exact bytes back, for
 *    encrypted and plain pools;
 *  - every authenticated field (block nonce/ciphertext/tag/name/flags/raw
 *    length, pack index, manifest header, key and body) fails when changed,
 *    even with the SHA-256 checksums fixed up; version 1 and 2 manifests are
 *    never accepted in each other's pools;
 *  - an encrypted pool over the in-memory backend: no object name or byte
 *    reveals a grain, its SHA-256 or the passphrase; reads give the exact
 *    bytes; a second host with the same key joins (dedup), a wrong or
 *    missing key is refused (EACCES) without touching the config; pool
 *    passwd; a manifest replayed under another key or pool reads as EIO.
 * Creates and removes a few passphrase files under /tmp.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "backend.h"
#include "codec.h"
#include "format.h"
#include "tier.h"

#define GRAIN 4096u

static const struct tier_ops *T = &tape_tier_ops;
static const struct tape_kdf FAST = {10, 8, 1};

/* ---- helpers ---- */

static void fill_text(uint8_t *p, size_t n, unsigned seed)
{
	char line[80];
	size_t off = 0;
	for (unsigned i = 0; off < n; i++) {
		int l = snprintf(line, sizeof(line), "The quick brown fox %u jumps over dog %u.\n",
				 seed, i);
		size_t c = (size_t)l < n - off ? (size_t)l : n - off;
		memcpy(p + off, line, c);
		off += c;
	}
}

static void fill_random(uint8_t *p, size_t n)
{
	assert_int_equal(RAND_bytes(p, (int)n), 1);
}

static bool all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static bool codec_keys_zero(const struct tape_codec *c)
{
	return all_zero(c->mk, 32) && all_zero(c->kn, 32) && all_zero(c->kb, 32) &&
	       all_zero(c->ki, 32) && all_zero(c->km, 32);
}

static void cfg_fix_sha(uint8_t cfg[TAPE_CONFIG_BYTES])
{
	assert_int_equal(tape_sha256(cfg, 120, cfg + 120), 0);
}

/* an encrypted pool's codec and config, with the fast KDF */
static void enc_pool(struct tape_codec *c, uint8_t cfg[TAPE_CONFIG_BYTES], const char *pass)
{
	assert_int_equal(tape_config_create(c, pass, strlen(pass), &FAST, cfg), 0);
	c->zlevel = 3;
}

static void plain_pool(struct tape_codec *c, uint8_t cfg[TAPE_CONFIG_BYTES])
{
	assert_int_equal(tape_config_create(c, NULL, 0, NULL, cfg), 0);
	c->zlevel = 3;
}

static int open_cfg(const uint8_t cfg[TAPE_CONFIG_BYTES], const char *pass, struct tape_codec *c)
{
	return tape_config_open(cfg, TAPE_CONFIG_BYTES, pass, pass ? strlen(pass) : 0, c);
}

/* HMAC-SHA256(key, msg), computed here, not by the code under test */
static void ref_hmac(const uint8_t key[32], const void *msg, size_t len, uint8_t out[32])
{
	unsigned n = 32;
	assert_non_null(HMAC(EVP_sha256(), key, 32, msg, len, out, &n));
	assert_int_equal(n, 32);
}

/* every file keyfile() made, removed by the group teardown even when a
 * test failed half way */
static char made[64][64];
static unsigned nr_made;

static int remove_made(void **state)
{
	(void)state;
	for (unsigned i = 0; i < nr_made; i++)
		unlink(made[i]); /* most are gone already */
	return 0;
}

/* a passphrase file of this content and mode; path receives its name */
static void keyfile(char path[64], const char *content, size_t len, mode_t mode)
{
	strcpy(path, "/tmp/acmfs-crypt-XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	if (nr_made < sizeof(made) / sizeof(made[0]))
		strcpy(made[nr_made++], path);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void keyfile_str(char path[64], const char *content)
{
	keyfile(path, content, strlen(content), 0600);
}

/* ---- 1. config: wrap and unwrap ---- */

static void test_config_wrap_roundtrip(void **state)
{
	(void)state;
	const char *pass = "correct horse battery staple";
	uint8_t cfg[TAPE_CONFIG_BYTES];
	struct tape_codec c, o;
	enc_pool(&c, cfg, pass);
	assert_int_equal(c.version, 2);
	assert_true(c.encrypted);
	assert_false(all_zero(c.mk, 32));
	/* the layout of the doc */
	assert_memory_equal(cfg, TAPE_CONFIG_MAGIC, 8);
	assert_int_equal(tape_get_le32(cfg + 8), 2);
	assert_int_equal(tape_get_le32(cfg + 12), 1);
	assert_memory_equal(cfg + 16, c.pool_id, 16);
	assert_int_equal(tape_get_le32(cfg + 32), 1);
	/* the master key is stored wrapped only */
	assert_null(memmem(cfg, sizeof(cfg), c.mk, 32));
	assert_null(memmem(cfg, sizeof(cfg), pass, strlen(pass)));

	/* the key hierarchy, computed independently */
	uint8_t k[32];
	ref_hmac(c.mk, "acmfs v2 name", 13, k);
	assert_memory_equal(k, c.kn, 32);
	ref_hmac(c.mk, "acmfs v2 block", 14, k);
	assert_memory_equal(k, c.kb, 32);
	ref_hmac(c.mk, "acmfs v2 index", 14, k);
	assert_memory_equal(k, c.ki, 32);
	ref_hmac(c.mk, "acmfs v2 manifest", 17, k);
	assert_memory_equal(k, c.km, 32);

	/* the same passphrase: the same pool, the same keys */
	assert_int_equal(open_cfg(cfg, pass, &o), 0);
	assert_int_equal(o.version, 2);
	assert_true(o.encrypted);
	assert_memory_equal(o.pool_id, c.pool_id, 16);
	assert_memory_equal(o.mk, c.mk, 32);
	assert_memory_equal(o.kn, c.kn, 32);
	assert_memory_equal(o.kb, c.kb, 32);
	assert_memory_equal(o.ki, c.ki, 32);
	assert_memory_equal(o.km, c.km, 32);
	assert_int_equal(o.kdf.log2n, 10);
	assert_int_equal(o.kdf.r, 8);
	assert_int_equal(o.kdf.p, 1);
	tape_codec_wipe(&o);
	assert_true(codec_keys_zero(&o));

	/* a wrong passphrase, or the right one cut short: EACCES, no keys */
	memset(&o, 0x5a, sizeof(o));
	assert_int_equal(open_cfg(cfg, "correct horse battery stapler", &o), -EACCES);
	assert_true(codec_keys_zero(&o));
	memset(&o, 0x5a, sizeof(o));
	assert_int_equal(tape_config_open(cfg, sizeof(cfg), pass, strlen(pass) - 1, &o), -EACCES);
	assert_true(codec_keys_zero(&o));
	/* no passphrase for an encrypted pool */
	memset(&o, 0x5a, sizeof(o));
	assert_int_equal(open_cfg(cfg, NULL, &o), -ENOKEY);
	assert_true(codec_keys_zero(&o));

	/* another pool: another id, another master key */
	uint8_t cfg2[TAPE_CONFIG_BYTES];
	struct tape_codec c2;
	enc_pool(&c2, cfg2, pass);
	assert_memory_not_equal(c2.pool_id, c.pool_id, 16);
	assert_memory_not_equal(c2.mk, c.mk, 32);
	assert_int_equal(open_cfg(cfg2, pass, &o), 0);
	assert_memory_equal(o.mk, c2.mk, 32);
	tape_codec_wipe(&o);

	/* a plain pool opens without a passphrase */
	struct tape_codec pc;
	uint8_t pcfg[TAPE_CONFIG_BYTES];
	plain_pool(&pc, pcfg);
	assert_false(pc.encrypted);
	assert_int_equal(tape_get_le32(pcfg + 12), 0);
	assert_true(all_zero(pcfg + 32, 120 - 32));
	memset(&o, 0x5a, sizeof(o));
	assert_int_equal(open_cfg(pcfg, NULL, &o), 0);
	assert_int_equal(o.version, 2);
	assert_false(o.encrypted);
	assert_memory_equal(o.pool_id, pc.pool_id, 16);
	assert_true(codec_keys_zero(&o));
	tape_codec_wipe(&c);
	tape_codec_wipe(&c2);
}

/* ---- 2. config: KDF parameters, tampering, rewrap ---- */

static void test_config_kdf_params(void **state)
{
	(void)state;
	const char *pass = "kdf pass";
	uint8_t cfg[TAPE_CONFIG_BYTES], t[TAPE_CONFIG_BYTES];
	struct tape_codec c, o;

	/* the parameters given are the ones stored and used */
	const struct tape_kdf k2 = {11, 4, 2};
	assert_int_equal(tape_config_create(&c, pass, strlen(pass), &k2, cfg), 0);
	assert_int_equal(cfg[36], 11);
	assert_int_equal(cfg[37], 4);
	assert_int_equal(cfg[38], 2);
	assert_int_equal(cfg[39], 0);
	assert_int_equal(open_cfg(cfg, pass, &o), 0);
	assert_int_equal(o.kdf.log2n, 11);
	assert_int_equal(o.kdf.r, 4);
	assert_int_equal(o.kdf.p, 2);
	assert_memory_equal(o.mk, c.mk, 32);
	tape_codec_wipe(&o);
	tape_codec_wipe(&c);

	enc_pool(&c, cfg, pass);
	assert_int_equal(cfg[36], 10);
	assert_int_equal(cfg[37], 8);
	assert_int_equal(cfg[38], 1);

	/* log2n edited: the checksum catches it ... */
	memcpy(t, cfg, sizeof(t));
	t[36] = 11;
	assert_int_equal(open_cfg(t, pass, &o), -EBADMSG);
	/* ... and with the checksum fixed, the tag does (params are AAD) */
	cfg_fix_sha(t);
	assert_int_equal(open_cfg(t, pass, &o), -EACCES);
	assert_true(codec_keys_zero(&o));
	/* every other byte of the AAD likewise: r, p, salt, pool id, KDF id */
	static const struct {
		unsigned off;
		uint8_t val;
	} aad[] = {{37, 9}, {38, 2}, {40, 0}, {71, 0}, {16, 0}, {31, 0}};
	for (size_t i = 0; i < sizeof(aad) / sizeof(aad[0]); i++) {
		memcpy(t, cfg, sizeof(t));
		t[aad[i].off] = aad[i].val == cfg[aad[i].off] ? (uint8_t)~aad[i].val : aad[i].val;
		cfg_fix_sha(t);
		assert_int_equal(open_cfg(t, pass, &o), -EACCES);
	}
	/* the wrapped key and its tag */
	for (unsigned off = 72; off < 120; off += 15) {
		memcpy(t, cfg, sizeof(t));
		t[off] ^= 0x01;
		cfg_fix_sha(t);
		assert_int_equal(open_cfg(t, pass, &o), -EACCES);
	}
	/* a downgrade to "plain" leaves the KDF bytes: damaged, not a plain pool */
	memcpy(t, cfg, sizeof(t));
	tape_put_le32(t + 12, 0);
	cfg_fix_sha(t);
	assert_int_equal(open_cfg(t, NULL, &o), -EBADMSG);
	/* unknown flags, the reserved byte, an unknown KDF, version, length */
	memcpy(t, cfg, sizeof(t));
	tape_put_le32(t + 12, 3);
	cfg_fix_sha(t);
	assert_int_equal(open_cfg(t, pass, &o), -EBADMSG);
	memcpy(t, cfg, sizeof(t));
	t[39] = 1;
	cfg_fix_sha(t);
	assert_int_equal(open_cfg(t, pass, &o), -EBADMSG);
	memcpy(t, cfg, sizeof(t));
	tape_put_le32(t + 32, 2);
	cfg_fix_sha(t);
	assert_int_equal(open_cfg(t, pass, &o), -EPROTONOSUPPORT);
	memcpy(t, cfg, sizeof(t));
	tape_put_le32(t + 8, 3);
	cfg_fix_sha(t);
	assert_int_equal(open_cfg(t, pass, &o), -EPROTONOSUPPORT);
	assert_int_equal(tape_config_open(cfg, sizeof(cfg) - 1, pass, strlen(pass), &o), -EBADMSG);

	/* out-of-bound parameters are refused before any KDF work (a 16 GiB
	 * scrypt would not come back quickly) */
	static const struct tape_kdf bad[] = {
		{30, 8, 1}, {10, 0, 1}, {10, 8, 0}, {9, 8, 1}, {23, 1, 1},
		{10, 33, 1}, {10, 8, 17}, {22, 32, 16}, {22, 8, 1},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memcpy(t, cfg, sizeof(t));
		t[36] = bad[i].log2n;
		t[37] = bad[i].r;
		t[38] = bad[i].p;
		cfg_fix_sha(t);
		assert_int_equal(open_cfg(t, pass, &o), -EBADMSG);
		assert_true(codec_keys_zero(&o));
		/* and a writer will not create such a config */
		uint8_t n[TAPE_CONFIG_BYTES];
		struct tape_codec nc;
		assert_int_equal(tape_config_create(&nc, pass, strlen(pass), &bad[i], n), -EINVAL);
	}

	/* a new passphrase: same pool, same master key, new salt */
	uint8_t rw[TAPE_CONFIG_BYTES];
	assert_int_equal(tape_config_rewrap(&c, "new pass", 8, rw), 0);
	assert_memory_equal(rw + 16, cfg + 16, 16);
	assert_memory_equal(rw + 36, cfg + 36, 3);
	assert_memory_not_equal(rw + 40, cfg + 40, 32);
	assert_int_equal(open_cfg(rw, pass, &o), -EACCES);
	assert_true(codec_keys_zero(&o));
	assert_int_equal(open_cfg(rw, "new pass", &o), 0);
	assert_memory_equal(o.pool_id, c.pool_id, 16);
	assert_memory_equal(o.mk, c.mk, 32);
	assert_memory_equal(o.kn, c.kn, 32);
	tape_codec_wipe(&o);
	/* an empty or too long passphrase is not wrapped; a plain pool has none */
	assert_int_equal(tape_config_rewrap(&c, "", 0, rw), -EINVAL);
	assert_int_equal(tape_config_rewrap(&c, "x", TAPE_PASS_MAX + 1, rw), -EINVAL);
	struct tape_codec pc;
	plain_pool(&pc, t);
	assert_int_equal(tape_config_rewrap(&pc, "new pass", 8, rw), -EINVAL);
	tape_codec_wipe(&c);
}

/* ---- 3. passphrase files ---- */

static int pass_read(const char *path, char **pass, size_t *len, char *err, size_t errlen)
{
	*pass = NULL;
	*len = 0;
	err[0] = '\0';
	return tape_pass_read(path, pass, len, err, errlen);
}

static void expect_pass(const char *content, size_t clen, const char *want, size_t wlen)
{
	char path[64], err[256], *pass;
	size_t len;
	keyfile(path, content, clen, 0600);
	assert_int_equal(pass_read(path, &pass, &len, err, sizeof(err)), 0);
	assert_int_equal(len, wlen);
	assert_memory_equal(pass, want, wlen);
	tape_pass_free(pass, len);
	unlink(path);
}

static void expect_refused(const char *content, size_t clen, mode_t mode, int want_rc)
{
	char path[64], err[256], *pass;
	size_t len;
	keyfile(path, content, clen, mode);
	assert_int_equal(pass_read(path, &pass, &len, err, sizeof(err)), want_rc);
	assert_null(pass);
	/* the reason names the file, never its content */
	assert_non_null(strstr(err, path));
	if (clen >= 4)
		assert_null(memmem(err, strlen(err), content, 4));
	unlink(path);
}

static void test_pass_files(void **state)
{
	(void)state;
	char path[64], link[80], err[256], *pass;
	size_t len;

	expect_pass("s3cret pass\n", 12, "s3cret pass", 11);
	expect_pass("no-newline", 10, "no-newline", 10);
	expect_pass("two\n\n", 5, "two\n", 4); /* one newline only */
	expect_pass("x", 1, "x", 1);
	char *big = malloc(TAPE_PASS_MAX + 2);
	memset(big, 'k', TAPE_PASS_MAX + 1);
	big[TAPE_PASS_MAX] = '\n';
	expect_pass(big, TAPE_PASS_MAX + 1, big, TAPE_PASS_MAX);
	big[TAPE_PASS_MAX] = 'k';
	expect_refused(big, TAPE_PASS_MAX + 1, 0600, -EINVAL);
	free(big);

	expect_refused("group readable", 14, 0644, -EPERM);
	expect_refused("group readable", 14, 0640, -EPERM);
	expect_refused("other writable", 14, 0602, -EPERM);
	expect_refused("", 0, 0600, -EINVAL);
	expect_refused("\n", 1, 0600, -EINVAL);

	/* a symlink to a good file is refused */
	keyfile_str(path, "linked pass\n");
	snprintf(link, sizeof(link), "%s.lnk", path);
	assert_int_equal(symlink(path, link), 0);
	if (nr_made < sizeof(made) / sizeof(made[0]) && strlen(link) < sizeof(made[0]))
		strcpy(made[nr_made++], link);
	assert_true(pass_read(link, &pass, &len, err, sizeof(err)) < 0);
	assert_null(pass);
	unlink(link);
	/* another user's file (can be made only as root) */
	if (geteuid() == 0) {
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(pass_read(path, &pass, &len, err, sizeof(err)), -EPERM);
		assert_null(pass);
	}
	unlink(path);
	/* not there; not a regular file */
	assert_int_equal(pass_read(path, &pass, &len, err, sizeof(err)), -ENOENT);
	assert_null(pass);
	char dir[] = "/tmp/acmfs-crypt-dir-XXXXXX";
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(pass_read(dir, &pass, &len, err, sizeof(err)), -EPERM);
	assert_null(pass);
	rmdir(dir);
}

/* ---- 4. keyed block names ---- */

static void test_keyed_names(void **state)
{
	(void)state;
	uint8_t cfg[TAPE_CONFIG_BYTES], cfg2[TAPE_CONFIG_BYTES], pcfg[TAPE_CONFIG_BYTES];
	struct tape_codec a, a2, b, pc, v1;
	uint8_t *g = malloc(GRAIN);
	uint8_t sha[32], n1[32], n2[32], n3[32], n4[32], ref[32];
	fill_text(g, GRAIN, 1);
	assert_int_equal(tape_sha256(g, GRAIN, sha), 0);
	enc_pool(&a, cfg, "names");
	assert_int_equal(open_cfg(cfg, "names", &a2), 0);
	enc_pool(&b, cfg2, "names"); /* another pool, same passphrase */

	assert_int_equal(tape_codec_name(&a, g, GRAIN, n1), 0);
	assert_memory_not_equal(n1, sha, 32);
	ref_hmac(a.kn, g, GRAIN, ref); /* HMAC-SHA256(Kn, grain) */
	assert_memory_equal(n1, ref, 32);
	assert_int_equal(tape_codec_name(&a, g, GRAIN, n2), 0);
	assert_memory_equal(n1, n2, 32);
	/* a second host that opened the same config names it alike (dedup) */
	assert_int_equal(tape_codec_name(&a2, g, GRAIN, n3), 0);
	assert_memory_equal(n1, n3, 32);
	/* another pool does not */
	assert_int_equal(tape_codec_name(&b, g, GRAIN, n4), 0);
	assert_memory_not_equal(n1, n4, 32);
	assert_memory_not_equal(n4, sha, 32);
	/* one bit of content changes the name */
	g[GRAIN - 1] ^= 1;
	assert_int_equal(tape_codec_name(&a, g, GRAIN, n2), 0);
	assert_memory_not_equal(n1, n2, 32);
	g[GRAIN - 1] ^= 1;

	/* plain version 2 and version 1 pools: SHA-256 */
	plain_pool(&pc, pcfg);
	assert_int_equal(tape_codec_name(&pc, g, GRAIN, n2), 0);
	assert_memory_equal(n2, sha, 32);
	tape_codec_v1(&v1);
	assert_int_equal(tape_codec_name(&v1, g, GRAIN, n2), 0);
	assert_memory_equal(n2, sha, 32);
	tape_codec_wipe(&a);
	tape_codec_wipe(&a2);
	tape_codec_wipe(&b);
	free(g);
}

/* ---- 5. block seal / open ---- */

enum content { TEXT, RANDOM, ZERO };

static void make_grain(uint8_t *g, uint32_t grain, enum content what)
{
	if (what == TEXT)
		fill_text(g, grain, grain);
	else if (what == RANDOM)
		fill_random(g, grain);
	else
		memset(g, 0, grain);
}

static unsigned log2u(uint32_t v)
{
	unsigned s = 0;
	while ((1u << s) < v)
		s++;
	return s;
}

/* seals and opens one grain; checks flags and lengths */
static void seal_open_one(const struct tape_codec *c, struct tape_coder *k, uint32_t grain,
			  enum content what)
{
	uint8_t *raw = malloc(grain), *sealed = malloc(grain + TAPE_BLOCK_OVERHEAD);
	uint8_t *back = malloc(grain), *again = malloc(grain + TAPE_BLOCK_OVERHEAD);
	uint8_t name[32];
	uint32_t len, flags, len2, flags2;
	make_grain(raw, grain, what);
	assert_int_equal(tape_codec_name(c, raw, grain, name), 0);
	assert_int_equal(tape_block_seal(c, k, name, raw, grain, sealed, &len, &flags), 0);
	uint32_t over = c->encrypted ? TAPE_BLOCK_OVERHEAD : 0;

	assert_int_equal(flags >> TAPE_BLK_RAWSHIFT, log2u(grain));
	assert_int_equal(!!(flags & TAPE_BLK_ENCRYPTED), c->encrypted);
	assert_int_equal(flags & ~(TAPE_BLK_ZSTD | TAPE_BLK_ENCRYPTED | (0xffu << TAPE_BLK_RAWSHIFT)),
			 0);
	bool want_z = c->zlevel > 0 && what != RANDOM;
	assert_int_equal(!!(flags & TAPE_BLK_ZSTD), want_z);
	if (want_z)
		assert_true(len < grain);
	else
		assert_int_equal(len, grain + over);
	if (c->encrypted && what != ZERO) /* no stretch of the grain shows */
		for (uint32_t at = 0; at + 16 <= grain; at += grain / 4)
			assert_null(memmem(sealed, len, raw + at, 16));

	memset(back, 0xa5, grain);
	assert_int_equal(tape_block_open(c, k, name, flags, sealed, len, back, grain), 0);
	assert_memory_equal(back, raw, grain);
	assert_int_equal(tape_block_verify(c, k, name, flags, sealed, len, grain), 0);

	/* sealed again: a fresh nonce, the same plaintext */
	assert_int_equal(tape_block_seal(c, k, name, raw, grain, again, &len2, &flags2), 0);
	assert_int_equal(flags2, flags);
	if (c->encrypted)
		assert_memory_not_equal(again, sealed, TAPE_NONCE_BYTES);
	memset(back, 0xa5, grain);
	assert_int_equal(tape_block_open(c, k, name, flags2, again, len2, back, grain), 0);
	assert_memory_equal(back, raw, grain);
	free(raw);
	free(sealed);
	free(back);
	free(again);
}

static void test_block_roundtrip(void **state)
{
	(void)state;
	uint8_t cfg[TAPE_CONFIG_BYTES], pcfg[TAPE_CONFIG_BYTES];
	struct tape_codec enc, plain;
	struct tape_coder k = {0};
	enc_pool(&enc, cfg, "blocks");
	plain_pool(&plain, pcfg);
	const struct tape_codec *codecs[] = {&enc, &plain};
	static const uint32_t grains[] = {4096, 65536, 1u << 20};
	static const int levels[] = {3, 0, 19};
	for (int ci = 0; ci < 2; ci++)
		for (size_t li = 0; li < sizeof(levels) / sizeof(levels[0]); li++)
			for (size_t gi = 0; gi < sizeof(grains) / sizeof(grains[0]); gi++)
				for (int w = TEXT; w <= ZERO; w++) {
					struct tape_codec c = *codecs[ci];
					c.zlevel = levels[li];
					if (levels[li] == 19 && grains[gi] > 65536)
						continue; /* slow, nothing new */
					seal_open_one(&c, &k, grains[gi], (enum content)w);
				}

	/* a grain must be a power of two in [4 KiB, 16 MiB]; version 1 seals nothing */
	uint8_t *raw = calloc(1, 2 * GRAIN), *out = malloc(2 * GRAIN + TAPE_BLOCK_OVERHEAD);
	uint8_t name[32] = {0};
	uint32_t len, flags;
	assert_int_equal(tape_block_seal(&enc, &k, name, raw, 6000, out, &len, &flags), -EINVAL);
	assert_int_equal(tape_block_seal(&enc, &k, name, raw, 2048, out, &len, &flags), -EINVAL);
	struct tape_codec v1;
	tape_codec_v1(&v1);
	assert_int_equal(tape_block_seal(&v1, &k, name, raw, GRAIN, out, &len, &flags), -EINVAL);
	free(raw);
	free(out);
	tape_coder_fini(&k);
	tape_codec_wipe(&enc);
}

/* ---- 6a. blocks: tampering ---- */

struct sealed {
	uint8_t raw[GRAIN], name[32], blk[GRAIN + TAPE_BLOCK_OVERHEAD];
	uint32_t len, flags;
};

static void seal_grain(const struct tape_codec *c, struct tape_coder *k, enum content what,
		       struct sealed *s)
{
	make_grain(s->raw, GRAIN, what);
	assert_int_equal(tape_codec_name(c, s->raw, GRAIN, s->name), 0);
	assert_int_equal(tape_block_seal(c, k, s->name, s->raw, GRAIN, s->blk, &s->len, &s->flags),
			 0);
}

/* opens s with one thing changed; out is left for the caller to look at */
enum tamper { T_BYTE, T_NAME, T_ZSTD, T_ENC, T_RAWLEN, T_RAWLEN_FLAGS, T_SHORT };

static int open_tampered(const struct tape_codec *c, struct tape_coder *k, const struct sealed *s,
			 enum tamper how, uint32_t at, uint8_t *out)
{
	uint8_t blk[GRAIN + TAPE_BLOCK_OVERHEAD], name[32];
	uint32_t flags = s->flags, len = s->len, rawlen = GRAIN;
	memcpy(blk, s->blk, s->len);
	memcpy(name, s->name, 32);
	switch (how) {
	case T_BYTE:
		blk[at] ^= 0x04;
		break;
	case T_NAME:
		name[at % 32] ^= 0x80;
		break;
	case T_ZSTD:
		flags ^= TAPE_BLK_ZSTD;
		break;
	case T_ENC:
		flags ^= TAPE_BLK_ENCRYPTED;
		break;
	case T_RAWLEN: /* the length alone: the flags no longer say it */
		rawlen = 2 * GRAIN;
		break;
	case T_RAWLEN_FLAGS: /* both, consistently: only the AAD knows */
		rawlen = 2 * GRAIN;
		flags += 1u << TAPE_BLK_RAWSHIFT;
		break;
	case T_SHORT:
		len = at;
		break;
	}
	memset(out, 0xa5, 2 * GRAIN);
	return tape_block_open(c, k, name, flags, blk, len, out, rawlen);
}

static const char *const tamper_name[] = {"byte flipped", "name changed", "zstd flag toggled",
					   "encrypted flag toggled", "raw length changed",
					   "raw length and flags changed", "block cut short"};

struct tcase {
	enum tamper how;
	uint32_t at;
};

/* every kind of change, at several places of nonce, ciphertext and tag;
 * returns how many left (most of) the plaintext in out, if check_output */
static unsigned for_each_tamper(const struct tape_codec *c, struct tape_coder *k,
			    const struct sealed *s, bool check_output, uint8_t out[2 * GRAIN])
{
	uint32_t n = s->len;
	const uint32_t at[] = {0, 5, 11, 12, 13, n / 2, n - 17, n - 16, n - 9, n - 1};
	struct tcase cases[32];
	int nc = 0;
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++)
		cases[nc++] = (struct tcase){T_BYTE, at[i]};
	cases[nc++] = (struct tcase){T_NAME, 0};
	cases[nc++] = (struct tcase){T_NAME, 31};
	cases[nc++] = (struct tcase){T_ZSTD, 0};
	cases[nc++] = (struct tcase){T_ENC, 0};
	cases[nc++] = (struct tcase){T_RAWLEN, 0};
	cases[nc++] = (struct tcase){T_RAWLEN_FLAGS, 0};
	cases[nc++] = (struct tcase){T_SHORT, n - 1};
	cases[nc++] = (struct tcase){T_SHORT, TAPE_BLOCK_OVERHEAD - 1};
	cases[nc++] = (struct tcase){T_SHORT, 0};
	unsigned leaks = 0;
	for (int i = 0; i < nc; i++) {
		int rc = open_tampered(c, k, s, cases[i].how, cases[i].at, out);
		if (rc != -EIO)
			print_error("%s (at %u; block %u bytes, flags %#x): rc %d\n",
				    tamper_name[cases[i].how], cases[i].at, s->len, s->flags, rc);
		assert_int_equal(rc, -EIO);
		if (!check_output)
			continue;
		/* "never partial bytes": no unauthenticated plaintext handed out
		 * (a fill byte matches 1/256 of random bytes by chance) */
		unsigned same = 0;
		for (uint32_t b = 0; b < GRAIN; b++)
			same += out[b] == s->raw[b];
		if (same >= GRAIN / 8) {
			print_error("%s (at %u; block %u bytes, flags %#x): rc %d but %u of %u "
				    "output bytes are the plaintext's\n",
				    tamper_name[cases[i].how], cases[i].at, s->len, s->flags, rc,
				    same, GRAIN);
			leaks++;
		}
	}
	return leaks;
}

static void test_block_tamper(void **state)
{
	(void)state;
	uint8_t cfg[TAPE_CONFIG_BYTES];
	struct tape_codec c, other;
	struct tape_coder k = {0};
	struct sealed *s = malloc(sizeof(*s));
	uint8_t *out = malloc(2 * GRAIN);
	enc_pool(&c, cfg, "tamper");
	for (int w = TEXT; w <= RANDOM; w++) {
		seal_grain(&c, &k, (enum content)w, s);
		assert_int_equal(!!(s->flags & TAPE_BLK_ZSTD), w == TEXT);
		for_each_tamper(&c, &k, s, false, out);
	}
	/* a block moved under another grain's name, or read in another pool */
	struct sealed *s2 = malloc(sizeof(*s2));
	seal_grain(&c, &k, TEXT, s);
	seal_grain(&c, &k, RANDOM, s2);
	assert_int_equal(tape_block_open(&c, &k, s2->name, s->flags, s->blk, s->len, out, GRAIN),
			 -EIO);
	enc_pool(&other, cfg, "tamper");
	assert_int_equal(tape_block_open(&other, &k, s->name, s->flags, s->blk, s->len, out, GRAIN),
			 -EIO);

	/* plain pools: the SHA-256 name catches a changed byte, raw or zstd */
	struct tape_codec pc;
	plain_pool(&pc, cfg);
	for (int w = TEXT; w <= RANDOM; w++) {
		seal_grain(&pc, &k, (enum content)w, s);
		uint32_t at[] = {0, s->len / 2, s->len - 1};
		for (size_t i = 0; i < 3; i++) {
			s->blk[at[i]] ^= 0x10;
			assert_int_equal(tape_block_open(&pc, &k, s->name, s->flags, s->blk, s->len,
							 out, GRAIN),
					 -EIO);
			s->blk[at[i]] ^= 0x10;
		}
		assert_int_equal(tape_block_open(&pc, &k, s->name, s->flags | TAPE_BLK_ENCRYPTED,
						 s->blk, s->len, out, GRAIN),
				 -EIO);
		assert_int_equal(tape_block_open(&pc, &k, s->name, s->flags, s->blk, s->len, out,
						 GRAIN),
				 0);
		assert_memory_equal(out, s->raw, GRAIN);
		/* nor does an encrypted pool take a plain block */
		assert_int_equal(tape_block_open(&c, &k, s->name, s->flags, s->blk, s->len, out,
						 GRAIN),
				 -EIO);
	}
	free(out);
	free(s);
	free(s2);
	tape_coder_fini(&k);
	tape_codec_wipe(&c);
	tape_codec_wipe(&other);
}

/* A failed open must not hand out the plaintext (codec.h: "never partial
 * bytes"): with the tag or the AAD changed, the ciphertext still decrypts to
 * the exact grain, so the output buffer must not receive it unchecked. */
struct leak_fx {
	struct tape_codec c;
	struct tape_coder k;
	struct sealed s;
	uint8_t out[2 * GRAIN];
};

static int leak_setup(void **state)
{
	struct leak_fx *f = calloc(1, sizeof(*f));
	uint8_t cfg[TAPE_CONFIG_BYTES];
	if (!f || tape_config_create(&f->c, "leak", 4, &FAST, cfg))
		return -1;
	f->c.zlevel = 3;
	*state = f;
	return 0;
}

static int leak_teardown(void **state)
{
	struct leak_fx *f = *state;
	tape_coder_fini(&f->k);
	tape_codec_wipe(&f->c);
	free(f);
	return 0;
}

static void test_block_tamper_no_plaintext(void **state)
{
	struct leak_fx *f = *state;
	unsigned leaks = 0;
	for (int w = TEXT; w <= RANDOM; w++) {
		seal_grain(&f->c, &f->k, (enum content)w, &f->s);
		leaks += for_each_tamper(&f->c, &f->k, &f->s, true, f->out);
	}
	assert_int_equal(leaks, 0);
}

/* ---- 6b. pack indexes ---- */

struct pack {
	uint8_t id[16];
	uint8_t *buf;
	size_t len;
	uint64_t index_off;
	struct tape_pack_entry e[3];
	uint8_t raw[3][GRAIN];
};

static void pack_build(const struct tape_codec *c, struct tape_coder *k, struct pack *p)
{
	static const enum content what[3] = {TEXT, RANDOM, TEXT};
	fill_random(p->id, 16);
	p->buf = malloc(TAPE_PACK_DATA_OFF + 3 * (GRAIN + TAPE_BLOCK_OVERHEAD) +
			tape_pack_index_bytes(c, 3) + TAPE_PACK_TRAILER_BYTES);
	uint64_t off = tape_pack_start(p->buf, p->id, c);
	assert_int_equal(off, TAPE_PACK_DATA_OFF);
	for (int i = 0; i < 3; i++) {
		make_grain(p->raw[i], GRAIN, what[i]);
		p->raw[i][0] = (uint8_t)i; /* the two text grains differ */
		assert_int_equal(tape_codec_name(c, p->raw[i], GRAIN, p->e[i].hash), 0);
		assert_int_equal(tape_block_seal(c, k, p->e[i].hash, p->raw[i], GRAIN, p->buf + off,
						 &p->e[i].len, &p->e[i].flags),
				 0);
		p->e[i].off = off;
		off += p->e[i].len;
	}
	p->index_off = off;
	long n = tape_pack_finish(c, p->id, p->e, 3, off, p->buf + off);
	assert_int_equal(n, (long)(tape_pack_index_bytes(c, 3) + TAPE_PACK_TRAILER_BYTES));
	p->len = off + (size_t)n;
}

/* trailer decode + index read, on a copy of the stored index */
static int pack_read(const struct tape_codec *c, const uint8_t id[16], const uint8_t *buf,
		     size_t len, const struct tape_pack_trailer *override,
		     struct tape_pack_entry out[3])
{
	struct tape_pack_trailer t;
	int rc = tape_pack_trailer_decode(buf + len - TAPE_PACK_TRAILER_BYTES,
					  TAPE_PACK_TRAILER_BYTES, len, &t);
	if (rc)
		return rc;
	if (t.nr_blocks != 3)
		return -EUCLEAN;
	uint8_t *ix = malloc(t.index_len);
	memcpy(ix, buf + t.index_off, t.index_len);
	if (override)
		t = *override;
	rc = tape_pack_index_read(c, id, ix, t.index_len, &t, out);
	free(ix);
	return rc;
}

static void pack_fix_sha(uint8_t *buf, size_t len, size_t ilen)
{
	uint8_t *trailer = buf + len - TAPE_PACK_TRAILER_BYTES;
	assert_int_equal(tape_sha256(trailer - ilen, ilen, trailer + 24), 0);
}

static void test_pack_index_aead(void **state)
{
	(void)state;
	uint8_t cfg[TAPE_CONFIG_BYTES], pcfg[TAPE_CONFIG_BYTES];
	struct tape_codec c, other, pc;
	struct tape_coder k = {0};
	struct tape_pack_entry out[3];
	struct pack *p = malloc(sizeof(*p)), *pp = malloc(sizeof(*pp));
	enc_pool(&c, cfg, "packs");
	enc_pool(&other, cfg, "packs");
	plain_pool(&pc, pcfg);
	pack_build(&c, &k, p);
	size_t ilen = tape_pack_index_bytes(&c, 3);
	assert_int_equal(ilen, 3 * TAPE_PACK_ENTRY_BYTES + TAPE_TAG_BYTES);

	/* header and trailer say version 2, encrypted */
	uint8_t id[16];
	assert_int_equal(tape_pack_header_decode(p->buf, p->len, id), 0);
	assert_memory_equal(id, p->id, 16);
	assert_int_equal(tape_get_le32(p->buf + 8), 2);
	assert_int_equal(tape_get_le32(p->buf + 12), 1);
	struct tape_pack_trailer t;
	assert_int_equal(tape_pack_trailer_decode(p->buf + p->len - TAPE_PACK_TRAILER_BYTES,
						  TAPE_PACK_TRAILER_BYTES, p->len, &t),
			 0);
	assert_int_equal(t.version, 2);
	assert_int_equal(t.flags, 1);
	assert_int_equal(t.index_off, p->index_off);
	assert_int_equal(t.index_len, ilen);

	/* round trip; the blocks open through the entries */
	assert_int_equal(pack_read(&c, p->id, p->buf, p->len, NULL, out), 0);
	assert_memory_equal(out, p->e, sizeof(out));
	uint8_t *g = malloc(GRAIN);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(tape_block_open(&c, &k, out[i].hash, out[i].flags,
						 p->buf + out[i].off, out[i].len, g, GRAIN),
				 0);
		assert_memory_equal(g, p->raw[i], GRAIN);
		/* the stored index shows no block name */
		assert_null(memmem(p->buf + p->index_off, ilen, p->e[i].hash, 8));
	}

	/* a changed byte of the stored index (names, offsets, lengths, flags,
	 * tag) with the trailer's checksum fixed up: the tag catches it */
	uint8_t *b = malloc(p->len);
	const size_t at[] = {0, 31, 32, 40, 44, 47, 100, 143, 144, 159};
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		memcpy(b, p->buf, p->len);
		b[p->index_off + at[i]] ^= 0x01;
		assert_int_equal(pack_read(&c, p->id, b, p->len, NULL, out), -EBADMSG);
		pack_fix_sha(b, p->len, ilen);
		assert_int_equal(pack_read(&c, p->id, b, p->len, NULL, out), -EBADMSG);
	}
	/* the index of another pack, another pool's, or at another offset */
	uint8_t id2[16];
	memcpy(id2, p->id, 16);
	id2[15] ^= 1;
	assert_int_equal(pack_read(&c, id2, p->buf, p->len, NULL, out), -EBADMSG);
	assert_int_equal(pack_read(&other, p->id, p->buf, p->len, NULL, out), -EBADMSG);
	struct tape_pack_trailer moved = t;
	moved.index_off += 1; /* entries still fit: only the AAD says otherwise */
	assert_int_equal(pack_read(&c, p->id, p->buf, p->len, &moved, out), -EBADMSG);
	/* a pool reads packs of its own kind only */
	assert_int_equal(pack_read(&pc, p->id, p->buf, p->len, NULL, out), -EBADMSG);
	assert_int_equal(pack_read(NULL, p->id, p->buf, p->len, NULL, out), -EBADMSG);

	/* a plain version 2 pack: no tag, round trip; the encrypted pool refuses it */
	pack_build(&pc, &k, pp);
	assert_int_equal(tape_pack_index_bytes(&pc, 3), 3 * TAPE_PACK_ENTRY_BYTES);
	assert_int_equal(tape_get_le32(pp->buf + 8), 2);
	assert_int_equal(tape_get_le32(pp->buf + 12), 0);
	assert_int_equal(pack_read(&pc, pp->id, pp->buf, pp->len, NULL, out), 0);
	assert_memory_equal(out, pp->e, sizeof(out));
	assert_int_equal(pack_read(&c, pp->id, pp->buf, pp->len, NULL, out), -EBADMSG);
	assert_int_equal(pack_read(NULL, pp->id, pp->buf, pp->len, NULL, out), -EBADMSG);
	free(b);
	free(g);
	free(p->buf);
	free(pp->buf);
	free(p);
	free(pp);
	tape_coder_fini(&k);
	tape_codec_wipe(&c);
	tape_codec_wipe(&other);
}

/* ---- 6c/d. manifests ---- */

#define MKEY "manifests/v/00000000000000000003-0123456789abcdef.mf"

struct mf {
	struct tape_manifest m;
	uint8_t packs[1][16];
	struct tape_ref refs[4];
};

/* volume "v", version 3, 4 grains (the third all zero), one pack */
static void mf_init(struct mf *f, uint32_t ref_len)
{
	memset(f, 0, sizeof(*f));
	strcpy(f->m.volume, "v");
	strcpy(f->m.host, "0123:hostA");
	f->m.version = 3;
	f->m.size_bytes = 3 * GRAIN + 100;
	f->m.grain_bytes = GRAIN;
	f->m.date = 1700000003;
	f->m.nr_grains = 4;
	f->m.blocks_total = 3;
	f->m.nr_packs = 1;
	memset(f->packs[0], 0xc7, 16);
	f->m.packs = f->packs;
	f->m.refs = f->refs;
	uint64_t off = TAPE_PACK_DATA_OFF;
	for (int g = 0; g < 4; g++) {
		if (g == 2) {
			f->refs[g].pack = TAPE_ZERO_PACK;
			continue;
		}
		f->refs[g].pack = 0;
		f->refs[g].len = ref_len;
		f->refs[g].off = off;
		memset(f->refs[g].prefix, 0x30 + g, 8);
		off += ref_len;
	}
}

/* decodes a copy (decode works in place); releases m unless keep */
static int mf_decode(const uint8_t *buf, size_t len, const struct tape_codec *c, const char *key,
		     struct tape_manifest *m)
{
	uint8_t *b = malloc(len);
	memcpy(b, buf, len);
	struct tape_manifest tmp;
	int rc = tape_manifest_decode(b, len, c, key, m ? m : &tmp);
	if (!rc && !m)
		tape_manifest_release(&tmp);
	free(b);
	return rc;
}

static void mf_fix_sha(uint8_t *buf, size_t len)
{
	assert_int_equal(tape_sha256(buf, len - 32, buf + len - 32), 0);
}

static void mf_check_equal(const struct tape_manifest *d, const struct mf *f)
{
	assert_string_equal(d->volume, f->m.volume);
	assert_string_equal(d->host, f->m.host);
	assert_string_equal(d->parent, f->m.parent);
	assert_int_equal(d->version, f->m.version);
	assert_int_equal(d->size_bytes, f->m.size_bytes);
	assert_int_equal(d->grain_bytes, f->m.grain_bytes);
	assert_int_equal(d->date, f->m.date);
	assert_int_equal(d->nr_grains, f->m.nr_grains);
	assert_int_equal(d->blocks_total, f->m.blocks_total);
	assert_int_equal(d->nr_packs, f->m.nr_packs);
	assert_memory_equal(d->packs, f->packs, sizeof(f->packs));
	assert_memory_equal(d->refs, f->refs, sizeof(f->refs));
}

/* flips one byte at off, fixes the checksum, expects -EBADMSG */
static void mf_expect_tamper(const uint8_t *buf, size_t len, size_t off,
			     const struct tape_codec *c)
{
	uint8_t *b = malloc(len);
	memcpy(b, buf, len);
	b[off] ^= 0x01;
	mf_fix_sha(b, len);
	int rc = mf_decode(b, len, c, MKEY, NULL);
	if (rc != -EBADMSG)
		print_error("manifest byte %zu of %zu changed: rc %d\n", off, len, rc);
	assert_int_equal(rc, -EBADMSG);
	free(b);
}

static void test_manifest_aead(void **state)
{
	(void)state;
	uint8_t cfg[TAPE_CONFIG_BYTES], pcfg[TAPE_CONFIG_BYTES];
	struct tape_codec c, c2, other, pc, v1;
	struct mf *f = malloc(sizeof(*f));
	struct tape_manifest d;
	uint8_t *buf, *buf2;
	size_t len, len2;
	enc_pool(&c, cfg, "manifests");
	assert_int_equal(open_cfg(cfg, "manifests", &c2), 0);
	enc_pool(&other, cfg, "manifests");
	plain_pool(&pc, pcfg);
	tape_codec_v1(&v1);

	/* encrypted: round trip, also through a codec opened from the config */
	mf_init(f, 1000);
	assert_int_equal(tape_manifest_encode(&f->m, &c, MKEY, &buf, &len), 0);
	size_t hdr = TAPE_MANIFEST_FIXED2 + 1 + strlen(f->m.host);
	size_t body = 16 + 4 * TAPE_REF_BYTES;
	assert_int_equal(len, hdr + body + TAPE_TAG_BYTES + 32);
	assert_int_equal(tape_get_le32(buf + 8), 2);
	assert_int_equal(tape_get_le32(buf + 12), hdr);
	assert_int_equal(tape_get_le16(buf + 70), 1);
	assert_memory_equal(buf + 72, c.pool_id, 16);
	assert_false(all_zero(buf + 88, 16));
	assert_null(memmem(buf, len, f->packs[0], 16)); /* the body is secret */
	assert_null(memmem(buf, len, f->refs[0].prefix, 8));
	assert_int_equal(mf_decode(buf, len, &c, MKEY, &d), 0);
	assert_int_equal(d.fmt, 2);
	assert_int_equal(d.flags, 1);
	assert_memory_equal(d.pool_id, c.pool_id, 16);
	mf_check_equal(&d, f);
	tape_manifest_release(&d);
	assert_int_equal(mf_decode(buf, len, &c2, MKEY, &d), 0);
	mf_check_equal(&d, f);
	tape_manifest_release(&d);
	/* a new salt on every write */
	assert_int_equal(tape_manifest_encode(&f->m, &c, MKEY, &buf2, &len2), 0);
	assert_int_equal(len2, len);
	assert_memory_not_equal(buf2 + 88, buf + 88, 16);
	assert_memory_not_equal(buf2 + hdr, buf + hdr, body);
	free(buf2);

	/* the header is authenticated: history version, size (still 4 grains),
	 * date, counts, names, pool id, salt; every flip, checksum fixed up */
	const size_t hoff[] = {16, 40, 41, 47, 48, 55, 72, 87, 88, 103, 104, 105, 110};
	for (size_t i = 0; i < sizeof(hoff) / sizeof(hoff[0]); i++)
		mf_expect_tamper(buf, len, hoff[i], &c);
	/* the body: pack table, references, tag */
	const size_t boff[] = {hdr, hdr + 15, hdr + 16, hdr + 20, hdr + 24, hdr + 39,
			       hdr + body - 1, hdr + body, hdr + body + 15};
	for (size_t i = 0; i < sizeof(boff) / sizeof(boff[0]); i++)
		mf_expect_tamper(buf, len, boff[i], &c);
	/* the object key is authenticated: moved, replayed under another version */
	assert_int_equal(mf_decode(buf, len, &c, "manifests/v/00000000000000000004-0123456789abcdef.mf",
				   NULL),
			 -EBADMSG);
	assert_int_equal(mf_decode(buf, len, &c, "manifests/v/00000000000000000003-0123456789abcdee.mf",
				   NULL),
			 -EBADMSG);
	assert_int_equal(mf_decode(buf, len, &c, "manifests/w/00000000000000000003-0123456789abcdef.mf",
				   NULL),
			 -EBADMSG);
	assert_true(mf_decode(buf, len, &c, NULL, NULL) != 0);
	/* another pool's codec, a plain pool, a version 1 reader */
	assert_int_equal(mf_decode(buf, len, &other, MKEY, NULL), -EBADMSG);
	assert_int_equal(mf_decode(buf, len, &pc, MKEY, NULL), -EBADMSG);
	assert_int_equal(mf_decode(buf, len, NULL, MKEY, NULL), -EPROTONOSUPPORT);
	assert_int_equal(mf_decode(buf, len, &v1, MKEY, NULL), -EPROTONOSUPPORT);
	/* another pool's codec with the pool id made to match: the keys differ */
	memcpy(other.pool_id, c.pool_id, 16);
	assert_int_equal(mf_decode(buf, len, &other, MKEY, NULL), -EBADMSG);
	/* a downgrade to "plain" (flags bit cleared, checksum fixed) */
	memcpy(buf2 = malloc(len), buf, len);
	tape_put_le16(buf2 + 70, 0);
	mf_fix_sha(buf2, len);
	assert_int_equal(mf_decode(buf2, len, &c, MKEY, NULL), -EBADMSG);
	assert_int_equal(mf_decode(buf2, len, &pc, MKEY, NULL), -EBADMSG);
	free(buf2);
	free(buf);

	/* plain version 2: round trip, no salt, no tag; pools do not mix */
	assert_int_equal(tape_manifest_encode(&f->m, &pc, MKEY, &buf, &len), 0);
	assert_int_equal(len, hdr + body + 32);
	assert_int_equal(tape_get_le32(buf + 8), 2);
	assert_int_equal(tape_get_le16(buf + 70), 0);
	assert_memory_equal(buf + 72, pc.pool_id, 16);
	assert_true(all_zero(buf + 88, 16));
	assert_int_equal(mf_decode(buf, len, &pc, MKEY, &d), 0);
	assert_int_equal(d.fmt, 2);
	assert_int_equal(d.flags, 0);
	mf_check_equal(&d, f);
	tape_manifest_release(&d);
	assert_int_equal(mf_decode(buf, len, &c, MKEY, NULL), -EBADMSG);
	struct tape_codec pc2;
	plain_pool(&pc2, pcfg);
	assert_int_equal(mf_decode(buf, len, &pc2, MKEY, NULL), -EBADMSG);
	assert_int_equal(mf_decode(buf, len, NULL, MKEY, NULL), -EPROTONOSUPPORT);
	free(buf);

	/* version 1: still decodes without a codec; no version 2 pool takes it */
	mf_init(f, GRAIN);
	assert_int_equal(tape_manifest_encode(&f->m, NULL, MKEY, &buf, &len), 0);
	assert_int_equal(tape_get_le32(buf + 8), 1);
	assert_int_equal(mf_decode(buf, len, NULL, MKEY, &d), 0);
	assert_int_equal(d.fmt, 1);
	mf_check_equal(&d, f);
	tape_manifest_release(&d);
	assert_int_equal(mf_decode(buf, len, &v1, NULL, NULL), 0);
	assert_int_equal(mf_decode(buf, len, &c, MKEY, NULL), -EBADMSG);
	assert_int_equal(mf_decode(buf, len, &pc, MKEY, NULL), -EBADMSG);
	free(buf);
	free(f);
	tape_codec_wipe(&c);
	tape_codec_wipe(&c2);
	tape_codec_wipe(&other);
}

/* ---- 7. an encrypted pool over the mem backend ---- */

#define NGRAINS 3u
#define MARKER	"ACMFS-CRYPT-MARKER:"

struct img {
	uint8_t data[NGRAINS * GRAIN]; /* marker text, random, zero */
};

static int img_read(void *arg, uint64_t g, void *buf)
{
	struct img *v = arg;
	memcpy(buf, v->data + g * GRAIN, GRAIN);
	return 0;
}

static void img_init(struct img *v)
{
	const size_t ml = strlen(MARKER);
	for (size_t off = 0; off < GRAIN; off += ml)
		memcpy(v->data + off, MARKER, off + ml <= GRAIN ? ml : GRAIN - off);
	fill_random(v->data + GRAIN, GRAIN);
	memset(v->data + 2 * GRAIN, 0, GRAIN);
}

static int img_upload_err(struct tier_pool *p, struct img *v, const char *volume,
			  uint64_t version, struct tier_upload_res *res, char *err, size_t errlen)
{
	atomic_uint_fast64_t done = 0;
	struct tier_upload_req req = {
		.volume = volume,
		.version = version,
		.size_bytes = sizeof(v->data),
		.grain_bytes = GRAIN,
		.date = 1700000000,
		.host = "0123:cryptohost",
		.src = {.read_grain = img_read, .arg = v},
		.done_grains = &done,
	};
	memset(res, 0, sizeof(*res));
	err[0] = '\0';
	return T->upload(p, &req, res, err, errlen);
}

static int img_upload(struct tier_pool *p, struct img *v, const char *volume, uint64_t version,
		      struct tier_upload_res *res)
{
	char err[256];
	int rc = img_upload_err(p, v, volume, version, res, err, sizeof(err));
	if (rc)
		print_error("upload: %d %s\n", rc, err);
	return rc;
}

static void img_check(struct tier_pool *p, const char *manifest, const struct img *v)
{
	struct tier_image *im;
	uint8_t *buf = malloc(sizeof(v->data));
	assert_int_equal(T->image_open(p, manifest, NULL, &im), 0);
	memset(buf, 0xa5, sizeof(v->data));
	assert_int_equal(T->image_read(im, buf, sizeof(v->data), 0), (ssize_t)sizeof(v->data));
	assert_memory_equal(buf, v->data, sizeof(v->data));
	T->image_close(im);
	free(buf);
}

/* every object of the store, name and bytes */
struct objs {
	char (*key)[256];
	uint8_t **data;
	size_t *len;
	size_t n;
};

static int objs_add(void *arg, const struct tape_obj_info *oi)
{
	struct objs *o = arg;
	o->key = realloc(o->key, (o->n + 1) * sizeof(*o->key));
	o->data = realloc(o->data, (o->n + 1) * sizeof(*o->data));
	o->len = realloc(o->len, (o->n + 1) * sizeof(*o->len));
	snprintf(o->key[o->n], sizeof(o->key[o->n]), "%s", oi->key);
	o->len[o->n] = oi->size_bytes;
	o->data[o->n] = NULL;
	o->n++;
	return 0;
}

static void objs_load(struct tape_backend *be, struct objs *o)
{
	memset(o, 0, sizeof(*o));
	assert_int_equal(be->ops->list(be, "", objs_add, o), 0);
	for (size_t i = 0; i < o->n; i++) {
		o->data[i] = malloc(o->len[i] ? o->len[i] : 1);
		assert_int_equal(be->ops->get(be, o->key[i], 0, o->data[i], o->len[i]),
				 (ssize_t)o->len[i]);
	}
}

static void objs_free(struct objs *o)
{
	for (size_t i = 0; i < o->n; i++)
		free(o->data[i]);
	free(o->key);
	free(o->data);
	free(o->len);
}

static size_t objs_count(const struct objs *o, const char *prefix)
{
	size_t n = 0;
	for (size_t i = 0; i < o->n; i++)
		n += !strncmp(o->key[i], prefix, strlen(prefix));
	return n;
}

/* asserts that needle is in no object's name or bytes */
static void objs_lacks(const struct objs *o, const void *needle, size_t len, const char *what)
{
	for (size_t i = 0; i < o->n; i++) {
		bool in_key = memmem(o->key[i], strlen(o->key[i]), needle, len) != NULL;
		bool in_data = memmem(o->data[i], o->len[i], needle, len) != NULL;
		if (in_key || in_data)
			print_error("%s found in %s of %s\n", what, in_key ? "the name" : "the bytes",
				    o->key[i]);
		assert_false(in_key || in_data);
	}
}

static size_t count_under(struct tape_backend *be, const char *prefix)
{
	struct objs o;
	objs_load(be, &o);
	size_t n = objs_count(&o, prefix);
	objs_free(&o);
	return n;
}

/* A second host opening be with opts is refused: -EACCES, err says why (msg,
 * if given). The open may succeed and leave the config to the first
 * operation (a mount's open does no I/O, tape/pool.h pool_ready): then an
 * upload and an image open are refused, and nothing is written. */
static void expect_open_refused(struct tape_backend *be, const char *opts, struct img *v,
				const char *manifest, const char *msg)
{
	struct tape_backend *b2 = tape_backend_mem_share(be);
	struct tier_pool *p;
	struct tier_image *im;
	struct tier_upload_res res;
	char err[256] = "";
	int rc = tape_pool_open_backend(b2, opts, &p, err, sizeof(err));
	if (rc) {
		b2->ops->close(b2);
	} else {
		size_t before = count_under(be, "");
		rc = img_upload_err(p, v, "refused", 1, &res, err, sizeof(err));
		assert_int_equal(count_under(be, ""), before);
		assert_int_equal(T->image_open(p, manifest, NULL, &im), -EACCES);
		T->pool_close(p);
	}
	if (rc != -EACCES)
		print_error("open with \"%s\": %d (%s)\n", opts, rc, err);
	assert_int_equal(rc, -EACCES);
	if (msg)
		assert_non_null(strstr(err, msg));
}

static char *opts_key(char *out, size_t n, const char *path, const char *more)
{
	snprintf(out, n, "key=%s pack_kb=256 threads=2 %s", path, more);
	return out;
}

static void test_pool_encrypted(void **state)
{
	(void)state;
	char ka[64], kb[64], opts[256], err[256];
	const char *pass_a = "pool passphrase A", *pass_b = "a different one";
	char content[64];
	snprintf(content, sizeof(content), "%s\n", pass_a);
	keyfile_str(ka, content);
	snprintf(content, sizeof(content), "%s\n", pass_b);
	keyfile_str(kb, content);
	struct img *v = malloc(sizeof(*v));
	img_init(v);

	struct tape_backend *be = tape_backend_mem_new(), *be2;
	struct tier_pool *p, *p2;
	assert_int_equal(tape_pool_create_backend(be, opts_key(opts, sizeof(opts), ka,
							      "kdf_log2n=10"),
						  &p, err, sizeof(err)),
			 0);
	struct tier_upload_res res;
	assert_int_equal(img_upload(p, v, "v", 1, &res), 0);
	assert_int_equal(res.blocks_total, 2);
	assert_int_equal(res.blocks_new, 2);

	/* look at every object the store holds */
	struct objs o;
	objs_load(be, &o);
	assert_true(objs_count(&o, "packs/") >= 1);
	assert_int_equal(objs_count(&o, "manifests/"), 1);
	assert_int_equal(objs_count(&o, TAPE_CONFIG_KEY), 1);
	for (size_t i = 0; i < o.n; i++)
		if (!strcmp(o.key[i], TAPE_CONFIG_KEY)) {
			assert_int_equal(o.len[i], TAPE_CONFIG_BYTES);
			assert_int_equal(tape_get_le32(o.data[i] + 12), 1); /* encrypted */
			assert_int_equal(o.data[i][36], 10);		    /* kdf_log2n */
		}
	objs_lacks(&o, MARKER, strlen(MARKER), "the marker");
	objs_lacks(&o, pass_a, strlen(pass_a), "the passphrase");
	for (uint32_t at = 0; at + 16 <= GRAIN; at += 1020)
		objs_lacks(&o, v->data + GRAIN + at, 16, "the random grain");
	for (int g = 0; g < 2; g++) {
		uint8_t sha[32];
		char hex[65];
		assert_int_equal(tape_sha256(v->data + g * GRAIN, GRAIN, sha), 0);
		tape_hex(sha, 32, hex);
		objs_lacks(&o, sha, 32, "a grain's SHA-256");
		objs_lacks(&o, sha, 8, "a grain's SHA-256 prefix");
		objs_lacks(&o, hex, 64, "a grain's SHA-256 in hex");
		objs_lacks(&o, hex, 16, "a grain's SHA-256 prefix in hex");
	}
	uint8_t cfg_before[TAPE_CONFIG_BYTES];
	assert_int_equal(be->ops->get(be, TAPE_CONFIG_KEY, 0, cfg_before, TAPE_CONFIG_BYTES),
			 TAPE_CONFIG_BYTES);
	objs_free(&o);

	/* the exact bytes back; names are keyed */
	img_check(p, res.manifest, v);
	struct tier_image *im;
	struct tier_manifest_info x = {.volume = "v", .version = 1, .size_bytes = sizeof(v->data),
				       .grain_bytes = GRAIN};
	assert_int_equal(T->image_open(p, res.manifest, &x, &im), 0);
	uint8_t h[32], n[32], sha[32];
	assert_int_equal(T->image_grain_hash(im, 0, h), 0);
	assert_int_equal(T->image_block_name(im, v->data, GRAIN, n), 0);
	assert_memory_equal(h, n, 32);
	assert_int_equal(tape_sha256(v->data, GRAIN, sha), 0);
	assert_memory_not_equal(h, sha, 32);
	assert_int_equal(T->image_grain_hash(im, 2, h), 1);
	uint64_t bad = 99;
	assert_int_equal(T->image_verify(im, &bad), 0);
	assert_int_equal(bad, 0);
	T->image_close(im);
	x.version = 2;
	assert_int_equal(T->image_open(p, res.manifest, &x, &im), -EIO);

	/* another host with the same key joins: same names, nothing new stored */
	be2 = tape_backend_mem_share(be);
	assert_int_equal(tape_pool_open_backend(be2, opts_key(opts, sizeof(opts), ka, ""), &p2, err,
						sizeof(err)),
			 0);
	struct tier_upload_res res2;
	assert_int_equal(img_upload(p2, v, "w", 1, &res2), 0);
	assert_int_equal(res2.blocks_total, 2);
	assert_int_equal(res2.blocks_new, 0);
	img_check(p2, res.manifest, v);
	img_check(p, res2.manifest, v);
	T->pool_close(p2);

	/* a wrong key, or none, is refused; the config is left alone */
	expect_open_refused(be, opts_key(opts, sizeof(opts), kb, ""), v, res.manifest,
			    "wrong key for pool");
	expect_open_refused(be, "pack_kb=256 threads=2", v, res.manifest, NULL);
	expect_open_refused(be, "encrypt=none", v, res.manifest, NULL);
	be2 = tape_backend_mem_share(be);
	err[0] = '\0';
	assert_int_equal(tape_pool_create_backend(be2, opts_key(opts, sizeof(opts), kb,
							       "kdf_log2n=10"),
						  &p2, err, sizeof(err)),
			 -EACCES);
	assert_non_null(strstr(err, "wrong key for pool"));
	assert_null(strstr(err, pass_b));
	assert_int_equal(tape_pool_create_backend(be2, "encrypt=none", &p2, err, sizeof(err)),
			 -EACCES);
	be2->ops->close(be2);
	uint8_t cfg_after[TAPE_CONFIG_BYTES];
	assert_int_equal(be->ops->get(be, TAPE_CONFIG_KEY, 0, cfg_after, TAPE_CONFIG_BYTES),
			 TAPE_CONFIG_BYTES);
	assert_memory_equal(cfg_after, cfg_before, TAPE_CONFIG_BYTES);

	T->pool_close(p); /* closes be */
	unlink(ka);
	unlink(kb);
	free(v);
}

/* pool passwd: the old passphrase stops working, the new one reads the data */
static void test_pool_passwd(void **state)
{
	(void)state;
	char ka[64], kb[64], opts[256], err[256];
	keyfile_str(ka, "old passphrase\n");
	keyfile_str(kb, "new passphrase\n");
	struct img *v = malloc(sizeof(*v));
	img_init(v);
	struct tape_backend *be = tape_backend_mem_new(), *be2;
	struct tier_pool *p, *p2;
	assert_int_equal(tape_pool_create_backend(be, opts_key(opts, sizeof(opts), ka,
							      "kdf_log2n=10"),
						  &p, err, sizeof(err)),
			 0);
	struct tier_upload_res res;
	assert_int_equal(img_upload(p, v, "v", 1, &res), 0);
	uint8_t before[TAPE_CONFIG_BYTES], after[TAPE_CONFIG_BYTES];
	assert_int_equal(be->ops->get(be, TAPE_CONFIG_KEY, 0, before, sizeof(before)),
			 TAPE_CONFIG_BYTES);
	assert_non_null(T->pool_passwd);
	assert_int_equal(T->pool_passwd(p, kb, err, sizeof(err)), 0);
	assert_int_equal(be->ops->get(be, TAPE_CONFIG_KEY, 0, after, sizeof(after)),
			 TAPE_CONFIG_BYTES);
	assert_memory_equal(after + 16, before + 16, 16); /* the same pool */
	assert_memory_not_equal(after + 40, before + 40, 32);
	/* the running pool goes on */
	img_check(p, res.manifest, v);

	expect_open_refused(be, opts_key(opts, sizeof(opts), ka, ""), v, res.manifest,
			    "wrong key for pool");
	be2 = tape_backend_mem_share(be);
	assert_int_equal(tape_pool_open_backend(be2, opts_key(opts, sizeof(opts), kb, ""), &p2, err,
						sizeof(err)),
			 0);
	img_check(p2, res.manifest, v);
	struct tier_upload_res res2;
	assert_int_equal(img_upload(p2, v, "v", 2, &res2), 0);
	assert_int_equal(res2.blocks_new, 0);
	T->pool_close(p2);
	T->pool_close(p);
	unlink(ka);
	unlink(kb);
	free(v);
}

/* A manifest moved to another key (another version of its volume) or put
 * into another pool under its own key is not authentic there: the reader is
 * refused, with EIO (tier.h image_open, docs/tape-format.md "What binds
 * what": "... replayed under another key or version ... is EIO"). */
struct replay_fx {
	char ka[64];
	struct img v;
	struct tier_pool *p, *po;
	uint8_t *mf, *mo;
};

static int replay_setup(void **state)
{
	struct replay_fx *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	keyfile_str(f->ka, "replay pass\n");
	img_init(&f->v);
	*state = f;
	return 0;
}

static int replay_teardown(void **state)
{
	struct replay_fx *f = *state;
	if (f->p)
		T->pool_close(f->p);
	if (f->po)
		T->pool_close(f->po);
	free(f->mf);
	free(f->mo);
	unlink(f->ka);
	free(f);
	return 0;
}

static uint8_t *obj_get(struct tape_backend *be, const char *key, size_t *len)
{
	struct tape_obj_info oi;
	assert_int_equal(be->ops->head(be, key, &oi), 0);
	uint8_t *b = malloc(oi.size_bytes);
	assert_int_equal(be->ops->get(be, key, 0, b, oi.size_bytes), (ssize_t)oi.size_bytes);
	*len = oi.size_bytes;
	return b;
}

static void test_pool_manifest_replay(void **state)
{
	struct replay_fx *f = *state;
	char opts[256], err[256];
	struct tape_backend *be = tape_backend_mem_new(), *bo = tape_backend_mem_new();
	opts_key(opts, sizeof(opts), f->ka, "kdf_log2n=10");
	assert_int_equal(tape_pool_create_backend(be, opts, &f->p, err, sizeof(err)), 0);
	assert_int_equal(tape_pool_create_backend(bo, opts, &f->po, err, sizeof(err)), 0);
	struct tier_upload_res res, reso;
	assert_int_equal(img_upload(f->p, &f->v, "v", 1, &res), 0);
	assert_int_equal(img_upload(f->po, &f->v, "v", 1, &reso), 0);
	size_t len, leno;
	f->mf = obj_get(be, res.manifest, &len);
	f->mo = obj_get(bo, reso.manifest, &leno);

	/* replayed as version 2 of the same volume */
	char key2[256];
	strcpy(key2, res.manifest);
	char *ver = strstr(key2, "00000000000000000001-");
	assert_non_null(ver);
	ver[19] = '2';
	assert_int_equal(be->ops->put(be, key2, f->mf, len), 0);
	struct tier_image *im = NULL;
	struct tier_manifest_info x = {.volume = "v", .version = 2};
	int rc_replay_x = T->image_open(f->p, key2, &x, &im);
	int rc_replay = T->image_open(f->p, key2, NULL, &im);
	assert_int_equal(be->ops->del(be, key2), 0);
	/* another pool's manifest over this pool's, under the same key */
	assert_int_equal(be->ops->put(be, res.manifest, f->mo, leno), 0);
	int rc_swap = T->image_open(f->p, res.manifest, NULL, &im);
	/* put back, it reads again */
	assert_int_equal(be->ops->put(be, res.manifest, f->mf, len), 0);
	img_check(f->p, res.manifest, &f->v);

	/* refused, first of all */
	assert_true(rc_replay_x < 0 && rc_replay < 0 && rc_swap < 0);
	/* and with the documented errno */
	if (rc_replay_x != -EIO || rc_replay != -EIO || rc_swap != -EIO)
		print_error("image_open: replayed (with expect) %d, replayed %d, other pool's %d; "
			    "want -EIO (%d)\n",
			    rc_replay_x, rc_replay, rc_swap, -EIO);
	assert_int_equal(rc_replay_x, -EIO);
	assert_int_equal(rc_replay, -EIO);
	assert_int_equal(rc_swap, -EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_wrap_roundtrip),
		cmocka_unit_test(test_config_kdf_params),
		cmocka_unit_test(test_pass_files),
		cmocka_unit_test(test_keyed_names),
		cmocka_unit_test(test_block_roundtrip),
		cmocka_unit_test(test_block_tamper),
		cmocka_unit_test_setup_teardown(test_block_tamper_no_plaintext, leak_setup,
						leak_teardown),
		cmocka_unit_test(test_pack_index_aead),
		cmocka_unit_test(test_manifest_aead),
		cmocka_unit_test(test_pool_encrypted),
		cmocka_unit_test(test_pool_passwd),
		cmocka_unit_test_setup_teardown(test_pool_manifest_replay, replay_setup,
						replay_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, remove_made);
}
