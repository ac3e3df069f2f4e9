"""Reliability suites 2-4 (issue 8): injected crashes and I/O errors.

2. Write-intent ordering: a short write sequence to a volume with a `-T`
   backup; for every track I/O index k of the sequence the daemon runs with
   ACMFS_FAULT=track:k:crash (an _exit(137) before that operation, as a
   kill -9 at that instant). After a remount without faults the next `-T`
   backup to the tracking BV must equal the volume: no grain that was written
   is clean in the tracking state.
3. Error sweeps: for n = 1..N over the data, track and catalog I/O of a
   backup + tape copy + restore scenario, fail the n-th operation (EIO, and
   ENOSPC / short writes for a few n): the daemon stays up (or exits with a
   clean error), every reply is `ok` or a clean error, no history is wrongly
   `succeeded` (every succeeded image is byte-exact), and after a remount
   without faults `acmfs --check` is clean. Run against an ASan build
   (ACMFS_BUILD=build-asan) the conftest fails on any sanitizer report.
4. Tape faults through the S3 fault proxy of s3util.py: 500, 503 SlowDown,
   connection resets and truncated bodies at every request index of an
   upload and a read: results are `succeeded` and exact, or `failed`; a
   failed upload leaves no manifest; a kill -9 in the middle of an upload
   leaves no manifest and no `succeeded`.

CI runs bounded variants; ACMFS_RELIABILITY_LONG=1 sweeps every index.
Results are appended to $ACMFS_RELIABILITY_OUT (see test_crash.py).
"""

import errno
import os
import random
import re
import time
import uuid

import pytest

from conftest import TIME_SCALE
from test_crash import (GRAIN, KiB, MiB, acmfs_check, check_problems, copy_store,
                        first_diff, hist_info, hist_versions, record, vread,
                        vwrite, wait_job)

LONG = os.environ.get("ACMFS_RELIABILITY_LONG", "") not in ("", "0")
COUNT_RE = re.compile(r"io ops: (\w+)=(\d+)")


def clean_env(**extra):
    e = {k: v for k, v in os.environ.items()
         if k not in ("ACMFS_FAULT", "ACMFS_FAULT_COUNT")}
    e.update(extra)
    return e


def io_counts(m, since):
    """The last `io ops:` counts in the daemon's stderr after offset `since`."""
    out = {}
    for cls, n in COUNT_RE.findall(m.stderr_text()[since:]):
        out[cls] = int(n)
    return out


def daemon_dead(m):
    return m.proc is None or m.proc.poll() is not None


def settle_dead(m):
    """After an injected crash: reap the daemon, detach the mount."""
    if m.proc is not None:
        m.kill9()


