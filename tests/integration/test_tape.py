"""Integration tests of the tape tier through a mount (issue 5): -m BOTH and
-m TAPE backups, tape histories and tape.img, incremental copies, retention,
histdel + gc, verified reads, faults, pool import and restore from tape.

Every test runs twice (parametrized): on the store's default `file://` pool and
on an S3 pool on a real S3 engine, the conftest `rgw` (Ceph RADOS Gateway on
loopback, scripts/ceph-rgw), through the SigV4-checking, fault-injecting proxy
of s3util.py (which checks signatures with the RGW user's secret; RGW checks
them again). The pool's objects are inspected independently of acmfs: a
file:// pool is a directory; S3 objects are listed and fetched straight from
RGW with signed requests of s3util.py, or with awscli, and both are parsed
with tape/tools/restore-from-pool.py, which follows docs/tape-format.md and
nothing else.

Every wait is bounded (deadlines scale with ACMFS_TEST_TIME_SCALE).
"""

import errno
import json
import hashlib
import hmac
import importlib.util
import os
import random
import re
import sqlite3
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import REPO, TIME_SCALE
from s3util import Faults, make_proxy, signed_request

KiB = 1 << 10
MiB = 1 << 20
GRAIN = 64 * KiB
VOL = "db"
JOB_TIMEOUT = 120 * TIME_SCALE

_spec = importlib.util.spec_from_file_location(
    "restore_from_pool", REPO / "tape" / "tools" / "restore-from-pool.py")
rfp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rfp)


# --------------------------------------------------------------------- pools

def block_names(packs):
    """Every block name of pool_state()'s packs (index entries of version 1
    are (length, name), of version 2 (stored length, name, flags))."""
    return {e[1] for p in packs.values() for e in p.values()}


class FilePool:
    """The store's default pool, file://STORE/tape."""
    kind = "file"

    def __init__(self, m):
        self.m = m
        self.name = "default"

    keyfile = None  # a plain (format 2, compressed) pool

    @property
    def dir(self):
        return self.m.store / "tape"

    def keys(self):
        out = []
        for d, dirs, files in os.walk(self.dir):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            for f in files:
                if not f.startswith("."):
                    out.append(os.path.relpath(os.path.join(d, f), self.dir))
        return sorted(out)

    def get(self, key):
        return (self.dir / key).read_bytes()

    def put(self, key, data):
        p = self.dir / key
        tmp = p.with_name(p.name + ".rewrite")
        tmp.write_bytes(data)
        os.chmod(tmp, os.stat(p).st_mode & 0o777)
        os.replace(tmp, p)

    def create_in(self, m, name):
        """Create this pool under `name` in another store (pool import)."""
        m.ctl(f"pool create {name} file://{self.dir}")


class S3Pool:
    """s3://BUCKET/<unique prefix> on RGW through the proxy; inspected
    directly (signed requests straight to RGW)."""
    kind = "s3"

    def __init__(self, m, rgw, proxy, faults):
        self.m = m
        self.rgw = rgw
        self.faults = faults
        self.name = "s3p"
        self.prefix = "t-" + uuid.uuid4().hex[:12]
        self.url = f"s3://{rgw.bucket}/{self.prefix}"
        # an s3:// pool is encrypted (the default a user gets): every tape
        # test on S3 runs through the format 2 crypto path
        self.keyfile = m.store.parent / f"{self.prefix}.key"
        self.keyfile.write_text("correct horse battery staple\n")
        os.chmod(self.keyfile, 0o600)
        self.opts = (f"endpoint=http://127.0.0.1:{proxy.server_address[1]} "
                     f"region={rgw.region} path_style=1 key={self.keyfile}")

    def create_in(self, m, name=None):
        m.ctl(f"pool create {name or self.name} {self.url} {self.opts}")

    def _direct(self, method, path, data=None, query=""):
        p = f"/{self.rgw.bucket}" + (f"/{path}" if path else "")
        status, body = signed_request(self.rgw.port, method, p, self.rgw.access_key,
                                      self.rgw.secret_key, self.rgw.region,
                                      query=query, body=data or b"")
        if status // 100 != 2:
            raise AssertionError(f"{method} {p}?{query} -> {status}: {body[:300]!r}")
        return body

    def keys(self):
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": self.prefix + "/"}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(self._direct("GET", "", query=urllib.parse.urlencode(q)))
            ns = {"s": root.tag[1:root.tag.index("}")]} if root.tag.startswith("{") else {}
            pfx = "s:" if ns else ""
            for c in root.findall(f"{pfx}Contents", ns):
                out.append(c.find(f"{pfx}Key", ns).text[len(self.prefix) + 1:])
            trunc = root.find(f"{pfx}IsTruncated", ns)
            if trunc is None or trunc.text != "true":
                break
            token = root.find(f"{pfx}NextContinuationToken", ns).text
        return sorted(out)

    def get(self, key):
        return self._direct("GET", f"{self.prefix}/{key}")

    def put(self, key, data):
        self._direct("PUT", f"{self.prefix}/{key}", data=data)


