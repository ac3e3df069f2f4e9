"""Integration tests of issue 17's fixed-cap and from= bugs.

- The era-map flusher covers every volume, not the first 256: a write to a
  volume past the old cap is flushed, so after kill -9 the next differential
  backup copies the written grain only (an unflushed write-intent region would
  count every grain of the volume as written).
- `histdel -z` deletes every history and `canceltrk -all` cancels every pair,
  however many (the caps there were 4096 histories and 256 pairs; a volume
  holds at most 64 backup volumes, so those two caps cannot be reached through
  the mount: see the commit message).
"""

import os
import time

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
