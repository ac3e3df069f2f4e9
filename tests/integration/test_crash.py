"""Reliability suite 1 (issue 8): the crash loop.

A workload thread drives one mounted store — random writes (pwrite, some with
fsync), differential and conventional disk backups, -m BOTH backups and
tphistcopy to the default file:// pool, histdel, restores from disk and tape —
while the test keeps a reference model: the content of every volume as far as
acknowledged writes go, and the reference image of every backup (taken between
writes, while no write is in flight). At a random instant (sometimes just
after a big copy started) the daemon is killed with SIGKILL. Then, every
iteration:

  1. `acmfs --check STORE` on the unmounted store: only "interrupted" findings
     are allowed (the mount repairs those);
  2. remount; no history is `executing`;
  3. every volume equals the model (every acknowledged write present; the
     bytes of the one operation in flight at the kill may be old or new);
  4. every history whose disk_status / tape_status is `succeeded` equals its
     reference byte for byte (disk.img, tape.img);
  5. a `-T` backup's image equals the volume;
  6. clean unmount, `acmfs --check STORE` exits 0 (no problem at all).

Iterations: ACMFS_CRASH_ITERS (default 20), seed ACMFS_CRASH_SEED. Results go
to the JSON-lines file named by ACMFS_RELIABILITY_OUT (scripts/reliability
turns them into RELIABILITY.md). The helpers here are shared with
test_faults.py.
"""

import datetime
import errno
import json
import os
import platform
import random
import shutil
import subprocess
import threading
import time

import pytest

from conftest import TIME_SCALE

KiB = 1 << 10
MiB = 1 << 20
GRAIN = 64 * KiB
JOB_TIMEOUT = 90 * TIME_SCALE

# errnos a dead FUSE connection gives (and ENOENT once it is detached)
DEAD_ERRNOS = {errno.ENOTCONN, errno.ECONNABORTED, errno.ENOENT, errno.EIO,
               errno.ENXIO, errno.EBADF}


# ------------------------------------------------------------------ results

def host_info():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "kernel": platform.release(),
            "cpu": cpu, "ncpu": os.cpu_count()}


def record(suite, test, passed, **fields):
    """Append one result line to $ACMFS_RELIABILITY_OUT (if set)."""
    out = os.environ.get("ACMFS_RELIABILITY_OUT")
    if not out:
        return
    row = {"suite": suite, "test": test, "passed": bool(passed),
           "date": datetime.datetime.now(datetime.timezone.utc)
           .strftime("%Y-%m-%dT%H:%M:%SZ"),
           "build": os.environ.get("ACMFS_BUILD", "build"), **host_info(),
           **fields}
    with open(out, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


# ------------------------------------------------------------------ helpers

def acmfs_check(acmfs_bin, store, repair=False, timeout=60):
    """Run `acmfs --check [--repair] STORE`: (exit code, output lines)."""
    args = [str(acmfs_bin), "--check"] + (["--repair"] if repair else []) + [str(store)]
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout * TIME_SCALE)
    return r.returncode, r.stdout.splitlines()


def check_problems(lines):
    return [l for l in lines if l.startswith("problem:")]


def first_diff(got, want, unit=GRAIN):
    if len(got) != len(want):
        return f"size {len(got)} != {len(want)}"
    if got == want:
        return None
    bad = [o for o in range(0, len(want), unit) if got[o:o + unit] != want[o:o + unit]]
    return f"{len(bad)} grains differ, first at grain {bad[0] // unit}"


def vwrite(m, vol, off, data, sync=True):
    fd = os.open(m.vol(vol, "data"), os.O_WRONLY)
    try:
        n = os.pwrite(fd, data, off)
        assert n == len(data), f"short write {n} of {len(data)}"
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def vread(m, vol):
    return m.vol(vol, "data").read_bytes()


def hist_info(m, vol, v):
    try:
        return m.read_info(f"volumes/{vol}/history/{v}/info")
    except (FileNotFoundError, NotADirectoryError):
        return None


def hist_versions(m, vol):
    return sorted(int(x) for x in os.listdir(m.vol(vol, "history")) if x.isdigit())


def wait_job(m, vol, v, timeout=JOB_TIMEOUT):
    """Wait until version v is no longer executing (disk and tape)."""
    deadline = time.monotonic() + timeout
    while True:
        info = hist_info(m, vol, v)
        if info is None or (info.get("disk_status") != "executing"
                            and info.get("tape_status") != "executing"):
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{vol} version {v} still executing after "
                                 f"{timeout:g} s: {info}")
        time.sleep(0.03)


