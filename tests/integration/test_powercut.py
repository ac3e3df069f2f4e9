"""Reliability suite 5 (issue 21): power cuts at random instants.

A `kill -9` of the daemon leaves the kernel's page cache intact, so it cannot
catch a missing fsync, a rename whose directory was never synced, or a write
ordered after the state change that depends on it. Here the store lives on
ext4 in a loop device over an image file (`--direct-io=on`: what the loop
device completed is in the image), and that image file sits on an xfs
filesystem with reflinks. While the crash loop's workload runs (writes, each
acknowledged by fsync; differential, conventional and -m BOTH backups,
tphistcopy to the default file:// pool on the same disk, histdel, restores
from disk and tape), the image is cloned at random instants (FICLONE: atomic
against the loop device's writes, so each clone is the disk as a power cut at
that instant would leave it, every completed write kept, nothing after it).

After the run, each clone is booted in turn at the original place, as after
a reboot: `e2fsck -fy`, mount, `acmfs --check` (only interrupted histories
may be reported), mount acmfs, then the crash loop's checks: nothing
`executing`, every write acknowledged before the cut present (the operation
in flight may show old or new bytes), every `succeeded` history (disk.img,
tape.img) equal to the volume at its backup instant, the next `-T` backup
exact, no leftover temporaries in the volume directories, and after a clean
unmount `acmfs --check` clean.

Cuts: ACMFS_POWER_CUTS (default 6), seed ACMFS_POWER_SEED. Results go to
ACMFS_RELIABILITY_OUT (scripts/reliability). Needs root, loop devices,
mkfs.xfs (xfsprogs) and mkfs.ext4.
"""

import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import TIME_SCALE
from test_crash import (MiB, Model, Workload, acmfs_check, check_backup, check_problems,
                        record, verify_after_remount, vwrite, wait_idle)

VOLS = {"a": 16 * MiB, "b": 32 * MiB}
BIG = "b"


def sh(*args, timeout=120, check=True):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout * TIME_SCALE)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {r.returncode}: "
                           f"{r.stderr.strip()[-2000:]}")
    return r


class PowerDisk:
    """disk.img (ext4, mounted at `path`) on a loop device, the image on an
    xfs with reflinks (itself on a loop device over a sparse file)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.host_img = tmp / "host.img"
        self.host = tmp / "host"
        self.path = tmp / "disk"
        self.loops = []
        self.mounts = []
        for tool in ("mkfs.xfs", "mkfs.ext4", "e2fsck", "losetup"):
            if not shutil.which(tool):
                pytest.fail(f"{tool} missing (scripts/setup.sh installs xfsprogs, e2fsprogs)",
                            pytrace=False)
        with open(self.host_img, "wb") as f:
            f.truncate(6 << 30)
        hl = self._loop(self.host_img)
        sh("mkfs.xfs", "-q", "-m", "reflink=1", hl)
        self._mount(hl, self.host)
        self.disk_img = self.host / "disk.img"
        with open(self.disk_img, "wb") as f:
            f.truncate(1 << 30)
        self.disk_loop = self._loop(self.disk_img, "--direct-io=on")
        sh("mkfs.ext4", "-q", "-F", "-E", "nodiscard", self.disk_loop)
        self._mount(self.disk_loop, self.path)

    def _loop(self, img, *opts):
        dev = sh("losetup", "--find", "--show", *opts, img).stdout.strip()
        self.loops.append(dev)
        return dev

    def _mount(self, dev, at, *opts):
        at.mkdir(exist_ok=True)
        sh("mount", *opts, dev, at)
        self.mounts.append(at)

    def _umount(self, at):
        sh("umount", at, timeout=60)
        self.mounts.remove(at)

    def _detach(self, dev):
        sh("losetup", "-d", dev, check=False)
        if dev in self.loops:
            self.loops.remove(dev)

    def cut(self, n):
        """The disk as a power cut now would leave it: a reflink clone."""
        dst = self.host / f"cut{n}.img"
        t0 = time.monotonic()
        sh("cp", "--reflink=always", self.disk_img, dst)
        return dst, time.monotonic() - t0

    def power_off(self):
        """Detach the running disk (its daemon stopped first)."""
        self._umount(self.path)
        self._detach(self.disk_loop)

    def boot(self, img):
        """e2fsck the clone and mount it at the original place: fsck's exit."""
        dev = self._loop(img)
        r = sh("e2fsck", "-fy", dev, check=False, timeout=300)
        if r.returncode > 1:
            raise AssertionError(f"e2fsck -fy of {img.name} exited {r.returncode}: "
                                 f"{r.stdout[-1500:]}")
        self._mount(dev, self.path)
        return dev, r.returncode

    def shutdown(self, dev, img):
        self._umount(self.path)
        self._detach(dev)
        img.unlink()

    def teardown(self):
        for at in reversed(list(self.mounts)):
            if sh("umount", at, check=False, timeout=60).returncode:
                sh("umount", "-l", at, check=False)
        for dev in reversed(list(self.loops)):
            sh("losetup", "-d", dev, check=False)


@pytest.fixture
def powerdisk(tmp_path):
    d = PowerDisk(tmp_path)
    try:
        yield d
    finally:
        d.teardown()