def sample(n, cap, rng):
    """1..n, or at most `cap` of them (always the first ones and the last)."""
    if LONG or n <= cap:
        return list(range(1, n + 1))
    head = list(range(1, cap // 2 + 1))
    rest = rng.sample(range(cap // 2 + 1, n + 1), cap - len(head) - 1)
    return sorted(set(head + rest + [n]))


# ====================================================== read and write errors

def read_errno(path, off=0, n=GRAIN):
    """The errno a read of path at off fails with (None: it succeeded)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, n, off)
        return None
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def test_io_errors_reach_the_reader_and_the_log(mount_factory):
    """A disk image, the volume and its writes on a store whose data I/O
    fails (ACMFS_FAULT=data:1+:eio, from the first data operation after the
    mount): every read and write gets EIO, never other bytes; the volume's
    log says what failed and where, at most once a second for reads and
    once for writes, with a count of those left out; metrics count every one; nothing is changed: without
    the fault the image reads back exact."""
    m = mount_factory(name="ioerr", env=clean_env())
    m.create_volume("re", "8M", save=1)
    data = random.Random(41).randbytes(8 * MiB)
    vwrite(m, "re", 0, data)
    v = int(m.parse_reply(m.ctl("backup -T -m DISK", "re"))["version"])
    assert wait_job(m, "re", v)["disk_status"] == "succeeded"
    image = m.vol("re", "history", str(v), "image")
    assert image.read_bytes() == data
    m.stop()

    # the rule counts from the first data operation: the mount must do none
    m.env = clean_env(ACMFS_FAULT_COUNT="1")
    since = len(m.stderr_text())
    m.start()
    m.stop()
    assert io_counts(m, since).get("data") == 0, io_counts(m, since)

    m.env = clean_env(ACMFS_FAULT="data:1+:eio")
    m.start()
    log = m.vol("re", "log")
    log0 = len(log.read_text())
    errs0 = m.metric("acmfs_io_errors_total")
    t0 = time.monotonic()
    assert read_errno(image, 3 * GRAIN) == errno.EIO
    for i in range(20):
        assert read_errno(image, i * GRAIN) == errno.EIO
    burst = time.monotonic() - t0
    assert read_errno(m.vol("re", "data")) == errno.EIO
    with pytest.raises(OSError) as e:
        vwrite(m, "re", 0, b"x" * 4096)
    assert e.value.errno == errno.EIO
    lines = [ln for ln in log.read_text()[log0:].splitlines() if "error:" in ln]
    reads = [ln for ln in lines if "error: reading" in ln]
    assert reads and reads[0].endswith(
        f"error: reading disk image of version {v} at {3 * GRAIN}: Input/output error"), lines
    # reads: a line a second at most (the burst and the two after it took
    # `burst` s); the write has a limit of its own, so its line is there
    assert len(reads) <= 1 + int(burst + 1), (burst, lines)
    assert any(ln.endswith("error: writing the volume at 0: Input/output error")
               for ln in lines), lines
    assert m.metric("acmfs_io_errors_total") - errs0 >= 23
    time.sleep(1.1)
    assert read_errno(image) == errno.EIO
    last = log.read_text().splitlines()[-1]
    assert re.search(r"error: reading disk image of version \d+ at 0: Input/output error "
                     r"\(\d+ more read errors since the last line\)$", last), last
    assert hist_info(m, "re", v)["disk_status"] == "succeeded"
    m.stop()

    m.env = clean_env()
    m.start()
    assert image.read_bytes() == data
    assert vread(m, "re") == data


# ===================================================================== suite 2

WI_VOL = "w"
WI_SIZE = 192 * MiB           # three 64 MiB write-intent regions
REGION = 64 * MiB


def wi_sequence(m, rng_seed):
    """The short write sequence; stops at the first failure (daemon dead).
    Returns the number of writes acknowledged."""
    rng = random.Random(rng_seed)
    plan = [
        (3 * GRAIN, 4 * KiB, False),
        (REGION + 5 * GRAIN + 100, 8 * KiB, True),
        ("sleep",),
        (7 * GRAIN, GRAIN, False),                       # region 0 again after a flush
        (2 * REGION - 32 * KiB, GRAIN, True),            # spans regions 1 and 2
        (2 * REGION + 40 * GRAIN, 3 * GRAIN, False),
        ("sleep",),
        (REGION + 9 * GRAIN, 4 * KiB, False),
        (WI_SIZE - 4 * KiB, 4 * KiB, True),              # the last page
        ("sleep",),
        (11 * GRAIN + 512, 512, True),
    ]
    acked = 0
    for step in plan:
        if step[0] == "sleep":
            time.sleep(0.12)
            continue
        off, n, sync = step
        try:
            vwrite(m, WI_VOL, off, rng.randbytes(n), sync=sync)
        except OSError:
            return acked
        acked += 1
    return acked


@pytest.mark.slow
def test_write_intent_crash_at_every_track_op(mount_factory, acmfs_bin, tmp_path, request):
    t0 = time.monotonic()
    failures, stats = [], dict(runs=0, crashed_at_mount=0, crashed_in_sequence=0,
                               crashed_at_unmount=0, no_crash=0, full_fallback=0,
                               diff_backups=0, changed_grains_max=0)
    m = mount_factory(name="wi", opts=["-o", "flush_ms=50"], env=clean_env())
    m.create_volume(WI_VOL, f"{WI_SIZE // MiB}M", save=1)   # one BV: every -T goes to it
    rng = random.Random(7)
    # baseline: scattered content in every region, one -T backup, quiesced
    for r in range(WI_SIZE // REGION):
        for g in rng.sample(range(REGION // GRAIN), 12):
            vwrite(m, WI_VOL, r * REGION + g * GRAIN, rng.randbytes(GRAIN), sync=False)
    v0 = int(m.parse_reply(m.ctl("backup -T -m DISK", WI_VOL))["version"])
    assert wait_job(m, WI_VOL, v0)["disk_status"] == "succeeded"
    base_img = vread(m, WI_VOL)
    time.sleep(0.3)
    m.stop()
    base_store = tmp_path / "wi-base"
    copy_store(m.store, base_store)

    # the counting run
    m.env = clean_env(ACMFS_FAULT_COUNT="1")
    since = len(m.stderr_text())
    m.start()
    wi_sequence(m, 1)
    m.stop()
    n_track = io_counts(m, since).get("track", 0)
    assert n_track > 0, "no track I/O counted (ACMFS_FAULT_COUNT not honoured?)"
    # every k (and a little past the end) in the long variant; in CI the
    # first ones, a random sample and the last ones
    ks = sample(n_track + 2, 16, random.Random(n_track))
    undercount = []

    for k in ks:
        copy_store(base_store, m.store)
        m.env = clean_env(ACMFS_FAULT=f"track:{k}:crash")
        stats["runs"] += 1
        where = "sequence"
        try:
            m.start()
        except RuntimeError:
            where = "mount"
        if where == "sequence":
            wi_sequence(m, 1)
            if daemon_dead(m):
                settle_dead(m)
            else:
                rc = m.stop()
                m.problems[:] = [p for p in m.problems if "exited with 137" not in p]
                where = "unmount" if rc == 137 else "none"
        stats[{"mount": "crashed_at_mount", "sequence": "crashed_in_sequence",
               "unmount": "crashed_at_unmount", "none": "no_crash"}[where]] += 1
        # remount without faults; the next -T backup must equal the volume
        m.env = clean_env()
        try:
            m.start()
        except RuntimeError as e:
            failures.append(f"k={k} ({where}): remount failed: {e}")
            break
        tv = vread(m, WI_VOL)
        changed = sum(1 for o in range(0, WI_SIZE, GRAIN)
                      if tv[o:o + GRAIN] != base_img[o:o + GRAIN])
        stats["changed_grains_max"] = max(stats["changed_grains_max"], changed)
        err, reply = m.ctl_err("backup -T -m DISK", WI_VOL)
        if err:
            failures.append(f"k={k} ({where}): backup: {os.strerror(err)} {reply}")
            m.stop()
            break
        r = m.parse_reply(reply)
        v = int(r["version"])
        info = wait_job(m, WI_VOL, v)
        if r.get("bv") != "w.bv1":
            failures.append(f"k={k}: the -T backup went to {r.get('bv')}, not the tracking BV")
        if info["copy"] == "diff":
            stats["diff_backups"] += 1
        else:
            stats["full_fallback"] += 1
        img = m.vol(WI_VOL, "history", str(v), "disk.img").read_bytes()
        d = first_diff(img, tv)
        if info["disk_status"] != "succeeded" or d:
            failures.append(f"k={k} ({where}): -T backup v{v} copy={info['copy']} "
                            f"grains_copied={info['grains_copied']}: "
                            f"{info['disk_status']}, image vs volume: {d}")
        if int(r["grains"]) < changed:
            failures.append(f"k={k} ({where}): the -T backup's copy job has "
                            f"grains={r['grains']} < {changed} grains changed since the "
                            "baseline backup: written grains are clean in the tracking state")
        if int(info["grains_copied"]) < changed:
            # accounting only (the image check above is the data check)
            undercount.append(f"k={k}: history info grains_copied={info['grains_copied']} < "
                              f"{changed} grains changed (reply grains={r['grains']})")
        m.stop()
        rc, lines = acmfs_check(acmfs_bin, m.store)
        if rc != 0:
            failures.append(f"k={k} ({where}): check after remount: {check_problems(lines)}")
        if failures:
            break
    record("write-intent", request.node.nodeid, not failures and not undercount,
           iterations=stats["runs"], faults=f"track:k:crash for k=1..{ks[-1]}",
           track_ops=n_track, counters=stats, failures=failures[:20],
           seconds=round(time.monotonic() - t0, 1),
           grains_copied_undercount=undercount[:10],
           lost={"grains_missed": sum("image vs volume" in f for f in failures)})
    assert not failures, "\n".join(failures[:20])
    assert not undercount, ("history info grains_copied counts the data bytes moved "
                            "/ grain, not the grains copied:\n" + "\n".join(undercount[:5]))


# ===================================================================== suite 3

SW_VOL = "e"
SW_SIZE = 2 * MiB
CLEAN_ERRNOS = {errno.EIO, errno.ENOSPC, errno.EBUSY, errno.ENOENT, errno.ECANCELED,
                errno.EAGAIN}
CRASH_RCS = {-11, -6, -7, -4, -8, 134, 139, 137}   # signals / abort / injected


class Uncertain:
    """Volume content as the test knows it: bytes plus ranges whose write
    failed (each byte there may be old or new)."""

    def __init__(self, data):
        self.data = bytearray(data)
        self.ranges = []           # (off, old, new)

    def write(self, off, new, ok):
        if not ok:
            self.ranges.append((off, bytes(self.data[off:off + len(new)]), new))
        self.data[off:off + len(new)] = new

    def snapshot(self):
        u = Uncertain(self.data)
        u.ranges = list(self.ranges)
        return u

    def matches(self, got):
        if len(got) != len(self.data):
            return f"size {len(got)} != {len(self.data)}"
        if got == self.data:
            return None
        want = bytearray(self.data)
        masked = bytearray(got)
        for off, old, new in self.ranges:
            if merge_uncertain(got, old, new, off):
                return f"bytes at [{off}, +{len(new)}) are neither old nor new"
            want[off:off + len(new)] = got[off:off + len(new)]
        return first_diff(bytes(masked), bytes(want))


from test_crash import merge_uncertain   # noqa: E402


def sweep_scenario(m, base, v0, rng_seed, log):
    """backup (-T BOTH, conventional), restores from disk and tape, image
    reads. Returns {version: Uncertain ref} and the TV expectation."""
    rng = random.Random(rng_seed)
    tv = Uncertain(base)
    refs = {v0: Uncertain(base)}

    def ctl(cmd):
        err, reply = m.ctl_err(cmd, SW_VOL)
        log.append((cmd, err, reply.strip().splitlines()[:1]))
        return err, reply

    for off in (0, 5 * GRAIN + 300, SW_SIZE - 3 * GRAIN):
        new = rng.randbytes(GRAIN)
        try:
            vwrite(m, SW_VOL, off, new, sync=True)
            tv.write(off, new, True)
        except AssertionError as e:          # a short write: the fault hit a later chunk
            log.append(("write", errno.EIO, [str(e)[:40]]))
            tv.write(off, new, False)
        except OSError as e:
            log.append(("write", e.errno, []))
            tv.write(off, new, False)
            if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                return refs, tv
    versions = []
    for cmd in ("backup -T -m BOTH", "backup -m DISK"):
        err, reply = ctl(cmd)
        if err == 0:
            v = int(m.parse_reply(reply)["version"])
            refs[v] = tv.snapshot()
            versions.append(v)
        elif err in (errno.ENOTCONN, errno.ECONNABORTED):
            return refs, tv
    for v in versions:
        try:
            wait_job(m, SW_VOL, v, timeout=30 * TIME_SCALE)
        except (AssertionError, OSError) as e:
            log.append(("wait", 0, [str(e)[:200]]))
    # restore from disk (differential: the pair tracks), then from tape
    for cmd, ref in ((f"restore -v {v0}", refs[v0]),
                     (f"restore -v {versions[0] if versions else v0} -m TAPE",
                      refs[versions[0] if versions else v0])):
        err, _ = ctl(cmd)
        if err == 0:
            tv = ref.snapshot()
        elif err in (errno.ENOTCONN, errno.ECONNABORTED):
            return refs, tv
        else:
            tv = None            # a failed restore leaves partly restored data
    return refs, tv


def verify_histories(m, refs, failures, tag, counters):
    for v in hist_versions(m, SW_VOL):
        info = hist_info(m, SW_VOL, v)
        if info is None:
            continue
        for side, img in (("disk_status", "disk.img"), ("tape_status", "tape.img")):
            st = info.get(side)
            counters[f"{side.split('_')[0]}_{st}"] = counters.get(f"{side.split('_')[0]}_{st}", 0) + 1
            if st != "succeeded":
                continue
            ref = refs.get(v)
            if ref is None:
                failures.append(f"{tag}: v{v} {img} succeeded but the test never got its version")
                continue
            try:
                got = m.vol(SW_VOL, "history", str(v), img).read_bytes()
            except OSError as e:
                # a read may fail while the fault is armed; never after
                if "remount" in tag:
                    failures.append(f"{tag}: v{v} {img} succeeded but unreadable: {e}")
                continue
            d = ref.matches(got)
            if d:
                counters["wrong_succeeded"] = counters.get("wrong_succeeded", 0) + 1
                failures.append(f"{tag}: v{v} {img} succeeded but {d}")


SWEEP_CLASSES = ("data", "track", "catalog", "tape")


@pytest.mark.slow
@pytest.mark.parametrize("cls", SWEEP_CLASSES)
def test_error_sweep(mount_factory, acmfs_bin, tmp_path, request, cls):
    t0 = time.monotonic()
    m = mount_factory(name="sw", opts=["-o", "flush_ms=100"], env=clean_env())
    m.create_volume(SW_VOL, f"{SW_SIZE // MiB}M", save=3)
    rng = random.Random(3)
    base = bytearray(SW_SIZE)
    for g in range(0, SW_SIZE // GRAIN, 2):
        base[g * GRAIN:(g + 1) * GRAIN] = rng.randbytes(GRAIN)
    vwrite(m, SW_VOL, 0, bytes(base))
    base = bytes(base)
    v0 = int(m.parse_reply(m.ctl("backup -T -m BOTH", SW_VOL))["version"])
    info = wait_job(m, SW_VOL, v0)
    assert info["disk_status"] == info["tape_status"] == "succeeded", info
    m.stop()
    base_store = tmp_path / "sw-base"
    copy_store(m.store, base_store)

    # counting run
    m.env = clean_env(ACMFS_FAULT_COUNT="1")
    since = len(m.stderr_text())
    m.start()
    sweep_scenario(m, base, v0, 1, [])
    m.stop()
    counts = io_counts(m, since)
    n = counts.get(cls, 0)
    assert n > 0, f"no {cls} I/O counted: {counts}"
    srng = random.Random(hash(cls) & 0xffff)
    plan = [(k, "eio") for k in sample(n, 10, srng)]
    plan += [(k, "enospc") for k in sample(n, 2 if not LONG else 8, srng)]
    plan += [(k, "short") for k in sample(n, 1 if not LONG else 4, srng)]

    failures, counters = [], {"runs": 0, "daemon_alive": 0, "daemon_exited_clean": 0,
                              "mount_refused": 0, "ctl_errors": 0, "ctl_ok": 0}
    for k, action in plan:
        tag = f"{cls}:{k}:{action}"
        copy_store(base_store, m.store)
        m.env = clean_env(ACMFS_FAULT=tag)
        counters["runs"] += 1
        log = []
        try:
            m.start()
            started = True
        except RuntimeError as e:
            started = False
            counters["mount_refused"] += 1
            rcm = re.search(r"exited with (-?\d+)", str(e))
            if rcm and int(rcm.group(1)) in CRASH_RCS:
                failures.append(f"{tag}: daemon crashed while mounting: {e}"[:600])
        refs, tv = {v0: Uncertain(base)}, None
        if started:
            refs, tv = sweep_scenario(m, base, v0, 1, log)
            for cmd, err, reply in log:
                if err == 0:
                    counters["ctl_ok"] += 1
                    continue
                counters["ctl_errors"] += 1
                if err not in CLEAN_ERRNOS and err not in (errno.ENOTCONN, errno.ECONNABORTED):
                    failures.append(f"{tag}: {cmd}: unexpected errno {errno.errorcode.get(err, err)} {reply}")
                if cmd != "write" and cmd != "wait" and err in CLEAN_ERRNOS and \
                        reply and not reply[0].startswith("error:"):
                    failures.append(f"{tag}: {cmd}: failed with {errno.errorcode[err]} but "
                                    f"the reply is {reply!r}")
            if daemon_dead(m):
                rc = m.proc.poll()
                failures.append(f"{tag}: the daemon died during the scenario (exit {rc}); "
                                f"ops: {log}; stderr: {m.stderr_tail(8)}")
                settle_dead(m)
            else:
                counters["daemon_alive"] += 1
                verify_histories(m, refs, failures, tag, counters)
                rc = m.stop()
                bad = [p for p in m.problems if "exited with" in p]
                m.problems[:] = [p for p in m.problems if p not in bad]
                if rc is not None and rc in CRASH_RCS:
                    failures.append(f"{tag}: daemon crashed at unmount (exit {rc})")
                elif rc:
                    counters["daemon_exited_clean"] += 1     # exit 1 after a failed flush
                m.problems.extend(p for p in m.problems if "did not exit" in p)
        # remount without faults: consistent, nothing executing, exact
        m.env = clean_env()
        try:
            m.start()
        except RuntimeError as e:
            failures.append(f"{tag}: remount without faults failed: {e}"[:800])
            break
        verify_histories(m, refs, failures, f"{tag} (remount)", counters)
        for v in hist_versions(m, SW_VOL):
            info = hist_info(m, SW_VOL, v)
            if info and "executing" in (info["disk_status"], info["tape_status"]):
                failures.append(f"{tag}: v{v} executing after remount: {info}")
        if tv is not None:
            d = tv.matches(vread(m, SW_VOL))
            if d:
                failures.append(f"{tag}: volume content after the scenario: {d}; ops {log}")
        m.stop()
        rc, lines = acmfs_check(acmfs_bin, m.store)
        if rc != 0:
            failures.append(f"{tag}: check after remount (exit {rc}): {check_problems(lines)}")
        if len(failures) > 20:
            break
    record("error-sweep", request.node.nodeid, not failures, io_class=cls,
           io_ops=n, counts=counts, iterations=counters["runs"],
           faults=f"{len(plan)} runs: " + ", ".join(
               f"{a} x{sum(1 for _, b in plan if b == a)}" for a in ("eio", "enospc", "short")),
           counters=counters, failures=failures[:20],
           seconds=round(time.monotonic() - t0, 1),
           lost={"wrong_succeeded": counters.get("wrong_succeeded", 0)})
    assert not failures, "\n".join(failures[:20])


# ===================================================================== suite 4

import urllib.parse          # noqa: E402
import urllib.request        # noqa: E402
import xml.etree.ElementTree as ET   # noqa: E402

try:
    from s3util import Faults, make_proxy
except ImportError:          # pragma: no cover - s3util.py is in the tree
    Faults = make_proxy = None

TP_VOL = "t"
TP_SIZE = 4 * MiB


@pytest.fixture
def s3env(s3rver, mount_factory):
    if make_proxy is None:
        pytest.skip("tests/integration/s3util.py (the fault proxy) is missing")
    faults = Faults()
    srv = make_proxy(s3rver.port, faults)
    env = clean_env(AWS_ACCESS_KEY_ID=s3rver.access_key,
                    AWS_SECRET_ACCESS_KEY=s3rver.secret_key)
    m = mount_factory(name="tp", env=env)
    prefix = "rel-" + uuid.uuid4().hex[:10]
    m.ctl(f"pool create s3p s3://{s3rver.bucket}/{prefix} "
          f"endpoint=http://127.0.0.1:{srv.server_address[1]} region=us-east-1 "
          "path_style=1 encrypt=none")
    m.create_volume(TP_VOL, f"{TP_SIZE // MiB}M", save=2)
    m.ctl(f"tapepolicy {TP_VOL} pool=s3p")

    def keys():
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix + "/"}
            if token:
                q["continuation-token"] = token
            url = (f"http://127.0.0.1:{s3rver.port}/{s3rver.bucket}?"
                   + urllib.parse.urlencode(q))
            with urllib.request.urlopen(url, timeout=30) as r:
                root = ET.fromstring(r.read())
            ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for c in root.findall(f"{ns}Contents"):
                out.append(c.find(f"{ns}Key").text[len(prefix) + 1:])
            t = root.find(f"{ns}IsTruncated")
            if t is None or t.text != "true":
                return sorted(out)
            token = root.find(f"{ns}NextContinuationToken").text

    class E:
        pass
    e = E()
    e.m, e.faults, e.keys, e.env = m, faults, keys, env
    try:
        yield e
    finally:
        faults.reset()
        srv.shutdown()
        srv.server_close()
        assert faults.bad_signatures == 0


def manifest_versions(keys, vol=TP_VOL):
    out = set()
    for k in keys:
        if k.startswith(f"manifests/{vol}/") and k.endswith(".mf"):
            out.add(int(os.path.basename(k).split("-")[0]))
    return out


def change(m, data, rng, n=3):
    buf = bytearray(data)
    for g in rng.sample(range(TP_SIZE // GRAIN), n):
        d = rng.randbytes(GRAIN)
        buf[g * GRAIN:(g + 1) * GRAIN] = d
        vwrite(m, TP_VOL, g * GRAIN, d, sync=False)
    vwrite(m, TP_VOL, 0, bytes(buf[:4096]))
    return bytes(buf)


@pytest.mark.slow
def test_tape_faults_through_proxy(s3env, acmfs_bin, request):
    t0 = time.monotonic()
    m, f, keys = s3env.m, s3env.faults, s3env.keys
    rng = random.Random(11)
    data = rng.randbytes(TP_SIZE)
    vwrite(m, TP_VOL, 0, data)
    failures, st = [], {"uploads": 0, "succeeded": 0, "failed": 0, "reads": 0,
                        "reads_exact": 0, "reads_eio": 0, "faults_applied": 0}
    refs = {}

    def one_backup(queue, tag, always=None):
        nonlocal data
        data = change(m, data, rng)
        f.reset()
        f.queue = list(queue)
        if always:
            f.methods, f.always = {"PUT"}, always
        r0 = f.requests
        err, reply = m.ctl_err("backup -T -m BOTH", TP_VOL)
        if err:
            failures.append(f"{tag}: backup: {os.strerror(err)} {reply.strip()}")
            return None, 0
        v = int(m.parse_reply(reply)["version"])
        refs[v] = data
        info = wait_job(m, TP_VOL, v, timeout=(60 if always else 30) * TIME_SCALE)
        st["faults_applied"] += len(f.applied)
        f.reset()
        st["uploads"] += 1
        ts = info["tape_status"]
        if info["disk_status"] != "succeeded":
            failures.append(f"{tag}: v{v} disk side {info['disk_status']}")
        if ts == "succeeded":
            st["succeeded"] += 1
            d = first_diff(m.vol(TP_VOL, "history", str(v), "tape.img").read_bytes(), data)
            if d:
                failures.append(f"{tag}: v{v} tape.img succeeded but {d}")
        elif ts == "failed":
            st["failed"] += 1
            if v in manifest_versions(keys()):
                failures.append(f"{tag}: v{v} tape failed but its manifest is in the pool")
        else:
            failures.append(f"{tag}: v{v} tape_status={ts}")
        return v, f.requests - r0

    # counting upload (no faults)
    _, n_req = one_backup([], "count")
    n_req = max(n_req, 3)
    # one fault, or a short burst, at request i: retried, must succeed exactly
    for mode in ("503", "500", "reset"):
        for i in sample(n_req + 1, 6, random.Random(mode)):
            one_backup([None] * (i - 1) + [mode], f"{mode}@{i}")
        for i in sample(n_req, 2, random.Random(mode + "b")):
            one_backup([None] * (i - 1) + [mode] * 3, f"{mode}x3@{i}")
    # every PUT fails (beyond the retry budget, 8 retries / 120 s, which the
    # pool options do not let a test shorten): must end failed, no manifest
    v_fail, _ = one_backup([], "always-503-on-PUT", always="503")
    if v_fail is not None and (hist_info(m, TP_VOL, v_fail) or {}).get("tape_status") != "failed":
        failures.append(f"v{v_fail}: every PUT answered 503, yet the tape copy did not fail")
    one_backup([], "after the outage")
    # reads of tape.img through truncated bodies, resets and 5xx
    good = [v for v in hist_versions(m, TP_VOL)
            if (hist_info(m, TP_VOL, v) or {}).get("tape_status") == "succeeded"]
    for i, v in enumerate(good[-4:]):
        for queue in (["truncate"], ["reset", "truncate"], ["503", "truncate", "500"],
                      ["truncate"] * 6):
            f.reset()
            f.methods = {"GET"}
            f.queue = [None] * i + list(queue)
            st["reads"] += 1
            try:
                got = m.vol(TP_VOL, "history", str(v), "tape.img").read_bytes()
                d = first_diff(got, refs[v])
                if d:
                    failures.append(f"read v{v} through {queue}: wrong bytes: {d}")
                else:
                    st["reads_exact"] += 1
            except OSError as e:
                if e.errno != errno.EIO:
                    failures.append(f"read v{v} through {queue}: {e}")
                st["reads_eio"] += 1
            st["faults_applied"] += len(f.applied)
    f.reset()
    # the catalog and the pool agree: every succeeded tape history has a manifest
    mv = manifest_versions(keys())
    for v in hist_versions(m, TP_VOL):
        info = hist_info(m, TP_VOL, v)
        if info["tape_status"] == "succeeded" and v not in mv:
            failures.append(f"v{v}: tape succeeded but no manifest in the pool")
    m.stop()
    rc, lines = acmfs_check(acmfs_bin, m.store)
    if rc != 0:
        failures.append(f"check: {check_problems(lines)}")
    m.start()
    record("tape-faults", request.node.nodeid, not failures,
           iterations=st["uploads"] + st["reads"], requests_per_upload=n_req,
           counters=st, failures=failures[:20], seconds=round(time.monotonic() - t0, 1),
           faults=f"{st['faults_applied']} injected (503, 500, reset, truncate)",
           lost={"wrong_succeeded": sum("succeeded but" in x for x in failures),
                 "wrong_bytes_read": sum("wrong bytes" in x for x in failures)})
    assert not failures, "\n".join(failures[:20])


@pytest.mark.slow
def test_kill_during_upload_leaves_no_manifest(s3env, acmfs_bin, request):
    """kill -9 while a tape copy uploads (the proxy slows PUTs down): after the
    remount the tape history is failed and the pool holds no manifest for it."""
    t0 = time.monotonic()
    m, f, keys = s3env.m, s3env.faults, s3env.keys
    rng = random.Random(13)
    data = rng.randbytes(TP_SIZE)
    vwrite(m, TP_VOL, 0, data)
    failures, st = [], {"kills": 0, "failed": 0, "succeeded": 0}
    for it in range(3):
        data = change(m, data, rng, 8)
        # a few 503s so that the upload is still running when we kill
        f.reset()
        f.queue = ["503"] * 2 + [None] + ["503"] * 2
        v = int(m.parse_reply(m.ctl("backup -T -m BOTH", TP_VOL))["version"])
        time.sleep(rng.uniform(0.05, 0.4))
        m.kill9()
        st["kills"] += 1
        f.reset()
        m.start()
        info = hist_info(m, TP_VOL, v)
        mv = manifest_versions(keys())
        if info["tape_status"] == "succeeded":
            st["succeeded"] += 1
            d = first_diff(m.vol(TP_VOL, "history", str(v), "tape.img").read_bytes(), data)
            if d:
                failures.append(f"v{v}: succeeded after the kill but {d}")
        else:
            st["failed"] += 1
            if info["tape_status"] != "failed":
                failures.append(f"v{v}: tape_status={info['tape_status']} after remount")
            if v in mv:
                # the manifest went up but the catalog never heard of it: a
                # history the pool would resurrect on `pool import`
                failures.append(f"v{v}: tape {info['tape_status']} but its manifest "
                                "is in the pool")
    m.stop()
    rc, lines = acmfs_check(acmfs_bin, m.store)
    if rc != 0:
        failures.append(f"check: {check_problems(lines)}")
    m.start()
    record("tape-faults", request.node.nodeid, not failures, iterations=st["kills"],
           counters=st, failures=failures, seconds=round(time.monotonic() - t0, 1),
           faults="kill -9 during an S3 upload",
           lost={"wrong_succeeded": sum("succeeded after" in x for x in failures)})
    assert not failures, "\n".join(failures)
