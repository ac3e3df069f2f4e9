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


# ------------------------------------------------ hooks done right (issue 21)

def hook_lines(path, n=1, timeout=10.0):
    """The lines of a hook's log once there are at least n."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            break
        time.sleep(0.05)
    return path.read_text().splitlines() if path.exists() else []


def tables(m):
    return m.path("histdisp").read_text(), m.path("devdisp").read_text()


RESULT = 'echo "$ACMFS_HOOK $ACMFS_RESULT${{ACMFS_ERROR:+ $ACMFS_ERROR}}" >> {log}'


def test_backup_post_runs_with_the_result_also_when_the_backup_fails(mount):
    """backup.post runs whenever backup.pre ran: ACMFS_RESULT=succeeded after
    a backup, =failed (and why in ACMFS_ERROR) when the backup fails after
    backup.pre: an fsfreeze -f in .pre is always undone."""
    m = mount
    log = m.store / "hook.log"
    write_hook(m.store, "backup.pre", f'echo "$ACMFS_HOOK" >> {log}')
    write_hook(m.store, "backup.post", RESULT.format(log=log))
    m.create_volume("db", "4M", save=1)
    v = m.parse_reply(m.ctl("backup -m DISK", vol="db"))["version"]
    wait_info(m, "db", v, "disk_status")
    assert log.read_text().splitlines() == ["backup.pre", "backup.post succeeded"]
    log.unlink()
    # the only generation is open for reading: the next backup fails after .pre
    with open(m.vol("db", "history", v, "image"), "rb"):
        err, reply = m.ctl_err("backup -m DISK", vol="db")
    assert err == errno.EBUSY, reply
    lines = log.read_text().splitlines()
    assert lines[0] == "backup.pre"
    assert lines[1].startswith("backup.post failed "), lines
    assert "open for reading" in lines[1]
    assert len(lines) == 2


def test_a_failing_pre_hook_still_gets_its_post(mount):
    """A .pre that ran and failed (it may have frozen the file system before
    failing) is followed by its .post with ACMFS_RESULT=failed."""
    m = mount
    log = m.store / "hook.log"
    m.create_volume("db", "4M")
    write_hook(m.store, "backup.pre", f'echo pre >> {log}; exit 3')
    write_hook(m.store, "backup.post", RESULT.format(log=log))
    err, reply = m.ctl_err("backup -m DISK", vol="db")
    assert err == errno.ECANCELED
    assert log.read_text().splitlines() == [
        "pre", "backup.post failed hook backup.pre failed (status 3)"]


def test_tape_backup_post_runs_when_it_fails(mount):
    """backup -m TAPE: the same rule (tape_backup_direct)."""
    m = mount
    log = m.store / "hook.log"
    m.create_volume("db", "4M")
    write_hook(m.store, "backup.pre", f'echo "$ACMFS_HOOK" >> {log}')
    write_hook(m.store, "backup.post", RESULT.format(log=log))
    ok = m.parse_reply(m.ctl("backup -m TAPE", vol="db"))
    wait_info(m, "db", ok["version"], "tape_status")
    assert log.read_text().splitlines() == ["backup.pre", "backup.post succeeded"]
    log.unlink()
    # the overlay of the next version cannot be created (a directory holds
    # its name): the tape backup fails after its .pre
    (vdir,) = [d.parent for d in (m.store / "vol").glob("*/tv.img")]
    (vdir / f"overlay-{int(ok['version']) + 1}.img").mkdir()
    err, reply = m.ctl_err("backup -m TAPE", vol="db")
    assert err == errno.EISDIR, reply
    lines = log.read_text().splitlines()
    assert lines[0] == "backup.pre", lines
    assert lines[1].startswith("backup.post failed cannot create the overlay"), lines
    assert len(lines) == 2


def test_restore_post_runs_when_the_restore_fails(mount):
    m = mount
    log = m.store / "hook.log"
    m.create_volume("db", "4M")
    write_hook(m.store, "restore.pre", f'echo "$ACMFS_HOOK" >> {log}')
    write_hook(m.store, "restore.post", RESULT.format(log=log))
    err, reply = m.ctl_err("restore", vol="db")      # nothing to restore
    assert err == errno.ENOENT, reply
    lines = log.read_text().splitlines()
    assert lines[0] == "restore.pre"
    assert lines[1].startswith("restore.post failed no succeeded history"), lines
    log.unlink()
    v = m.parse_reply(m.ctl("backup -m DISK", vol="db"))["version"]
    wait_info(m, "db", v, "disk_status")
    m.ctl("restore", vol="db")
    assert log.read_text().splitlines() == ["restore.pre", "restore.post succeeded"]


def test_tapecopy_post_runs_when_tphistcopy_fails(mount):
    m = mount
    log = m.store / "hook.log"
    m.create_volume("db", "4M")
    write_hook(m.store, "tapecopy.pre", f'echo "$ACMFS_HOOK" >> {log}')
    write_hook(m.store, "tapecopy.post", RESULT.format(log=log))
    err, reply = m.ctl_err("tphistcopy -v 7", vol="db")
    assert err == errno.ENOENT, reply
    lines = log.read_text().splitlines()
    assert lines[0] == "tapecopy.pre"
    assert lines[1].startswith("tapecopy.post failed no such disk history"), lines
    log.unlink()
    v = m.parse_reply(m.ctl("backup -m DISK", vol="db"))["version"]
    wait_info(m, "db", v, "disk_status")
    m.ctl(f"tphistcopy -v {v}", vol="db")
    assert hook_lines(log, 2) == ["tapecopy.pre", "tapecopy.post succeeded"]


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped by its new parent is dead too
    try:
        return open(f"/proc/{pid}/stat").read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_hook_past_the_timeout_is_killed_and_the_backup_fails(mount_factory):
    """-o hook_timeout=1: a backup.pre still running after 1 s is killed with
    its whole process group (a child in the background too); the backup fails
    ECANCELED with the reason in the reply and the log, changes nothing, and
    backup.post says failed."""
    m = mount_factory(opts=["-o", "hook_timeout=1"])
    log = m.store / "hook.log"
    pidf = m.store / "child.pid"
    m.create_volume("db", "4M")
    before = tables(m)
    write_hook(m.store, "backup.pre", f"sleep 120 & echo $! > {pidf}; sleep 120; echo late >> {log}")
    write_hook(m.store, "backup.post", RESULT.format(log=log))
    t0 = time.monotonic()
    err, reply = m.ctl_err("backup -m DISK", vol="db")
    took = time.monotonic() - t0
    assert err == errno.ECANCELED, reply
    assert "hook backup.pre timed out after 1 s" in reply
    assert took < 8, took                       # 1 s, and SIGTERM did it
    assert "hook backup.pre timed out after 1 s" in m.vol("db", "log").read_text()
    assert tables(m) == before
    child = int(pidf.read_text())
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child), "the hook's background child survived"
    lines = log.read_text().splitlines()
    assert lines == ["backup.post failed hook backup.pre timed out after 1 s "
                     "(killed; -o hook_timeout=)"], lines
    # a hook that ignores SIGTERM is SIGKILLed after the grace
    write_hook(m.store, "backup.pre", "trap '' TERM; while :; do sleep 0.1; done")
    t0 = time.monotonic()
    err, reply = m.ctl_err("backup -m DISK", vol="db")
    assert err == errno.ECANCELED and "timed out" in reply, reply
    assert time.monotonic() - t0 < 15


def test_a_post_hook_past_the_timeout_is_killed_and_logged(mount_factory):
    """A .post past the timeout is killed too; the backup it follows exists
    (its reply stays ok) and the volume's log says what happened."""
    m = mount_factory(opts=["-o", "hook_timeout=1"])
    m.create_volume("db", "4M")
    write_hook(m.store, "backup.post", "sleep 120")
    t0 = time.monotonic()
    v = m.parse_reply(m.ctl("backup -m DISK", vol="db"))["version"]
    assert time.monotonic() - t0 < 8
    wait_info(m, "db", v, "disk_status")
    assert "error: hook backup.post timed out after 1 s" in m.vol("db", "log").read_text()