class SyncedWorkload(Workload):
    """The crash loop's workload, every write fsynced: after a power cut only
    what an fsync acknowledged may be expected."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sync_p = 1.0


def frozen(model):
    """A copy of the model as it stands (called under model.lock)."""
    c = Model()
    c.data = {k: bytearray(v) for k, v in model.data.items()}
    c.refs = dict(model.refs)
    c.maxver = dict(model.maxver)
    c.inflight = model.inflight
    return c


def leftovers(store):
    """Temporaries and overlays left in the volume directories."""
    out = []
    vdir = Path(store) / "vol"
    if vdir.is_dir():
        for d in vdir.iterdir():
            for f in d.iterdir() if d.is_dir() else ():
                if f.name.endswith(".tmp") or (f.name.startswith("overlay-")
                                               and f.name.endswith(".img")):
                    out.append(str(f.relative_to(store)))
    return out


def pool_temps(store):
    tape = Path(store) / "tape"
    return [str(p.relative_to(store)) for p in tape.rglob(".*.tmp.*")] if tape.is_dir() else []


@pytest.mark.slow
def test_power_cuts_at_random_instants(powerdisk, mount_factory, acmfs_bin, request):
    cuts = int(os.environ.get("ACMFS_POWER_CUTS", "6"))
    seed = int(os.environ.get("ACMFS_POWER_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    t0 = time.monotonic()
    store = powerdisk.path / "store"
    m = mount_factory(name="power", store=store, opts=["-o", "flush_ms=200"])
    model = Model()
    for vol, size in VOLS.items():
        m.create_volume(vol, f"{size // MiB}M")
        buf = bytearray(rng.randbytes(size)) if vol == BIG else bytearray(size)
        if vol == BIG:
            vwrite(m, vol, 0, bytes(buf))
        model.data[vol] = buf
    counters = {k: 0 for k in (
        "power_cuts", "fsck_changed", "lost_writes", "lost_bytes", "wrong_succeeded",
        "executing_after_remount", "histories_verified", "check_backups",
        "precheck_interrupted", "inflight_write", "inflight_restore", "leftover_files",
        "pool_temporaries")}
    failures, notes, taken = [], [], []

    # the run: the workload, cut at random instants
    w = SyncedWorkload(m, model, random.Random(rng.randrange(1 << 30)), BIG)
    w.start()
    try:
        for i in range(cuts):
            time.sleep(rng.uniform(0.3, 2.0))
            if w.exc is not None:
                break
            # the model as of this instant: the workload changes it only
            # under its lock, so with the lock held it matches the disk but
            # for the one operation in flight
            with model.lock:
                img, secs = powerdisk.cut(i)
                taken.append((img, frozen(model)))
            notes.append(f"cut {i}: clone took {secs * 1000:.0f} ms")
    finally:
        w.stop.set()
        w.join(timeout=120 * TIME_SCALE)
    assert not w.is_alive(), "workload thread hung"
    if w.exc is not None:
        failures.append(f"workload error: {w.exc!r}")
    wait_idle(m, model.data)
    m.stop()
    if m.problems:
        failures.append(f"the run: {m.problems}")
        m.problems.clear()
    powerdisk.power_off()

    # each cut, booted where the disk was
    for i, (img, mo) in enumerate(taken):
        counters["power_cuts"] += 1
        dev, fsck = powerdisk.boot(img)
        counters["fsck_changed"] += fsck == 1  # the journal replayed (or fixed)
        try:
            rc, lines = acmfs_check(acmfs_bin, store)
            probs = check_problems(lines)
            counters["precheck_interrupted"] += sum("interrupted" in l for l in probs)
            other = [l for l in probs if "interrupted" not in l]
            if other:
                failures.append(f"cut {i}: check after the cut: {other}")
            m.start()
            verify_after_remount(m, mo, failures, counters)
            left = leftovers(store)
            if left:
                counters["leftover_files"] += len(left)
                failures.append(f"cut {i}: left after the mount's recovery: {left}")
            for vol in mo.data:
                v, info, prob = check_backup(m, vol, bytes(mo.data[vol]))
                counters["check_backups"] += 1
                if prob:
                    failures.append(f"cut {i}: {prob}")
            wait_idle(m, mo.data)
            counters["pool_temporaries"] += len(pool_temps(store))
            m.stop()
            if m.problems:
                failures.append(f"cut {i}: {m.problems}")
                m.problems.clear()
            rc, lines = acmfs_check(acmfs_bin, store)
            if rc != 0:
                failures.append(f"cut {i}: check after a clean unmount exit {rc}: "
                                f"{check_problems(lines) or lines[-3:]}")
        finally:
            if m.proc is not None:
                m.stop()
            powerdisk.shutdown(dev, img)

    if failures:
        failures.insert(0, f"seed {seed}")
    record("power-cut", request.node.nodeid, not failures, iterations=counters["power_cuts"],
           seed=seed, seconds=round(time.monotonic() - t0, 1),
           volumes={k: v // MiB for k, v in VOLS.items()}, counters=counters,
           workload=dict(model.stats), failures=failures[:20], notes=notes,
           lost={"acknowledged_writes": counters["lost_writes"],
                 "bytes": counters["lost_bytes"],
                 "wrong_succeeded": counters["wrong_succeeded"]})
    assert counters["power_cuts"] == cuts or failures, "fewer cuts than asked"
    assert not failures, "\n".join(failures[:20])
