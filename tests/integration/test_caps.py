"""Integration tests of issue 17's fixed-cap and from= bugs.

- The era-map flusher covers every volume, not the first 256: a write to a
  volume past the old cap is flushed, so after kill -9 the next differential
  backup copies the written grain only (an unflushed write-intent region would
  count every grain of the volume as written).
- `histdel -z` deletes every history and `canceltrk -all` cancels every pair,
  however many (the caps there were 4096 histories and 256 pairs). Not tested
  here: disk histories and tracking pairs are bounded by save= (at most 64;
  choose_bv reuses a free tracking pair first), and 4096 tape histories would
  take thousands of tape backups.
- `volume create x SIZE from=<a file of this mount>` is refused at once with
  EINVAL (the bulk copy runs under the engine lock and the mount's reads need
  it: it used to hang the daemon for good), also through a symlink and a bind
  mount, and the daemon answers afterwards.
"""

import errno
import os
import subprocess
import threading
import time

import pytest

from conftest import TIME_SCALE

KiB = 1 << 10
MiB = 1 << 20
GRAIN = 64 * KiB

NVOLS = int(os.environ.get("ACMFS_CAPS_VOLS", "1000"))


def backup(m, vol):
    kv = m.parse_reply(m.ctl("backup -T -m DISK", vol))
    return kv


def wait_hist(m, vol, ver, timeout=60):
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        i = m.read_info(f"volumes/{vol}/history/{ver}/info")
        if i.get("disk_status") != "executing":
            return i
        assert time.monotonic() < deadline, f"{vol}/{ver} still executing: {i}"
        time.sleep(0.02)


def intent_marked(path):
    """Whether any write-intent bit is set (64-byte header, then bits)."""
    b = path.read_bytes()
    return any(b[64:])


def pwrite_sync(path, off, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def vol_store_dir(m, name):
    """STORE/vol/<id>: the volume id is the top bits of its inode numbers."""
    return m.store / "vol" / str(os.stat(m.vol(name)).st_ino >> 40)


# ------------------------------------------------------------ era-map flusher

def test_flusher_covers_every_volume(mount_factory):
    """More volumes than the old cap of 256 (1000 by default; creating them
    takes a few seconds). The flusher walks the volumes in name order, so the
    last names were never flushed before."""
    assert NVOLS > 300
    m = mount_factory(name="caps", opts=["-o", "flush_ms=200"])
    names = [f"v{i:04d}" for i in range(NVOLS)]
    for n in names:
        m.ctl(f"volume create {n} 1M save=1")
    nr = MiB // GRAIN
    targets = [names[10], names[300], names[-2], names[-1]]
    for t in targets:
        kv = backup(m, t)
        assert kv["copy"] == "full" and kv["grains"] == str(nr), kv
        assert wait_hist(m, t, kv["version"])["disk_status"] == "succeeded"
    for t in targets:
        pwrite_sync(m.vol(t, "data"), 5 * GRAIN + 4096, b"x" * 4096)   # grain 5
    # each write marked its volume's write-intent region; a flush clears it
    deadline = time.monotonic() + 10 * TIME_SCALE
    marked = set(targets)
    while marked and time.monotonic() < deadline:
        marked = {t for t in marked if intent_marked(vol_store_dir(m, t) / "intent")}
        time.sleep(0.05)
    m.kill9()
    m.start()
    got = {}
    for t in targets:
        kv = backup(m, t)
        got[t] = (kv["copy"], kv["grains"])
    # an unflushed volume comes back with its whole intent region (the whole
    # 1 MiB volume) counted as written: 16 grains instead of 1
    assert all(v == ("diff", "1") for v in got.values()), \
        f"differential after kill -9 (copy, grains): {got}; write-intent still " \
        f"marked before the kill in: {sorted(marked)}"
    assert not marked, f"write-intent never cleared (not flushed): {sorted(marked)}"


# ------------------------------------------------------- from= inside the mount

def ctl_bounded(m, cmd, timeout=10.0):
    """ctl_err in a thread: (errno, reply), or None if it did not return."""
    out = []
    th = threading.Thread(target=lambda: out.append(m.ctl_err(cmd)), daemon=True)
    th.start()
    th.join(timeout * TIME_SCALE)
    return out[0] if out else None


def test_from_inside_the_mount_refused(mount_factory, tmp_path):
    m = mount_factory(name="from")
    m.create_volume("a", "1M", save=1)
    pwrite_sync(m.vol("a", "data"), 0, b"a" * 65536)
    kv = backup(m, "a")
    assert wait_hist(m, "a", kv["version"])["disk_status"] == "succeeded"
    link = tmp_path / "link"
    link.symlink_to(m.path("volumes"))
    paths = [m.vol("a", "history", "latest", "image"), m.vol("a", "data"),
             link / "a" / "data", m.path("volumes", "a", "..", "a", "data")]
    dev = os.stat(m.mnt).st_dev
    bind = None
    if os.getuid() == 0:
        bind = tmp_path / "bind"
        bind.mkdir()
        r = subprocess.run(["mount", "--bind", str(m.mnt), str(bind)],
                           capture_output=True, text=True)
        if r.returncode == 0:
            paths.append(bind / "volumes" / "a" / "data")
        else:
            bind = None
    try:
        for i, p in enumerate(paths):
            t0 = time.monotonic()
            res = ctl_bounded(m, f"volume create x{i} 1M from={p}")
            if res is None:
                # a daemon waiting on its own mount cannot even die: abort
                # the connection (fusectl), then kill it
                if bind is not None:
                    subprocess.run(["umount", "-l", str(bind)])
                    bind = None
                ab = f"/sys/fs/fuse/connections/{os.minor(dev)}/abort"
                if os.path.exists(ab):
                    with open(ab, "w") as f:
                        f.write("1")
                m.kill9()
                pytest.fail(f"from={p}: no reply within 10 s (daemon deadlocked)")
            err, reply = res
            assert err == errno.EINVAL, (p, err, reply)
            assert "from= must not be inside the mount" in reply, (p, reply)
            assert time.monotonic() - t0 < 5 * TIME_SCALE, p
            assert not m.vol(f"x{i}").exists()
    finally:
        if bind is not None:
            subprocess.run(["umount", "-l", str(bind)])
    # the daemon still answers, and from= outside the mount still works
    src = tmp_path / "src.img"
    src.write_bytes(b"s" * 8192)
    assert ctl_bounded(m, "volume create b 1M from=" + str(src))[0] == 0
    with open(m.vol("b", "data"), "rb") as f:
        assert f.read(8192) == b"s" * 8192
    assert sorted(os.listdir(m.path("volumes"))) == ["a", "b"]
