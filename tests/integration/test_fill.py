"""Integration tests of instant recovery (issue 20): `restore -i` (a live
restore: the volume shows the history at once, a background fill copies it
in) and `volume clone` (a new volume whose content is a history's at once).

What users rely on, checked against reference copies made before:
  - from the moment the ctl write returns, every read of the volume returns
    the history's content, or what was written since (partial writes of a
    grain not filled yet merge with the history's grain);
  - after the fill, the volume equals the history plus those writes, and a
    -T backup copies the restored grains;
  - kill -9 at any instant: the next mount continues the same fill and the
    volume still reads as history + acknowledged (fsynced) writes;
  - a source that fails: EIO for grains not filled yet only, then resumption;
  - a clone is writable and isolated, backs up on its own, and pins its
    source history while it fills.

The background fill is slowed with ACMFS_FILL_RATE (bytes per second) so
that the tests can act while it runs.
"""

import errno
import os
import random
import sqlite3
import subprocess
import time

import pytest

from conftest import TIME_SCALE, retry_busy
from test_backup import (GRAIN, MiB, Loop, assert_same, backup, copy_file,
                         fill, needs_root, run, wait_for, wait_hist)
from test_tape import (VOL, S3Pool, daemon_env, finish_env, make_env,  # noqa: F401
                       s3proxy, tape_backup, vpath)

FILL_TIMEOUT = 120 * TIME_SCALE

# the fill's locking and reference counting are what a sanitizer checks best
pytestmark = pytest.mark.asan


def slow_env(rate, base=None):
    e = dict(base if base is not None else os.environ)
    e["ACMFS_FILL_RATE"] = str(rate)
    return e


def info(m, vol):
    return m.read_info(f"volumes/{vol}/info")


def wait_filled(m, vol, timeout=FILL_TIMEOUT):
    def done():
        i = info(m, vol)
        return i if i["state"] == "ok" and i["restore_execute"] == "----" else None
    return wait_for(done, f"the fill of {vol} to end", timeout=timeout, step=0.1)


def live_restore(m, vol, opts=""):
    t0 = time.monotonic()
    r = m.ctl(f"restore -i {opts}".strip(), vol)
    took = time.monotonic() - t0
    kv = m.parse_reply(r)
    assert kv["mode"] == "instant", r
    assert f"{vol} acmrestore completed" in r.splitlines()[1:2], r
    return kv, took


class Model:
    """What the volume must read as: the history's image plus the writes
    acknowledged since (kept in a file of the same size)."""

    def __init__(self, ref, path):
        self.path = path
        copy_file(ref, path)
        self.size = os.path.getsize(path)

    def write(self, data_path, off, data):
        fd = os.open(data_path, os.O_RDWR)
        try:
            assert os.pwrite(fd, data, off) == len(data)
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def check_range(self, data_path, off, n, what):
        with open(data_path, "rb") as f, open(self.path, "rb") as r:
            f.seek(off)
            r.seek(off)
            got, want = f.read(n), r.read(n)
        assert got == want, f"{what}: {n} bytes at {off} (grain {off // GRAIN}) differ"


def overwrite(data, size, seed):
    fill(data, 0, size, seed=seed)


