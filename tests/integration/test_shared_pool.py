"""Several hosts sharing one tape pool (issue 16): two or three daemons, each
with its own store and host name, on one file:// directory or one bucket of
the Ceph RADOS Gateway (the `rgw` fixture).

What users rely on: every history a host reports `succeeded` reads back
exact, whatever the other hosts do meanwhile (backups, deletes, gc, imports);
a gc never deletes what another host's running upload deduplicated into;
imports and retention touch only the histories of the host they are about.

The races are forced, not hoped for: the daemons' fault layer pauses at
named points (ACMFS_FAULT_PAUSE, core/fault.h) and the test acts on the other
host meanwhile. Each of these tests fails on the code before the lock
protocol (lock.h). Every wait is bounded.
"""

import errno
import os
import random
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import TIME_SCALE
from test_tape import (GRAIN, FilePool, JOB_TIMEOUT, assert_same, hist_info, log_text, vpath,
                       wait_for, wait_job)

MiB = 1 << 20
VOL = "db"
SIZE = 8 * MiB


class SharedPool:
    """One pool, seen by several stores under the name `shared`."""

    def __init__(self, kind, tmp_path, request):
        self.kind = kind
        self.env = dict(os.environ)
        if kind == "file":
            self.dir = tmp_path / "pool"
            self.dir.mkdir()
            self.url = f"file://{self.dir}"
            self.opts = ""
        else:
            rgw = request.getfixturevalue("rgw")
            self.rgw = rgw
            self.bucket = "shared-" + uuid.uuid4().hex[:10]
            rgw.make_bucket(self.bucket)
            self.url = f"s3://{self.bucket}/p"
            # encrypted: the hosts share the pool's key through one passphrase
            key = tmp_path / "shared.key"
            key.write_text("shared pool passphrase\n")
            os.chmod(key, 0o600)
            self.opts = f"endpoint={rgw} region={rgw.region} path_style=1 key={key}"
            self.env.update(AWS_ACCESS_KEY_ID=rgw.access_key,
                            AWS_SECRET_ACCESS_KEY=rgw.secret_key)

    def create_in(self, m, extra=""):
        m.ctl(f"pool create shared {self.url} {self.opts} {extra}".strip())

    def keys(self, prefix=""):
        if self.kind == "file":  # test_tape's listing of a pool directory
            return [k for k in FilePool.keys(self) if k.startswith(prefix)]
        import subprocess
        r = subprocess.run(["aws", "--endpoint-url", str(self.rgw), "s3api",
                            "list-objects-v2", "--bucket", self.bucket,
                            "--prefix", "p/" + prefix, "--query", "Contents[].Key",
                            "--output", "text"],
                           env=self.rgw.env(), check=True, capture_output=True,
                           text=True, timeout=60)
        words = r.stdout.split()
        return sorted(w[2:] for w in words if w != "None")


@pytest.fixture(params=["file", "rgw"])
def pool(request, tmp_path):
    return SharedPool(request.param, tmp_path, request)


def host(mount_factory, pool, name, pause_dir=None, pause="", extra_opts="",
         env_extra=None):
    env = dict(pool.env)
    if pause_dir is not None:
        env["ACMFS_FAULT_PAUSE"] = f"{pause_dir}:{pause}"
    if env_extra:
        env.update(env_extra)
    m = mount_factory(name=name, opts=("-o", f"host={name}"), env=env)
    m.host = name
    pool.create_in(m, extra_opts)
    m.create_volume(VOL, "8M")
    m.ctl(f"tapepolicy {VOL} pool=shared")
    return m


def restart_with(m, env):
    """Remount m's store with another environment (pause points)."""
    m.stop()
    m.env = env
    m.start()


def write_random(m, seed):
    data = random.Random(seed).randbytes(SIZE)
    fd = os.open(vpath(m, "data"), os.O_WRONLY)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return data


def start_tape_backup(m):
    r = m.ctl("backup -m TAPE", VOL)
    return int(m.parse_reply(r)["version"])