def test_hook_timeout_option_is_checked(mount_factory):
    """-o hook_timeout=S takes 1 to 86400; a hook within it runs as ever."""
    m = mount_factory(opts=["-o", "hook_timeout=3"])
    log = m.store / "hook.log"
    write_hook(m.store, "backup.pre", f"sleep 1; echo pre >> {log}")
    m.create_volume("db", "4M")
    m.ctl("backup -m DISK", vol="db")
    assert log.read_text() == "pre\n"
    m.stop()
    for bad in ("0", "-1", "86401"):
        m.opts = ["-o", f"hook_timeout={bad}"]
        since = len(m.stderr_text())
        try:
            m.start()
        except (RuntimeError, AssertionError):
            pass
        else:
            raise AssertionError(f"hook_timeout={bad} was accepted")
        assert f"hook_timeout={bad}: must be 1 to 86400 seconds" in m.stderr_text()[since:]


def test_hooks_get_a_scrubbed_environment(mount_factory):
    """The daemon's environment holds S3 credentials, fault switches and a
    loader variable: the hook sees none of them, only PATH, HOME, the locale
    and ACMFS_*; its stdin is /dev/null."""
    env = dict(os.environ)
    env.update(AWS_SECRET_ACCESS_KEY="s3cr3t-hook-test", AWS_ACCESS_KEY_ID="AKIAHOOKTEST",
               ACMFS_FAULT_COUNT="1", LD_LIBRARY_PATH="/nonexistent-hook-test",
               HOOKTEST_OTHER="x", PATH="/usr/sbin:/usr/bin:/sbin:/bin", LANG="C.UTF-8")
    m = mount_factory(env=env)
    out = m.store / "env.txt"
    stdin = m.store / "stdin.txt"
    write_hook(m.store, "backup.pre", f"env > {out}; readlink /proc/$$/fd/0 > {stdin}")
    m.create_volume("db", "4M")
    m.ctl("backup -m DISK", vol="db")
    seen = dict(ln.split("=", 1) for ln in out.read_text().splitlines() if "=" in ln)
    text = out.read_text()
    assert "s3cr3t-hook-test" not in text and "AKIAHOOKTEST" not in text
    assert not [k for k in seen if k.startswith(("AWS_", "ACMFS_FAULT", "LD_", "HOOKTEST"))], seen
    assert seen["PATH"] == env["PATH"] and seen["LANG"] == "C.UTF-8"
    assert seen["ACMFS_HOOK"] == "backup.pre"
    assert seen["ACMFS_VOLUME"] == "db"
    assert seen["ACMFS_DATA"] == str(m.vol("db", "data"))
    assert seen["ACMFS_STORE"] == str(m.store.resolve())
    assert seen["ACMFS_MOUNTPOINT"] == str(m.mnt.resolve())
    assert "ACMFS_RESULT" not in seen           # a .pre has no result
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "PWD", "SHLVL", "_", "OLDPWD"}
    assert not [k for k in seen if k not in allowed and not k.startswith("ACMFS_")], seen
    assert stdin.read_text().strip() == "/dev/null"