def wait_idle(m, vols, timeout=JOB_TIMEOUT):
    for vol in vols:
        for v in hist_versions(m, vol):
            wait_job(m, vol, v, timeout)


def check_backup(m, vol, want):
    """Take a -T disk backup, wait for it, compare its image with `want`.
    Returns (version, info, problem or None)."""
    r = m.parse_reply(m.ctl("backup -T -m DISK", vol))
    v = int(r["version"])
    info = wait_job(m, vol, v)
    if info is None or info["disk_status"] != "succeeded":
        return v, info, f"check backup {vol} v{v} did not succeed: {info}"
    d = first_diff(m.vol(vol, "history", str(v), "disk.img").read_bytes(), want)
    return v, info, (f"{vol}: -T backup v{v} ({info.get('copy')}) differs from the "
                     f"volume: {d}" if d else None)


def merge_uncertain(actual, old, new, off):
    """Bytes [off, off+len(new)) of `actual` must each equal old or new.
    Returns the number of offending bytes."""
    a = actual[off:off + len(new)]
    if a == new or a == old:
        return 0
    bad = 0
    for i in range(len(new)):
        if a[i] != new[i] and a[i] != old[i]:
            bad += 1
    return bad


def copy_store(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", "--sparse=always", str(src), str(dst)], check=True)


# ------------------------------------------------------------------ the model

class Model:
    """What the test knows: per volume the acknowledged content and the
    reference image of every backup version."""

    def __init__(self):
        self.data = {}          # vol -> bytearray
        self.refs = {}          # (vol, version) -> bytes
        self.maxver = {}        # vol -> highest version seen in a reply
        self.inflight = None    # description of the operation at the kill
        self.lock = threading.Lock()
        self.stats = dict(writes=0, write_bytes=0, fsyncs=0, backups=0,
                          both=0, diff=0, conventional=0, tphistcopy=0,
                          histdel=0, restores=0, tape_restores=0, errors=0)


class Workload(threading.Thread):
    def __init__(self, m, model, rng, big):
        super().__init__(daemon=True)
        self.m, self.model, self.rng, self.big = m, model, rng, big
        self.stop = threading.Event()
        self.killed = threading.Event()
        self.copy_started = threading.Event()
        self.exc = None
        self.daemon_rc = None
        self.errors = []
        self.sync_p = 0.6       # share of writes followed by fsync

    def run(self):
        try:
            while not self.stop.is_set():
                self.step()
        except OSError as e:
            if not self.killed.is_set():
                self.exc = e
                p = self.m.proc
                try:            # a dying daemon (sanitizer report) takes a moment
                    self.daemon_rc = p.wait(timeout=5 * TIME_SCALE) if p else "gone"
                except Exception:
                    self.daemon_rc = None
        except Exception as e:         # a test bug: report it
            self.exc = e

    # one random operation; the model is updated only when it returns
    def step(self):
        mo, rng = self.model, self.rng
        vol = rng.choice(list(mo.data))
        p = rng.random()
        if p < 0.55:
            self.op_write(vol)
        elif p < 0.75:
            self.op_backup(vol)
        elif p < 0.82:
            self.op_tphistcopy(vol)
        elif p < 0.90:
            self.op_histdel(vol)
        else:
            self.op_restore(vol)

    def _ctl(self, cmd, vol):
        """ctl with the kill in mind: returns (errno, reply); raises OSError
        if the daemon is gone (the caller marks the operation in flight)."""
        try:
            err, reply = self.m.ctl_err(cmd, vol)
        except OSError:
            raise
        if err and self.killed.is_set():
            raise OSError(err, "daemon killed")
        if err:
            self.model.stats["errors"] += 1
            self.errors.append(f"{cmd!r} on {vol}: {os.strerror(err)} {reply.strip()}")
        return err, reply

    def op_write(self, vol):
        mo, rng = self.model, self.rng
        d = mo.data[vol]
        n = rng.choice([512, 4096, 3 * 4096 + 100, GRAIN, 2 * GRAIN + 7, 256 * KiB])
        off = rng.randrange(0, len(d) - n)
        if rng.random() < 0.3:
            off -= off % GRAIN
        new = rng.randbytes(n)
        sync = rng.random() < self.sync_p
        with mo.lock:
            mo.inflight = ("write", vol, off, bytes(d[off:off + n]), new)
        vwrite(self.m, vol, off, new, sync=sync)
        with mo.lock:
            d[off:off + n] = new
            mo.inflight = None
            mo.stats["writes"] += 1
            mo.stats["write_bytes"] += n
            mo.stats["fsyncs"] += sync

    def op_backup(self, vol):
        mo, rng = self.model, self.rng
        diff = rng.random() < 0.6
        media = rng.choice(["DISK", "DISK", "BOTH"])
        cmd = f"backup {'-T ' if diff else ''}-m {media}"
        snap = bytes(mo.data[vol])
        with mo.lock:
            mo.inflight = ("backup", vol, snap)
        err, reply = self._ctl(cmd, vol)
        with mo.lock:
            mo.inflight = None
            if err:
                return
            v = int(self.m.parse_reply(reply)["version"])
            mo.refs[(vol, v)] = snap
            mo.maxver[vol] = max(mo.maxver.get(vol, 0), v)
            mo.stats["backups"] += 1
            mo.stats["both" if media == "BOTH" else ("diff" if diff else "conventional")] += 1
        if vol == self.big:
            self.copy_started.set()

    def _versions(self, vol, pred):
        out = []
        for v in hist_versions(self.m, vol):
            info = hist_info(self.m, vol, v)
            if info and pred(info):
                out.append(v)
        return out

    def op_tphistcopy(self, vol):
        mo = self.model
        vs = self._versions(vol, lambda i: i["disk_status"] == "succeeded"
                            and i["tape_status"] in ("none", "failed"))
        if not vs:
            return
        v = self.rng.choice(vs)
        with mo.lock:
            mo.inflight = ("tphistcopy", vol, v)
        err, _ = self._ctl(f"tphistcopy -v {v}", vol)
        with mo.lock:
            mo.inflight = None
            if not err:
                mo.stats["tphistcopy"] += 1

    def op_histdel(self, vol):
        mo = self.model
        vs = hist_versions(self.m, vol)
        if len(vs) < 3:
            return
        v = self.rng.choice(vs[:-1])
        media = self.rng.choice(["DISK", "TAPE", None])
        cmd = f"histdel -v {v}" + (f" -m {media}" if media else "")
        with mo.lock:
            mo.inflight = ("histdel", vol, v)
        err, _ = self._ctl(cmd, vol)
        with mo.lock:
            mo.inflight = None
            if not err:
                mo.stats["histdel"] += 1

    def op_restore(self, vol):
        mo, rng = self.model, self.rng
        tape = rng.random() < 0.35
        if tape:
            vs = self._versions(vol, lambda i: i["tape_status"] == "succeeded")
        else:
            vs = self._versions(vol, lambda i: i["disk_status"] in ("succeeded", "executing"))
        vs = [v for v in vs if (vol, v) in mo.refs]
        if not vs:
            return
        v = rng.choice(vs)
        cmd = f"restore -v {v}" + (" -m TAPE" if tape else "")
        old = bytes(mo.data[vol])
        with mo.lock:
            mo.inflight = ("restore", vol, 0, old, mo.refs[(vol, v)])
        err, _ = self._ctl(cmd, vol)
        with mo.lock:
            mo.inflight = None
            if not err:
                mo.data[vol][:] = mo.refs[(vol, v)]
                mo.stats["tape_restores" if tape else "restores"] += 1


# ------------------------------------------------------------------ the test

VOLS = {"a": 16 * MiB, "b": 64 * MiB}
BIG = "b"


def verify_after_remount(m, model, failures, counters):
    """Checks 2-4 on a freshly remounted store; adopts the actual content of
    the operation in flight at the kill into the model."""
    mo = model
    fl = mo.inflight
    mo.inflight = None
    # 2. nothing executing, and no history the model cannot explain
    for vol in mo.data:
        for v in hist_versions(m, vol):
            info = hist_info(m, vol, v)
            if info is None:
                continue
            for side in ("disk_status", "tape_status"):
                if info.get(side) == "executing":
                    counters["executing_after_remount"] += 1
                    failures.append(f"{vol} v{v}: {side}=executing after remount: {info}")
            if (vol, v) not in mo.refs:
                if fl and fl[0] == "backup" and fl[1] == vol and \
                        v > mo.maxver.get(vol, 0):
                    mo.refs[(vol, v)] = fl[2]          # the backup in flight
                    mo.maxver[vol] = v
                elif "succeeded" in (info.get("disk_status"), info.get("tape_status")):
                    failures.append(f"{vol} v{v}: unknown history is succeeded: {info}")
    # 3. acknowledged writes
    for vol, d in mo.data.items():
        actual = vread(m, vol)
        if fl and fl[0] in ("write", "restore") and fl[1] == vol:
            _, _, off, old, new = fl
            bad = merge_uncertain(actual, old, new, off)
            if bad:
                counters["lost_bytes"] += bad
                failures.append(f"{vol}: {bad} bytes of the {fl[0]} in flight at "
                                f"[{off}, +{len(new)}) are neither old nor new")
            ok_other = actual[:off] == d[:off] and \
                actual[off + len(new):] == d[off + len(new):]
            if not ok_other:
                counters["lost_writes"] += 1
                failures.append(f"{vol}: acknowledged data lost outside the op in "
                                f"flight: {first_diff(actual, bytes(d), 4096)}")
            d[:] = actual
            counters["inflight_" + fl[0]] += 1
        elif actual != d:
            counters["lost_writes"] += 1
            failures.append(f"{vol}: acknowledged data lost: "
                            f"{first_diff(actual, bytes(d), 4096)}")
            d[:] = actual
    # 4. every succeeded history byte-exact
    for vol in mo.data:
        for v in hist_versions(m, vol):
            info = hist_info(m, vol, v)
            ref = mo.refs.get((vol, v))
            if info is None or ref is None:
                continue
            for side, img in (("disk_status", "disk.img"), ("tape_status", "tape.img")):
                if info.get(side) != "succeeded":
                    continue
                counters["histories_verified"] += 1
                try:
                    got = m.vol(vol, "history", str(v), img).read_bytes()
                except OSError as e:
                    failures.append(f"{vol} v{v} {img}: succeeded but unreadable: {e}")
                    continue
                d = first_diff(got, ref)
                if d:
                    counters["wrong_succeeded"] += 1
                    failures.append(f"{vol} v{v} {img} ({info.get('copy')}, "
                                    f"media {info.get('media')}): succeeded but {d}")


@pytest.mark.slow
def test_crash_loop(mount_factory, acmfs_bin, request):
    iters = int(os.environ.get("ACMFS_CRASH_ITERS", "20"))
    seed = int(os.environ.get("ACMFS_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    t0 = time.monotonic()
    m = mount_factory(name="crash", opts=["-o", "flush_ms=200"])
    model = Model()
    for vol, size in VOLS.items():
        m.create_volume(vol, f"{size // MiB}M")
        buf = bytearray(rng.randbytes(size)) if vol == BIG else bytearray(size)
        if vol == BIG:
            vwrite(m, vol, 0, bytes(buf))
        model.data[vol] = buf
    counters = {k: 0 for k in (
        "kills", "mid_copy_kills", "daemon_died", "lost_writes", "lost_bytes", "wrong_succeeded",
        "executing_after_remount", "histories_verified", "check_backups",
        "precheck_interrupted", "inflight_write", "inflight_restore")}
    failures = []
    notes = []
    it = 0
    try:
        for it in range(1, iters + 1):
            w = Workload(m, model, random.Random(rng.randrange(1 << 30)), BIG)
            mid_copy = rng.random() < 0.3
            w.start()
            if mid_copy:
                w.copy_started.wait(timeout=3 * TIME_SCALE)
                time.sleep(rng.uniform(0, 0.05))
                counters["mid_copy_kills"] += w.copy_started.is_set()
            else:
                time.sleep(rng.uniform(0.05, 1.2))
            w.killed.set()
            if m.proc is not None and m.proc.poll() is not None and w.exc is None:
                w.daemon_rc = m.proc.returncode      # died before the planned kill
            m.kill9()
            counters["kills"] += 1
            w.stop.set()
            w.join(timeout=30 * TIME_SCALE)
            assert not w.is_alive(), "workload thread hung after the kill"
            if w.exc is None and w.daemon_rc is not None:
                counters["daemon_died"] += 1
                failures.append(f"iteration {it}: the daemon died on its own before the "
                                f"planned kill (exit status {w.daemon_rc})")
            if w.exc is not None:
                # the daemon died on its own (a daemon bug), or a test bug:
                # report it, then go on as after any crash
                failures.append(f"iteration {it}: workload error before the kill: "
                                f"{w.exc!r}; daemon exit status "
                                f"{w.daemon_rc} (None = was alive)")
                counters["daemon_died"] += w.daemon_rc is not None
                if w.daemon_rc is None:
                    break
            # 1. check of the unmounted, crashed store
            rc, lines = acmfs_check(acmfs_bin, m.store)
            probs = check_problems(lines)
            counters["precheck_interrupted"] += sum("interrupted" in l for l in probs)
            other = [l for l in probs if "interrupted" not in l]
            if other:
                failures.append(f"iteration {it}: check after kill: {other}")
            m.start()
            verify_after_remount(m, model, failures, counters)
            # 5. the next -T backup equals the volume
            for vol in model.data:
                v, info, prob = check_backup(m, vol, bytes(model.data[vol]))
                counters["check_backups"] += 1
                model.refs[(vol, v)] = bytes(model.data[vol])
                model.maxver[vol] = max(model.maxver.get(vol, 0), v)
                if prob:
                    failures.append(f"iteration {it}: {prob}")
            # 6. clean unmount, clean check
            wait_idle(m, model.data)
            m.stop()
            if m.problems:
                failures.append(f"iteration {it}: {m.problems}")
                m.problems.clear()
            rc, lines = acmfs_check(acmfs_bin, m.store)
            if rc != 0:
                failures.append(f"iteration {it}: check after clean unmount exit {rc}: "
                                f"{check_problems(lines) or lines[-3:]}")
            m.start()
    finally:
        if failures:
            failures.insert(0, f"seed {seed}")
        st = dict(model.stats)
        record("crash-loop", request.node.nodeid, not failures,
               iterations=it, seed=seed, seconds=round(time.monotonic() - t0, 1),
               volumes={k: v // MiB for k, v in VOLS.items()},
               counters=counters, workload=st, failures=failures[:20], notes=notes,
               lost={"acknowledged_writes": counters["lost_writes"],
                     "bytes": counters["lost_bytes"],
                     "wrong_succeeded": counters["wrong_succeeded"]})
    assert not failures, "\n".join(failures[:20])


# ------------------------------------------------------------------ regressions
# Found by the crash loop: the daemon died on its own (SIGSEGV) when a -m BOTH
# backup's disk generation was released (generation overflow) while its tape
# copy still read the BV; and a tape history stayed `executing` forever when
# the generation was released before its disk copy ended.

@pytest.mark.parametrize("gap", [0.0, 0.2])
def test_generation_released_during_both_tape_copy(mount, request, gap):
    m = mount
    t0 = time.monotonic()
    m.create_volume("r", "64M", save=1)
    ref1 = random.Random(5).randbytes(64 * MiB)
    vwrite(m, "r", 0, ref1)
    v1 = int(m.parse_reply(m.ctl("backup -m BOTH", "r"))["version"])
    time.sleep(gap)
    # the only BV is reused: version v1's disk generation is released while
    # its disk copy or its tape copy (which reads the BV) still runs
    vwrite(m, "r", 0, b"\x55" * GRAIN)
    failures = []
    try:
        # the daemon may refuse to release a generation whose tape copy runs
        # or is due (EBUSY, saying so); it must never crash nor lose the copy
        err, reply = m.ctl_err("backup -m DISK", "r")
        vs = [v1]
        if err == errno.EBUSY:
            assert "tape" in reply, reply
            info = wait_job(m, "r", v1, timeout=6 * TIME_SCALE)
            assert info and info.get("tape_status") == "succeeded", info
            err, reply = m.ctl_err("backup -m DISK", "r")
        assert err == 0, (os.strerror(err), reply)
        vs.append(int(m.parse_reply(reply)["version"]))
        for v in vs:
            info = wait_job(m, "r", v, timeout=6 * TIME_SCALE)
            if info and info.get("tape_status") == "succeeded":
                d = first_diff(m.vol("r", "history", str(v), "tape.img").read_bytes(), ref1)
                if d:
                    failures.append(f"v{v} tape.img succeeded but {d}")
    except (AssertionError, OSError) as e:
        try:
            m.proc.wait(timeout=3)
        except Exception:
            pass
        dead = m.proc is not None and m.proc.poll() is not None
        failures.append(f"gap {gap}: {type(e).__name__}: {str(e)[:300]}"
                        + (f"; daemon died, exit {m.proc.returncode}" if dead else ""))
        if dead:
            m.kill9()
            m.start()            # so that the fixture's teardown is clean
    record("regressions", request.node.nodeid, not failures, iterations=1,
           failures=failures, seconds=round(time.monotonic() - t0, 1),
           lost={"wrong_succeeded": sum("succeeded but" in f for f in failures)})
    assert not failures, "\n".join(failures)