def tape_backup_ok(m):
    v = start_tape_backup(m)
    info = wait_job(m, v)
    assert info["tape_status"] == "succeeded", (info, log_text(m)[-2000:])
    return v


def tape_img(m, v):
    return vpath(m, "history", str(v), "tape.img").read_bytes()


def wait_file(p, what, timeout=60 * TIME_SCALE):
    wait_for(lambda: Path(p).exists(), what, timeout)


def gc_settled(m, timeout=10.0):
    """pool gc, retried on EBUSY for a moment: the other host's image read
    just before holds the pool until FUSE's RELEASE arrives."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        err, reply = m.ctl_err("pool gc shared grace=0")
        if err != errno.EBUSY or time.monotonic() > deadline:
            assert err == 0, reply
            return reply
        time.sleep(0.1)


def make_garbage(m, data_seed):
    """A tape history of random data, deleted again: its packs are garbage
    that a later backup of the same data deduplicates into."""
    data = write_random(m, data_seed)
    v = tape_backup_ok(m)
    m.ctl(f"histdel -v {v} -m TAPE", VOL)
    return data


def test_gc_refused_while_another_host_uploads(pool, mount_factory, tmp_path):
    a = host(mount_factory, pool, "hostA")
    b = host(mount_factory, pool, "hostB")
    data = make_garbage(b, 1)
    pause = tmp_path / "pause"
    pause.mkdir()
    restart_with(b, dict(pool.env, ACMFS_FAULT_PAUSE=f"{pause}:upload-deduped"))

    v = start_tape_backup(b)
    wait_file(pause / "upload-deduped.reached", "B's upload to reach its dedup decision")
    err, reply = a.ctl_err("pool gc shared grace=0")
    assert err == errno.EBUSY, reply
    assert "hostB" in reply, reply
    (pause / "upload-deduped.go").touch()
    info = wait_job(b, v)
    assert info["tape_status"] == "succeeded", log_text(b)[-2000:]
    assert_same(tape_img(b, v), data, "B's tape image")

    # once B is done (and its reader gone), A collects; B's history still
    # reads exact
    r = a.parse_reply(gc_settled(a))
    assert int(r["packs_deleted"]) == 0, r
    assert_same(tape_img(b, v), data, "B's tape image after A's gc")
    # (a read's RELEASE reaches the daemon after close(2) returns)
    wait_for(lambda: not pool.keys("locks/"), "the readers' locks to go", 10 * TIME_SCALE)


def test_upload_waits_for_another_hosts_gc(pool, mount_factory, tmp_path):
    pause = tmp_path / "pause"
    pause.mkdir()
    a = host(mount_factory, pool, "hostA", pause_dir=pause, pause="gc-listed")
    b = host(mount_factory, pool, "hostB")
    make_garbage(a, 2)
    old = write_random(b, 3)
    v_old = tape_backup_ok(b)
    data = write_random(b, 4)

    gc_result = {}
    t = threading.Thread(target=lambda: gc_result.update(
        r=a.ctl_err("pool gc shared grace=0")))
    t.start()
    try:
        wait_file(pause / "gc-listed.reached", "A's gc to finish its listing")
        v = start_tape_backup(b)
        # B's copy waits for the gc; a read of B's tape image is refused at once
        time.sleep(1.0)
        assert hist_info(b, v)["tape_status"] == "executing"
        with pytest.raises(OSError) as ei:
            tape_img(b, v_old)
        assert ei.value.errno == errno.EBUSY
    finally:
        (pause / "gc-listed.go").touch()
        t.join(timeout=120 * TIME_SCALE)
    err, reply = gc_result["r"]
    assert err == 0, reply
    assert int(a.parse_reply(reply)["packs_deleted"]) > 0
    info = wait_job(b, v)
    assert info["tape_status"] == "succeeded", log_text(b)[-2000:]
    assert_same(tape_img(b, v), data, "B's copy made after A's gc")
    assert_same(tape_img(b, v_old), old, "B's older history")


def test_stale_lock_of_a_crashed_host_is_removed(pool, mount_factory, tmp_path):
    pause = tmp_path / "pause"
    pause.mkdir()
    a = host(mount_factory, pool, "hostA", extra_opts="lock_stale=6")
    b = host(mount_factory, pool, "hostB", pause_dir=pause, pause="upload-deduped")
    write_random(b, 5)
    start_tape_backup(b)
    wait_file(pause / "upload-deduped.reached", "B's upload")
    b.kill9()  # its lock stays in the pool
    assert len(pool.keys("locks/")) == 1
    err, reply = a.ctl_err("pool gc shared grace=0")
    assert err == errno.EBUSY and "hostB" in reply, reply
    time.sleep(7.5)
    r = a.parse_reply(a.ctl("pool gc shared grace=0"))
    assert int(r["locks_removed"]) == 1, r
    assert not pool.keys("locks/")
    # B comes back: its interrupted copy is failed, and nothing of it is left
    b.env = pool.env
    b.start()
    b.ctl("pool gc shared grace=0")  # B collects its own leftovers
    assert not pool.keys("manifests/")


def test_lapsed_lock_fails_the_upload_never_succeeds(pool, mount_factory, tmp_path):
    """B stalls (SIGSTOP: a frozen VM) longer than A's stale limit in the
    middle of an upload; A collects the garbage B deduplicated into. B must
    notice before storing its manifest, and fail the copy."""
    pause = tmp_path / "pause"
    pause.mkdir()
    # A takes a lock older than 6 s for stale; B counts a gap of 4 s (half
    # its 8) as a lapse: a 7.5 s freeze is both
    a = host(mount_factory, pool, "hostA", extra_opts="lock_stale=6")
    b = host(mount_factory, pool, "hostB", extra_opts="lock_stale=8")
    data = make_garbage(b, 6)
    restart_with(b, dict(pool.env, ACMFS_FAULT_PAUSE=f"{pause}:upload-deduped"))
    v = start_tape_backup(b)
    wait_file(pause / "upload-deduped.reached", "B's upload")
    b.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(7.5)
        r = a.parse_reply(a.ctl("pool gc shared grace=0"))
        assert int(r["locks_removed"]) == 1 and int(r["packs_deleted"]) > 0, r
    finally:
        b.proc.send_signal(signal.SIGCONT)
    (pause / "upload-deduped.go").touch()
    info = wait_job(b, v)
    assert info["tape_status"] == "failed", info
    assert "deleted by a gc" in log_text(b), log_text(b)[-2000:]
    # nothing of it in the pool, and the next copy is whole and exact
    assert not [k for k in pool.keys("manifests/") if f"/{v:020d}-" in k]
    v2 = tape_backup_ok(b)
    assert_same(tape_img(b, v2), data, "B's next copy")


def host_of(pool, key):
    """The host name a manifest names (its header: plain in either version)."""
    if pool.kind == "file":
        raw = (pool.dir / key).read_bytes()[:1024]
    else:
        import subprocess
        import tempfile
        with tempfile.NamedTemporaryFile() as f:
            subprocess.run(["aws", "--endpoint-url", str(pool.rgw), "s3", "cp",
                            f"s3://{pool.bucket}/p/{key}", f.name],
                           env=pool.rgw.env(), check=True, capture_output=True,
                           timeout=60)
            raw = Path(f.name).read_bytes()[:1024]
    lv = int.from_bytes(raw[64:66], "little")
    lh = int.from_bytes(raw[66:68], "little")
    fixed = 104 if int.from_bytes(raw[8:12], "little") == 2 else 72  # the header is plain
    return raw[fixed + lv:fixed + lv + lh].decode()


def test_import_and_retention_are_per_host(pool, mount_factory):
    a = host(mount_factory, pool, "hostA")
    b = host(mount_factory, pool, "hostB")
    da = [write_random(a, 10), None]
    va = [tape_backup_ok(a)]
    da[1] = write_random(a, 11)
    va.append(tape_backup_ok(a))
    db = write_random(b, 20)
    vb = tape_backup_ok(b)
    a_keys = sorted(k for k in pool.keys("manifests/") if host_of(pool, k).endswith(":hostA"))
    assert len(a_keys) == 2

    # every manifest carries its writer's id and name; the tables show ours
    st = (a.mnt / "status.json").read_text()
    assert '"name":"hostA"' in st and '"id":"' in st
    assert "hostA" in vpath(a, "devdisp").read_text()

    # B's own import finds only what it has; A's histories are not B's
    r = b.parse_reply(b.ctl("pool import shared"))
    assert r["histories"] == "0" and int(r["others"]) == 2, r
    assert_same(tape_img(b, vb), db, "B's own history after import")

    # a new machine takes over A's histories
    c = mount_factory(name="hostC", opts=("-o", "host=hostC"), env=pool.env)
    pool.create_in(c)
    r = c.parse_reply(c.ctl("pool import shared"))
    assert r["histories"] == "0", r
    r = c.parse_reply(c.ctl("pool import shared host=hostA"))
    assert r["histories"] == "2" and r["volumes"] == "1", r
    for v, want in zip(va, da):
        assert_same(vpath(c, "history", str(v), "tape.img").read_bytes(), want,
                    f"A's version {v} on C")
    hosts = b.ctl("pool hosts shared").splitlines()
    assert b.parse_reply(hosts[0])["hosts"] == "2"
    rows = {w["name"]: w for w in
            (dict(x.split("=", 1) for x in ln.split()[1:]) for ln in hosts[1:])}
    assert rows["hostA"]["histories"] == "2" and rows["hostA"]["this"] == "0"
    assert rows["hostB"]["histories"] == "1" and rows["hostB"]["this"] == "1"

    # retention on B deletes B's histories only
    b.ctl(f"tapepolicy {VOL} gens=1")
    for seed in (21, 22):
        write_random(b, seed)
        tape_backup_ok(b)
    left = pool.keys("manifests/")
    assert [k for k in a_keys if k not in left] == [], "B's retention deleted A's manifests"
    assert sum(1 for k in left if host_of(pool, k).endswith(":hostB")) == 1


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def test_clocks_that_disagree_do_not_matter(pool, mount_factory):
    """Host B's clock runs ten minutes ahead (S3 refuses requests signed
    more than 15 minutes off). Ages are the store's: B's gc with a five
    minute grace must keep A's packs of a moment ago (by B's own clock they
    are ten minutes old), and A must not take B's fresh lock for a stale
    one."""
    if not os.path.exists(FAKETIME):
        pytest.fail("libfaketime missing (scripts/setup.sh installs faketime)")
    a = host(mount_factory, pool, "hostA", extra_opts="lock_stale=600")
    b = host(mount_factory, pool, "hostB",
             env_extra={"LD_PRELOAD": FAKETIME, "FAKETIME": "+10m",
                        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                        "FAKETIME_DONT_RESET": "1"})
    write_random(a, 40)
    v = tape_backup_ok(a)
    a.ctl(f"histdel -v {v} -m TAPE", VOL)  # A's packs: garbage, one minute old
    packs = pool.keys("packs/")
    assert packs
    r = b.parse_reply(b.ctl("pool gc shared grace=300"))
    assert int(r["packs_deleted"]) == 0 and pool.keys("packs/") == packs, r
    # B's lock, written "ten minutes from now" by its clock, is fresh to A
    data = write_random(b, 41)
    vb = tape_backup_ok(b)
    # (the daemon really lives ten minutes ahead)
    import calendar
    date = hist_info(b, vb)["date"]
    t = calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%SZ"))
    assert t > time.time() + 300, f"faketime did not take: {date}"
    fd = os.open(vpath(b, "history", str(vb), "tape.img"), os.O_RDONLY)
    try:
        err, reply = a.ctl_err("pool gc shared grace=0")
        assert err == errno.EBUSY and "hostB" in reply, reply
        assert_same(os.pread(fd, SIZE, 0), data, "B's image while A tried to collect")
    finally:
        os.close(fd)


def test_orphan_manifest_of_a_crash_is_deleted(pool, mount_factory, tmp_path):
    pause = tmp_path / "pause"
    pause.mkdir()
    b = host(mount_factory, pool, "hostB", pause_dir=pause, pause="upload-stored")
    write_random(b, 30)
    v = start_tape_backup(b)
    wait_file(pause / "upload-stored.reached", "B's manifest PUT")
    assert len(pool.keys("manifests/")) == 1
    b.kill9()
    b.env = pool.env
    b.start()
    assert hist_info(b, v)["tape_status"] == "failed"
    data = write_random(b, 31)
    v2 = tape_backup_ok(b)  # its end empties the trash
    keys = pool.keys("manifests/")
    assert len(keys) == 1 and f"/{v2:020d}-" in keys[0], keys
    assert_same(tape_img(b, v2), data, "the next copy")


def test_two_hosts_random_interleavings(pool, mount_factory, request):
    """Backups, deletes and gc from two hosts at random instants; every
    succeeded history reads back exact, after every round. Bounded: a fixed
    number of rounds (ACMFS_SHARED_ROUNDS, 6; scripts/reliability --long
    runs 40), each bounded by the job timeout."""
    hosts = [host(mount_factory, pool, "hostA"), host(mount_factory, pool, "hostB")]
    seed = int(os.environ.get("ACMFS_SHARED_SEED", "1607"))
    rng = random.Random(seed)
    rounds = int(os.environ.get("ACMFS_SHARED_ROUNDS", "6"))
    want = {0: {}, 1: {}}   # host index -> version -> image
    n = dict(copies=0, succeeded=0, failed=0, gc_run=0, gc_refused=0, deletes=0,
             reads_checked=0)
    wrong = []
    t0 = time.monotonic()
    for rnd in range(rounds):
        started = []
        shared_seed = rng.randrange(1 << 30)
        datas = [write_random(m, shared_seed if rng.random() < 0.5 else rng.randrange(1 << 30))
                 for m in hosts]  # the same data on both hosts half the time: dedup
        g = rng.randrange(2)
        gc_at = rng.randrange(3)  # before, between or after the two starts
        for step in range(3):
            if step == gc_at:
                time.sleep(rng.random() * 0.02)
                err, reply = hosts[g].ctl_err("pool gc shared grace=0")
                assert err in (0, errno.EBUSY), reply
                n["gc_run" if err == 0 else "gc_refused"] += 1
            if step < 2:
                started.append((step, start_tape_backup(hosts[step]), datas[step]))
                n["copies"] += 1
        for i, v, data in started:
            info = wait_job(hosts[i], v)
            assert info["tape_status"] in ("succeeded", "failed"), info
            if info["tape_status"] == "succeeded":
                want[i][v] = data
                n["succeeded"] += 1
            else:
                n["failed"] += 1
        # delete one of the histories now and then (its blocks become garbage)
        i = rng.randrange(2)
        if want[i] and rng.random() < 0.6:
            v = rng.choice(sorted(want[i]))
            err, reply = hosts[i].ctl_err(f"histdel -v {v} -m TAPE", VOL)
            if err == 0:
                del want[i][v]
                n["deletes"] += 1
        for i, m in enumerate(hosts):
            for v, data in want[i].items():
                n["reads_checked"] += 1
                try:
                    got = tape_img(m, v)
                except OSError as e:
                    got = e
                if got != data:
                    wrong.append(f"round {rnd}: host {i} version {v}: "
                                 + (str(got) if isinstance(got, OSError) else "differs"))
    try:
        from test_crash import record
        record("shared-pool", request.node.nodeid, not wrong and n["succeeded"] > 0,
               iterations=rounds, seconds=round(time.monotonic() - t0, 1), seed=seed,
               workload=n, lost={"wrong_succeeded": len(wrong)}, failures=wrong)
    except ImportError:
        pass
    assert not wrong, wrong[:5]
    assert n["succeeded"] > 0


def test_gc_does_not_stall_the_mount(pool, mount_factory, tmp_path):
    """pool gc talks to the object store for as long as it takes; the rest
    of the mount does not wait for it (issue 17)."""
    pause = tmp_path / "pause"
    pause.mkdir()
    a = host(mount_factory, pool, "hostA", pause_dir=pause, pause="gc-listed")
    make_garbage(a, 50)
    a.create_volume("other", "4M")
    res = {}
    t = threading.Thread(target=lambda: res.update(r=a.ctl_err("pool gc shared grace=0")))
    t.start()
    times = []
    try:
        wait_file(pause / "gc-listed.reached", "the gc to stop after its listing")
        for i in range(20):
            t0 = time.monotonic()
            os.listdir(a.mnt / "volumes")
            (a.mnt / "status.json").read_text()
            a.ctl("backup -m DISK", "other")
            times.append(time.monotonic() - t0)
        assert t.is_alive(), "the gc was not held"
        # (global ctl commands meanwhile wait in the kernel: writes to one
        # file are serialised by its inode lock)
    finally:
        (pause / "gc-listed.go").touch()
        t.join(timeout=120 * TIME_SCALE)
    assert max(times) < 1.0 * TIME_SCALE, sorted(times)[-3:]
    err, reply = res["r"]
    assert err == 0 and int(a.parse_reply(reply)["packs_deleted"]) > 0, reply


def test_import_does_not_stall_the_mount(pool, mount_factory, tmp_path):
    """pool import reads every manifest's header from the object store; the
    rest of the mount does not wait for it (issue 17)."""
    a = host(mount_factory, pool, "hostA")
    tape_backup_ok(a)
    pause = tmp_path / "pause"
    pause.mkdir()
    b = host(mount_factory, pool, "hostB", pause_dir=pause, pause="import-listing")
    b.create_volume("other", "4M")
    res = {}
    t = threading.Thread(target=lambda: res.update(
        r=b.ctl_err("pool import shared host=hostA")))
    t.start()
    times = []
    try:
        wait_file(pause / "import-listing.reached", "the import to stop in its listing")
        for i in range(20):
            t0 = time.monotonic()
            os.listdir(b.mnt / "volumes")
            (b.mnt / "status.json").read_text()
            b.ctl("backup -m DISK", "other")
            times.append(time.monotonic() - t0)
        assert t.is_alive(), "the import was not held"
    finally:
        (pause / "import-listing.go").touch()
        t.join(timeout=120 * TIME_SCALE)
    assert max(times) < 1.0 * TIME_SCALE, sorted(times)[-3:]
    err, reply = res["r"]
    assert err == 0 and b.parse_reply(reply)["histories"] == "1", reply


def test_import_never_resurrects_a_history_deleted_meanwhile(pool, mount_factory, tmp_path):
    """A history deleted while pool import lists the pool (the listing saw
    its manifest, the deletion then removed it) is not brought back."""
    pause = tmp_path / "pause"
    pause.mkdir()
    a = host(mount_factory, pool, "hostA", pause_dir=pause, pause="import-listing")
    v1 = tape_backup_ok(a)
    write_random(a, 7)
    v2 = tape_backup_ok(a)
    res = {}
    t = threading.Thread(target=lambda: res.update(r=a.ctl_err("pool import shared")))
    t.start()
    try:
        wait_file(pause / "import-listing.reached", "the import to stop in its listing")
        a.ctl(f"histdel -v {v1} -m TAPE", VOL)
    finally:
        (pause / "import-listing.go").touch()
        t.join(timeout=120 * TIME_SCALE)
    err, reply = res["r"]
    assert err == 0, reply
    r = a.parse_reply(reply)
    assert r["histories"] == "0" and r["known"] == "1", r
    assert not vpath(a, "history", str(v1)).exists()
    assert vpath(a, "history", str(v2), "tape.img").exists()
