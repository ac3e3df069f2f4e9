"""Mounting the way Linux users expect, and the daemon's own command line:
mount -t fuse.acmfs through mount.fuse3, the store lock, SIGTERM, --check."""
import errno
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import is_acmfs_mounted, retry_busy

MiB = 1 << 20


def run(*args, **kw):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=60, **kw)


def wait_for(pred, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_version_and_help(acmfs_bin):
    r = run(acmfs_bin, "--version")
    assert r.returncode == 0 and r.stdout.startswith("acmfs ")
    r = run(acmfs_bin, "--help")
    assert r.returncode == 0 and "STORE MOUNTPOINT" in r.stdout and "--check" in r.stdout


def test_usage_error_without_mountpoint(acmfs_bin, tmp_path):
    r = run(acmfs_bin, tmp_path / "store")
    assert r.returncode != 0 and "usage" in r.stderr


def _mount_and_use(acmfs_bin, tmp_path, mount_args):
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    mnt.mkdir()
    r = run("mount", *mount_args(store, mnt))
    assert r.returncode == 0, r.stderr
    try:
        assert wait_for(lambda: is_acmfs_mounted(mnt))
        assert (mnt / "README").read_text().startswith("acmfs")
        with open(mnt / "ctl", "w") as f:
            f.write("volume create db 4M\n")
        assert (mnt / "volumes" / "db" / "data").stat().st_size == 4 * MiB
    finally:
        r = run("umount", mnt)
        assert r.returncode == 0, r.stderr
    # the daemon (in the background) leaves once unmounted: the store unlocks
    assert wait_for(lambda: run(acmfs_bin, "--check", store).returncode == 0), \
        run(acmfs_bin, "--check", store).stdout


def test_mount_t_fuse_acmfs(acmfs_bin, tmp_path):
    """`mount -t fuse.acmfs STORE MNT`: mount.fuse3 runs `acmfs` from the
    default PATH (mount(8) resets PATH), as an installed acmfs would be."""
    if not shutil.which("mount.fuse3"):
        pytest.skip("mount.fuse3 (package fuse3) not installed")
    link = Path("/usr/local/sbin/acmfs")
    made = False
    if not link.exists() and os.geteuid() == 0:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path(acmfs_bin).resolve())
        made = True
    if not link.exists():
        pytest.skip("acmfs is not installed on the default PATH")
    try:
        _mount_and_use(acmfs_bin, tmp_path,
                       lambda s, m: ("-t", "fuse.acmfs", s, m))
    finally:
        if made:
            link.unlink()


def test_fstab_style_program_hash_source(acmfs_bin, tmp_path):
    """The fstab form `/path/to/acmfs#STORE MNT fuse defaults` (no PATH needed)."""
    if not shutil.which("mount.fuse3"):
        pytest.skip("mount.fuse3 (package fuse3) not installed")
    prog = Path(acmfs_bin).resolve()
    _mount_and_use(acmfs_bin, tmp_path,
                   lambda s, m: ("-t", "fuse", f"{prog}#{s}", m, "-o", "defaults"))


def test_second_daemon_on_a_store_is_refused(mount, acmfs_bin, tmp_path):
    other = tmp_path / "mnt2"
    other.mkdir()
    r = run(acmfs_bin, "-f", mount.store, other)
    assert r.returncode != 0
    assert "locked" in r.stderr
    assert not is_acmfs_mounted(other)


def test_sigterm_unmounts_cleanly_and_finishes_copies(mount_factory):
    m = mount_factory()
    m.create_volume("db", "256M")
    with open(m.vol("db", "data"), "r+b") as f:
        f.write(os.urandom(64 * MiB))
        f.flush()
        os.fsync(f.fileno())
    rep = m.parse_reply(m.ctl("backup -m DISK", vol="db"))
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=60) == 0
    m.proc = None
    assert wait_for(lambda: not is_acmfs_mounted(m.mnt))
    r = run(m.bin, "--check", m.store)
    assert r.returncode == 0, r.stdout
    m.start()
    info = m.read_info(f"volumes/db/history/{rep['version']}/info")
    assert info["disk_status"] == "succeeded"