def read_at(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def disk_history(m, tmp_path, vol, size, save=1):
    """vol with a pattern, backed up to disk, then overwritten everywhere:
    -> (data path, reference of the history, version)."""
    m.create_volume(vol, f"{size // MiB}M", save=save)
    data = m.vol(vol, "data")
    fill(data, 0, size, seed=11)
    ref = tmp_path / "history.ref"
    copy_file(data, ref)
    kv = backup(m, vol)
    assert wait_hist(m, vol, kv["version"])["disk_status"] == "succeeded"
    overwrite(data, size, seed=12)
    return data, ref, int(kv["version"])


def check_reads_while_filling(m, vol, data, model, rng, n=12):
    for _ in range(n):
        off = rng.randrange(model.size // 512) * 512
        ln = min(rng.choice([512, 4096, GRAIN, 3 * GRAIN + 100]), model.size - off)
        model.check_range(data, off, ln, "a read while filling")


def mixed_writes(m, data, model, rng, n=8):
    """Partial-grain writes (merged with the history's grain) and whole-grain
    writes, each fsynced."""
    for k in range(n):
        g = rng.randrange(model.size // GRAIN)
        if k % 2:
            off, buf = g * GRAIN + rng.randrange(GRAIN // 2), rng.randbytes(1000)
        else:
            off, buf = g * GRAIN, rng.randbytes(GRAIN)
        model.write(data, off, buf)


# ----------------------------------------------------------- live restore


def test_live_restore_from_disk(mount_factory, tmp_path):
    size = 32 * MiB
    m = mount_factory(name="main", env=slow_env(4 * MiB))
    data, ref, ver = disk_history(m, tmp_path, "v", size)
    kv, _ = live_restore(m, "v", f"-v {ver}")
    assert kv["media"] == "DISK" and int(kv["grains_to_fill"]) == size // GRAIN, kv
    i = info(m, "v")
    assert i["state"] == "filling" and i["fill_source"] == "v", i
    assert int(i["restore_execute"]) < 100, i
    rng = random.Random(5)
    model = Model(ref, tmp_path / "model")
    check_reads_while_filling(m, "v", data, model, rng)
    mixed_writes(m, data, model, rng)
    check_reads_while_filling(m, "v", data, model, rng)
    # what a fill runs against: no backup, no second restore, no histdel
    for cmd, word in (("backup -T", "filling"), ("restore", "filling"),
                      (f"histdel -v {ver}", "live restore")):
        err, r = m.ctl_err(cmd, "v")
        assert err == errno.EBUSY and word in r, (cmd, r)
    assert info(m, "v")["state"] == "filling", "the fill ended too soon for this test"
    wait_filled(m, "v")
    assert_same(data, model.path, "the volume after the fill")
    # tracking: the restored grains and the writes are what changed since
    # the history; a -T backup onto the same BV copies them (and is right)
    kv2 = backup(m, "v")
    h = wait_hist(m, "v", kv2["version"])
    assert h["disk_status"] == "succeeded" and kv2["copy"] == "diff", (kv2, h)
    assert int(kv2["grains"]) == size // GRAIN, kv2
    assert_same(m.vol("v", "history", kv2["version"], "image"), model.path,
                "the backup after the live restore")


def test_live_restore_differential_skips_unchanged(mount_factory, tmp_path):
    """Onto its own volume, only the grains written since the history are
    fetched (today's differential restore rule)."""
    size = 16 * MiB
    m = mount_factory(name="main")
    m.create_volume("v", "16M", save=1)
    data = m.vol("v", "data")
    fill(data, 0, size, seed=3)
    ref = tmp_path / "ref"
    copy_file(data, ref)
    kv = backup(m, "v")
    wait_hist(m, "v", kv["version"])
    rng = random.Random(9)
    hit = set()
    for _ in range(10):
        g = rng.randrange(size // GRAIN)
        hit.add(g)
        fd = os.open(data, os.O_RDWR)
        os.pwrite(fd, rng.randbytes(100), g * GRAIN + 7)
        os.fsync(fd)
        os.close(fd)
    kv, _ = live_restore(m, "v")
    assert int(kv["grains_to_fill"]) == len(hit), kv
    wait_filled(m, "v")
    assert_same(data, ref, "the volume after a differential live restore")


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_live_restore_from_tape(request, mount_factory, tmp_path, kind):
    tp = make_env(request, lambda **kw: mount_factory(
        **{**kw, "env": slow_env(2 * MiB, kw.get("env"))}), kind)
    m = tp.m
    size = 16 * MiB
    data = vpath(m, "data")
    fill(data, 0, size, seed=21)
    ref = tmp_path / "ref"
    copy_file(data, ref)
    ver, _ = tape_backup(m, "-m TAPE")
    overwrite(data, size, seed=22)
    kv, _ = live_restore(m, VOL, f"-v {ver} -m TAPE")
    assert kv["media"] == "TAPE", kv
    rng = random.Random(1)
    model = Model(ref, tmp_path / "model")
    check_reads_while_filling(m, VOL, data, model, rng)
    mixed_writes(m, data, model, rng, n=6)
    check_reads_while_filling(m, VOL, data, model, rng)
    assert info(m, VOL)["state"] == "filling", "the fill ended too soon for this test"
    wait_filled(m, VOL)
    assert_same(data, model.path, "the volume after a live restore from tape")
    finish_env(tp)


@needs_root
def test_live_restore_ext4_sqlite_query_before_fill_ends(mount_factory, tmp_path):
    size = 128 * MiB
    m = mount_factory(name="main", env=slow_env(8 * MiB))
    m.create_volume("db", "128M", save=1)
    data = m.vol("db", "data")
    run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", data)
    fsdir = tmp_path / "fs"
    with Loop(data, fsdir) as lo:
        lo.mount()
        con = sqlite3.connect(fsdir / "t.db")
        con.execute("create table t (k integer primary key, v text)")
        con.executemany("insert into t values (?, ?)",
                        ((k, f"row {k} " * 20) for k in range(20000)))
        con.commit()
        con.close()
        lo.umount()
    kv = backup(m, "db")
    wait_hist(m, "db", kv["version"])
    ref = tmp_path / "ref"
    copy_file(data, ref)
    overwrite(data, size, seed=99)  # the volume is lost
    live_restore(m, "db")
    with Loop(data, fsdir) as lo:
        lo.mount()
        con = sqlite3.connect(fsdir / "t.db")
        rows = con.execute("select count(*), sum(length(v)) from t").fetchone()
        assert rows[0] == 20000, rows
        assert info(m, "db")["state"] == "filling", "the query came after the fill"
        con.executemany("insert into t values (?, ?)",
                        ((k, "new") for k in range(20000, 20500)))
        con.commit()
        con.close()
        lo.umount()
    wait_filled(m, "db")
    run("e2fsck", "-fn", data)
    with Loop(data, fsdir) as lo:
        lo.mount()
        con = sqlite3.connect(fsdir / "t.db")
        assert con.execute("select count(*) from t").fetchone()[0] == 20500
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        con.close()
        lo.umount()


def test_kill9_during_fill_keeps_history_plus_acknowledged_writes(mount_factory, tmp_path):
    size = 32 * MiB
    m = mount_factory(name="main", env=slow_env(3 * MiB))
    data, ref, ver = disk_history(m, tmp_path, "v", size)
    model = Model(ref, tmp_path / "model")
    live_restore(m, "v", f"-v {ver}")
    rng = random.Random(77)
    for rnd in range(4):
        time.sleep(rng.uniform(0.1, 1.2))
        mixed_writes(m, data, model, rng, n=4)
        m.kill9()
        m.start()
        i = info(m, "v")
        assert i["state"] in ("filling", "ok"), i
        check_reads_while_filling(m, "v", data, model, rng, n=8)
        log = m.vol("v", "log").read_text()
        assert "resumed" in log or i["state"] == "ok", log[-2000:]
    wait_filled(m, "v")
    assert_same(data, model.path, "the volume after fills interrupted by kill -9")


def test_source_failure_is_eio_for_unfilled_grains_then_resumes(request, mount_factory,
                                                                tmp_path):
    """The S3 pool stops answering during a fill (the fault proxy answers
    503 to everything): reads of grains filled or written still work, the
    others are EIO; the fill resumes when the pool answers again."""
    rgw = request.getfixturevalue("rgw")
    proxy, faults = request.getfixturevalue("s3proxy")
    faults.reset()
    m = mount_factory(name="main", env=slow_env(1 * MiB, daemon_env(rgw)))
    pool = S3Pool(m, rgw, proxy, faults)
    pool.opts += " retries=1 retry_s=1 timeout_s=5"
    pool.create_in(m)
    # larger than twice the fill's read-ahead (128 MiB, core/fill.c), so that
    # the end of the volume is still only in the pool when it stops answering
    size = 320 * MiB
    m.create_volume("v", "320M", save=1)
    m.ctl(f"tapepolicy v pool={pool.name}")
    data = m.vol("v", "data")
    fill(data, 0, size, seed=31)
    ref = tmp_path / "ref"
    copy_file(data, ref)
    kv = m.parse_reply(m.ctl("backup -m TAPE", "v"))
    assert wait_hist(m, "v", kv["version"])["tape_status"] == "succeeded"
    overwrite(data, size, seed=32)
    live_restore(m, "v", f"-v {kv['version']} -m TAPE")
    model = Model(ref, tmp_path / "model")
    model.check_range(data, 0, GRAIN, "grain 0 (filled on demand)")
    model.write(data, size - GRAIN, b"w" * GRAIN)  # written whole: the writer's
    faults.always = "503"
    try:
        failed = 0
        for g in range(size * 3 // 4 // GRAIN, size // GRAIN - 1, 16):
            try:
                read_at(data, g * GRAIN, GRAIN)
            except OSError as e:
                assert e.errno == errno.EIO, e
                failed += 1
        assert failed > 0, "no read failed while the pool was away"
        model.check_range(data, 0, GRAIN, "a filled grain while the source fails")
        model.check_range(data, size - GRAIN, GRAIN, "a written grain while the source fails")
        assert info(m, "v")["state"] == "filling"
    finally:
        faults.reset()
    # reading all of it fetches what is missing (the fill alone would take
    # minutes at its capped rate)
    assert_same(data, model.path, "the volume after the source came back")
    wait_filled(m, "v", timeout=FILL_TIMEOUT)
    assert "error: reading tape image of version" in m.vol("v", "log").read_text()


# ---------------------------------------------------------------- clones


def clone(m, name, src, opts=""):
    r = m.ctl(f"volume clone {name} {src} {opts}".strip())
    return m.parse_reply(r)


def test_clone_content_isolation_and_own_backups(mount_factory, tmp_path):
    size = 32 * MiB
    m = mount_factory(name="main", env=slow_env(4 * MiB))
    m.create_volume("prod", "32M", save=2)
    data = m.vol("prod", "data")
    fill(data, 0, size, seed=41)
    kv = backup(m, "prod")
    wait_hist(m, "prod", kv["version"])
    ver = kv["version"]
    img = m.vol("prod", "history", ver, "image")
    ref = tmp_path / "ref"
    copy_file(img, ref)
    fill(data, 0, 4 * MiB, seed=42)  # production moves on
    prod_ref = tmp_path / "prod.ref"
    copy_file(data, prod_ref)

    c = clone(m, "test", "prod", f"-v {ver}")
    assert c["source"] == "prod" and c["version"] == ver and c["media"] == "DISK", c
    assert int(c["size"]) == size
    cdata = m.vol("test", "data")
    rng = random.Random(3)
    model = Model(ref, tmp_path / "model")
    check_reads_while_filling(m, "test", cdata, model, rng)
    mixed_writes(m, cdata, model, rng)
    # the pin: the source history cannot go, nor the source volume
    err, r = m.ctl_err(f"histdel -v {ver}", "prod")
    assert err == errno.EBUSY and "clone of test" in r, r
    err, r = m.ctl_err("volume delete prod")
    assert err == errno.EBUSY and "clone of test" in r, r
    err, r = m.ctl_err("backup -T", "test")
    assert err == errno.EBUSY and "filling" in r, r
    assert info(m, "test")["state"] == "filling", "the fill ended too soon for this test"
    wait_filled(m, "test")
    assert_same(cdata, model.path, "the clone after its fill")
    assert_same(img, ref, "the source history after the clone was written")
    assert_same(data, prod_ref, "the source volume after the clone was written")
    m.ctl(f"histdel -v {ver}", "prod")  # not pinned any more

    # the clone's own backups: -T, then -T onto the same BV copies only
    # what was written since
    b1 = backup(m, "test")
    wait_hist(m, "test", b1["version"])
    b2 = backup(m, "test")
    wait_hist(m, "test", b2["version"])
    written = set()
    for g in (3, 100, 101, 400):
        model.write(cdata, g * GRAIN + 10, b"x" * 50)
        written.add(g)
    b3 = backup(m, "test")
    h3 = wait_hist(m, "test", b3["version"])
    assert h3["disk_status"] == "succeeded" and b3["copy"] == "diff", b3
    assert int(b3["grains"]) == len(written), b3
    assert_same(m.vol("test", "history", b3["version"], "image"), model.path,
                "the clone's differential backup")


def test_clone_survives_kill9_and_delete_while_filling(mount_factory, tmp_path):
    size = 16 * MiB
    m = mount_factory(name="main", env=slow_env(1 * MiB))
    m.create_volume("prod", "16M")
    fill(m.vol("prod", "data"), 0, size, seed=51)
    kv = backup(m, "prod")
    wait_hist(m, "prod", kv["version"])
    ref = tmp_path / "ref"
    copy_file(m.vol("prod", "history", kv["version"], "image"), ref)
    clone(m, "c1", "prod")
    model = Model(ref, tmp_path / "model")
    model.write(m.vol("c1", "data"), 5 * GRAIN + 3, b"acknowledged")
    m.kill9()
    m.start()
    i = info(m, "c1")
    assert i["state"] == "filling" and i["fill_source"] == "prod", i
    model.check_range(m.vol("c1", "data"), 0, 16 * GRAIN, "the clone after kill -9")
    # a clone still filling can be deleted; its source is free again
    r = retry_busy(lambda: m.ctl("volume delete c1"))
    assert "deleted=1" in r
    m.ctl(f"histdel -v {kv['version']}", "prod")


def test_clone_refusals(mount):
    m = mount
    m.create_volume("a", "4M")
    for cmd, want in (("volume clone b a", errno.ENOENT),      # no history yet
                      ("volume clone a a", errno.EINVAL),
                      ("volume clone b nosuch", errno.ENOENT),
                      ("volume clone b", errno.EINVAL),
                      ("volume clone b a -z", errno.EINVAL),
                      ("volume clone b a -v 1 -g 1", errno.EINVAL)):
        err, r = m.ctl_err(cmd)
        assert err == want, (cmd, r)
        assert r.startswith("error: "), r
    assert not m.vol("b").exists()
    kv = backup(m, "a")
    wait_hist(m, "a", kv["version"])
    err, r = m.ctl_err("volume clone a2 a -m TAPE")
    assert err == errno.ENOENT, r
    assert not m.vol("a2").exists()
    clone(m, "b", "a")
    err, r = m.ctl_err("volume clone b a")
    assert err == errno.EEXIST, r


def test_acmrestore_i(mount_factory, tmp_path, build_dir):
    size = 8 * MiB
    m = mount_factory(name="main")
    data, ref, ver = disk_history(m, tmp_path, "v", size)
    r = subprocess.run([str(build_dir / "tools" / "acmrestore"), "-i", "-M", str(m.mnt), "v"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "v acmrestore completed" in r.stdout
    wait_filled(m, "v")
    assert_same(data, ref)
    r = subprocess.run([str(build_dir / "tools" / "acmrestore"), "-i", "-r", "/tmp/x",
                        "-M", str(m.mnt), "v"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "-i" in r.stderr


@pytest.mark.parametrize("media", ["DISK", "TAPE"])
def test_clone_of_a_thin_history_fills_only_its_data(mount, tmp_path, media):
    """A clone reads zeros where the history has holes: only the history's
    data grains are filled (from a tape history, its manifest's non-zero
    grains), and the clone equals the history."""
    m = mount
    m.create_volume("thin", "256M", save=1)
    data = m.vol("thin", "data")
    extents = [(3 * GRAIN, 2), (1000 * GRAIN, 1), (4000 * GRAIN, 8)]
    fd = os.open(data, os.O_RDWR)
    for off, n in extents:
        os.pwrite(fd, random.Random(off).randbytes(n * GRAIN), off)
    os.fsync(fd)
    os.close(fd)
    kv = m.parse_reply(m.ctl("backup -m TAPE" if media == "TAPE" else "backup", "thin"))
    wait_hist(m, "thin", kv["version"])
    c = clone(m, "tc", "thin", f"-v {kv['version']} -m {media}")
    assert int(c["grains_to_fill"]) == sum(n for _, n in extents), c
    wait_filled(m, "tc")
    img = m.vol("thin", "history", kv["version"], "tape.img" if media == "TAPE" else "image")
    assert_same(m.vol("tc", "data"), img, "the clone of a thin history")
