"""Integration tests of snapshot / differential snapshot backups to disk
(issue 4): point in time under concurrent writes, differential copies,
tracking, history deletion, canceltrk, generations, the history tree, ext4
with fsfreeze, kill -9 and bad input.

Every test mounts a fresh store (the `mount` fixture). Writes to
`volumes/<vol>/data` are pwrite + fsync: with the kernel's writeback cache a
write reaches the volume when it is flushed (SPEC §5), so a write "in the
volume" means a write whose fsync returned.

The helpers at the top are also used by test_restore.py.
"""

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import TIME_SCALE, retry_busy

KiB = 1 << 10
MiB = 1 << 20
GRAIN = 64 * KiB

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root")

COPY_TIMEOUT = 120 * TIME_SCALE       # a 512 MiB physical copy takes ~2 s


# --------------------------------------------------------------------- helpers

def run(*argv, check=True, timeout=120, **kw):
    r = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True,
                       timeout=timeout * TIME_SCALE, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} -> {r.returncode}:"
                             f"\n{r.stdout}")
    return r


def reply_kv(m, reply, acm=None):
    """The first line of an ok reply as a dict; checks the ACM line."""
    kv = m.parse_reply(reply)
    if acm:
        assert acm in reply.splitlines()[1:2], \
            f"no {acm!r} line right after the ok line: {reply!r}"
    return kv


def backup(m, vol, opts="-T -m DISK"):
    r = m.ctl(f"backup {opts}".strip(), vol)
    return reply_kv(m, r, f"{vol} acmbackup completed")


def hist_info(m, vol, ver):
    return m.read_info(f"volumes/{vol}/history/{ver}/info")


def wait_hist(m, vol, ver, timeout=COPY_TIMEOUT, tape=True):
    """Poll a history's info until no copy (disk, and tape if asked) runs."""
    deadline = time.monotonic() + timeout
    while True:
        i = hist_info(m, vol, ver)
        busy = i.get("disk_status") == "executing" or \
            (tape and i.get("tape_status") == "executing")
        if not busy:
            return i
        if time.monotonic() > deadline:
            raise AssertionError(f"history {vol}/{ver} still executing after "
                                 f"{timeout:g} s: {i}\nlog:\n{log_tail(m, vol)}")
        time.sleep(0.02)


def wait_for(pred, what, timeout=30.0, step=0.02):
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def log_tail(m, vol=None, n=30):
    p = m.vol(vol, "log") if vol else m.path("log")
    try:
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"(log unreadable: {e})"


