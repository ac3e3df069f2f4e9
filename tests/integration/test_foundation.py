"""Integration tests of the foundation (issue 3): the daemon, its store and
catalog, the global ctl, and `volumes/<vol>/data` as a real block image.

Every test mounts a fresh store (the `mount` fixture); the fixture unmounts,
and fails the test on a sanitizer report or a bad daemon exit.
"""

import errno
import hashlib
import os
import random
import re
import sqlite3
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (REPO, EXIT_TIMEOUT, MOUNT_TIMEOUT, Mount,
                      is_acmfs_mounted, make_traversable, retry_busy, run_as_nobody)

MiB = 1 << 20
KiB = 1 << 10
GRAIN = 64 * KiB
LOG_LINE_RE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d error: [a-z][a-z ]*: .+ \(E[A-Z0-9]+\)$")

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root")


# --------------------------------------------------------------------- helpers

def catalog_dump(store):
    """The catalog's rows (minus log/event tables), for 'nothing changed'."""
    db = Path(store) / "catalog.db"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            tables = [r[0] for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' "
                "ORDER BY name")]
            out = []
            for t in tables:
                if re.search(r"log|event", t, re.I):
                    continue
                rows = con.execute(f'SELECT * FROM "{t}"').fetchall()
                out.append((t, sorted(map(repr, rows))))
            return out
        finally:
            con.close()
    except sqlite3.Error as e:
        return f"unreadable: {e}"


def store_names(store):
    out = []
    for dirpath, dirs, files in os.walk(store):
        for f in files:
            if re.search(r"(-wal|-shm|-journal)$|log", f):
                continue
            out.append(os.path.relpath(os.path.join(dirpath, f), store))
    return sorted(out)


def snapshot(m):
    vols = sorted(os.listdir(m.path("volumes")))
    infos = {v: m.read_info(m.vol(v, "info")) for v in vols}
    return {"volumes": vols, "info": infos,
            "catalog": catalog_dump(m.store), "store": store_names(m.store)}


def allocated(path):
    total = 0
    for dirpath, dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def run(*argv, check=True, **kw):
    r = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} -> {r.returncode}:"
                             f"\n{r.stdout}")
    return r


def project_version():
    m = re.search(r"version\s*:\s*'([^']+)'",
                  (REPO / "meson.build").read_text())
    return m.group(1) if m else None


# --------------------------------------------------------------------- daemon

def test_help_and_version(acmfs_bin):
    r = run(acmfs_bin, "--help", check=False)
    assert r.returncode == 0, r.stdout
    assert "STORE" in r.stdout and "MOUNTPOINT" in r.stdout.upper(), r.stdout
    r = run(acmfs_bin, "--version", check=False)
    assert r.returncode == 0, r.stdout
    v = project_version()
    assert v and v in r.stdout, r.stdout


@pytest.mark.asan
def test_store_created_with_wal_catalog(mount):
    assert (mount.store / "catalog.db").is_file()
    r = run("sqlite3", mount.store / "catalog.db", "PRAGMA journal_mode")
    assert r.stdout.strip() == "wal"
    names = set(os.listdir(mount.mnt))
    assert {"README", "ctl", "volumes"} <= names, names
    assert os.listdir(mount.path("volumes")) == []
    assert "ctl" in mount.path("README").read_text()


