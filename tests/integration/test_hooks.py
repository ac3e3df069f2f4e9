"""Hooks (STORE/hooks/{backup,restore,tapecopy}.{pre,post}), verify, and
restore by date: the parts of SPEC §5/§8 and issue 8 not covered elsewhere."""
import errno
import os
import stat
import time
from datetime import datetime, timedelta, timezone

MiB = 1 << 20


def write_hook(store, name, body):
    d = store / "hooks"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(stat.S_IRWXU)
    return p


def wait_info(m, vol, version, key, want=("succeeded", "failed"), timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = m.read_info(f"volumes/{vol}/history/{version}/info")
        if info.get(key) in want:
            return info
        time.sleep(0.05)
    raise AssertionError(f"{vol} v{version}: {key} still {info.get(key)}")


def fill(m, vol, nbytes, seed):
    data = os.urandom(nbytes) if seed is None else bytes((i * seed) & 0xFF for i in range(nbytes))
    with open(m.vol(vol, "data"), "r+b") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return data


def test_backup_hooks_get_volume_and_data_path(mount):
    m = mount
    log = m.store / "hook.log"
    write_hook(m.store, "backup.pre", f'echo "pre $1 $2" >> {log}')
    write_hook(m.store, "backup.post", f'echo "post $1 $2" >> {log}')
    m.create_volume("db", "4M")
    rep = m.parse_reply(m.ctl("backup -T -m DISK", vol="db"))
    lines = log.read_text().splitlines()
    data = str(m.vol("db", "data"))
    assert lines == [f"pre db {data}", f"post db {data}"]
    wait_info(m, "db", rep["version"], "disk_status")


def test_failing_pre_hook_aborts_and_changes_nothing(mount):
    m = mount
    m.create_volume("db", "4M")
    before = (m.path("histdisp").read_text(), m.path("devdisp").read_text())
    write_hook(m.store, "backup.pre", "exit 101")
    err, reply = m.ctl_err("backup -T -m DISK", vol="db")
    assert err == errno.ECANCELED
    assert "backup.pre" in reply
    assert (m.path("histdisp").read_text(), m.path("devdisp").read_text()) == before
    assert "backup.pre failed" in m.vol("db", "log").read_text()
    # the next version number is not used up
    (m.store / "hooks" / "backup.pre").unlink()
    rep = m.parse_reply(m.ctl("backup -m DISK", vol="db"))
    assert rep["version"] == "1"


def test_restore_hooks_and_a_failing_restore_pre(mount):
    m = mount
    log = m.store / "hook.log"
    m.create_volume("db", "4M")
    ref = fill(m, "db", 4 * MiB, 7)
    rep = m.parse_reply(m.ctl("backup -m DISK", vol="db"))
    wait_info(m, "db", rep["version"], "disk_status")
    fill(m, "db", MiB, 13)
    write_hook(m.store, "restore.pre", "exit 100")
    err, _ = m.ctl_err("restore", vol="db")
    assert err == errno.ECANCELED
    assert m.read_info("volumes/db/info")["state"] == "ok"
    write_hook(m.store, "restore.pre", f'echo "pre $1" >> {log}')
    write_hook(m.store, "restore.post", f'echo "post $1" >> {log}')
    m.ctl("restore", vol="db")
    assert log.read_text().splitlines() == ["pre db", "post db"]
    assert m.vol("db", "data").read_bytes() == ref


def test_tapecopy_hooks_run_around_tphistcopy(mount):
    m = mount
    log = m.store / "hook.log"
    write_hook(m.store, "tapecopy.pre", f'echo "pre $1" >> {log}')
    write_hook(m.store, "tapecopy.post", f'echo "post $1" >> {log}')
    m.create_volume("db", "4M")
    fill(m, "db", MiB, 3)
    rep = m.parse_reply(m.ctl("backup -m DISK", vol="db"))
    v = rep["version"]
    wait_info(m, "db", v, "disk_status")
    m.ctl(f"tphistcopy -v {v}", vol="db")
    wait_info(m, "db", v, "tape_status")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(log.read_text().splitlines()) < 2:
        time.sleep(0.05)
    assert log.read_text().splitlines() == ["pre db", "post db"]


def test_verify_disk_and_tape_records_the_result(mount):
    m = mount
    m.create_volume("db", "4M")
    fill(m, "db", 2 * MiB, 5)
    rep = m.parse_reply(m.ctl("backup", vol="db"))          # BOTH
    v = rep["version"]
    wait_info(m, "db", v, "tape_status")
    for media in ("DISK", "TAPE"):
        r = m.parse_reply(m.ctl(f"verify -v {v} -m {media}", vol="db"))
        assert r["bad_grains"] == "0" and r["media"] == media
    assert m.read_info(f"volumes/db/history/{v}/info")["verify"].startswith("ok ")
    err, _ = m.ctl_err("verify -v 99", vol="db")
    assert err == errno.ENOENT


def test_restore_by_date_picks_the_tape_history_of_that_time(mount):
    m = mount
    m.create_volume("db", "4M")
    ref = fill(m, "db", 4 * MiB, 11)
    rep = m.parse_reply(m.ctl("backup -m TAPE", vol="db"))
    wait_info(m, "db", rep["version"], "tape_status")
    fill(m, "db", 4 * MiB, 17)
    later = (datetime.now(timezone.utc) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%d")
    err, _ = m.ctl_err(f"restore -t {earlier} -m TAPE", vol="db")
    assert err == errno.ENOENT                      # nothing that old
    r = m.parse_reply(m.ctl(f"restore -t {later} -m TAPE", vol="db"))
    assert r["version"] == rep["version"] and r["media"] == "TAPE"
    assert m.vol("db", "data").read_bytes() == ref


# --------------------------- new volume files are synced (issue 21, review)

def test_new_volume_and_bv_files_are_synced_before_the_commit(mount_factory):
    """volume create and bv add fsync the new tv.img and BV files (and their
    directory) through the fault layer before the catalog names them: an
    EIO at any of those fsyncs fails the command cleanly (nothing created,
    no files left), and the next attempt succeeds. (The mount does no data
    I/O, so data:N is the N-th data operation of the commands below.)"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACMFS_FAULT")}
    m = mount_factory(env={**env, "ACMFS_FAULT": "data:1:eio,data:3:eio"})
    vols = m.store / "vol"
    before = sorted(p.name for p in vols.iterdir())
    err, reply = m.ctl_err("volume create db 4M save=2")   # data:1, tv.img's fsync
    assert err == errno.EIO, reply
    err, reply = m.ctl_err("volume create db 4M save=2")   # data:3, bv1's fsync
    assert err == errno.EIO, reply
    assert sorted(p.name for p in vols.iterdir()) == before
    assert "db" not in m.path("devdisp").read_text()
    m.create_volume("db", "4M", save=2)
    m.stop()
    m.env = {**env, "ACMFS_FAULT": "data:1:eio"}
    m.start()
    (vdir,) = [d.parent for d in vols.glob("*/tv.img")]
    imgs = sorted(p.name for p in vdir.glob("bv*.img"))
    err, reply = m.ctl_err("bv add db")
    assert err == errno.EIO, reply
    assert sorted(p.name for p in vdir.glob("bv*.img")) == imgs
    m.parse_reply(m.ctl("bv add db"))
    assert len(list(vdir.glob("bv*.img"))) == len(imgs) + 1