def test_sigterm_refuses_to_stop_while_data_is_in_use(mount_factory, tmp_path):
    """SIGTERM unmounts plainly, not lazily: while a volume's data is open,
    or backs a loop device, the daemon keeps serving (no ENOTCONN under the
    user), logs which volume holds it, and stops by itself once it is free."""
    m = mount_factory()
    m.create_volume("db", "64M")
    data = m.vol("db", "data")
    fd = os.open(data, os.O_RDWR)
    try:
        os.pwrite(fd, b"before", 0)
        m.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert m.proc.poll() is None, "the daemon stopped under an open file"
        assert is_acmfs_mounted(m.mnt)
        os.pwrite(fd, b"during", 4096)  # the mount still works
        os.fsync(fd)
        assert "not stopping yet" in m.stderr_text() and "db/data" in m.stderr_text()
    finally:
        os.close(fd)
    # free now: it unmounts and exits on its own (no second signal)
    assert m.proc.wait(timeout=30) == 0
    m.proc = None
    assert wait_for(lambda: not is_acmfs_mounted(m.mnt))
    m.start()
    with open(m.vol("db", "data"), "rb") as f:
        assert f.read(6) == b"before"
        f.seek(4096)
        assert f.read(6) == b"during"

    # the same with a loop device over data
    if not shutil.which("losetup"):
        pytest.fail("losetup missing (util-linux)")
    r = run("losetup", "-f", "--show", m.vol("db", "data"))
    assert r.returncode == 0, r.stderr
    dev = r.stdout.strip()
    try:
        m.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert m.proc.poll() is None, "the daemon stopped under a loop device"
        with open(dev, "rb") as f:
            assert f.read(6) == b"before"
    finally:
        run("losetup", "-d", dev)
    assert m.proc.wait(timeout=30) == 0
    m.proc = None
    assert wait_for(lambda: not is_acmfs_mounted(m.mnt))


def test_check_reports_and_repairs_an_interrupted_copy(mount_factory):
    m = mount_factory()
    m.create_volume("db", "1G")
    fd = os.open(m.vol("db", "data"), os.O_WRONLY)
    try:
        for off in range(0, 1024 * MiB, 8 * MiB):
            os.pwrite(fd, os.urandom(MiB), off)
        os.fsync(fd)
    finally:
        os.close(fd)
    rep = m.parse_reply(m.ctl("backup -T -m DISK", vol="db"))
    info = m.read_info(f"volumes/db/history/{rep['version']}/info")
    if info["disk_status"] != "executing":
        pytest.skip("the copy finished before the kill; nothing to interrupt")
    m.kill9()
    r = run(m.bin, "--check", m.store)
    assert r.returncode != 0
    assert f"version {rep['version']} was interrupted" in r.stdout
    r = run(m.bin, "--check", "--repair", m.store)
    assert "repaired:" in r.stdout
    r = run(m.bin, "--check", m.store)
    assert r.returncode == 0, r.stdout
    m.start()
    info = m.read_info(f"volumes/db/history/{rep['version']}/info")
    assert info["disk_status"] == "failed"
    # the pair lost its tracking: the next differential is a full copy
    rep2 = m.parse_reply(m.ctl("backup -T -m DISK", vol="db"))
    assert rep2["copy"] == "full"


def test_check_refuses_a_mounted_store(mount, acmfs_bin):
    r = run(acmfs_bin, "--check", mount.store)
    assert r.returncode != 0 and "mounted" in r.stdout