def refused(m, marker, what):
    """The backup is refused EPERM, with `what` in the reply and the log;
    nothing ran and nothing changed."""
    before = tables(m)
    err, reply = m.ctl_err("backup -m DISK", vol="db")
    assert err == errno.EPERM, reply
    assert what in reply, reply
    assert what in m.vol("db", "log").read_text()
    assert not marker.exists(), "the hook ran"
    assert tables(m) == before


def test_a_group_writable_hook_is_refused(mount):
    m = mount
    marker = m.store / "ran"
    m.create_volume("db", "4M")
    p = write_hook(m.store, "backup.pre", f"touch {marker}")
    p.chmod(0o770)
    refused(m, marker, "is group- or world-writable")
    p.chmod(0o707)
    refused(m, marker, "is group- or world-writable")
    p.chmod(0o700)
    m.ctl("backup -m DISK", vol="db")
    assert marker.exists()


def test_a_hook_owned_by_another_user_is_refused(mount):
    import pwd
    m = mount
    marker = m.store / "ran"
    m.create_volume("db", "4M")
    p = write_hook(m.store, "backup.pre", f"touch {marker}")
    os.chown(p, pwd.getpwnam("nobody").pw_uid, -1)
    refused(m, marker, "not by the daemon's user")


def test_a_bad_post_hook_refuses_before_pre_runs(mount):
    """A .post that would be refused stops the operation before its .pre
    runs (nothing frozen that could not be thawed)."""
    m = mount
    marker = m.store / "ran"
    m.create_volume("db", "4M")
    write_hook(m.store, "backup.pre", f"touch {marker}")
    write_hook(m.store, "backup.post", f"touch {marker}").chmod(0o772)
    refused(m, marker, "hook backup.post refused")


def test_a_group_writable_hooks_dir_or_store_is_refused(mount):
    m = mount
    marker = m.store / "ran"
    m.create_volume("db", "4M")
    write_hook(m.store, "backup.pre", f"touch {marker}")
    hooks = m.store / "hooks"
    hooks.chmod(0o770)
    refused(m, marker, f"{hooks.resolve()} is group- or world-writable")
    hooks.chmod(0o700)
    m.store.chmod(0o707)
    try:
        refused(m, marker, f"{m.store.resolve()} is group- or world-writable")
    finally:
        m.store.chmod(0o700)
    import pwd
    os.chown(hooks, pwd.getpwnam("nobody").pw_uid, -1)
    try:
        refused(m, marker, "not by the daemon's user")
    finally:
        os.chown(hooks, 0, -1)


def test_a_symlinked_hook_is_refused(mount):
    m = mount
    marker = m.store / "ran"
    m.create_volume("db", "4M")
    target = write_hook(m.store, "real-script", f"touch {marker}")
    (m.store / "hooks" / "backup.pre").symlink_to(target)
    refused(m, marker, "is a symbolic link")


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