def pool_snapshot(pool, dest):
    """Copy every pool object to a directory laid out as the pool (for
    restore-from-pool.py); returns that directory."""
    if pool.kind == "file":
        return pool.dir
    dest = Path(dest)
    for k in pool.keys():
        if k.startswith("locks/"):      # come and go with every job; not data
            continue
        p = dest / k
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(pool.get(k))
    return dest


def pool_state(pool, tmp):
    """Parse the whole pool by the documented format.

    Returns (manifests {key: parsed}, packs {pid: {offset: (len, sha)}})."""
    d = pool_snapshot(pool, tmp)
    pk = rfp.open_pool(str(d), pool.keyfile)
    manifests, packs = {}, {}
    for k in pool.keys():
        if k.startswith("manifests/") and k.endswith(".mf"):
            manifests[k] = rfp.parse_manifest((Path(d) / k).read_bytes(), key=k, pool=pk)
        elif k.startswith("packs/") and k.endswith(".pack"):
            packs[k[len("packs/"):-len(".pack")]] = rfp.read_pack_index(str(Path(d) / k),
                                                                         pool=pk)
    pool.rfp = pk
    return manifests, packs


def referenced_blocks(manifests, packs):
    """{(pid, offset)} referenced by the manifests; asserts each resolves."""
    live = set()
    for key, mf in manifests.items():
        for g, (pi, length, off, prefix) in enumerate(mf["refs"]):
            if pi == rfp.ZERO_PACK:
                continue
            pid = mf["packs"][pi]
            assert pid in packs, f"{key} grain {g}: pack {pid} is missing"
            ent = packs[pid].get(off)
            assert ent and ent[0] == length and ent[1][:8] == prefix, \
                f"{key} grain {g}: no matching block in pack {pid} at {off}"
            live.add((pid, off))
    return live


def grain_hashes(data, pool=None):
    """The block name of every non-zero grain of an image (zero-padded last
    grain): SHA-256, or in an encrypted pool (pool: pool_state() ran) its
    keyed hash."""
    pk = getattr(pool, "rfp", None)
    out = set()
    for off in range(0, len(data), GRAIN):
        g = data[off:off + GRAIN].ljust(GRAIN, b"\0")
        if g.count(0) != GRAIN:
            if pk is not None and pk.encrypted:
                out.add(hmac.new(pk.keys["name"], g, hashlib.sha256).digest())
            else:
                out.add(hashlib.sha256(g).digest())
    return out


def nonzero_grains(data):
    return sum(1 for off in range(0, len(data), GRAIN)
               if data[off:off + GRAIN].count(0) != len(data[off:off + GRAIN]))


# --------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def s3proxy(rgw):
    faults = Faults()
    srv = make_proxy(rgw.port, faults, rgw.access_key, rgw.secret_key)
    try:
        yield srv, faults
    finally:
        srv.shutdown()
        srv.server_close()


class Env:
    """A mounted store with a volume `db` whose tape policy names the pool."""

    def __init__(self, m, pool, make):
        self.m = m
        self.pool = pool
        self.make = make          # mount_factory with the same environment
        self.kind = pool.kind


def daemon_env(s3=None):
    e = dict(os.environ)
    if s3 is not None:
        e.update(AWS_ACCESS_KEY_ID=s3.access_key,
                 AWS_SECRET_ACCESS_KEY=s3.secret_key)
    return e


def make_env(request, mount_factory, kind):
    if kind == "file":
        env = daemon_env()
        m = mount_factory(name="main", env=env)
        pool = FilePool(m)
    else:
        rgw = request.getfixturevalue("rgw")
        proxy, faults = request.getfixturevalue("s3proxy")
        faults.reset()
        env = daemon_env(rgw)
        m = mount_factory(name="main", env=env)
        pool = S3Pool(m, rgw, proxy, faults)
        pool.create_in(m)
    m.create_volume(VOL, "16M")
    if pool.name != "default":
        m.ctl(f"tapepolicy {VOL} pool={pool.name}")
    return Env(m, pool, lambda **kw: mount_factory(env=env, **kw))


def finish_env(tp):
    if tp.kind == "s3":
        f = tp.pool.faults
        f.reset()
        assert f.bad_signatures == 0, "the daemon sent badly signed requests"


@pytest.fixture(params=["file", "s3"])
def tp(request, mount_factory):
    """The volume `db` on a fresh store, its tape pool file:// or S3 (RGW)."""
    e = make_env(request, mount_factory, request.param)
    yield e
    finish_env(e)


@pytest.fixture
def tps3(request, mount_factory):
    """As `tp`, S3 (RGW) only (faults are injected by the proxy)."""
    e = make_env(request, mount_factory, "s3")
    yield e
    finish_env(e)


# --------------------------------------------------------------------- helpers

def vpath(m, *parts):
    return m.vol(VOL, *parts)


