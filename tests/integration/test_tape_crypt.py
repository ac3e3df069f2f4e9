"""Tape format 2 through a mount (issue 18): encrypted, authenticated,
compressed pools, on a file:// directory and on a bucket of the Ceph RADOS
Gateway (the `rgw` fixture).

What users rely on: a pool created with key=FILE shows nothing of the data
to whoever reads the bucket (no plaintext, no plain SHA-256 of a block);
its histories read back exact through tape.img and restore -m TAPE; a second
store with the same passphrase joins it and shares its dedup, a wrong one is
refused and changes nothing; pool passwd changes the passphrase; whoever can
write the bucket cannot swap, replay or edit an object into wrong data (EIO
and a log line, verify reports damage); restore-from-pool.py, following only
docs/tape-format.md, rebuilds an image with the passphrase and refuses a
wrong one. The pool's objects are read independently of acmfs: a directory,
or signed requests straight to RGW.

Every wait is bounded (deadlines scale with ACMFS_TEST_TIME_SCALE).
"""

import errno
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO
from test_tape import GRAIN, FilePool, S3Pool, assert_same, ctl_settled, rfp, wait_job

MiB = 1 << 20
SIZE = 8 * MiB
NGRAINS = SIZE // GRAIN
MARKER = b"ACMFS-PLAINTEXT-MARKER-7f3a"
RFP = REPO / "tape" / "tools" / "restore-from-pool.py"
PASS1 = "first passphrase of the vault\n"
PASS2 = "second, better passphrase\n"


def write_key(path, text):
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


class CryptPool:
    """An encrypted pool `vault` (file:// directory or RGW bucket), listed
    and fetched without acmfs."""

    def __init__(self, kind, tmp_path, request):
        self.kind = kind
        self.tmp = tmp_path
        self.env = dict(os.environ)
        self.key1 = write_key(tmp_path / "vault.key", PASS1)
        if kind == "file":
            self.dir = tmp_path / "pool"
            self.dir.mkdir()
            self.url = f"file://{self.dir}"
            self.endpoint = ""
        else:
            rgw = request.getfixturevalue("rgw")
            self.rgw = rgw       # what test_tape.S3Pool's listing and fetches use
            self.prefix = "crypt-" + uuid.uuid4().hex[:12]
            self.url = f"s3://{rgw.bucket}/{self.prefix}"
            self.endpoint = f"endpoint={rgw} region={rgw.region} path_style=1"
            self.env.update(AWS_ACCESS_KEY_ID=rgw.access_key,
                            AWS_SECRET_ACCESS_KEY=rgw.secret_key)

    def create_line(self, key, name="vault", extra=""):
        return " ".join(w for w in (f"pool create {name} {self.url}", self.endpoint,
                                    f"key={key}" if key else "", extra) if w)

    def create_in(self, m, key=None, name="vault"):
        m.ctl(self.create_line(key or self.key1, name))

    # -- the objects, read without acmfs ------------------------------------

    _direct = S3Pool._direct

    def keys(self):
        return FilePool.keys(self) if self.kind == "file" else S3Pool.keys(self)

    def data_keys(self):
        """Every object but the locks (which come and go with each job)."""
        return [k for k in self.keys() if not k.startswith("locks/")]

    def get(self, key):
        return (FilePool if self.kind == "file" else S3Pool).get(self, key)

    def put(self, key, data):
        (FilePool if self.kind == "file" else S3Pool).put(self, key, data)

    def snapshot(self):
        """The pool as a directory (restore-from-pool.py's input)."""
        if self.kind == "file":
            return self.dir
        d = self.tmp / f"snap-{uuid.uuid4().hex[:6]}"
        for k in self.data_keys():
            p = d / k
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(self.get(k))
        return d

    def state(self, key_file=None):
        """(pool, {manifest key: parsed}, {pid: {offset: (len, name, flags)}})
        by the documented format, with the passphrase file key_file."""
        d = self.snapshot()
        pk = rfp.open_pool(str(d), str(key_file or self.key1))
        man, packs = {}, {}
        for k in self.data_keys():
            if k.startswith("manifests/") and k.endswith(".mf"):
                man[k] = rfp.parse_manifest((Path(d) / k).read_bytes(), key=k, pool=pk)
            elif k.startswith("packs/") and k.endswith(".pack"):
                packs[k[6:-5]] = rfp.read_pack_index(str(Path(d) / k), pool=pk)
        return pk, man, packs