def test_check_flags_damaged_tracking(mount_factory):
    m = mount_factory()
    m.create_volume("db", "16M")
    m.ctl("backup -T -m DISK", vol="db")
    m.stop()
    era = next(Path(m.store).glob("vol/*/era.map"))
    data = bytearray(era.read_bytes())
    data[70] ^= 0xFF
    era.write_bytes(bytes(data))
    r = run(m.bin, "--check", m.store)
    assert r.returncode != 0 and "tracking cannot be trusted" in r.stdout
    m.start()
    # mounting distrusts it too: the pair falls back to a full copy, and says so
    assert "not trusted" in (m.mnt / "volumes/db/log").read_text()
    rep = m.parse_reply(m.ctl("backup -T -m DISK", vol="db"))
    assert rep["copy"] == "full"


def test_writeback_mode_backs_up_what_was_flushed(mount_factory):
    """-o writeback: the kernel caches writes; an fsync'ed write is in the
    next backup, and the data file still refuses a size change."""
    m = mount_factory(opts=["-o", "writeback"])
    m.create_volume("db", "8M")
    ref = os.urandom(8 * MiB)
    fd = os.open(m.vol("db", "data"), os.O_RDWR)
    try:
        os.pwrite(fd, ref, 0)
        os.fsync(fd)
        rep = m.parse_reply(m.ctl("backup -m DISK", vol="db"))
        with pytest.raises(OSError):
            os.ftruncate(fd, 4 * MiB)
    finally:
        os.close(fd)
    assert wait_for(lambda: m.read_info(f"volumes/db/history/{rep['version']}/info")
                    ["disk_status"] == "succeeded")
    assert m.vol("db", "history", rep["version"], "image").read_bytes() == ref


def test_manifests_left_in_the_trash_are_deleted_at_mount(mount_factory):
    """A tape history forgotten just before a crash leaves its manifest in the
    catalog's trash: the next mount deletes it (and the row)."""
    import sqlite3
    m = mount_factory()
    m.stop()
    key = "manifests/db/00000000000000000042-deadbeefdeadbeef.mf"
    obj = m.store / "tape" / key
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(b"orphan")
    with sqlite3.connect(m.store / "catalog.db") as db:
        db.execute("INSERT INTO tape_trash(pool, key) VALUES('default', ?)", (key,))
    m.start()
    assert not obj.exists()
    m.stop()
    with sqlite3.connect(m.store / "catalog.db") as db:
        assert db.execute("SELECT count(*) FROM tape_trash").fetchone()[0] == 0
    m.start()


def test_volume_delete_refused_while_an_image_is_open(mount):
    m = mount
    m.create_volume("db", "4M")
    rep = m.parse_reply(m.ctl("backup -m DISK", vol="db"))
    assert wait_for(lambda: m.read_info(f"volumes/db/history/{rep['version']}/info")
                    ["disk_status"] == "succeeded")
    with open(m.vol("db", "history", rep["version"], "image"), "rb") as f:
        f.read(4096)
        err, reply = m.ctl_err("volume delete db")
        assert err == errno.EBUSY, reply
    retry_busy(lambda: m.ctl("volume delete db"))
    assert not m.vol("db").exists()


def _readahead_kb(mnt):
    dev = os.stat(mnt).st_dev
    return int(Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
               .read_text())


@pytest.mark.skipif(os.geteuid() != 0, reason="the bdi's sysfs file is root's")
def test_kernel_readahead_is_raised_for_large_sequential_reads(mount_factory):
    """The kernel gives FUSE mounts 128 KiB of read-ahead, so a cp of a
    history image would travel in 128 KiB requests: the daemon raises it
    (default 1024 KiB, -o readahead_kb=N, 0 keeps the kernel's)."""
    assert _readahead_kb(mount_factory().mnt) == 1024  # the stat was a request
    assert _readahead_kb(mount_factory(opts=["-o", "readahead_kb=4096"]).mnt) == 4096
    assert _readahead_kb(mount_factory(opts=["-o", "readahead_kb=0"]).mnt) == 128