def vwrite(m, off, data):
    fd = os.open(vpath(m, "data"), os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def vread(m):
    return vpath(m, "data").read_bytes()


def fill(m, seed, holes=(0, 3)):
    """Random content everywhere except grains in [holes) ranges (every
    grain g with g % 8 in range(*holes) stays zero); returns the image."""
    size = int(m.read_info(f"volumes/{VOL}/info")["size"])
    rng = random.Random(seed)
    buf = bytearray(size)
    for g in range(size // GRAIN):
        if holes and g % 8 in range(*holes):
            continue
        buf[g * GRAIN:(g + 1) * GRAIN] = rng.randbytes(GRAIN)
    vwrite(m, 0, bytes(buf))
    return bytes(buf)


def change_grains(m, ref, grains, seed):
    """Write fresh random content into `grains`; returns the new image."""
    rng = random.Random(seed)
    buf = bytearray(ref)
    fd = os.open(vpath(m, "data"), os.O_WRONLY)
    try:
        for g in grains:
            d = rng.randbytes(GRAIN)
            buf[g * GRAIN:(g + 1) * GRAIN] = d
            os.pwrite(fd, d, g * GRAIN)
        os.fsync(fd)
    finally:
        os.close(fd)
    return bytes(buf)


def ctl_settled(m, cmd, vol=VOL, timeout=5.0):
    """m.ctl_err(), retried on EBUSY for a moment: FUSE sends RELEASE
    asynchronously after close(2), so an image just read may still count as
    open."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        err, reply = m.ctl_err(cmd, vol)
        if err != errno.EBUSY or time.monotonic() > deadline:
            return err, reply
        time.sleep(0.05)


def ctl_ok(m, cmd, vol=VOL):
    err, reply = ctl_settled(m, cmd, vol)
    assert err == 0, f"{cmd!r} -> {os.strerror(err)}: {reply.strip()!r}"
    return m.parse_reply(reply)


def backup(m, args="-T"):
    r = m.ctl(f"backup {args}", VOL)
    return int(m.parse_reply(r)["version"])


def hist_info(m, v):
    try:
        return m.read_info(f"volumes/{VOL}/history/{v}/info")
    except FileNotFoundError:
        return None


def wait_job(m, v, timeout=JOB_TIMEOUT):
    """Wait until version v's disk and tape jobs are no longer executing."""
    deadline = time.monotonic() + timeout
    while True:
        info = hist_info(m, v)
        if info is not None and info.get("disk_status") != "executing" \
                and info.get("tape_status") != "executing":
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"version {v} still executing after {timeout:g} s: "
                                 f"{info}\n{log_text(m)[-3000:]}")
        time.sleep(0.05)


def tape_backup(m, args="-T"):
    v = backup(m, args)
    info = wait_job(m, v)
    assert info["tape_status"] == "succeeded", (info, log_text(m)[-3000:])
    return v, info


def log_text(m):
    try:
        return vpath(m, "log").read_text()
    except OSError as e:
        return f"(log unreadable: {e})"


def tape_img(m, v):
    return vpath(m, "history", str(v), "tape.img").read_bytes()


def assert_same(got, want, what):
    assert len(got) == len(want), f"{what}: size {len(got)} != {len(want)}"
    if got != want:
        bad = [g for g in range(0, len(want), GRAIN) if got[g:g + GRAIN] != want[g:g + GRAIN]]
        raise AssertionError(f"{what}: {len(bad)} grains differ, first at grain "
                             f"{bad[0] // GRAIN}")


def tape_rows(m):
    """histdisp tape rows of the volume: [{Tape-Gen, Version, ...}]."""
    lines = vpath(m, "histdisp").read_text().splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith("Tape-Gen"))
    head = lines[i].split()
    rows = []
    for l in lines[i + 1:]:
        w = l.split()
        if not w or not w[0].isdigit():
            break
        # Backup-Date is two words
        w = w[:2] + [w[2] + " " + w[3]] + w[4:]
        rows.append(dict(zip(head, w)))
    return rows


def tape_versions(m):
    return sorted(int(r["Version"]) for r in tape_rows(m))


def manifests_of(pool, volume=VOL):
    return sorted(k for k in pool.keys() if k.startswith(f"manifests/{volume}/"))


def manifest_version(key):
    return int(os.path.basename(key).split("-")[0])