def test_second_daemon_on_store_fails_locked(mount, tmp_path):
    other = tmp_path / "other-mnt"
    other.mkdir()
    p = subprocess.Popen([str(mount.bin), "-f", str(mount.store), str(other)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        out, err = p.communicate(timeout=MOUNT_TIMEOUT)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        subprocess.run(["fusermount3", "-u", "-z", str(other)],
                       stderr=subprocess.DEVNULL)
        pytest.fail("a second daemon on the same store kept running")
    assert p.returncode == 1, err
    assert "locked" in err.lower(), err
    assert not is_acmfs_mounted(other)
    mount.create_volume("still", "4M")          # the first one still works


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_unmounts_cleanly(mount, sig):
    mount.create_volume("v", "4M")
    mount.proc.send_signal(getattr(__import__("signal"), sig))
    rc = mount.proc.wait(timeout=EXIT_TIMEOUT)
    mount.proc = None
    assert rc == 0
    assert not is_acmfs_mounted(mount.mnt)
    mount.start()                               # and the store is intact
    assert mount.read_info("volumes/v/info")["name"] == "v"


def test_modes_owner_only(mount):
    mount.create_volume("db", "4M")
    uid = os.getuid()
    files = ["ctl", "README", "volumes/db/ctl", "volumes/db/data",
             "volumes/db/info", "volumes/db/log"]
    dirs = ["", "volumes", "volumes/db", "volumes/db/history"]
    for f in files:
        st = os.stat(mount.path(f))
        assert stat.S_ISREG(st.st_mode), f
        assert st.st_uid == uid, f
        assert st.st_mode & 0o077 == 0, f"{f}: {oct(st.st_mode)}"
    for f in ["ctl", "volumes/db/ctl", "volumes/db/data"]:
        assert stat.S_IMODE(os.stat(mount.path(f)).st_mode) == 0o600, f
    for d in dirs:
        st = os.stat(mount.path(d))
        assert stat.S_ISDIR(st.st_mode), d
        assert stat.S_IMODE(st.st_mode) == 0o700, f"{d!r}: {oct(st.st_mode)}"
        assert st.st_uid == uid, d


NOBODY_PROBE = r"""
import os, sys
out = []
for what, fn in [("stat", lambda p: os.stat(p)),
                 ("listdir", lambda p: os.listdir(p)),
                 ("read", lambda p: open(os.path.join(p, "README")).read()),
                 ("ctl", lambda p: os.open(os.path.join(p, "ctl"), os.O_WRONLY))]:
    try:
        fn(sys.argv[1]); out.append(what + "=0")
    except OSError as e:
        out.append(what + "=" + str(e.errno))
print(" ".join(out))
"""


@needs_root
def test_non_owner_gets_eacces_without_allow_other(mount):
    make_traversable(mount.mnt.parent)
    r = run_as_nobody(["/usr/bin/python3", "-c", NOBODY_PROBE, str(mount.mnt)])
    assert r.returncode == 0, r.stderr
    got = dict(kv.split("=") for kv in r.stdout.split())
    assert got == {k: str(errno.EACCES) for k in got}, r.stdout


CTL_WRITER = r"""
import os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY)
except OSError as e:
    print("open", e.errno); sys.exit()
try:
    os.write(fd, sys.argv[2].encode())
    print("write", 0)
except OSError as e:
    print("write", e.errno)
"""


@needs_root
def test_only_owner_writes_ctl_with_allow_other(mount_factory):
    m = mount_factory(opts=["-o", "allow_other"])
    m.create_volume("db", "4M")
    make_traversable(m.mnt.parent)
    for ctl, cmd in [(m.path("ctl"), "volume create evil 4M\n"),
                     (m.vol("db", "ctl"), "frobnicate\n")]:
        r = run_as_nobody(["/usr/bin/python3", "-c", CTL_WRITER, str(ctl), cmd])
        step, err = r.stdout.split()
        assert int(err) in (errno.EACCES, errno.EPERM), (ctl, r.stdout, r.stderr)
    assert sorted(os.listdir(m.path("volumes"))) == ["db"]


# --------------------------------------------------------------------- volumes

@pytest.mark.asan
def test_volume_create_and_delete(mount):
    reply = mount.ctl("volume create db 64M")
    assert reply.startswith("ok ")
    kv = Mount.parse_reply(reply)
    assert kv["volume"] == "db"
    assert kv["size"] == str(64 * MiB)
    assert kv["grain"] == str(GRAIN)
    assert kv["save"] == "2"
    assert "bvs" in kv

    assert os.listdir(mount.path("volumes")) == ["db"]
    names = set(os.listdir(mount.vol("db")))
    assert {"data", "ctl", "info", "log", "history"} <= names, names
    assert os.path.getsize(mount.vol("db", "data")) == 64 * MiB
    assert os.listdir(mount.vol("db", "history")) == []

    info = mount.read_info("volumes/db/info")
    assert info["name"] == "db"
    assert info["size"] == str(64 * MiB)
    assert info["grain"] == str(GRAIN)
    assert info["save"] == "2"
    assert info["state"] == "ok"
    assert info["backup_volumes"].split(",") == ["db.bv1", "db.bv2"]

    # the data starts as zeros
    with open(mount.vol("db", "data"), "rb") as f:
        f.seek(32 * MiB)
        assert f.read(MiB) == bytes(MiB)

    kv = mount.create_volume("big", "3G", save="3", grain="128K")
    assert kv["size"] == str(3 << 30) and kv["grain"] == str(128 * KiB)
    info = mount.read_info("volumes/big/info")
    assert info["backup_volumes"].split(",") == ["big.bv1", "big.bv2",
                                                 "big.bv3"]
    assert info["grain"] == str(128 * KiB) and info["save"] == "3"

    assert mount.ctl("volume delete db").startswith("ok")
    assert os.listdir(mount.path("volumes")) == ["big"]
    assert not mount.vol("db").exists()
    # the name can be used again, and the new volume is empty
    mount.create_volume("db", "4M")
    assert read_all(mount.vol("db", "data")) == bytes(4 * MiB)


@pytest.mark.asan
def test_volume_delete_frees_store_space(mount):
    mount.create_volume("db", "16M")
    fd = os.open(mount.vol("db", "data"), os.O_RDWR)
    try:
        os.pwrite(fd, random.Random(7).randbytes(8 * MiB), 4 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    before = allocated(mount.store)
    assert before >= 8 * MiB
    retry_busy(lambda: mount.ctl("volume delete db"))
    after = allocated(mount.store)
    # (the catalog's WAL may grow a little meanwhile)
    assert before - after >= 8 * MiB - 256 * KiB, (before, after)


@pytest.mark.asan
@pytest.mark.parametrize("flags", [os.O_RDONLY, os.O_RDWR])
def test_volume_delete_busy_while_open(mount, flags):
    mount.create_volume("db", "4M")
    fd = os.open(mount.vol("db", "data"), flags)
    try:
        before = snapshot(mount)
        err, reply = mount.ctl_err("volume delete db")
        assert err == errno.EBUSY, (err, reply)
        assert reply.startswith("error:"), reply
        assert snapshot(mount) == before
        assert os.pread(fd, 4096, 0) == bytes(4096)     # still usable
    finally:
        os.close(fd)
    retry_busy(lambda: mount.ctl("volume delete db"))
    assert os.listdir(mount.path("volumes")) == []


@pytest.mark.asan
def test_bv_add_and_policy_persist(mount):
    mount.create_volume("db", "8M")
    assert mount.ctl("bv add db").startswith("ok")
    assert mount.ctl("bv add db 2").startswith("ok")
    assert mount.ctl("policy db save=4 interval=7").startswith("ok")
    info = mount.read_info("volumes/db/info")
    assert len(info["backup_volumes"].split(",")) == 5
    assert info["save"] == "4" and info["interval_days"] == "7"
    mount.remount()
    assert mount.read_info("volumes/db/info") == info


@pytest.mark.asan
def test_commands_accept_tabs_no_newline_and_max_length(mount):
    mount.ctl(b"volume\tcreate\ttabbed\t4M")
    name64 = "n" + "x" * 63
    mount.ctl(f"volume create {name64} 4M save=1")
    line = b"volume create max 4M"
    line += b" " * (4096 - len(line))
    assert len(line) == 4096
    mount.ctl(line)
    mount.ctl("volume create a.b_c-D9 8K")
    assert sorted(os.listdir(mount.path("volumes"))) == sorted(
        ["tabbed", name64, "max", "a.b_c-D9"])
    for name, size in [("k", "8K"), ("m", "1M"), ("g", "1G"), ("b", "8192"),
                       ("t", "1T")]:
        kv = mount.create_volume("s" + name, size)
        mult = {"K": KiB, "M": MiB, "G": 1 << 30, "T": 1 << 40}
        want = int(size[:-1]) * mult[size[-1]] if size[-1] in mult else int(size)
        assert kv["size"] == str(want), size


# exact errno for every bad input; nothing changes
BAD_GLOBAL = [
    # over 4 KiB
    (errno.E2BIG, b"volume create big 4M " + b"x" * 4096),
    (errno.E2BIG, b"volume create big 4M" + b" " * (4097 - 20)),
    (errno.E2BIG, b"x" * 65536),
    # NUL bytes
    (errno.EINVAL, b"volume create nul 4M\0"),
    (errno.EINVAL, b"volume create nu\0l 4M\n"),
    (errno.EINVAL, b"\0"),
    # more than one line
    (errno.EINVAL, b"volume create l1 4M\nvolume create l2 4M\n"),
    # unknown words
    (errno.EINVAL, "frobnicate"),
    (errno.EINVAL, "volume frobnicate x 4M"),
    (errno.EINVAL, "volume create x 4M bogus"),
    (errno.EINVAL, "volume create x 4M bogus=1"),
    (errno.EINVAL, "volume delete db extra"),
    (errno.EINVAL, "backup -T -m DISK"),
    # missing arguments
    (errno.EINVAL, ""),
    (errno.EINVAL, "volume"),
    (errno.EINVAL, "volume create"),
    (errno.EINVAL, "volume create x"),
    (errno.EINVAL, "volume delete"),
    (errno.EINVAL, "bv"),
    (errno.EINVAL, "bv add"),
    (errno.EINVAL, "policy"),
    (errno.EINVAL, "policy db"),
    # repeated options
    (errno.EINVAL, "volume create x 4M save=2 save=2"),
    (errno.EINVAL, "volume create x 4M save=2 save=3"),
    (errno.EINVAL, "volume create x 4M grain=64K grain=128K"),
    (errno.EINVAL, "volume create x 4M from=/dev/null from=/dev/null"),
    (errno.EINVAL, "policy db save=2 save=3"),
    (errno.EINVAL, "policy db save=2 interval=3 interval=3"),
    # bad names
    (errno.EINVAL, "volume create a/b 4M"),
    (errno.EINVAL, "volume create / 4M"),
    (errno.EINVAL, "volume create .. 4M"),
    (errno.EINVAL, "volume create . 4M"),
    (errno.EINVAL, "volume create .hidden 4M"),
    (errno.EINVAL, "volume create -a 4M"),
    (errno.EINVAL, "volume create a$b 4M"),
    (errno.EINVAL, "volume create caf\u00e9 4M"),
    (errno.EINVAL, "volume create " + "n" * 65 + " 4M"),
    # bad sizes and values
    (errno.EINVAL, "volume create x 0"),
    (errno.EINVAL, "volume create x 4095"),
    (errno.EINVAL, "volume create x 4097"),
    (errno.EINVAL, "volume create x 6K"),
    (errno.EINVAL, "volume create x 1.5M"),
    (errno.EINVAL, "volume create x 4Q"),
    (errno.EINVAL, "volume create x -4M"),
    (errno.EINVAL, "volume create x M"),
    (errno.EINVAL, "volume create x 4MM"),
    (errno.EINVAL, "volume create x 99999999999999999999999"),
    (errno.EINVAL, "volume create x 4M grain=1000"),
    (errno.EINVAL, "volume create x 4M grain=0"),
    (errno.EINVAL, "volume create x 4M save=abc"),
    (errno.EINVAL, "volume create x 4M save=-1"),
    (errno.EINVAL, "policy db save=x"),
    (errno.EINVAL, "policy db save=2 interval=x"),
    (errno.EINVAL, "bv add db abc"),
    # existing / missing objects
    (errno.EEXIST, "volume create db 4M"),
    (errno.EEXIST, "volume create db 8M save=3"),
    (errno.ENOENT, "volume delete nosuch"),
    (errno.ENOENT, "bv add nosuch"),
    (errno.ENOENT, "bv add nosuch 2"),
    (errno.ENOENT, "policy nosuch save=2"),
    (errno.ENOENT, "volume create x 4M from=/nonexistent/file"),
]

BAD_VOLUME = [
    (errno.E2BIG, b"backup " + b"x" * 4096),
    (errno.EINVAL, b"backup\0"),
    (errno.EINVAL, "frobnicate"),
    (errno.EINVAL, "volume create x 4M"),
    (errno.EINVAL, ""),
]


def case_id(case):
    err, cmd = case
    text = cmd.decode(errors="replace") if isinstance(cmd, bytes) else cmd
    text = text.replace("\0", "\\0").replace("\n", "\\n")
    if len(text) > 40:
        text = text[:30] + f"...[{len(cmd)}]"
    return f"{errno.errorcode[err]}:{text}"


def check_rejected(mount, err_want, cmd, vol=None):
    before = snapshot(mount)
    log = mount.vol(vol, "log") if vol else mount.path("log")
    log_before = log.read_text() if log.exists() else None
    err, reply = mount.ctl_err(cmd, vol)
    assert err == err_want, (f"got {errno.errorcode.get(err, err)}, want "
                             f"{errno.errorcode[err_want]}; reply {reply!r}")
    assert reply.startswith("error: "), reply
    assert len(reply.splitlines()) == 1, reply
    assert snapshot(mount) == before
    if log_before is not None:
        new = log.read_text()[len(log_before):].splitlines()
        assert len(new) == 1, new
        assert LOG_LINE_RE.match(new[0]), new[0]
        assert f"({errno.errorcode[err_want]})" in new[0], new[0]


@pytest.mark.asan
@pytest.mark.parametrize("case", BAD_GLOBAL, ids=case_id)
def test_global_ctl_rejects(mount, case):
    mount.create_volume("db", "8M")
    check_rejected(mount, *case)


@pytest.mark.asan
@pytest.mark.parametrize("case", BAD_VOLUME, ids=case_id)
def test_volume_ctl_rejects(mount, case):
    mount.create_volume("db", "8M")
    check_rejected(mount, *case, vol="db")


@pytest.mark.asan
def test_rejected_command_leaves_reply_readable_and_next_command_works(mount):
    mount.create_volume("db", "8M")
    fd = os.open(mount.path("ctl"), os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"volume create db 4M\n")
        assert e.value.errno == errno.EEXIST
        reply = os.read(fd, 4096).decode()   # just keep reading
        assert reply.startswith("error: "), reply
    finally:
        os.close(fd)
    mount.create_volume("db2", "4M")


# --------------------------------------------------------------------- data path

@pytest.mark.asan
def test_random_io_matches_reference(mount, tmp_path):
    size = 16 * MiB
    mount.create_volume("db", "16M")
    data = mount.vol("db", "data")
    ref = bytearray(size)
    rng = random.Random(20261125)
    edge = [(0, 1), (size - 1, 1), (GRAIN - 1, 2), (GRAIN - 3, GRAIN + 7),
            (4095, 4097), (size - 5000, 5000), (3 * GRAIN + 17, 3 * MiB + 5)]
    fd = os.open(data, os.O_RDWR)
    rfd = os.open(data, os.O_RDONLY)
    try:
        for i in range(400):
            if i < len(edge):
                off, n = edge[i]
                op = "w"
            else:
                op = rng.choice("wwwr")
                off = rng.randrange(size)
                n = rng.choice([rng.randint(1, 100), rng.randint(4000, 4200),
                                rng.randint(1, 300 * KiB),
                                rng.randint(MiB, 2 * MiB)])
                n = min(n, size - off)
            if op == "w":
                buf = rng.randbytes(n)
                assert os.pwrite(fd, buf, off) == n
                ref[off:off + n] = buf
                if rng.random() < 0.1:
                    os.fsync(fd)
            got = os.pread(rng.choice([fd, rfd]), n, off)
            assert got == ref[off:off + n], f"op {i}: mismatch at {off}+{n}"
        assert os.pwrite(fd, b"", 100) == 0
        os.fsync(fd)
    finally:
        os.close(fd)
        os.close(rfd)
    assert read_all(data) == ref
    mount.remount()
    assert read_all(data) == ref
    assert os.path.getsize(data) == size


@pytest.mark.asan
def test_large_sequential_io(mount):
    mount.create_volume("db", "64M")
    data = mount.vol("db", "data")
    buf = random.Random(3).randbytes(8 * MiB)
    with open(data, "r+b", buffering=0) as f:
        for i in range(8):
            assert f.write(buf) == len(buf)
        os.fsync(f.fileno())
    h = hashlib.sha256(buf * 8).hexdigest()
    assert sha256_file(data) == h
    mount.remount()
    assert sha256_file(data) == h


@pytest.mark.asan
def test_write_past_end_is_enospc(mount):
    size = 4 * MiB
    mount.create_volume("db", "4M")
    data = mount.vol("db", "data")
    fd = os.open(data, os.O_RDWR)
    try:
        for off in (size, size + 1, size + MiB, 1 << 40):
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x" * 512, off)
            assert e.value.errno == errno.ENOSPC, off
            os.fsync(fd)
        # a write that starts inside and runs past the end: a short write
        # (up to the end) or ENOSPC; never growth
        try:
            n = os.pwrite(fd, b"y" * 8192, size - 4096)
            assert n == 4096
            assert os.pread(fd, 4096, size - 4096) == b"y" * 4096
        except OSError as e:
            assert e.errno == errno.ENOSPC
        os.fsync(fd)
        assert os.fstat(fd).st_size == size
    finally:
        os.close(fd)
    fd = os.open(data, os.O_WRONLY | os.O_APPEND)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, b"z")
            os.fsync(fd)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.path.getsize(data) == size
    mount.remount()
    assert os.path.getsize(data) == size


@pytest.mark.asan
def test_truncate_is_eperm(mount):
    size = 4 * MiB
    mount.create_volume("db", "4M")
    data = mount.vol("db", "data")
    with open(data, "r+b") as f:
        f.write(b"keep")
    for new in (0, size - 4096, size + 4096, 1 << 40):
        with pytest.raises(OSError) as e:
            os.truncate(data, new)
        assert e.value.errno == errno.EPERM, new
    fd = os.open(data, os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.ftruncate(fd, 4096)
        assert e.value.errno == errno.EPERM
    finally:
        os.close(fd)
    with pytest.raises(OSError) as e:
        os.close(os.open(data, os.O_WRONLY | os.O_TRUNC))
    assert e.value.errno == errno.EPERM
    assert os.path.getsize(data) == size
    with open(data, "rb") as f:
        assert f.read(4) == b"keep"


@pytest.mark.asan
def test_fsync_reaches_backing_file(mount):
    size = 8 * MiB
    mount.create_volume("db", "8M")
    pattern = random.Random(11).randbytes(64 * KiB)
    off = 3 * MiB + 4096
    fd = os.open(mount.vol("db", "data"), os.O_RDWR)
    try:
        assert os.pwrite(fd, pattern, off) == len(pattern)
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    # the backing file is somewhere in the store, exactly the volume's size
    found = []
    for dirpath, dirs, files in os.walk(mount.store):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.getsize(p) != size:
                continue
            with open(p, "rb") as b:
                b.seek(off)
                if b.read(len(pattern)) == pattern:
                    found.append(p)
    assert found, "written pattern not in any store file of the volume's size"


@pytest.mark.asan
def test_create_from_file(mount, tmp_path):
    src = tmp_path / "src.img"
    rng = random.Random(5)
    with open(src, "wb") as f:
        f.write(rng.randbytes(MiB))
        f.seek(2 * MiB)                   # a hole
        f.write(rng.randbytes(MiB - 4096))
        f.write(b"end!" + bytes(4092))
    assert os.path.getsize(src) == 3 * MiB
    kv = mount.create_volume("imp", "3M", **{"from": src})
    assert kv["size"] == str(3 * MiB)
    assert read_all(mount.vol("imp", "data")) == read_all(src)
    mount.remount()
    assert read_all(mount.vol("imp", "data")) == read_all(src)


@needs_root
def test_create_from_block_device(mount, tmp_path):
    src = tmp_path / "dev.img"
    src.write_bytes(random.Random(6).randbytes(2 * MiB))
    dev = run("losetup", "-f", "--show", "-r", src).stdout.strip()
    try:
        mount.create_volume("blk", "2M", **{"from": dev})
    finally:
        run("losetup", "-d", dev, check=False)
    assert read_all(mount.vol("blk", "data")) == read_all(src)


# --------------------------------------------------------------------- ext4

def make_tree(root, seed):
    """A tree of files with random content; -> {relpath: sha256}."""
    rng = random.Random(seed)
    sums = {}
    dirs = [root]
    for i in range(25):
        d = rng.choice(dirs) / f"d{i}"
        d.mkdir()
        dirs.append(d)
    for i in range(150):
        d = rng.choice(dirs)
        n = rng.choice([0, rng.randint(1, 4096), rng.randint(4097, 300 * KiB),
                        rng.randint(MiB, 3 * MiB)])
        b = rng.randbytes(n)
        p = d / f"f{i}.bin"
        p.write_bytes(b)
        sums[str(p.relative_to(root))] = hashlib.sha256(b).hexdigest()
    return sums


def tree_sums(root):
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = str(p.relative_to(root))
            if rel.startswith("lost+found"):
                continue
            out[rel] = sha256_file(p)
    return out


class Loop:
    """losetup + mount as a context manager; undone even on failure."""

    def __init__(self, image, mnt, ro=False):
        self.image, self.mnt, self.ro = image, mnt, ro
        self.dev = None
        self.mounted = False

    def __enter__(self):
        args = ["losetup", "-f", "--show"] + (["-r"] if self.ro else [])
        self.dev = run(*args, self.image).stdout.strip()
        return self

    def mount(self):
        self.mnt.mkdir(exist_ok=True)
        opts = ["-o", "ro,noload"] if self.ro else []
        run("mount", "-t", "ext4", *opts, self.dev, self.mnt)
        self.mounted = True

    def umount(self):
        if self.mounted:
            run("umount", self.mnt)
            self.mounted = False

    def __exit__(self, *exc):
        try:
            if self.mounted:
                run("umount", "-l", self.mnt, check=False)
        finally:
            if self.dev:
                run("losetup", "-d", self.dev, check=False)


@needs_root
@pytest.mark.slow
def test_ext4_on_loop_device(mount, tmp_path):
    mount.create_volume("fs", "256M")
    data = mount.vol("fs", "data")
    ext = tmp_path / "ext4"
    with Loop(data, ext) as lo:
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", lo.dev)
        lo.mount()
        sums = make_tree(ext, seed=42)
        run("sync", "-f", ext)
        lo.umount()
    # fsck the image through the mount (the image file itself)
    r = run("fsck.ext4", "-fn", data, check=False)
    assert r.returncode == 0, r.stdout
    mount.remount()
    r = run("fsck.ext4", "-fn", data, check=False)
    assert r.returncode == 0, r.stdout
    with Loop(data, ext, ro=True) as lo:
        lo.mount()
        assert tree_sums(ext) == sums
        lo.umount()


# --------------------------------------------------------------------- crash

@needs_root
@pytest.mark.slow
def test_kill9_under_write_load(mount):
    size = 64 * MiB
    mount.create_volume("k", "64M")
    mount.create_volume("other", "4M")
    data = mount.vol("k", "data")
    slots = list(range(size // 4096))
    random.Random(9).shuffle(slots)
    acked = []
    errors = []
    started = threading.Event()

    def writer():
        fd = os.open(data, os.O_RDWR)
        started.set()
        try:
            for i, slot in enumerate(slots):
                buf = struct.pack("<QQ", i + 1, slot) * 256
                os.pwrite(fd, buf, slot * 4096)
                os.fsync(fd)
                acked.append((slot, buf))
        except OSError as e:
            errors.append(e)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    started.wait(5)
    # at least a second of load and 200 acknowledged writes (bounded)
    t0 = time.monotonic()
    while t.is_alive() and time.monotonic() < t0 + 10 and (
            len(acked) < 200 or time.monotonic() < t0 + 1):
        time.sleep(0.05)
    assert not errors, errors
    assert len(acked) >= 50, f"only {len(acked)} writes in 10 s"
    mount.kill9()
    t.join(EXIT_TIMEOUT)
    assert not t.is_alive(), "writer hung after the daemon died"
    n = len(acked)

    r = run("sqlite3", mount.store / "catalog.db", "PRAGMA integrity_check")
    assert r.stdout.strip() == "ok", r.stdout
    mount.start()
    r = run("sqlite3", mount.store / "catalog.db", "PRAGMA integrity_check")
    assert r.stdout.strip() == "ok", r.stdout
    assert sorted(os.listdir(mount.path("volumes"))) == ["k", "other"]
    assert mount.read_info("volumes/k/info")["size"] == str(size)
    fd = os.open(data, os.O_RDWR)
    try:
        missing = [slot for slot, buf in acked[:n]
                   if os.pread(fd, 4096, slot * 4096) != buf]
        assert not missing, f"{len(missing)} of {n} acknowledged writes lost"
        os.pwrite(fd, b"after", 0)             # and it still works
        os.fsync(fd)
    finally:
        os.close(fd)
    mount.create_volume("new", "4M")