def grain_pattern(seed, g, grain=GRAIN):
    """Content of grain g for fill seed `seed`: unique per (seed, grain)."""
    rng = random.Random(seed * 1_000_003 + g)
    head = struct.pack("<QQ", seed, g)
    return head + rng.randbytes(64) * ((grain - 16) // 64) + bytes((grain - 16) % 64)


def fill(path, start, length, seed, chunk=4 * MiB):
    """Write [start, start+length) of `path` with a pattern unique per grain
    (fast: a random MiB with per-grain headers), then fsync."""
    base = bytearray(random.Random(seed).randbytes(chunk))
    fd = os.open(path, os.O_RDWR)
    try:
        off = start
        end = start + length
        while off < end:
            n = min(chunk, end - off)
            buf = base[:n]
            for k in range(0, n, GRAIN):
                buf[k:k + 16] = struct.pack("<QQ", seed, (off + k) // GRAIN)
            os.pwrite(fd, buf, off)
            off += n
        os.fsync(fd)
    finally:
        os.close(fd)


def pwrite_sync(path, off, data):
    fd = os.open(path, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_file(src, dst, chunk=4 * MiB):
    with open(src, "rb") as i, open(dst, "wb") as o:
        while True:
            b = i.read(chunk)
            if not b:
                break
            o.write(b)


def dev_size(path):
    """Size of a file or block device."""
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


def first_diff(a, b, chunk=4 * MiB):
    """None if files a and b are equal, else a description of the first
    difference (offset, grain)."""
    sa, sb = dev_size(a), dev_size(b)
    if sa != sb:
        return f"sizes differ: {a}={sa} {b}={sb}"
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            x = fa.read(chunk)
            y = fb.read(chunk)
            if x != y:
                n = min(len(x), len(y))
                i = next((k for k in range(n) if x[k] != y[k]), n)
                bad = sum(1 for k in range(0, max(len(x), len(y)), GRAIN)
                          if x[k:k + GRAIN] != y[k:k + GRAIN])
                return (f"first difference at offset {off + i} (grain "
                        f"{(off + i) // GRAIN}); {bad} differing grains in "
                        f"the {chunk // MiB} MiB chunk at {off}")
            if not x:
                return None
            off += len(x)


def assert_same(a, b, what=""):
    d = first_diff(a, b)
    assert d is None, f"{what}: {a} != {b}: {d}"


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def text(m, *parts):
    return m.path(*parts).read_text()


def table_rows(t):
    """A whitespace table -> list of rows (lists of words), header dropped."""
    lines = [ln for ln in t.splitlines() if ln.strip()]
    return [ln.split() for ln in lines[1:]]


def trk_rows(m, vol):
    """{bv: (status, execute, update)} from the volume's trkstat."""
    out = {}
    for r in table_rows(text(m, "volumes", vol, "trkstat")):
        assert r[1] == vol, r
        out[r[2]] = (r[3], r[4], r[5])
    return out


def dev_modes(m, vol):
    """{device: mode} from devdisp (mode may hold a space)."""
    out = {}
    for ln in text(m, "volumes", vol, "devdisp").splitlines()[1:]:
        mm = re.match(r"^\S+\s+(\S+)\s+[\d.]+ [MG]byte\s+"
                      r"(Transaction|Backup \([a-zA-Z-]+\))\s", ln)
        assert mm, f"bad devdisp line {ln!r}"
        out[mm.group(1)] = mm.group(2)
    return out


def status_bvs(m, vol):
    st = json.loads(text(m, "status.json"))
    v = next(x for x in st["volumes"] if x["name"] == vol)
    return {b["name"]: b for b in v["backup_volumes"]}


def hist_versions(m, vol):
    """The numeric entries of history/."""
    return sorted(int(x) for x in os.listdir(m.vol(vol, "history"))
                  if x.isdigit())


def disk_rows(m, vol):
    """[(generation, version, bv, status, execute)] from histdisp."""
    rows = []
    lines = text(m, "volumes", vol, "histdisp").splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("Generation"))
    for ln in lines[i + 1:]:
        if ln.startswith("Tape-Gen") or ln.startswith("Server="):
            break
        w = ln.split()
        # Generation Version Date(2 words) Device Status Execute
        rows.append((int(w[0]), int(w[1]), w[4], w[5], w[6]))
    return rows


def state_of(m, vol):
    """Everything an operator sees about a volume, for 'nothing changed'."""
    info = m.read_info(f"volumes/{vol}/info")
    info.pop("open_writers", None)
    info.pop("overdue", None)
    hist = {}
    for v in hist_versions(m, vol):
        hist[v] = hist_info(m, vol, v)
    st = json.loads(text(m, "status.json"))
    return {
        "histdisp": text(m, "volumes", vol, "histdisp"),
        "devdisp": text(m, "volumes", vol, "devdisp"),
        "trkstat": text(m, "volumes", vol, "trkstat"),
        "g_histdisp": text(m, "histdisp"),
        "g_devdisp": text(m, "devdisp"),
        "info": info,
        "history": sorted(os.listdir(m.vol(vol, "history"))),
        "generations": sorted(os.listdir(m.vol(vol, "generations"))),
        "hist_info": hist,
        "status_volumes": [x for x in st["volumes"] if x["name"] == vol],
    }


class Writer(threading.Thread):
    """Random 4 KiB pwrite+fsync writes to a volume's data until stopped.
    `hold()` quiesces it: while held, no write is in flight."""

    def __init__(self, path, size, seed=1, block=4096, region=None):
        super().__init__(daemon=True)
        self.path, self.size, self.block = path, size, block
        self.region = region or (0, size)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.started_ev = threading.Event()
        self.count = 0
        self.acked = []                  # (offset, bytes) whose fsync returned
        self.errors = []

    def run(self):
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            self.errors.append(e)
            self.started_ev.set()
            return
        self.started_ev.set()
        lo, hi = self.region
        try:
            seq = 0
            while not self.stop_ev.is_set():
                with self.lock:
                    seq += 1
                    off = lo + self.rng.randrange((hi - lo) // self.block) * self.block
                    buf = struct.pack("<QQ", seq, off) * (self.block // 16)
                    os.pwrite(fd, buf, off)
                    os.fsync(fd)
                    self.acked.append((off, buf))
                    self.count += 1
        except OSError as e:
            self.errors.append(e)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    @contextlib.contextmanager
    def hold(self):
        with self.lock:
            yield

    def wait_count(self, n, timeout=30.0):
        wait_for(lambda: self.count >= n or not self.is_alive(),
                 f"{n} writes", timeout)
        assert not self.errors, self.errors
        assert self.count >= n, f"writer died after {self.count} writes"

    def finish(self):
        self.stop_ev.set()
        self.join(30 * TIME_SCALE)
        assert not self.is_alive(), "writer hung"


class Loop:
    """losetup (+ ext4 mount) as a context manager, undone even on failure."""

    def __init__(self, image, mnt=None, ro=False):
        self.image, self.mnt, self.ro = image, mnt, ro
        self.dev = None
        self.mounted = False

    def __enter__(self):
        args = ["losetup", "-f", "--show"] + (["-r"] if self.ro else [])
        self.dev = run(*args, self.image).stdout.strip()
        return self

    def mount(self):
        Path(self.mnt).mkdir(exist_ok=True)
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
                run("fsfreeze", "-u", self.mnt, check=False)
                run("umount", "-l", self.mnt, check=False)
        finally:
            if self.dev:
                run("losetup", "-d", self.dev, check=False)


def make_tree(root, seed, nfiles=80):
    """Files with random content under root; -> {relpath: sha256}."""
    rng = random.Random(seed)
    sums = {}
    dirs = [Path(root)]
    for i in range(10):
        d = rng.choice(dirs) / f"d{seed}_{i}"
        d.mkdir()
        dirs.append(d)
    for i in range(nfiles):
        d = rng.choice(dirs)
        n = rng.choice([0, rng.randint(1, 4096), rng.randint(4097, 200 * KiB),
                        rng.randint(MiB, 2 * MiB)])
        b = rng.randbytes(n)
        p = d / f"f{seed}_{i}.bin"
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


def mutate_tree(root, sums, seed):
    """Delete, rewrite and add files (after a backup)."""
    rng = random.Random(seed)
    names = sorted(sums)
    for rel in rng.sample(names, len(names) // 4):
        (Path(root) / rel).unlink(missing_ok=True)
    for rel in rng.sample(names, len(names) // 4):
        p = Path(root) / rel
        if p.exists():
            p.write_bytes(rng.randbytes(rng.randint(1, 300 * KiB)))
    make_tree(root, seed + 1000, nfiles=20)


# ------------------------------------------------------- point in time copies

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["conventional", "differential"])
def test_image_is_point_in_time_under_concurrent_writes(mount, tmp_path, kind):
    """Writes keep landing during the physical copy (copy-on-write); the
    image read during and after the copy equals the volume at backup time."""
    m = mount
    size = 512 * MiB
    m.create_volume("pit", "512M", save=1)
    data = m.vol("pit", "data")
    fill(data, 0, size, seed=1)
    opts = "-T -m DISK" if kind == "differential" else "-m DISK"
    if kind == "differential":
        kv = backup(m, "pit", opts)
        assert kv["copy"] == "full" and kv["differential"] == "1", kv
        assert wait_hist(m, "pit", kv["version"])["disk_status"] == "succeeded"
        # change half the volume so that the differential copy takes a while
        fill(data, 0, size // 2, seed=2)

    ref = tmp_path / "ref.img"
    w = Writer(data, size, seed=7)
    w.start()
    try:
        w.wait_count(20)
        with w.hold():                   # no write in flight
            copy_file(data, ref)
            n0 = w.count
            t0 = time.monotonic()
            kv = backup(m, "pit", opts)
            took = time.monotonic() - t0
        assert took < 1.0 * TIME_SCALE, f"backup took {took:.2f} s to return"
        if kind == "differential":
            assert kv["copy"] == "diff", kv
            assert int(kv["grains"]) >= size // 2 // GRAIN, kv
        else:
            assert kv["copy"] == "full" and kv["differential"] == "0", kv
        ver = kv["version"]
        img = m.vol("pit", "history", ver, "image")
        # read the image while the copy runs and writes go on
        i = hist_info(m, "pit", ver)
        assert i["disk_status"] == "executing", \
            f"the copy ended before the first check, test is void: {i}"
        d = first_diff(img, ref)
        during = w.count - n0
        i = wait_hist(m, "pit", ver)
        during_copy = w.count - n0
    finally:
        w.finish()
    assert not w.errors, w.errors
    assert d is None, f"image read during the copy != volume at backup: {d}"
    assert during >= 5, f"only {during} writes during the copy: test is void"
    assert i["disk_status"] == "succeeded", (i, log_tail(m, "pit"))
    assert i["grains_copied"] == kv["grains"], (i, kv)
    assert_same(img, ref, f"image after the copy ({during_copy} writes "
                          f"during it)")
    # the writes after the backup did reach the volume
    assert first_diff(data, ref) is not None
    off, buf = w.acked[-1]
    with open(data, "rb") as f:
        f.seek(off)
        assert f.read(len(buf)) == buf


def test_second_differential_copies_exactly_changed_grains(mount, tmp_path):
    m = mount
    size = 64 * MiB
    nr = size // GRAIN
    m.create_volume("q", "64M", save=1)
    data = m.vol("q", "data")
    fill(data, 0, size, seed=3)
    kv = backup(m, "q")
    assert kv["copy"] == "full" and kv["grains"] == str(nr), kv
    i = wait_hist(m, "q", kv["version"])
    assert i["disk_status"] == "succeeded" and i["grains_copied"] == str(nr), i
    assert trk_rows(m, "q") == {"q.bv1": ("tracking", "----", "0%")}

    rng = random.Random(11)
    changed = sorted(rng.sample(range(nr), nr // 100))       # 1 % of grains
    for g in changed:
        # one small write somewhere inside the grain
        pwrite_sync(data, g * GRAIN + rng.randrange(16) * 4096,
                    rng.randbytes(4096))
    upd = trk_rows(m, "q")["q.bv1"]
    pct = len(changed) * 100 / nr                 # 0.98 %: floor or rounded
    assert upd[0] == "tracking" and upd[1] == "----", upd
    assert upd[2] in (f"{int(pct)}%", f"{round(pct)}%"), upd
    metrics0 = m.metric("acmfs_copy_grains_total")

    kv2 = backup(m, "q")
    assert kv2["copy"] == "diff" and kv2["bv"] == "q.bv1", kv2
    assert kv2["grains"] == str(len(changed)), (kv2, changed)
    i = wait_hist(m, "q", kv2["version"])
    assert i["disk_status"] == "succeeded", i
    assert i["copy"] == "diff", i
    assert i["grains_copied"] == str(len(changed)), i
    assert m.metric("acmfs_copy_grains_total") - metrics0 == len(changed)
    assert_same(m.vol("q", "history", kv2["version"], "image"), data,
                "differential image")
    # nothing written since: the next differential copies nothing
    kv3 = backup(m, "q")
    assert kv3["copy"] == "diff" and kv3["grains"] == "0", kv3
    assert wait_hist(m, "q", kv3["version"])["grains_copied"] == "0"


# -------------------------------------------------------------- histdel, trk

@pytest.mark.slow
def test_histdel_of_differential_keeps_tracking_and_copy(mount):
    """ACM: the OPC session is not released when a differential history is
    deleted, and a running physical copy is not stopped."""
    m = mount
    size = 512 * MiB
    m.create_volume("d", "512M", save=1)
    data = m.vol("d", "data")
    fill(data, 0, size, seed=4)
    kv = backup(m, "d")
    ver = kv["version"]
    assert hist_info(m, "d", ver)["disk_status"] == "executing", \
        "copy finished before histdel: test is void"
    r = m.ctl(f"histdel -v {ver}", "d")
    assert reply_kv(m, r, "d acmhistdel completed")["deleted"] == ver
    assert not m.vol("d", "history", ver).exists()
    assert hist_versions(m, "d") == []
    rows = trk_rows(m, "d")
    assert "d.bv1" in rows and rows["d.bv1"][0] in ("executing", "tracking"), rows
    assert dev_modes(m, "d")["d.bv1"] == "Backup (used)"
    b = status_bvs(m, "d")["d.bv1"]
    assert b["mode"] == "Backup (used)" and b["mode_u"] == "Backup (used-T)", b
    assert b["tracking"] is True, b
    # the physical copy goes on to its end, then tracking alone
    wait_for(lambda: trk_rows(m, "d").get("d.bv1", ("?",))[0] == "tracking",
             "d.bv1 back to tracking alone", COPY_TIMEOUT)
    b = status_bvs(m, "d")["d.bv1"]
    assert b["mode_u"] == "Backup (used-T)" and b["tracking"] is True, b
    assert "Backup (used)" in text(m, "devdisp")

    changed = [3, 100, 5000]
    for g in changed:
        pwrite_sync(data, g * GRAIN + 512, b"after histdel" * 100)
    kv2 = backup(m, "d")
    assert kv2["bv"] == "d.bv1" and kv2["copy"] == "diff", kv2
    assert kv2["grains"] == str(len(changed)), kv2
    i = wait_hist(m, "d", kv2["version"])
    assert i["disk_status"] == "succeeded", i
    assert_same(m.vol("d", "history", kv2["version"], "image"), data,
                "differential after histdel")


def test_histdel_of_conventional_frees_bv(mount):
    m = mount
    m.create_volume("c", "8M", save=1)
    data = m.vol("c", "data")
    fill(data, 0, 8 * MiB, seed=5)
    kv = backup(m, "c", "-m DISK")
    assert wait_hist(m, "c", kv["version"])["disk_status"] == "succeeded"
    assert dev_modes(m, "c") == {"c": "Transaction", "c.bv1": "Backup (used)"}
    assert trk_rows(m, "c") == {}
    r = m.ctl("histdel -g 1", "c")
    assert reply_kv(m, r, "c acmhistdel completed")["deleted"] == kv["version"]
    assert dev_modes(m, "c") == {"c": "Transaction", "c.bv1": "Backup (free)"}
    b = status_bvs(m, "c")["c.bv1"]
    assert b["mode"] == "Backup (free)" and b["mode_u"] == "Backup (free)", b
    assert b["tracking"] is False, b
    assert trk_rows(m, "c") == {}
    assert hist_versions(m, "c") == []
    # and the freed BV serves the next backup (full: it never tracked)
    kv2 = backup(m, "c")
    assert kv2["bv"] == "c.bv1" and kv2["copy"] == "full", kv2
    assert int(kv2["version"]) == int(kv["version"]) + 1, kv2


@pytest.mark.slow
def test_canceltrk_during_copy_stops_only_tracking(mount, tmp_path):
    m = mount
    size = 512 * MiB
    m.create_volume("t", "512M", save=1)
    data = m.vol("t", "data")
    fill(data, 0, size, seed=6)
    ref = tmp_path / "ref.img"
    copy_file(data, ref)
    kv = backup(m, "t")
    ver = kv["version"]
    assert kv["copy"] == "full", kv
    i = hist_info(m, "t", ver)
    assert i["disk_status"] == "executing", "copy already done: test is void"
    assert trk_rows(m, "t")["t.bv1"][0] == "executing"
    r = m.ctl("canceltrk -bd t.bv1", "t")
    kvc = reply_kv(m, r, "t acmcanceltrk completed")
    assert kvc["bv"] == "t.bv1", kvc
    # tracking stopped at once: trkstat lists tracking pairs only
    assert trk_rows(m, "t") == {}
    assert status_bvs(m, "t")["t.bv1"]["tracking"] is False
    # ... but the physical copy completes
    i = wait_hist(m, "t", ver)
    assert i["disk_status"] == "succeeded", (i, log_tail(m, "t"))
    assert i["grains_copied"] == str(size // GRAIN), i
    assert_same(m.vol("t", "history", ver, "image"), ref, "image after canceltrk")
    assert trk_rows(m, "t") == {}
    # canceltrk again: nothing tracks
    assert m.ctl_err("canceltrk -bd t.bv1", "t")[0] == errno.ENOENT
    # the next -T to that BV is full
    pwrite_sync(data, 0, b"changed")
    kv2 = backup(m, "t")
    assert kv2["bv"] == "t.bv1" and kv2["copy"] == "full", kv2
    assert kv2["grains"] == str(size // GRAIN), kv2
    i = wait_hist(m, "t", kv2["version"])
    assert i["disk_status"] == "succeeded" and i["copy"] == "full", i
    assert_same(m.vol("t", "history", kv2["version"], "image"), data,
                "full copy after canceltrk")
    assert trk_rows(m, "t")["t.bv1"][0] == "tracking"


def test_canceltrk_all(mount):
    m = mount
    m.create_volume("a", "4M", save=2)
    data = m.vol("a", "data")
    for s in (1, 2):
        fill(data, 0, 4 * MiB, seed=s)
        kv = backup(m, "a")
        wait_hist(m, "a", kv["version"])
    assert set(trk_rows(m, "a")) == {"a.bv1", "a.bv2"}
    kvc = reply_kv(m, m.ctl("canceltrk -all", "a"), "a acmcanceltrk completed")
    assert sorted(kvc["bv"].split(",")) == ["a.bv1", "a.bv2"], kvc
    assert trk_rows(m, "a") == {}
    # histories stay: canceltrk is not histdel
    assert hist_versions(m, "a") == [1, 2]
    kv = backup(m, "a")
    assert kv["copy"] == "full", kv


# -------------------------------------------------------------- generations

def test_generation_rotation_save3_over_7_backups(mount, tmp_path):
    m = mount
    size = 4 * MiB
    m.create_volume("g", "4M", save=3)
    data = m.vol("g", "data")
    refs = {}
    for n in range(1, 8):
        fill(data, 0, size, seed=100 + n)
        ref = tmp_path / f"ref{n}"
        copy_file(data, ref)
        kv = backup(m, "g", "-T -m DISK" if n % 2 else "-m DISK")
        assert kv["version"] == str(n), kv
        assert wait_hist(m, "g", n)["disk_status"] == "succeeded"
        refs[n] = ref
    assert sorted(os.listdir(m.vol("g", "generations"))) == ["1", "2", "3"]
    for gen, ver in ((1, 7), (2, 6), (3, 5)):
        link = m.vol("g", "generations", str(gen))
        assert os.readlink(link) == f"../history/{ver}", (gen, os.readlink(link))
        assert hist_info(m, "g", ver)["generation"] == str(gen)
        assert_same(link / "image", refs[ver], f"generation {gen}")
    assert sorted(os.listdir(m.vol("g", "history"))) == ["5", "6", "7", "latest"]
    assert os.readlink(m.vol("g", "history", "latest")) == "7"
    for ver in range(1, 5):
        assert not m.vol("g", "history", str(ver)).exists()
        with pytest.raises(FileNotFoundError):
            os.stat(m.vol("g", "history", str(ver), "image"))
    assert [(r[0], r[1]) for r in disk_rows(m, "g")] == [(1, 7), (2, 6), (3, 5)]
    # versions are never reused
    m.ctl("histdel -v 7", "g")
    kv = backup(m, "g")
    assert kv["version"] == "8", kv
    wait_hist(m, "g", 8)
    assert [(r[0], r[1]) for r in disk_rows(m, "g")] == [(1, 8), (2, 6), (3, 5)]


def test_rm_disk_img_and_rmdir_history_delete(mount, tmp_path):
    m = mount
    m.create_volume("r", "4M", save=2)
    data = m.vol("r", "data")
    for s in (1, 2):
        fill(data, 0, 4 * MiB, seed=s)
        kv = backup(m, "r", "-m DISK")
        wait_hist(m, "r", kv["version"])
    assert hist_versions(m, "r") == [1, 2]
    os.unlink(m.vol("r", "history", "1", "disk.img"))
    assert not m.vol("r", "history", "1").exists()
    assert hist_versions(m, "r") == [2]
    assert [r[1] for r in disk_rows(m, "r")] == [2]
    assert os.readlink(m.vol("r", "generations", "1")) == "../history/2"
    assert "r history version 1" not in text(m, "volumes", "r", "histdisp")
    modes = dev_modes(m, "r")
    assert sorted(modes.values()) == ["Backup (free)", "Backup (used)",
                                      "Transaction"], modes
    os.rmdir(m.vol("r", "history", "2"))
    assert hist_versions(m, "r") == []
    assert os.listdir(m.vol("r", "generations")) == []
    assert not os.path.lexists(m.vol("r", "history", "latest"))
    assert disk_rows(m, "r") == []
    assert dev_modes(m, "r") == {"r": "Transaction", "r.bv1": "Backup (free)",
                                 "r.bv2": "Backup (free)"}
    # and they stay deleted across a remount
    m.remount()
    assert hist_versions(m, "r") == []


# -------------------------------------------------------------------- ext4

@needs_root
@pytest.mark.slow
def test_ext4_backup_after_fsfreeze_is_consistent(mount, tmp_path):
    m = mount
    m.create_volume("fs", "256M", save=1)
    data = m.vol("fs", "data")
    ext = tmp_path / "ext4"
    with Loop(data, ext) as lo:
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", lo.dev)
        lo.mount()
        sums = make_tree(ext, seed=42)
        run("fsfreeze", "-f", ext)
        try:
            kv = backup(m, "fs")
        finally:
            run("fsfreeze", "-u", ext)
        # the file system keeps changing during the copy
        mutate_tree(ext, sums, seed=43)
        run("sync", "-f", ext)
        i = wait_hist(m, "fs", kv["version"])
        assert i["disk_status"] == "succeeded", i
        mutate_tree(ext, sums, seed=44)
        lo.umount()
    copy = tmp_path / "copy.img"
    run("cp", "--sparse=always", m.vol("fs", "history", kv["version"], "image"),
        copy)
    r = run("fsck.ext4", "-fn", copy, check=False)
    assert r.returncode == 0, r.stdout
    chk = tmp_path / "chk"
    with Loop(copy, chk, ro=True) as lo:
        lo.mount()
        assert tree_sums(chk) == sums
        lo.umount()


# -------------------------------------------------------------------- crash

@needs_root
@pytest.mark.slow
def test_kill9_during_copy_never_wrongly_succeeded(mount, tmp_path):
    m = mount
    size = 512 * MiB
    m.create_volume("k", "512M", save=1)
    data = m.vol("k", "data")
    fill(data, 0, size, seed=8)
    ref = tmp_path / "ref.img"
    copy_file(data, ref)
    kv = backup(m, "k")
    ver = kv["version"]
    wait_for(lambda: hist_info(m, "k", ver)["disk_execute"] not in ("0", "-"),
             "the copy to make progress", COPY_TIMEOUT, step=0.005)
    i = hist_info(m, "k", ver)
    assert i["disk_status"] == "executing", f"copy done too soon: {i}"
    m.kill9()
    m.start()
    i = hist_info(m, "k", ver)
    assert i["disk_status"] in ("failed", "succeeded"), i
    if i["disk_status"] == "succeeded":      # resumed and completed
        assert_same(m.vol("k", "history", ver, "image"), ref,
                    "history reported succeeded after kill -9")
    else:
        assert re.search(rf"version {ver}.*(interrupted|failed)",
                         text(m, "volumes", "k", "log")), log_tail(m, "k")
        # a failed history is not a restore source
        assert m.ctl_err("restore", "k")[0] == errno.ENOENT
    assert all(r[3] != "executing" for r in disk_rows(m, "k")), disk_rows(m, "k")
    # the next differential backup is exact (a full copy, the BV is partial)
    pwrite_sync(data, 12345 * 4096, b"post crash" * 400)
    kv2 = backup(m, "k")
    if i["disk_status"] == "failed":
        assert kv2["copy"] == "full", kv2
    i2 = wait_hist(m, "k", kv2["version"])
    assert i2["disk_status"] == "succeeded", i2
    assert_same(m.vol("k", "history", kv2["version"], "image"), data,
                "next -T after kill -9 during copy")


@needs_root
@pytest.mark.slow
def test_kill9_during_write_burst_keeps_tracking_exact(mount, tmp_path):
    m = mount
    size = 128 * MiB
    m.create_volume("w", "128M", save=2)
    data = m.vol("w", "data")
    fill(data, 0, size, seed=9)
    ref1 = tmp_path / "ref1.img"
    copy_file(data, ref1)
    kv1 = backup(m, "w")                       # v1 on bv1, tracking
    assert wait_hist(m, "w", 1)["disk_status"] == "succeeded"
    w = Writer(data, size, seed=10)
    w.start()
    ref2 = tmp_path / "ref2.img"
    try:
        w.wait_count(100)
        with w.hold():
            copy_file(data, ref2)
            kv2 = backup(m, "w")               # v2 on bv2: full copy
        w.wait_count(w.count + 200)
        m.kill9()
        w.join(30 * TIME_SCALE)
        assert not w.is_alive(), "writer hung after the daemon died"
    finally:
        w.stop_ev.set()
    acked = list(w.acked)
    m.start()
    refs = {kv1["version"]: ref1, kv2["version"]: ref2}
    for ver, ref in refs.items():
        i = hist_info(m, "w", ver)
        assert i["disk_status"] in ("failed", "succeeded"), i
        if i["disk_status"] == "succeeded":
            assert_same(m.vol("w", "history", ver, "image"), ref,
                        f"version {ver} says succeeded after kill -9")
    assert hist_info(m, "w", 1)["disk_status"] == "succeeded"
    # every acknowledged write is in the volume
    fd = os.open(data, os.O_RDONLY)
    try:
        last = {}
        for off, buf in acked:
            last[off] = buf
        lost = [off for off, buf in last.items()
                if os.pread(fd, len(buf), off) != buf]
    finally:
        os.close(fd)
    assert not lost, f"{len(lost)} acknowledged writes lost"
    # next -T releases v1 and reuses bv1: a differential copy that must hold
    # every write of the burst (write-intent marks survived kill -9)
    kv3 = backup(m, "w")
    assert kv3["bv"] == kv1["bv"], (kv1, kv3)
    i3 = wait_hist(m, "w", kv3["version"])
    assert i3["disk_status"] == "succeeded", i3
    assert_same(m.vol("w", "history", kv3["version"], "image"), data,
                f"next -T ({kv3['copy']}, {kv3['grains']} grains) after kill -9 "
                "in a write burst")


# ---------------------------------------------------------------- bad input

BAD_BACKUP = [
    (errno.EINVAL, "backup -T -m TAPE"),
    (errno.EINVAL, "backup -m TAPE -T"),
    (errno.EINVAL, "backup -X"),
    (errno.EINVAL, "backup -m"),
    (errno.EINVAL, "backup -m FLOPPY"),
    (errno.EINVAL, "backup -m disk"),
    (errno.EINVAL, "backup -T -T -m DISK"),
    (errno.EINVAL, "backup -m DISK -m DISK"),
    (errno.EINVAL, "backup -m DISK -m BOTH"),
    (errno.EINVAL, "backup -b"),
    (errno.EINVAL, "backup -b WEEK"),
    (errno.EINVAL, "backup -b GEN -b DAY"),
    (errno.EINVAL, "backup -m DISK extra"),
    (errno.EINVAL, "backup -T-m DISK"),
    (errno.EINVAL, "backup -m DISK\nbackup -m DISK"),
    (errno.EINVAL, b"backup -m DISK\0"),
    (errno.EINVAL, b"backup -m \0DISK"),
    (errno.E2BIG, "backup -m DISK " + " " * 4096),
    (errno.EINVAL, "Backup -m DISK"),
    (errno.EINVAL, "histdel"),
    (errno.EINVAL, "histdel -g"),
    (errno.EINVAL, "histdel -g x"),
    (errno.EINVAL, "histdel -g -1"),
    (errno.EINVAL, "histdel -g 1 -v 1"),
    (errno.EINVAL, "histdel -g 1 -g 1"),
    (errno.EINVAL, "histdel -z -z"),
    (errno.EINVAL, "histdel -z -g 1"),
    (errno.EINVAL, "histdel -v 1 -m FLOPPY"),
    (errno.EINVAL, "histdel -v 1 extra"),
    (errno.EINVAL, "canceltrk"),
    (errno.EINVAL, "canceltrk -bd"),
    (errno.EINVAL, "canceltrk -all -bd b.bv1"),
    (errno.EINVAL, "canceltrk -all -all"),
    (errno.EINVAL, "canceltrk -bd b.bv1 -bd b.bv1"),
    (errno.EINVAL, "canceltrk -bd ../x"),
    (errno.EINVAL, "restore -g"),
    (errno.EINVAL, "restore -m FLOPPY"),
    (errno.EINVAL, "restore -g 1 -v 1"),
    (errno.EINVAL, "restore -r"),
    (errno.ENOENT, "histdel -g 2"),
    (errno.ENOENT, "histdel -g 99"),
    (errno.ENOENT, "histdel -v 99"),
    (errno.ENOENT, "histdel -v 99 -m DISK"),
    (errno.ENOENT, "canceltrk -bd b.bv9"),
    (errno.ENOENT, "canceltrk -bd other.bv1"),
    (errno.ENOENT, "restore -v 99"),
    (errno.ENOENT, "restore -g 5"),
]


def _case_id(case):
    err, cmd = case
    t = cmd.decode(errors="replace") if isinstance(cmd, bytes) else cmd
    t = t.replace("\0", "\\0").replace("\n", "\\n")
    if len(t) > 40:
        t = t[:30] + f"...[{len(cmd)}]"
    return f"{errno.errorcode[err]}:{t}"


@pytest.fixture
def bad_vol(mount):
    """Volume b (save=1) with one succeeded differential backup."""
    m = mount
    m.create_volume("b", "4M", save=1)
    m.create_volume("other", "4M", save=1)
    fill(m.vol("b", "data"), 0, 4 * MiB, seed=12)
    kv = backup(m, "b")
    assert wait_hist(m, "b", kv["version"])["disk_status"] == "succeeded"
    return m


def check_refused(m, vol, cmd, want):
    before = state_of(m, vol)
    log = m.vol(vol, "log")
    log_before = log.read_text()
    err, reply = m.ctl_err(cmd, vol)
    assert err == want, (f"{cmd!r}: got {errno.errorcode.get(err, err)}, want "
                         f"{errno.errorcode[want]}; reply {reply!r}")
    assert reply.startswith("error: "), reply
    assert state_of(m, vol) == before, f"{cmd!r} changed something"
    new = log.read_text()[len(log_before):].splitlines()
    assert len(new) == 1, new
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d error: \S+: .+ "
                    rf"\({errno.errorcode[want]}\)$", new[0]), new[0]


@pytest.mark.parametrize("case", BAD_BACKUP, ids=_case_id)
def test_bad_input_is_refused_and_changes_nothing(bad_vol, case):
    want, cmd = case
    check_refused(bad_vol, "b", cmd, want)


def test_backup_refused_when_only_bv_is_being_read(bad_vol):
    """save=1: the only BV holds generation 1; while its image is open the
    generation cannot be released → EBUSY, nothing changed."""
    m = bad_vol
    with open(m.vol("b", "history", "1", "image"), "rb") as f:
        f.read(4096)
        for cmd in ("backup -T -m DISK", "backup -m DISK", "histdel -g 1",
                    "histdel -z"):
            check_refused(m, "b", cmd, errno.EBUSY)
    kv = retry_busy(lambda: backup(m, "b"))
    assert kv["version"] == "2" and kv["copy"] == "diff", kv


def test_backup_of_unknown_volume(mount):
    mount.create_volume("known", "4M")
    with pytest.raises(FileNotFoundError):
        os.open(mount.vol("nosuch", "ctl"), os.O_RDWR)
    assert os.listdir(mount.path("volumes")) == ["known"]


# ------------------------------------------------- overlapping copies, races

@pytest.mark.slow
@pytest.mark.parametrize("opts", ["-m DISK", "-T -m DISK"])
def test_backup_while_previous_copy_runs_on_same_bv(mount, tmp_path, opts):
    """save=1: the second backup releases the first generation while its
    physical copy still runs on the same BV; the new image must hold the
    volume at the second backup, untouched by the first copy."""
    m = mount
    size = 512 * MiB
    m.create_volume("o", "512M", save=1)
    data = m.vol("o", "data")
    fill(data, 0, size, seed=20)
    kv1 = backup(m, "o", opts)
    assert hist_info(m, "o", kv1["version"])["disk_status"] == "executing"
    fill(data, 0, size, seed=21)
    ref = tmp_path / "ref2.img"
    copy_file(data, ref)
    kv2 = backup(m, "o", opts)
    assert kv2["bv"] == kv1["bv"], (kv1, kv2)
    assert not m.vol("o", "history", kv1["version"]).exists()
    fill(data, 0, 64 * MiB, seed=22)             # and writes go on
    i = wait_hist(m, "o", kv2["version"])
    assert i["disk_status"] == "succeeded", (i, log_tail(m, "o"))
    assert_same(m.vol("o", "history", kv2["version"], "image"), ref,
                "second backup over a running copy")


@pytest.mark.slow
def test_backup_right_after_histdel_of_running_differential(mount, tmp_path):
    m = mount
    size = 512 * MiB
    m.create_volume("h", "512M", save=1)
    data = m.vol("h", "data")
    fill(data, 0, size, seed=23)
    kv1 = backup(m, "h")
    assert hist_info(m, "h", kv1["version"])["disk_status"] == "executing"
    m.ctl(f"histdel -v {kv1['version']}", "h")
    pwrite_sync(data, 0, b"y" * 4096)
    pwrite_sync(data, size - 4096, b"z" * 4096)
    ref = tmp_path / "ref.img"
    copy_file(data, ref)
    err, reply = m.ctl_err("backup -T -m DISK", "h")
    assert err in (0, errno.EBUSY), (err, reply)
    if err:
        wait_for(lambda: trk_rows(m, "h").get("h.bv1", ("?",))[0] == "tracking",
                 "the deleted history's copy to end", COPY_TIMEOUT)
        reply = m.ctl("backup -T -m DISK", "h")
    kv2 = m.parse_reply(reply)
    assert kv2["bv"] == "h.bv1", kv2
    fill(data, 0, 32 * MiB, seed=24)
    i = wait_hist(m, "h", kv2["version"])
    assert i["disk_status"] == "succeeded", (i, log_tail(m, "h"))
    assert_same(m.vol("h", "history", kv2["version"], "image"), ref,
                f"-T backup ({kv2['copy']}) right after histdel of a running copy")


@pytest.mark.parametrize("action", ["backup -m DISK", "histdel -v 1 -m DISK",
                                    "rm disk.img"])
@pytest.mark.slow
def test_disk_side_released_while_its_tape_copy_runs(mount, tmp_path, action):
    """`backup -m BOTH`: once the disk copy is done the tape copy reads the
    BV. Releasing that disk generation meanwhile (generation overflow of a
    new backup with save=1, histdel -m DISK, rm disk.img) must either be
    refused (EBUSY) or leave the tape copy correct — the daemon must not
    die, and every history that says succeeded holds its point in time."""
    m = mount
    size = 512 * MiB                 # the tape copy reads the BV for a while
    m.create_volume("tp", "512M", save=1)
    data = m.vol("tp", "data")
    fill(data, 0, size, seed=25)
    ref1 = tmp_path / "ref1.img"
    copy_file(data, ref1)
    err, reply = m.ctl_err("backup -m BOTH", "tp")
    if err:
        pytest.fail(f"backup -m BOTH refused: {reply.strip()}")
    v1 = m.parse_reply(reply)["version"]
    assert v1 == "1"
    wait_for(lambda: hist_info(m, "tp", v1)["disk_status"] != "executing",
             "the disk copy", COPY_TIMEOUT, step=0.002)
    i = hist_info(m, "tp", v1)
    if i["tape_status"] != "executing":
        pytest.skip(f"tape copy already over, nothing to race: {i}")
    fill(data, 0, 4 * MiB, seed=26)
    ref2 = tmp_path / "ref2.img"
    copy_file(data, ref2)
    try:
        if action == "rm disk.img":
            try:
                os.unlink(m.vol("tp", "history", v1, "disk.img"))
                err, reply = 0, ""
            except OSError as e:
                if e.errno == errno.ENOTCONN:
                    raise
                err, reply = e.errno, str(e)
        else:
            err, reply = m.ctl_err(action, "tp")
        alive = m.proc.poll() is None
    except OSError as e:
        alive, err, reply = False, e.errno, str(e)
    assert alive, (f"the daemon died on `{action}` while the tape copy of "
                   f"the generation ran:\n{m.stderr_tail(15)}")
    assert err in (0, errno.EBUSY), (err, reply)
    if err == 0 and action.startswith("backup"):
        v2 = m.parse_reply(reply)["version"]
        i2 = wait_hist(m, "tp", v2)
        assert i2["disk_status"] == "succeeded", i2
        assert_same(m.vol("tp", "history", v2, "image"), ref2, "new generation")
    if m.vol("tp", "history", v1).exists():
        i1 = wait_hist(m, "tp", v1)
        assert i1["tape_status"] in ("succeeded", "failed"), i1
        if i1["tape_status"] == "succeeded":
            assert_same(m.vol("tp", "history", v1, "tape.img"), ref1,
                        "tape history of the released disk generation")
