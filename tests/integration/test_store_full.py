"""Store full (issue 8, suite 5): the store lives on a small loop-mounted
ext4, so the physical copy of a backup runs out of space.

Sizes: a 96 MiB ext4 (no reserved blocks) holds about 85 MiB. The volume is
64 MiB. An early backup is taken while only 8 MiB of the volume is written
(a conventional copy skips holes: 8 MiB on its BV); then the whole volume is
filled with random data: 64 + 8 MiB used, ~13 MiB free — the TV fits, a
second full copy (64 MiB) cannot.

Checks: `backup -m DISK` either fails at the ctl with ENOSPC or its history
ends `failed` — never `succeeded`; the volume's data stays exactly the
reference; the earlier history stays readable and exact; the daemon keeps
serving (tables, status.json, writes to the volume), lets the failed history
be deleted, and unmounts cleanly. Every mount and loop device is undone,
whatever happens. Needs root (mount, losetup).
"""

import errno
import os
import random
import shutil
import subprocess
import time

import pytest

from conftest import TIME_SCALE

MiB = 1 << 20
FS_BYTES = 96 * MiB
VOL_BYTES = 64 * MiB
EARLY_BYTES = 8 * MiB
JOB_TIMEOUT = 120 * TIME_SCALE

pytestmark = [
    pytest.mark.skipif(os.getuid() != 0, reason="needs root (mount -o loop)"),
    pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="mkfs.ext4 missing"),
    pytest.mark.slow,
]


def _run(*argv, check=True):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=check)


def _loops_of(img):
    r = _run("losetup", "-n", "-O", "NAME", "-j", str(img), check=False)
    return [l.strip() for l in r.stdout.splitlines() if l.strip()]