def wait_for(pred, what, timeout=JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------- tests

def test_both_backup_tape_image_equals_volume(tp, tmp_path):
    m, pool = tp.m, tp.pool
    ref = fill(m, 1)
    v = backup(m, "-T")
    # the TV moves on at once; the tape copy must hold the backup-time content
    change_grains(m, ref, range(0, 256, 5), 99)
    info = wait_job(m, v)
    assert info["media"] == "BOTH"
    assert info["disk_status"] == "succeeded"
    assert info["tape_status"] == "succeeded"
    assert info["pool"] == pool.name
    assert info["tape_generation"] == "1"
    nz = nonzero_grains(ref)
    assert int(info["blocks"]) == nz
    assert_same(tape_img(m, v), ref, "tape.img")
    assert_same(vpath(m, "history", str(v), "disk.img").read_bytes(), ref, "disk.img")

    link = vpath(m, "tape-generations", "1")
    assert os.readlink(link) == f"../history/{v}"
    assert_same(link.joinpath("tape.img").read_bytes(), ref, "tape-generations/1/tape.img")

    rows = tape_rows(m)
    assert len(rows) == 1
    r = rows[0]
    assert (r["Tape-Gen"], r["Version"], r["Pool-Name"], r["Status"], r["Execute"],
            r["Blocks"]) == ("1", str(v), pool.name, "succeeded", "----", str(nz))

    # holes are reported: grains 0..2 are zero, grain 3 holds data
    fd = os.open(vpath(m, "history", str(v), "tape.img"), os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == 3 * GRAIN
        assert os.lseek(fd, 3 * GRAIN, os.SEEK_HOLE) == 8 * GRAIN
    finally:
        os.close(fd)

    # the pool, read by the documented format alone, holds the same image
    manifests, packs = pool_state(pool, tmp_path / "snap")
    keys = manifests_of(pool)
    assert len(keys) == 1 and manifest_version(keys[0]) == v
    assert manifests[keys[0]]["blocks_total"] == nz
    out = tmp_path / "rebuilt"
    rfp.restore(str(pool_snapshot(pool, tmp_path / "snap")), keys[0], str(out),
                key_file=pool.keyfile)
    assert_same(out.read_bytes(), ref, "restore-from-pool.py image")
    assert block_names(packs) == grain_hashes(ref, pool)


def test_second_both_uploads_only_changed_grains(tp):
    m = tp.m
    ref1 = fill(m, 2)
    v1, _ = tape_backup(m, "-T")
    new0 = m.metric("acmfs_tape_blocks_new_total")
    bytes0 = m.metric("acmfs_tape_bytes_uploaded_total")

    nr = len(ref1) // GRAIN
    rng = random.Random(22)
    changed = sorted(rng.sample(range(nr), max(1, nr // 100)))  # 1% at random
    ref2 = change_grains(m, ref1, changed, 23)
    v2, info = tape_backup(m, "-T")

    assert m.metric("acmfs_tape_blocks_new_total") - new0 == len(changed)
    assert m.metric("acmfs_tape_bytes_uploaded_total") - bytes0 < \
        (len(changed) + 2) * GRAIN + 64 * KiB   # blocks + pack header/index, manifest
    log = log_text(m)
    started = re.search(rf"tape copy of version {v2} to pool \S+ started \((\w+), "
                        rf"(\d+) grains to read\)", log)
    assert started, log[-2000:]
    assert started.group(1) == "incremental"
    assert int(started.group(2)) == len(changed)
    done = re.search(rf"tape copy of version {v2} succeeded: pool \S+, (\d+) blocks, "
                     rf"(\d+) new, (\d+) grains read, (\d+) bytes uploaded(.*)", log)
    assert done, log[-2000:]
    assert int(done.group(1)) == nonzero_grains(ref2)
    assert int(done.group(2)) == len(changed)
    assert int(done.group(3)) == len(changed)
    assert "incremental" in done.group(5)
    assert int(info["blocks"]) == nonzero_grains(ref2)

    # both tape histories are complete images
    assert_same(tape_img(m, v2), ref2, "second tape.img")
    assert_same(tape_img(m, v1), ref1, "first tape.img")
    assert os.readlink(vpath(m, "tape-generations", "1")) == f"../history/{v2}"
    assert os.readlink(vpath(m, "tape-generations", "2")) == f"../history/{v1}"


def test_tape_only_backup_is_point_in_time_under_writes(tp):
    m = tp.m
    ref = fill(m, 3, holes=(0, 1))
    nr = len(ref) // GRAIN
    stop = threading.Event()
    errors = []
    written = bytearray(ref)

    def writer():
        rng = random.Random(33)
        # from the end backwards first (the copy reads from the start), then
        # at random until the tape job is over
        order = list(range(nr - 1, -1, -1))
        try:
            fd = os.open(vpath(m, "data"), os.O_WRONLY)
            try:
                i = 0
                while not stop.is_set():
                    g = order[i] if i < len(order) else rng.randrange(nr)
                    d = rng.randbytes(GRAIN)
                    os.pwrite(fd, d, g * GRAIN)
                    written[g * GRAIN:(g + 1) * GRAIN] = d
                    i += 1
                    if i % 4 == 0:
                        os.fsync(fd)
                os.fsync(fd)
            finally:
                os.close(fd)
        except Exception as e:       # noqa: BLE001 (reported below)
            errors.append(e)

    r = m.parse_reply(m.ctl("backup -m TAPE", VOL))
    v = int(r["version"])
    assert r["media"] == "TAPE" and r["bv"] == "-"
    t = threading.Thread(target=writer)
    t.start()
    try:
        info = wait_job(m, v)
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive() and not errors, errors
    assert info["tape_status"] == "succeeded", (info, log_text(m)[-2000:])
    assert info["media"] == "TAPE"
    assert info["disk_status"] == "none" and info["bv"] == "-"
    assert not vpath(m, "history", str(v), "disk.img").exists()
    assert_same(tape_img(m, v), ref, "tape.img (point in time)")
    # `image` of a tape-only history is the tape image
    assert_same(vpath(m, "history", str(v), "image").read_bytes(), ref, "image")
    # and the volume kept every write
    assert_same(vread(m), bytes(written), "the volume after the writes")


def test_T_with_m_tape_is_einval_and_changes_nothing(tp):
    m, pool = tp.m, tp.pool
    fill(m, 4)
    v1, _ = tape_backup(m, "-T")

    def state():
        st = (vpath(m, "histdisp").read_text(), pool.keys(),
              m.metric("acmfs_tape_copies_total"))
        info = m.read_info(f"volumes/{VOL}/info")
        info.pop("open_writers", None)
        return st, info

    before = state()
    for cmd in ("backup -T -m TAPE", "backup -m TAPE -T", "backup -T -m TAPE -b GEN"):
        err, reply = m.ctl_err(cmd, VOL)
        assert err == errno.EINVAL, (cmd, err, reply)
        assert reply.startswith("error:"), reply
    time.sleep(0.3)
    assert state() == before
    # the next backup gets the next version: nothing was consumed
    assert int(m.parse_reply(m.ctl("backup -m TAPE", VOL))["version"]) == v1 + 1


def test_gen_retention_keeps_newest_tape_generations(tp):
    m, pool = tp.m, tp.pool
    m.ctl(f"tapepolicy {VOL} gens=2")
    assert m.read_info(f"volumes/{VOL}/info")["tape_gens"] == "2"
    ref = fill(m, 5)
    refs, vers = {}, []
    for i in range(3):
        ref = change_grains(m, ref, range(8 + i, 256, 40), 50 + i)
        v, _ = tape_backup(m, "-m TAPE -b GEN")
        refs[v] = ref
        vers.append(v)
    # retention runs as the third copy ends: no long wait
    wait_for(lambda: tape_versions(m) == vers[1:], f"tape histories {vers[1:]}",
             timeout=10 * TIME_SCALE)
    assert hist_info(m, vers[0]) is None or hist_info(m, vers[0])["tape_status"] == "none"
    assert not vpath(m, "history", str(vers[0]), "tape.img").exists()
    # the manifest is deleted from the pool just after the table changes
    # (the tape job's end empties the trash without the engine lock)
    wait_for(lambda: sorted(manifest_version(k) for k in manifests_of(pool)) == vers[1:],
             f"only the manifests of {vers[1:]} in the pool", timeout=10 * TIME_SCALE)
    assert os.readlink(vpath(m, "tape-generations", "1")) == f"../history/{vers[2]}"
    assert os.readlink(vpath(m, "tape-generations", "2")) == f"../history/{vers[1]}"
    assert not vpath(m, "tape-generations", "3").exists()
    for v in vers[1:]:
        assert_same(tape_img(m, v), refs[v], f"tape.img of {v}")


def test_day_retention_expires_aged_tape_histories(tp):
    m, pool = tp.m, tp.pool
    m.ctl(f"tapepolicy {VOL} days=1")
    ref = fill(m, 6)
    old = []
    for i in range(2):
        ref = change_grains(m, ref, [20 + i], 60 + i)
        old.append(tape_backup(m, "-m TAPE -b DAY")[0])
    time.sleep(0.3)
    assert tape_versions(m) == old                 # nothing is a day old yet

    m.stop()
    con = sqlite3.connect(m.store / "catalog.db", timeout=10)
    try:
        with con:
            n = con.execute("UPDATE histories SET date=date-172800 WHERE version IN (?, ?)",
                            old).rowcount
    finally:
        con.close()
    assert n == 2
    m.start()
    assert tape_versions(m) == old                 # aged, but no backup ran yet
    ref = change_grains(m, ref, [30], 70)
    v3, _ = tape_backup(m, "-m TAPE -b DAY")
    wait_for(lambda: tape_versions(m) == [v3], f"only tape history {v3}",
             timeout=10 * TIME_SCALE)
    wait_for(lambda: sorted(manifest_version(k) for k in manifests_of(pool)) == [v3],
             f"only the manifest of {v3} in the pool", timeout=10 * TIME_SCALE)
    for v in old:
        assert not vpath(m, "history", str(v), "tape.img").exists()
    assert_same(tape_img(m, v3), ref, "tape.img of the kept history")


def test_histdel_tape_and_gc_leave_no_orphans_keep_shared(tp, tmp_path):
    m, pool = tp.m, tp.pool
    ref1 = fill(m, 7)
    v1, _ = tape_backup(m, "-T")
    # three quarters of the data grains change: most of v1's pack dies
    nr = len(ref1) // GRAIN
    data_grains = [g for g in range(nr) if ref1[g * GRAIN:(g + 1) * GRAIN].count(0) != GRAIN]
    changed = [g for i, g in enumerate(data_grains) if i % 4 != 0]
    ref2 = change_grains(m, ref1, changed, 71)
    v2, _ = tape_backup(m, "-T")
    man, packs = pool_state(pool, tmp_path / "s0")
    assert len(man) == 2

    r = ctl_ok(m, f"histdel -v {v1} -m TAPE")
    assert r["deleted"] == str(v1)
    assert tape_versions(m) == [v2]
    assert hist_info(m, v1)["disk_status"] == "succeeded"   # disk side stays
    assert not vpath(m, "history", str(v1), "tape.img").exists()
    assert [manifest_version(k) for k in manifests_of(pool)] == [v2]

    g = ctl_ok(m, f"pool gc {pool.name} grace=0", None)
    assert int(g["blocks_freed"]) == len(changed)
    man, packs = pool_state(pool, tmp_path / "s1")
    stored = {(pid, off) for pid, idx in packs.items() for off in idx}
    live = referenced_blocks(man, packs)
    assert stored == live, f"{len(stored - live)} orphan blocks remain"
    assert block_names(packs) == grain_hashes(ref2, pool)
    assert_same(tape_img(m, v2), ref2, "tape.img of the remaining history")

    # a newer history whose new blocks nobody else uses: its pack goes
    ref3 = change_grains(m, ref2, [9, 100, 200], 72)
    v3, _ = tape_backup(m, "-T")
    assert_same(tape_img(m, v3), ref3, "tape.img of v3")
    ctl_ok(m, f"histdel -v {v3} -m TAPE")
    g = ctl_ok(m, f"pool gc {pool.name} grace=0", None)
    assert int(g["blocks_freed"]) == 3
    man, packs = pool_state(pool, tmp_path / "s2")
    stored = {(pid, off) for pid, idx in packs.items() for off in idx}
    assert stored == referenced_blocks(man, packs)
    assert block_names(packs) == grain_hashes(ref2, pool)
    assert_same(tape_img(m, v2), ref2, "tape.img of the remaining history after gc")


def test_corrupted_block_reads_eio_and_verify_fails(tp, tmp_path):
    m, pool = tp.m, tp.pool
    ref = fill(m, 8)
    v, _ = tape_backup(m, "-T")
    man, packs = pool_state(pool, tmp_path / "snap")
    (mf,) = man.values()
    bad_g = 13
    pi, length, off, _ = mf["refs"][bad_g]
    assert pi != rfp.ZERO_PACK
    key = f"packs/{mf['packs'][pi]}.pack"
    data = bytearray(pool.get(key))
    for i in range(100, 116):
        data[off + i] ^= 0xA5
    pool.put(key, bytes(data))

    path = vpath(m, "history", str(v), "tape.img")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, GRAIN, bad_g * GRAIN)
        assert e.value.errno == errno.EIO
        # other grains still read, verified and right
        for g in (3, 12, 14, 200):
            assert os.pread(fd, GRAIN, g * GRAIN) == ref[g * GRAIN:(g + 1) * GRAIN]
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        path.read_bytes()
    assert e.value.errno == errno.EIO
    err, reply = ctl_settled(m, f"verify -v {v} -m TAPE")
    assert err == errno.EIO, reply
    assert m.read_info(f"volumes/{VOL}/history/{v}/info")["verify"].startswith("damaged")
    # the disk history is not affected
    assert_same(vpath(m, "history", str(v), "disk.img").read_bytes(), ref, "disk.img")


@pytest.mark.parametrize("modes", [
    ["503", "reset", None, "500", "503", None, "reset"],
    ["500", "500", "503", "503", "reset", "reset"],
], ids=["mixed", "bursts"])
def test_transient_faults_are_retried_and_exact(tps3, modes):
    m, f = tps3.m, tps3.pool.faults
    ref1 = fill(m, 9)
    f.queue = list(modes)
    v1, info = tape_backup(m, "-T")
    assert not f.queue, "the faults were not all consumed"
    assert info["disk_status"] == "succeeded"
    f.reset()
    assert_same(tape_img(m, v1), ref1, "tape.img after retried upload faults")
    # faults on reads: truncated bodies and resets while reading tape.img
    ref2 = change_grains(m, ref1, [5, 6, 7], 90)
    f.queue = list(modes)
    v2, _ = tape_backup(m, "-T")
    f.reset()
    f.methods = {"GET"}
    f.queue = ["truncate", "reset", None, "truncate", "503", "500"]
    assert_same(tape_img(m, v2), ref2, "tape.img read through faults")
    assert {"truncate", "reset", "503"} <= set(f.applied)


def test_random_faults_never_give_a_wrong_succeeded(tps3, tmp_path):
    m, f, pool = tps3.m, tps3.pool.faults, tps3.pool
    rng = random.Random(12)
    ref = fill(m, 10)
    for i in range(3):
        ref = change_grains(m, ref, rng.sample(range(256), 20), 100 + i)
        f.queue = [rng.choice(["503", "500", "reset", None, None, None])
                   for _ in range(40)]
        v = backup(m, "-T")
        info = wait_job(m, v)
        f.reset()
        assert info["disk_status"] == "succeeded"
        assert_same(vpath(m, "history", str(v), "disk.img").read_bytes(), ref, "disk.img")
        assert info["tape_status"] in ("succeeded", "failed"), info
        if info["tape_status"] == "succeeded":
            assert_same(tape_img(m, v), ref, f"tape.img of {v}")
    man, packs = pool_state(pool, tmp_path / "snap")
    referenced_blocks(man, packs)     # every stored manifest resolves


def test_persistent_faults_end_failed_disk_untouched(tps3):
    m, f, pool = tps3.m, tps3.pool.faults, tps3.pool
    ref1 = fill(m, 11)
    v1, _ = tape_backup(m, "-T")
    ref2 = change_grains(m, ref1, [40, 41], 110)
    failed0 = m.metric("acmfs_tape_failed_total")
    f.always = "503"
    try:
        v2 = backup(m, "-T")
        info = wait_job(m, v2, timeout=240 * TIME_SCALE)
    finally:
        f.reset()
    assert info["tape_status"] == "failed", info
    assert info["disk_status"] == "succeeded"
    assert m.metric("acmfs_tape_failed_total") == failed0 + 1
    assert_same(vpath(m, "history", str(v2), "disk.img").read_bytes(), ref2, "disk.img")
    assert [manifest_version(k) for k in manifests_of(pool)] == [v1]
    row = [r for r in tape_rows(m) if r["Version"] == str(v2)]
    assert row and row[0]["Status"] == "failed"
    p = vpath(m, "history", str(v2), "tape.img")
    if p.exists():
        with pytest.raises(OSError):
            p.read_bytes()
    assert re.search(rf"error: tape copy of version {v2} failed", log_text(m))
    # the pool works again: the next copy succeeds and is exact
    v3, _ = tape_backup(m, "-T")
    assert_same(tape_img(m, v3), ref2, "tape.img after the outage")
    assert_same(tape_img(m, v1), ref1, "tape.img of the first")


def test_pool_import_on_empty_store(tp):
    m, pool = tp.m, tp.pool
    refs = {}
    ref = fill(m, 12)
    v, _ = tape_backup(m, "-T")
    refs[v] = ref
    ref = change_grains(m, ref, [50, 51, 52], 120)
    v, _ = tape_backup(m, "-m TAPE")
    refs[v] = ref
    rows0 = {r["Version"]: r for r in tape_rows(m)}
    assert sorted(map(int, rows0)) == sorted(refs)
    old_id = json.loads((m.mnt / "status.json").read_text())["host"]["id"]
    m.stop()

    # a new store is another host: its own import finds nothing of its own,
    # and takes the lost host's histories when asked to (disaster recovery)
    m2 = tp.make(name="fresh")
    pool.create_in(m2, "imp")
    r = m2.parse_reply(m2.ctl("pool import imp"))
    assert r["histories"] == "0" and r["others"] == "2" and r["volumes"] == "0", r
    r = m2.parse_reply(m2.ctl(f"pool import imp host={old_id}"))
    assert r["histories"] == "2" and r["volumes"] == "1", r
    rows = {r["Version"]: r for r in tape_rows(m2)}
    assert sorted(rows) == sorted(rows0)
    for k, row in rows.items():
        assert row["Pool-Name"] == "imp" and row["Status"] == "succeeded"
        assert row["Blocks"] == rows0[k]["Blocks"]
        assert row["Backup-Date"] == rows0[k]["Backup-Date"]
    for v, ref in refs.items():
        assert_same(m2.vol(VOL, "history", str(v), "tape.img").read_bytes(), ref,
                    f"imported tape.img of {v}")
    # importing again adds nothing
    r = m2.parse_reply(m2.ctl(f"pool import imp host={old_id}"))
    assert r["histories"] == "0" and r["known"] == "2", r


def test_restore_from_tape_round_trip(tp):
    m = tp.m
    ref = fill(m, 13)
    v, _ = tape_backup(m, "-T")
    rng = random.Random(130)
    data_grains = [g for g in range(256) if g % 8 >= 3]
    hole_grains = [g for g in range(256) if g % 8 < 3]
    changed = rng.sample(data_grains, 7)
    change_grains(m, ref, changed, 131)
    zeroed = [g for g in data_grains if g not in changed][0]
    filled = hole_grains[5]
    vwrite(m, zeroed * GRAIN, bytes(GRAIN))
    vwrite(m, filled * GRAIN, rng.randbytes(GRAIN))
    assert vread(m) != ref
    r = ctl_ok(m, f"restore -v {v} -m TAPE")
    assert r["media"] == "TAPE" and r["version"] == str(v)
    assert int(r["grains_copied"]) == len(changed) + 2, r
    assert_same(vread(m), ref, "the volume after restore -m TAPE")
    assert m.read_info(f"volumes/{VOL}/info")["state"] == "ok"


# --------------------------------------------------------------------- RGW only

FILLERS = 1100          # > 1000: S3 lists at most 1000 keys a page


def test_rgw_listings_past_1000_keys_gc_and_awscli(tps3, tmp_path):
    """gc lists manifests/ (to mark) and packs/ (to sweep); on RGW a page
    holds at most 1000 keys. 1100 foreign keys sorted before the real ones in
    each prefix put every manifest and pack on a later page: a gc that read
    only the first page would find no manifest and delete live packs, or find
    no pack and free nothing. awscli, an independent client, uploads the
    fillers and downloads what acmfs wrote, which restore-from-pool.py
    rebuilds byte for byte."""
    m, pool = tps3.m, tps3.pool
    rgw = pool.rgw
    ref1 = fill(m, 14)
    v1, _ = tape_backup(m, "-m TAPE")
    nr = len(ref1) // GRAIN
    data_grains = [g for g in range(nr) if ref1[g * GRAIN:(g + 1) * GRAIN].count(0) != GRAIN]
    changed = [g for i, g in enumerate(data_grains) if i % 4 != 0]
    ref2 = change_grains(m, ref1, changed, 141)
    v2, _ = tape_backup(m, "-m TAPE")
    real = pool.keys()

    # "0-" sorts before "db/" and before every hex pack id
    src = tmp_path / "fillers"
    for i in range(FILLERS):
        for d, name in (("manifests/0-filler", f"{i:05d}.txt"),
                        ("packs", f"0-filler-{i:05d}.txt")):
            p = src / d / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"not acmfs's %d\n" % i)
    rgw.aws("s3", "cp", "--recursive", "--quiet", str(src),
            f"s3://{rgw.bucket}/{pool.prefix}/", timeout=600)
    fillers = sorted(k for k in pool.keys() if "0-filler" in k)
    assert len(fillers) == 2 * FILLERS
    assert sorted(set(pool.keys()) - set(fillers)) == real

    r = ctl_ok(m, f"histdel -v {v1} -m TAPE")
    assert r["deleted"] == str(v1)
    g = ctl_ok(m, f"pool gc {pool.name} grace=0", None)
    assert int(g["blocks_freed"]) == len(changed), g
    after = pool.keys()
    assert sorted(k for k in after if "0-filler" in k) == fillers, \
        "gc deleted keys it does not own"
    man, packs = pool_state_real(pool, tmp_path / "s1")
    assert list(man) == manifests_of(pool) and len(man) == 1
    stored = {(pid, off) for pid, idx in packs.items() for off in idx}
    assert stored == referenced_blocks(man, packs)
    m.remount()
    assert_same(tape_img(m, v2), ref2, "tape.img after gc past 1000 keys")

    # awscli downloads the pool (without the fillers); the documented format
    # alone rebuilds the image
    dl = tmp_path / "dl"
    rgw.aws("s3", "cp", "--recursive", "--quiet", "--exclude", "*0-filler*",
            f"s3://{rgw.bucket}/{pool.prefix}/", str(dl), timeout=600)
    (key,) = manifests_of(pool)
    out = tmp_path / "rebuilt"
    rfp.restore(str(dl), key, str(out), key_file=pool.keyfile)
    assert_same(out.read_bytes(), ref2, "awscli download rebuilt by restore-from-pool.py")


def pool_state_real(pool, tmp):
    """pool_state() of the pool's own objects (foreign keys left out)."""
    dest = Path(tmp)
    dest.mkdir(parents=True, exist_ok=True)
    keys = pool.keys()
    if "config" in keys:
        (dest / "config").write_bytes(pool.get("config"))
    pk = rfp.open_pool(str(dest), pool.keyfile)
    manifests, packs = {}, {}
    for k in keys:
        if k.startswith("manifests/") and k.endswith(".mf"):
            manifests[k] = rfp.parse_manifest(pool.get(k), key=k, pool=pk)
        elif k.startswith("packs/") and k.endswith(".pack"):
            p = dest / k
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(pool.get(k))
            packs[k[len("packs/"):-len(".pack")]] = rfp.read_pack_index(str(p), pool=pk)
    pool.rfp = pk
    return manifests, packs


def test_a_stalled_store_stalls_only_its_reader(tps3):
    """The object store takes a request and never answers (issue 17): a
    read of a tape-only image waits on it, and nothing else on the mount
    does — listings, attributes, the tables, another volume's data."""
    m, pool = tps3.m, tps3.pool
    ref = fill(m, 21)
    v, _ = tape_backup(m, "-m TAPE")
    m.create_volume("other", "4M")
    f = pool.faults
    f.unhang.clear()
    f.always = "hang"
    got = {}

    def reader():
        try:
            got["img"] = tape_img(m, v)
        except OSError as e:
            got["img"] = e

    t = threading.Thread(target=reader)
    t.start()
    times = []
    try:
        wait_for(lambda: "hang" in f.applied, "the reader's request to stall", 30)
        time.sleep(0.2)
        for i in range(70):
            t0 = time.monotonic()
            os.listdir(m.mnt / "volumes")
            os.stat(vpath(m, "data"))
            (m.mnt / "trkstat").read_text()
            (m.mnt / "status.json").read_text()
            fd = os.open(m.vol("other", "data"), os.O_RDWR)
            try:
                os.pwrite(fd, bytes([i]) * 4096, 4096 * (i % 64))
                os.pread(fd, 4096, 0)
            finally:
                os.close(fd)
            times.append(time.monotonic() - t0)
        t0 = time.monotonic()
        m.ctl("backup -T -m DISK", "other")
        times.append(time.monotonic() - t0)
        assert t.is_alive(), "the reader was not stalled"
    finally:
        f.always = None
        f.unhang.set()
        t.join(timeout=150 * TIME_SCALE)
    # each round of the above (6 operations) in well under a second, all
    # 71 of them, while the reader waited
    assert max(times) < 1.0 * TIME_SCALE, sorted(times)[-5:]
    assert got["img"] == ref, got["img"] if isinstance(got["img"], OSError) else "differs"