@pytest.fixture(params=["file", "rgw"])
def pool(request, tmp_path):
    return CryptPool(request.param, tmp_path, request)


def store(mount_factory, pool, name="main", vol="db", size="8M", create=True):
    m = mount_factory(name=name, opts=("-o", f"host={name}"), env=pool.env)
    if create:
        pool.create_in(m)
    m.create_volume(vol, size)
    m.ctl(f"tapepolicy {vol} pool=vault")
    return m


def write_vol(m, data, vol="db", off=0):
    fd = os.open(m.vol(vol, "data"), os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def vol_backup(m, vol="db"):
    """A -m TAPE backup of vol: (version, info) once it has succeeded."""
    r = m.parse_reply(m.ctl("backup -m TAPE", vol))
    v = int(r["version"])
    info = wait_job_of(m, vol, v)
    assert info["tape_status"] == "succeeded", (info, m.vol(vol, "log").read_text()[-3000:])
    return v, info


def wait_job_of(m, vol, v):
    if vol == "db":
        return wait_job(m, v)
    import test_tape
    saved = test_tape.VOL
    test_tape.VOL = vol
    try:
        return wait_job(m, v)
    finally:
        test_tape.VOL = saved


def tape_img(m, v, vol="db"):
    return m.vol(vol, "history", str(v), "tape.img").read_bytes()


def mixed_image(seed):
    """Grains of three kinds: text (compressible, holding MARKER), random,
    zero; returns (image, text grains, random grains)."""
    rng = random.Random(seed)
    buf = bytearray(SIZE)
    text, rand = [], []
    words = [b"backup", b"history", b"generation", b"tracking", b"volume", b"restore"]
    for g in range(NGRAINS):
        kind = g % 4
        if kind == 0:
            continue
        if kind == 1:
            line = b" ".join(rng.choice(words) for _ in range(8)) + b" " + MARKER + b"\n"
            grain = (line * (GRAIN // len(line) + 1))[:GRAIN]
            text.append(g)
        else:
            grain = rng.randbytes(GRAIN)
            rand.append(g)
        buf[g * GRAIN:(g + 1) * GRAIN] = grain
    return bytes(buf), text, rand


def grain(img, g):
    return img[g * GRAIN:(g + 1) * GRAIN]


def pool_bytes(pool):
    return {k: pool.get(k) for k in pool.data_keys()}


def ctl_err(m, line, vol=None):
    err, reply = ctl_settled(m, line, vol) if vol else m.ctl_err(line)
    return err, reply.strip()


# --------------------------------------------------------------------- tests

def test_encrypted_pool_reveals_nothing_and_reads_back_exact(pool, mount_factory):
    m = store(mount_factory, pool)
    img, text, rand = mixed_image(1)
    write_vol(m, img)
    v, info = vol_backup(m)
    assert int(info["blocks"]) == len(text) + len(rand)

    objs = pool_bytes(pool)
    assert "config" in objs and any(k.startswith("packs/") for k in objs) \
        and any(k.startswith("manifests/") for k in objs), sorted(objs)
    plain_names = {hashlib.sha256(grain(img, g)).digest() for g in text + rand}
    probes = [MARKER, MARKER.lower()] + [grain(img, g)[100:164] for g in rand[:20]] \
        + [grain(img, g)[:64] for g in text[:5]]
    names = "\n".join(objs)
    for k, data in objs.items():
        for p in probes:
            assert p not in data, f"{k} holds plaintext of the volume"
        for h in plain_names:
            assert h not in data and h[:8] not in data, f"{k} holds a block's plain SHA-256"
            assert h.hex()[:16] not in k
    for h in plain_names:
        assert h.hex()[:16] not in names

    # what the user reads: exact, twice (cold and from the cache)
    assert_same(tape_img(m, v), img, "tape.img of the encrypted pool")
    assert_same(tape_img(m, v), img, "tape.img read again")
    # restore -m TAPE after the volume changed
    rng = random.Random(11)
    for g in rng.sample(range(NGRAINS), 9):
        write_vol(m, rng.randbytes(GRAIN), off=g * GRAIN)
    r = m.parse_reply(ctl_settled(m, f"restore -v {v} -m TAPE", "db")[1])
    assert r["media"] == "TAPE", r
    assert_same(m.vol("db", "data").read_bytes(), img, "the volume after restore -m TAPE")
    # and after a remount (the keys unwrapped anew from the passphrase file)
    m.remount()
    assert_same(tape_img(m, v), img, "tape.img after a remount")


def test_compression_shrinks_text_and_stores_random_raw(pool, mount_factory):
    m = store(mount_factory, pool)
    img, text, rand = mixed_image(2)
    write_vol(m, img)
    v, _ = vol_backup(m)
    pk, man, packs = pool.state()
    assert pk.version == 2 and pk.encrypted
    (mf,) = man.values()
    stored = {}
    for g, (pi, length, off, _) in enumerate(mf["refs"]):
        if pi == rfp.ZERO_PACK:
            continue
        ent = packs[mf["packs"][pi]][off]
        assert ent[0] == length
        stored[g] = ent
    assert sorted(stored) == sorted(text + rand), "a zero grain was stored or a grain lost"
    for g in text:
        length, _, flags = stored[g]
        assert flags & 1, f"text grain {g} was not compressed"
        assert length < GRAIN // 8, f"text grain {g}: {length} bytes stored"
    for g in rand:
        length, _, flags = stored[g]
        assert not flags & 1, f"random grain {g} stored compressed (it does not shrink)"
        assert length == GRAIN + 12 + 16, f"random grain {g}: {length} bytes stored"
    pack_bytes = sum(len(pool.get(f"packs/{p}.pack")) for p in packs)
    # random data costs < 1% more than raw, text an eighth of it at most
    assert pack_bytes <= len(rand) * GRAIN * 1.01 + len(text) * GRAIN / 8 + 64 * 1024, \
        (pack_bytes, len(rand), len(text))
    assert_same(tape_img(m, v), img, "tape.img of compressed blocks")


def test_second_store_joins_with_the_passphrase_and_shares_dedup(pool, mount_factory):
    a = store(mount_factory, pool, "hosta")
    img, text, rand = mixed_image(3)
    write_vol(a, img)
    va, _ = vol_backup(a)
    packs_before = [k for k in pool.data_keys() if k.startswith("packs/")]

    # a new store (a second host, or the site rebuilt): a copy of the key file
    b = mount_factory(name="hostb", opts=("-o", "host=hostb"), env=pool.env)
    keyb = write_key(pool.tmp / "copy-of-vault.key", PASS1)
    pool.create_in(b, key=keyb)
    b.create_volume("db", "8M")
    b.ctl("tapepolicy db pool=vault")
    write_vol(b, img)
    new0 = b.metric("acmfs_tape_blocks_new_total")
    vb, _ = vol_backup(b)
    assert b.metric("acmfs_tape_blocks_new_total") == new0, \
        "the joined store uploaded blocks the pool already held"
    assert [k for k in pool.data_keys() if k.startswith("packs/")] == packs_before
    assert_same(tape_img(b, vb), img, "hostb's tape.img")
    # the site rebuilt: a new, empty store takes hosta's histories back
    ida = json.loads(a.path("status.json").read_text())["host"]["id"]
    a.stop()
    c = mount_factory(name="rebuilt", env=pool.env)
    pool.create_in(c, key=keyb)
    r = c.parse_reply(c.ctl(f"pool import vault host={ida}"))
    assert r["histories"] == "1", r
    assert_same(tape_img(c, va), img, "the rebuilt store's import of hosta's history")


def test_wrong_passphrase_is_eacces_and_changes_nothing(pool, mount_factory, tmp_path):
    a = store(mount_factory, pool, "hosta")
    write_vol(a, random.Random(4).randbytes(SIZE))
    vol_backup(a)
    before = pool_bytes(pool)

    b = mount_factory(name="hostb", opts=("-o", "host=hostb"), env=pool.env)
    wrong = write_key(tmp_path / "wrong.key", "not the passphrase\n")
    status0 = b.path("status.json").read_text()
    err, reply = ctl_err(b, pool.create_line(wrong))
    assert err == errno.EACCES, reply
    assert "wrong key for pool vault" in reply
    assert "not the passphrase" not in reply
    assert "not the passphrase" not in b.stderr_text()
    assert b.path("status.json").read_text() == status0, "a pool was added"
    assert pool_bytes(pool) == before, "the pool changed"
    # and nothing is half-made: the right passphrase works afterwards
    pool.create_in(b)
    b.create_volume("db", "8M")


def test_create_refusals(pool, mount_factory, tmp_path):
    m = mount_factory(name="main", env=pool.env)
    status0 = m.path("status.json").read_text()
    if pool.kind == "rgw":
        # an s3:// pool without a key, unless encrypt=none says so
        err, reply = ctl_err(m, pool.create_line(None))
        assert err == errno.EINVAL, reply
        assert "key=" in reply and "encrypt=none" in reply, reply
    loose = tmp_path / "loose.key"
    loose.write_text(PASS1)
    os.chmod(loose, 0o644)
    err, reply = ctl_err(m, pool.create_line(loose))
    assert err in (errno.EACCES, errno.EPERM), reply
    assert PASS1.strip() not in reply
    empty = write_key(tmp_path / "empty.key", "")
    err, reply = ctl_err(m, pool.create_line(empty))
    assert err == errno.EINVAL, reply
    err, reply = ctl_err(m, pool.create_line(pool.key1, extra="compress=zstd:30"))
    assert err == errno.EINVAL, reply
    err, reply = ctl_err(m, pool.create_line(None, extra="key=relative.key"))
    assert err == errno.EINVAL, reply
    assert m.path("status.json").read_text() == status0
    assert pool.data_keys() == [], "a refused create wrote to the pool"


def test_pool_passwd_rewraps_the_key(pool, mount_factory, tmp_path):
    a = store(mount_factory, pool, "hosta")
    img = random.Random(5).randbytes(SIZE)
    write_vol(a, img)
    v, _ = vol_backup(a)
    packs_before = {k: pool.get(k) for k in pool.data_keys() if k.startswith("packs/")}
    key2 = write_key(tmp_path / "new.key", PASS2)
    err, reply = ctl_err(a, f"pool passwd vault key={key2}")
    assert err == 0, reply
    assert PASS2.strip() not in reply and PASS2.strip() not in a.stderr_text()
    # the same data keys: nothing but the config was rewritten
    assert {k: pool.get(k) for k in packs_before} == packs_before
    # the old passphrase no longer opens the pool, the new one does
    b = mount_factory(name="hostb", opts=("-o", "host=hostb"), env=pool.env)
    err, reply = ctl_err(b, pool.create_line(pool.key1))
    assert err == errno.EACCES and "wrong key for pool vault" in reply, reply
    pool.create_in(b, key=key2)
    # the store that changed it keeps working across a remount, the old file gone
    pool.key1.unlink()
    a.remount()
    assert_same(tape_img(a, v), img, "tape.img after pool passwd and a remount")
    v2, _ = vol_backup(a)
    assert_same(tape_img(a, v2), img, "a backup after pool passwd")
    # a missing or unsafe new key file changes nothing
    err, reply = ctl_err(a, f"pool passwd vault key={tmp_path / 'absent.key'}")
    assert err != 0, reply
    err, reply = ctl_err(a, "pool passwd vault key=relative.key")
    assert err == errno.EINVAL, reply
    pk, _, _ = pool.state(key2)
    assert pk.encrypted and pk.keys


# ------------------------------------------------------------------ tampering

def two_volumes(pool, mount_factory):
    """A store with volumes db (two tape histories) and other (one), all on
    the same size and grain; returns (m, {(vol, v): image}, manifest keys)."""
    m = store(mount_factory, pool)
    m.create_volume("other", "8M")
    m.ctl("tapepolicy other pool=vault")
    imgs = {}
    for vol, seed in (("db", 6), ("other", 7)):
        img = random.Random(seed).randbytes(SIZE)
        write_vol(m, img, vol)
        v, _ = vol_backup(m, vol)
        imgs[(vol, v)] = img
    img2 = bytearray(imgs[next(iter(imgs))])
    img2[GRAIN * 5:GRAIN * 6] = random.Random(8).randbytes(GRAIN)
    write_vol(m, bytes(img2))
    v, _ = vol_backup(m)
    imgs[("db", v)] = bytes(img2)
    mfs = {}
    for k in pool.data_keys():
        if k.startswith("manifests/"):
            vol = k.split("/")[1]
            mfs[(vol, rfp.parse_manifest(pool.get(k), key=k,
                                         pool=pool.state()[0])["version"])] = k
    assert sorted(mfs) == sorted(imgs)
    return m, imgs, mfs


def assert_eio(m, vol, v, what):
    p = m.vol(vol, "history", str(v), "tape.img")
    try:
        data = p.read_bytes()
    except OSError as e:
        assert e.errno == errno.EIO, f"{what}: {e}"
        return
    raise AssertionError(f"{what}: tape.img read {len(data)} bytes, expected EIO")


def test_swapped_and_replayed_manifests_read_eio(pool, mount_factory):
    m, imgs, mfs = two_volumes(pool, mount_factory)
    (v1, v2) = sorted(v for vol, v in imgs if vol == "db")
    (vo,) = [v for vol, v in imgs if vol == "other"]
    db1, db2, oth = mfs[("db", v1)], mfs[("db", v2)], mfs[("other", vo)]
    orig = {k: pool.get(k) for k in (db1, db2, oth)}
    m.stop()

    # another volume's manifest in place of db's newest; an older one of db
    for key, data, what in ((db2, orig[oth], "other's manifest under db's key"),
                            (db2, orig[db1], "db's older manifest replayed"),
                            (db2, orig[db2][:-1000], "db's manifest truncated")):
        pool.put(key, data)
        m.start()
        assert_eio(m, "db", v2, what)
        assert "cannot open tape image of version" in log_text_of(m, "db")
        assert re.search(r"manifest.*refused: .*tampered with or damaged", m.stderr_text()), \
            m.stderr_tail()
        err, reply = ctl_settled(m, f"verify -v {v2} -m TAPE", "db")
        assert err == errno.EIO, reply
        # everything not touched still reads exact
        assert_same(tape_img(m, v1), imgs[("db", v1)], "db's untouched history")
        assert_same(tape_img(m, vo, "other"), imgs[("other", vo)], "other's history")
        m.stop()
        pool.put(key, orig[db2])
    m.start()
    assert_same(tape_img(m, v2), imgs[("db", v2)], "db's manifest put back")


def log_text_of(m, vol):
    try:
        return m.vol(vol, "log").read_text()
    except OSError as e:
        return f"(log unreadable: {e})"


def flip(data, at):
    b = bytearray(data)
    b[at] ^= 0x40
    return bytes(b)


def test_byte_flips_anywhere_read_eio_never_wrong_data(pool, mount_factory):
    m = store(mount_factory, pool)
    img = random.Random(9).randbytes(SIZE)
    write_vol(m, img)
    v, _ = vol_backup(m)
    pk, man, packs = pool.state()
    ((mkey, mf),) = man.items()
    (pid,) = packs
    pkey = f"packs/{pid}.pack"
    pack = pool.get(pkey)
    mdata = pool.get(mkey)
    first = min(packs[pid])
    index_off = int.from_bytes(pack[-64 + 16:-64 + 24], "little")
    cases = [
        (pkey, pack, 20, "the pack header (pack id)"),
        (pkey, pack, first + 3, "a block's nonce"),
        (pkey, pack, first + 12 + 1000, "a block's ciphertext"),
        (pkey, pack, index_off + 40, "the pack index"),
        (pkey, pack, len(pack) - 64 + 12, "the trailer's block count"),
        (pkey, pack, len(pack) - 64 + 30, "the trailer's index checksum"),
        (mkey, mdata, 16, "the manifest header"),
        (mkey, mdata, 104 + 8, "the manifest body"),
        (mkey, mdata, len(mdata) - 40, "the manifest tag"),
    ]
    m.stop()
    for key, orig, at, what in cases:
        pool.put(key, flip(orig, at))
        m.start()
        p = m.vol("db", "history", str(v), "tape.img")
        try:
            with open(p, "rb") as f:
                got = f.read()
        except OSError as e:
            assert e.errno == errno.EIO, f"{what}: {e}"
        else:
            # reads never fetch a pack's header (what is authenticated is
            # rebuilt from its key): a damaged one may read right, never wrong
            assert "header" in what, f"{what}: tape.img read {len(got)} bytes, expected EIO"
            assert_same(got, img, f"tape.img with {what} damaged")
        err, reply = ctl_settled(m, f"verify -v {v} -m TAPE", "db")
        assert err == errno.EIO, f"{what}: verify said {reply!r}"
        assert hist_info_of(m, v)["verify"].startswith("damaged"), what
        m.stop()
        pool.put(key, orig)
    m.start()
    assert_same(tape_img(m, v), img, "tape.img with every object restored")
    err, reply = ctl_settled(m, f"verify -v {v} -m TAPE", "db")
    assert err == 0, reply


def hist_info_of(m, v):
    return m.read_info(f"volumes/db/history/{v}/info")


def test_a_block_moved_to_another_grain_reads_eio(pool, mount_factory):
    """Two blocks of one pack swapped in place (same stored length): each
    still authenticates as a block, but not as the grain its manifest names."""
    m = store(mount_factory, pool)
    img = random.Random(10).randbytes(SIZE)
    write_vol(m, img)
    v, _ = vol_backup(m)
    _, man, packs = pool.state()
    ((_, mf),) = man.items()
    pi, la, oa, _ = mf["refs"][3]
    pj, lb, ob, _ = mf["refs"][4]
    assert pi == pj and la == lb
    pkey = f"packs/{mf['packs'][pi]}.pack"
    pack = bytearray(pool.get(pkey))
    a, b = bytes(pack[oa:oa + la]), bytes(pack[ob:ob + lb])
    pack[oa:oa + la], pack[ob:ob + lb] = b, a
    m.stop()
    pool.put(pkey, bytes(pack))
    m.start()
    fd = os.open(m.vol("db", "history", str(v), "tape.img"), os.O_RDONLY)
    try:
        for g in (3, 4):
            with pytest.raises(OSError) as e:
                os.pread(fd, GRAIN, g * GRAIN)
            assert e.value.errno == errno.EIO
        assert os.pread(fd, GRAIN, 7 * GRAIN) == grain(img, 7)
    finally:
        os.close(fd)


# ------------------------------------------------------- restore-from-pool.py

def run_rfp(*args):
    return subprocess.run([sys.executable, str(RFP), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_restore_from_pool_needs_the_passphrase(pool, mount_factory, tmp_path):
    m = store(mount_factory, pool)
    img, _, _ = mixed_image(12)
    write_vol(m, img)
    v, _ = vol_backup(m)
    (mkey,) = [k for k in pool.data_keys() if k.startswith("manifests/")]
    snap = pool.snapshot()
    out = tmp_path / "out.img"

    r = run_rfp(snap, mkey, out)
    assert r.returncode == 2 and "--key" in r.stderr, r.stderr
    wrong = write_key(tmp_path / "wrong.key", "nope\n")
    r = run_rfp("--key", wrong, snap, mkey, out)
    assert r.returncode == 2 and "wrong key for pool" in r.stderr, r.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.img.*"))

    r = run_rfp("--key", pool.key1, snap, mkey, out)
    assert r.returncode == 0, r.stderr
    assert_same(out.read_bytes(), img, "restore-from-pool.py's image")
    assert os.stat(out).st_mode & 0o077 == 0, "a decrypted image readable by others"
    r = run_rfp("--key", pool.key1, snap, "--list")
    assert r.returncode == 0 and f"version={v}" in r.stdout, r.stdout + r.stderr