def _is_mountpoint(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@pytest.fixture
def small_fs(tmp_path):
    """A 96 MiB ext4 mounted at tmp_path/fs (loop); always undone."""
    img = tmp_path / "fs.img"
    mnt = tmp_path / "fs"
    mnt.mkdir()
    with open(img, "wb") as f:
        f.truncate(FS_BYTES)
    r = _run("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(img), check=False)
    if r.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {r.stdout}")
    r = _run("mount", "-o", "loop", str(img), str(mnt), check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot loop-mount: {r.stdout}")
    try:
        yield mnt
    finally:
        # the acmfs daemon using it is stopped by then (mount_factory is
        # requested after this fixture, so it is torn down before it)
        if _is_mountpoint(mnt):
            if _run("umount", str(mnt), check=False).returncode != 0:
                _run("umount", "-l", str(mnt), check=False)
        for dev in _loops_of(img):
            _run("losetup", "-d", dev, check=False)


def _fsync_write(path, off, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        n = 0
        while n < len(data):
            n += os.pwrite(fd, data[n:n + 4 * MiB], off + n)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _hist_info(m, v):
    try:
        return m.read_info(f"volumes/db/history/{v}/info")
    except FileNotFoundError:
        return None


def _wait_done(m, v, timeout=JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        info = _hist_info(m, v)
        if info is None or info.get("disk_status", info.get("status")) != "executing":
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"version {v} still executing after {timeout:g} s: {info}")
        time.sleep(0.1)


def _status(info):
    return info.get("disk_status", info.get("status")) if info else None


def _same(got, want, what):
    assert len(got) >= len(want), f"{what}: {len(got)} bytes, want {len(want)}"
    if got[:len(want)] != want:
        bad = next(i for i in range(0, len(want), 65536)
                   if got[i:i + 65536] != want[i:i + 65536])
        raise AssertionError(f"{what}: differs from the reference at offset {bad}")


class Full:
    """The state every test here starts from: version v1 (8 MiB) exact on
    disk, the 64 MiB volume full of random data, then `backup -m DISK` run
    against a store without room for the copy (v2: None if the ctl refused
    it, else its version, once no longer executing)."""

    def __init__(self, small_fs, mount_factory):
        self.fs = small_fs
        self.m = m = mount_factory(store=small_fs / "store", name="full")
        m.create_volume("db", f"{VOL_BYTES // MiB}M")
        self.data = m.vol("db", "data")
        self.rng = rng = random.Random(8)

        # an early history while the volume is mostly holes (8 MiB on its BV)
        ref = bytearray(VOL_BYTES)
        early = rng.randbytes(EARLY_BYTES)
        ref[:EARLY_BYTES] = early
        _fsync_write(self.data, 0, early)
        self.v1 = int(m.parse_reply(m.ctl("backup -m DISK", "db"))["version"])
        assert _status(_wait_done(m, self.v1)) == "succeeded"
        self.ref_v1 = bytes(ref)

        # now the whole volume: the TV fits, a second full copy cannot
        rest = rng.randbytes(VOL_BYTES - EARLY_BYTES)
        ref[EARLY_BYTES:] = rest
        _fsync_write(self.data, EARLY_BYTES, rest)
        self.ref = bytes(ref)
        self.free_before = self.free()
        assert self.free_before < VOL_BYTES, \
            f"the test's sizes are off: {self.free_before} bytes free"

        err, reply = m.ctl_err("backup -m DISK", "db")
        self.v2 = None
        if err:
            assert err == errno.ENOSPC, \
                f"backup failed with {errno.errorcode.get(err)}: {reply}"
            return
        self.v2 = int(m.parse_reply(reply)["version"])
        # the volume keeps taking writes while the copy runs out of space
        # (copy-on-write to the BV may not find room either)
        patch = rng.randbytes(65536)
        try:
            _fsync_write(self.data, 3 * MiB, patch)
            self.ref = self.ref[:3 * MiB] + patch + self.ref[3 * MiB + len(patch):]
        except OSError as e:
            assert e.errno in (errno.ENOSPC, errno.EIO), e
        self.info2 = _wait_done(m, self.v2)

    def free(self):
        st = os.statvfs(self.fs)
        return st.f_bavail * st.f_frsize

    def write(self, off, n=65536):
        patch = self.rng.randbytes(n)
        _fsync_write(self.data, off, patch)
        self.ref = self.ref[:off] + patch + self.ref[off + n:]


def test_backup_on_a_full_store(small_fs, mount_factory):
    f = Full(small_fs, mount_factory)
    m, v1, v2 = f.m, f.v1, f.v2
    if v2 is not None:
        assert _status(f.info2) != "succeeded", \
            f"a backup whose copy could not be written ended succeeded: {f.info2}"
        assert _status(f.info2) == "failed", f.info2

    # the daemon still serves, and says what happened
    assert m.proc.poll() is None, "the daemon died"
    for name in ("status.json", "histdisp", "devdisp", "trkstat", "metrics"):
        m.path(name).read_bytes()
    log = m.vol("db", "log").read_text()
    if v2 is not None:
        assert "space" in log.lower() or "ENOSPC" in log, log[-2000:]
    latest = os.readlink(m.vol("db", "history", "latest"))
    assert latest.rstrip("/").endswith(str(v1)), f"latest -> {latest}"

    # the volume and the earlier history are intact
    _same(_read(f.data), f.ref, "volume data")
    _same(_read(m.vol("db", "history", str(v1), "disk.img")), f.ref_v1, f"history {v1}")
    _same(_read(m.vol("db", "history", str(v1), "image")), f.ref_v1, f"history {v1} image")

    # the volume still takes writes (overwrites need no new space)
    f.write(5 * MiB)
    _same(_read(f.data), f.ref, "volume data after a write")

    m.stop()


def test_full_store_mounts_again(small_fs, mount_factory):
    """After the failed backup, still full: a clean unmount and a remount must
    work (the volume and the early history readable and exact), and the
    failed history must not come back as succeeded."""
    f = Full(small_fs, mount_factory)
    m, v1, v2 = f.m, f.v1, f.v2
    m.remount()
    _same(_read(f.data), f.ref, "volume data after remount")
    _same(_read(m.vol("db", "history", str(v1), "disk.img")), f.ref_v1,
          f"history {v1} after remount")
    if v2 is not None:
        info = _hist_info(m, v2)
        assert info is None or _status(info) != "succeeded", info
    m.stop()


def test_full_store_recovers_by_deleting_the_failed_history(small_fs, mount_factory):
    """What an administrator does next: delete the failed history. That must
    work on the full store and give the space of the aborted copy back."""
    f = Full(small_fs, mount_factory)
    m, v2 = f.m, f.v2
    if v2 is None:
        # refused up front: nothing was written, nothing to give back
        assert f.free() >= f.free_before - MiB
        return
    if m.vol("db", "history", str(v2)).exists():
        deadline = time.monotonic() + 10 * TIME_SCALE
        while True:
            err, reply = m.ctl_err(f"histdel -v {v2} -m DISK", "db")
            if err != errno.EBUSY or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert err in (0, errno.ENOENT), \
            f"histdel of the failed history on the full store: {reply.strip()} " \
            f"({f.free()} bytes free; {f.free_before} before the backup)"
    # the aborted copy's blocks are free again
    assert f.free() >= f.free_before - MiB, \
        f"{f.free()} bytes free after deleting the failed history, " \
        f"{f.free_before} before the backup"
    assert not m.vol("db", "history", str(v2)).exists()
    # and a smaller backup fits again once the volume is mostly holes? Not
    # here: the volume is full. The daemon keeps working and unmounts cleanly.
    f.write(7 * MiB)
    _same(_read(f.data), f.ref, "volume data")
    m.remount()
    assert not m.vol("db", "history", str(v2)).exists(), "the deleted history came back"
    _same(_read(f.data), f.ref, "volume data after remount")
    m.stop()
