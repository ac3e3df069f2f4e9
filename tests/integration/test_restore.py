"""Integration tests of restore (issue 6): the `restore` command from disk
(conventional and differential histories, differential restore, `-r` to a
file or a block device, refusals), ext4, kill -9 mid-restore, cp/dd/losetup
of a generation image, and round trips through tape (file:// and s3rver)
when `backup -m BOTH` works.
"""

import errno
import os
import random
import re
import subprocess
import threading
import time

import pytest

from conftest import TIME_SCALE, retry_busy
from test_backup import (GRAIN, MiB, Loop, assert_same, backup,
                         copy_file, fill, first_diff, hist_info, log_tail,
                         make_tree, mutate_tree, needs_root, pwrite_sync,
                         reply_kv, run, state_of, trk_rows,
                         tree_sums, wait_for, wait_hist)


def restore(m, vol, opts=""):
    """restore, retried for a moment while the volume still counts as open
    for writing: FUSE sends RELEASE after close(2) has returned."""
    deadline = time.monotonic() + 5 * TIME_SCALE
    while True:
        err, r = m.ctl_err(f"restore {opts}".strip(), vol)
        if err != errno.EBUSY or "open for writing" not in r or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if err:
        raise OSError(err, f"{os.strerror(err)}: restore {opts!r} -> {r.strip()!r}")
    return reply_kv(m, r, f"{vol} acmrestore completed")


def scribble(path, size, seed, n=200):
    """Random 4 KiB overwrites plus one large region; -> set of grains hit."""
    rng = random.Random(seed)
    hit = set()
    fd = os.open(path, os.O_RDWR)
    try:
        for _ in range(n):
            off = rng.randrange(size // 4096) * 4096
            os.pwrite(fd, rng.randbytes(4096), off)
            hit.add(off // GRAIN)
        os.fsync(fd)
    finally:
        os.close(fd)
    return hit


def no_restore_state(m, vol):
    i = m.read_info(f"volumes/{vol}/info")
    assert i["state"] == "ok" and i["restore_execute"] == "----", i


def backed_up(m, tmp_path, vol, size, seed, opts, save=1):
    """A volume filled with a pattern, a reference copy of it and a succeeded
    backup of it -> (data path, reference path, backup reply)."""
    m.create_volume(vol, f"{size // MiB}M", save=save)
    data = m.vol(vol, "data")
    fill(data, 0, size, seed=seed)
    ref = tmp_path / f"{vol}.ref"
    copy_file(data, ref)
    kv = backup(m, vol, opts)
    media = "tape_status" if "TAPE" in opts else "disk_status"
    assert wait_hist(m, vol, kv["version"])[media] == "succeeded"
    return data, ref, kv


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("kind", ["conventional", "differential"])
def test_disk_round_trip(mount, tmp_path, kind):
    m = mount
    size = 32 * MiB
    data, ref, kv = backed_up(m, tmp_path, "rt", size, 1,
                              "-T -m DISK" if kind == "differential" else "-m DISK", save=2)
    # overwrite: random writes and a whole region
    scribble(data, size, seed=2)
    fill(data, 8 * MiB, 4 * MiB, seed=3)
    assert first_diff(data, ref) is not None
    # a reader that has the old content cached
    rfd = os.open(data, os.O_RDONLY)
    try:
        stale = os.pread(rfd, 4 * MiB, 8 * MiB)
        before = state_of(m, "rt")
        kr = restore(m, "rt")
        assert kr["version"] == kv["version"] and kr["media"] == "DISK", kr
        assert kr["target"] == "volume", kr
        assert os.pread(rfd, 4 * MiB, 8 * MiB) != stale, \
            "a reader still sees pre-restore content (page cache not invalidated)"
    finally:
        os.close(rfd)
    assert_same(data, ref, f"volume after {kind} restore")
    after = state_of(m, "rt")
    # the history catalog is unchanged by a restore
    for k in ("histdisp", "history", "generations", "hist_info"):
        assert after[k] == before[k], k
    no_restore_state(m, "rt")
    # and it stays restored across a remount
    m.remount()
    assert_same(data, ref, "volume after restore and remount")


def test_restore_selects_generation_and_version(mount, tmp_path):
    m = mount
    m.create_volume("sel", "4M", save=2)
    data = m.vol("sel", "data")
    refs = {}
    for s in (1, 2):
        fill(data, 0, 4 * MiB, seed=10 + s)
        refs[s] = tmp_path / f"ref{s}"
        copy_file(data, refs[s])
        wait_hist(m, "sel", backup(m, "sel", "-m DISK")["version"])
    scribble(data, 4 * MiB, seed=5)
    assert restore(m, "sel", "-g 2")["version"] == "1"
    assert_same(data, refs[1], "restore -g 2")
    assert restore(m, "sel", "-v 2 -m DISK")["version"] == "2"
    assert_same(data, refs[2], "restore -v 2")
    assert restore(m, "sel")["version"] == "2"
    assert m.ctl_err("restore -g 3", "sel")[0] == errno.ENOENT
    assert m.ctl_err("restore -v 7", "sel")[0] == errno.ENOENT


def test_differential_restore_copies_only_changed_grains(mount, tmp_path):
    m = mount
    size = 64 * MiB
    nr = size // GRAIN
    m.create_volume("dr", "64M", save=1)
    data = m.vol("dr", "data")
    fill(data, 0, size, seed=4)
    ref = tmp_path / "ref.img"
    copy_file(data, ref)
    kv = backup(m, "dr")
    assert wait_hist(m, "dr", kv["version"])["disk_status"] == "succeeded"
    rng = random.Random(5)
    changed = sorted(rng.sample(range(nr), 37))
    for g in changed:
        pwrite_sync(data, g * GRAIN + 4096 * rng.randrange(16), rng.randbytes(100))
    kr = restore(m, "dr")
    assert kr.get("mode", "diff") == "diff", kr
    assert kr["grains_copied"] == str(len(changed)), (kr, len(changed))
    assert kr["bytes_copied"] == str(len(changed) * GRAIN), kr
    assert_same(data, ref, "volume after differential restore")
    # tracking goes on, consistent with what the volume now holds
    assert trk_rows(m, "dr")["dr.bv1"][0] == "tracking"
    more = [1, 500, 1000]
    for g in more:
        pwrite_sync(data, g * GRAIN, b"after restore" * 50)
    kv2 = backup(m, "dr")
    assert kv2["copy"] == "diff", kv2
    assert int(kv2["grains"]) <= len(set(changed) | set(more)), kv2
    assert wait_hist(m, "dr", kv2["version"])["disk_status"] == "succeeded"
    assert_same(m.vol("dr", "history", kv2["version"], "image"), data,
                "the -T backup after a differential restore")
    # restoring again right away has nothing to copy
    kr2 = restore(m, "dr")
    assert kr2["grains_copied"] == "0", kr2


def test_restore_to_file_needs_canceltrk(mount, tmp_path):
    m = mount
    m.create_volume("rf", "8M", save=1)
    data = m.vol("rf", "data")
    fill(data, 0, 8 * MiB, seed=6)
    kv = backup(m, "rf")
    assert wait_hist(m, "rf", kv["version"])["disk_status"] == "succeeded"
    target = tmp_path / "x.img"
    before = state_of(m, "rf")
    err, reply = m.ctl_err(f"restore -r {target}", "rf")
    assert err == errno.EBUSY, reply
    assert not target.exists(), "refused restore created its target"
    assert state_of(m, "rf") == before
    assert "canceltrk" in reply or "tracking" in reply, reply
    reply_kv(m, m.ctl("canceltrk -bd rf.bv1", "rf"), "rf acmcanceltrk completed")
    scribble(data, 8 * MiB, seed=7)             # the TV moves on
    kr = restore(m, "rf", f"-r {target}")
    assert kr["target"] != "volume", kr
    assert os.path.getsize(target) == 8 * MiB
    assert_same(target, m.vol("rf", "history", kv["version"], "image"),
                "restore -r file")
    # the TV itself is untouched by -r
    assert first_diff(data, target) is not None
    # an existing file of another size is made the volume's size
    other = tmp_path / "y.img"
    other.write_bytes(b"z" * (20 * MiB))
    restore(m, "rf", f"-r {other}")
    assert_same(other, target, "restore -r over a larger file")


@pytest.mark.slow
def test_restore_to_file_refused_while_copying(mount, tmp_path):
    m = mount
    m.create_volume("rc", "512M", save=1)
    fill(m.vol("rc", "data"), 0, 512 * MiB, seed=8)
    kv = backup(m, "rc", "-m DISK")
    assert hist_info(m, "rc", kv["version"])["disk_status"] == "executing"
    err, reply = m.ctl_err(f"restore -r {tmp_path / 'x'}", "rc")
    # ENOENT is fine too: no *succeeded* history exists yet
    assert err in (errno.EBUSY, errno.ENOENT), (err, reply)
    err, reply = m.ctl_err("restore", "rc")
    assert err in (errno.EBUSY, errno.ENOENT), (err, reply)
    wait_hist(m, "rc", kv["version"])


@needs_root
def test_restore_to_loop_device(mount, tmp_path):
    m = mount
    size = 16 * MiB
    m.create_volume("ld", "16M", save=1)
    data = m.vol("ld", "data")
    fill(data, 0, size, seed=9)
    kv = backup(m, "ld", "-m DISK")
    assert wait_hist(m, "ld", kv["version"])["disk_status"] == "succeeded"
    backing = tmp_path / "dev.img"
    backing.write_bytes(os.urandom(size))
    small = tmp_path / "small.img"
    small.write_bytes(bytes(size // 2))
    with Loop(backing) as lo, Loop(small) as ls:
        err, reply = m.ctl_err(f"restore -r {ls.dev}", "ld")
        assert err == errno.EINVAL, ("smaller block device", reply)
        kr = restore(m, "ld", f"-r {lo.dev}")
        assert kr["target"] != "volume", kr
        assert_same(lo.dev, m.vol("ld", "history", kv["version"], "image"),
                    "restore -r /dev/loopN")
    assert_same(backing, m.vol("ld", "history", kv["version"], "image"),
                "loop backing file after restore -r")


def test_restore_refused_while_data_open_for_writing(mount, tmp_path):
    m = mount
    m.create_volume("ow", "4M", save=1)
    data = m.vol("ow", "data")
    fill(data, 0, 4 * MiB, seed=10)
    ref = tmp_path / "ref"
    copy_file(data, ref)
    wait_hist(m, "ow", backup(m, "ow", "-m DISK")["version"])
    pwrite_sync(data, 0, b"changed")
    for flags in (os.O_WRONLY, os.O_RDWR):
        fd = os.open(data, flags)
        try:
            before = state_of(m, "ow")
            err, reply = m.ctl_err("restore", "ow")
            assert err == errno.EBUSY, (flags, reply)
            assert state_of(m, "ow") == before
            assert re.search(r"error: restore: .*\(EBUSY\)$",
                             log_tail(m, "ow", 1)), log_tail(m, "ow", 3)
        finally:
            os.close(fd)
    # a reader does not block a restore
    fd = os.open(data, os.O_RDONLY)
    try:
        retry_busy(lambda: restore(m, "ow"))
    finally:
        os.close(fd)
    assert_same(data, ref, "restore with a reader open")


# ----------------------------------------------------------------------- ext4

@needs_root
@pytest.mark.slow
def test_ext4_restore(mount, tmp_path):
    m = mount
    m.create_volume("e", "256M", save=1)
    data = m.vol("e", "data")
    ext = tmp_path / "ext4"
    with Loop(data, ext) as lo:
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", lo.dev)
        lo.mount()
        sums = make_tree(ext, seed=50)
        run("fsfreeze", "-f", ext)
        try:
            kv = backup(m, "e")
        finally:
            run("fsfreeze", "-u", ext)
        assert wait_hist(m, "e", kv["version"])["disk_status"] == "succeeded"
        mutate_tree(ext, sums, seed=51)
        assert tree_sums(ext) != sums
        lo.umount()
    kr = retry_busy(lambda: restore(m, "e"))
    assert kr["version"] == kv["version"], kr
    r = run("fsck.ext4", "-fn", data, check=False)
    assert r.returncode == 0, r.stdout
    with Loop(data, ext, ro=True) as lo:
        lo.mount()
        assert tree_sums(ext) == sums
        lo.umount()


# -------------------------------------------------------------------- crash

@needs_root
@pytest.mark.slow
def test_kill9_mid_restore_marks_needs_restore(mount, tmp_path):
    m = mount
    size = 512 * MiB
    m.create_volume("kr", "512M", save=1)
    data = m.vol("kr", "data")
    fill(data, 0, size, seed=11)
    ref = tmp_path / "ref.img"
    copy_file(data, ref)
    kv = backup(m, "kr", "-m DISK")           # no tracking: a full restore
    assert wait_hist(m, "kr", kv["version"])["disk_status"] == "succeeded"
    fill(data, 0, size, seed=12)
    res = {}

    def safe():
        try:
            res["r"] = m.ctl_err("restore", "kr")
        except OSError as e:                # the daemon dies under it
            res["exc"] = e

    t = threading.Thread(target=safe, daemon=True)
    t.start()
    seen = wait_for(
        lambda: (lambda i: i if i["state"] == "restoring"
                 and i["restore_execute"] not in ("----", "0", "100") else None)(
            m.read_info("volumes/kr/info")) or
        (not t.is_alive() and {"done": True}),
        "the restore to make progress", 60, step=0.005)
    assert "done" not in seen, f"restore ended before kill: {res}"
    m.kill9()
    t.join(30 * TIME_SCALE)
    assert not t.is_alive(), "ctl writer hung after the daemon died"
    m.start()
    i = m.read_info("volumes/kr/info")
    assert i["state"] in ("needs-restore", "restoring"), i
    if i["state"] == "needs-restore":
        assert "interrupted" in m.vol("kr", "log").read_text(), log_tail(m, "kr")
        st = state_of(m, "kr")
        assert '"state": "needs-restore"' in repr(st["status_volumes"]) or \
            st["status_volumes"][0]["state"] == "needs-restore", st
    else:
        # it says it resumes: it must finish and be exact
        wait_for(lambda: m.read_info("volumes/kr/info")["state"] == "ok",
                 "the resumed restore", 120)
    # the history itself is intact and a new restore completes
    assert hist_info(m, "kr", kv["version"])["disk_status"] == "succeeded"
    assert_same(m.vol("kr", "history", kv["version"], "image"), ref,
                "history image after kill -9 mid-restore")
    if i["state"] == "needs-restore":
        restore(m, "kr")
    no_restore_state(m, "kr")
    assert_same(data, ref, "volume after the restore that followed the crash")


# ----------------------------------------------------------- cp, dd, losetup

def test_cp_sparse_and_dd_of_image(mount, tmp_path):
    m = mount
    size = 64 * MiB
    m.create_volume("cp", "64M", save=1)
    data = m.vol("cp", "data")
    # data in a few regions, holes elsewhere
    for off in (0, 10 * MiB, 40 * MiB):
        fill(data, off, 2 * MiB, seed=13 + off)
    pwrite_sync(data, size - 4096, b"tail" * 1024)
    ref = tmp_path / "ref.img"
    copy_file(data, ref)
    kv = backup(m, "cp")
    img = m.vol("cp", "history", kv["version"], "image")
    wait_hist(m, "cp", kv["version"])
    scribble(data, size, seed=14)               # the volume moves on
    fill(data, 20 * MiB, 4 * MiB, seed=15)
    out = tmp_path / "out.img"
    run("cp", "--sparse=always", img, out)
    assert_same(out, ref, "cp --sparse=always of the image")
    st = os.stat(out)
    assert st.st_size == size
    used = st.st_blocks * 512
    assert used < size // 4, f"cp output not sparse: {used} bytes allocated"
    # SEEK_DATA / SEEK_HOLE on the image
    fd = os.open(img, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_HOLE) == 2 * MiB
        assert os.lseek(fd, 2 * MiB, os.SEEK_DATA) == 10 * MiB
    finally:
        os.close(fd)
    out2 = tmp_path / "dd.img"
    run("dd", f"if={img}", f"of={out2}", "bs=1M", "status=none")
    assert_same(out2, ref, "dd of the image")
    out3 = tmp_path / "dd-skip.img"
    run("dd", f"if={img}", f"of={out3}", "bs=64K", "skip=160", "count=32",
        "status=none")
    with open(ref, "rb") as f:
        f.seek(160 * GRAIN)
        assert out3.read_bytes() == f.read(32 * GRAIN)
    # cp of an image is a valid restore
    run("cp", "--sparse=always", img, tmp_path / "restore.img")
    with open(tmp_path / "restore.img", "r+b") as src, open(data, "r+b") as dst:
        while True:
            b = src.read(4 * MiB)
            if not b:
                break
            dst.write(b)
        dst.flush()
        os.fsync(dst.fileno())
    assert_same(data, ref, "cp-based restore")


@needs_root
def test_losetup_readonly_image_and_mount(mount, tmp_path):
    m = mount
    m.create_volume("li", "128M", save=1)
    data = m.vol("li", "data")
    ext = tmp_path / "ext4"
    with Loop(data, ext) as lo:
        run("mkfs.ext4", "-q", "-F", "-E", "nodiscard", lo.dev)
        lo.mount()
        sums = make_tree(ext, seed=60)
        lo.umount()
    kv = backup(m, "li")
    wait_hist(m, "li", kv["version"])
    img = m.vol("li", "history", kv["version"], "image")
    chk = tmp_path / "chk"
    with Loop(img, chk, ro=True) as lo:
        lo.mount()
        assert tree_sums(chk) == sums
        lo.umount()


# ----------------------------------------------------------------------- tape

def tape_probe(m, tmp_path):
    """One probe: does `backup -m BOTH` produce a succeeded tape history?"""
    m.create_volume("probe", "1M", save=1)
    fill(m.vol("probe", "data"), 0, MiB, seed=1)
    err, reply = m.ctl_err("backup -m BOTH", "probe")
    if err:
        return f"backup -m BOTH failed: {os.strerror(err)}: {reply.strip()}"
    ver = m.parse_reply(reply)["version"]
    try:
        i = wait_hist(m, "probe", ver, timeout=60 * TIME_SCALE)
    except AssertionError as e:
        return str(e)
    if i.get("tape_status") != "succeeded":
        return f"tape history not succeeded: {i}"
    return None


def tape_round_trip(m, tmp_path, vol, opts):
    size = 16 * MiB
    m.create_volume(vol, "16M", save=1, **opts)
    data = m.vol(vol, "data")
    fill(data, 0, size, seed=20)
    fill(data, 4 * MiB, 2 * MiB, seed=0)          # some zero-ish area
    ref = tmp_path / f"{vol}.ref"
    copy_file(data, ref)
    kv = backup(m, vol, "-T -m BOTH")
    i = wait_hist(m, vol, kv["version"], timeout=120 * TIME_SCALE)
    assert i["disk_status"] == "succeeded" and i["tape_status"] == "succeeded", \
        (i, log_tail(m, vol))
    scribble(data, size, seed=21)
    kr = restore(m, vol, "-m TAPE")
    assert kr["media"] == "TAPE", kr
    assert_same(data, ref, f"{vol}: restore -m TAPE")
    # a restore of unchanged content fetches nothing
    kr2 = restore(m, vol, "-m TAPE")
    assert kr2["grains_copied"] == "0", kr2
    # tape.img reads back the same bytes
    assert_same(m.vol(vol, "history", kv["version"], "tape.img"), ref,
                f"{vol}: tape.img")
    # conventional: delete the disk side, the default restore comes from tape
    fill(data, 0, size, seed=22)
    ref2 = tmp_path / f"{vol}.ref2"
    copy_file(data, ref2)
    kv2 = backup(m, vol, "-m BOTH")
    i = wait_hist(m, vol, kv2["version"], timeout=120 * TIME_SCALE)
    assert i["tape_status"] == "succeeded", (i, log_tail(m, vol))
    m.ctl(f"histdel -v {kv2['version']} -m DISK", vol)
    scribble(data, size, seed=23)
    kr3 = restore(m, vol)
    assert kr3["media"] == "TAPE" and kr3["version"] == kv2["version"], kr3
    assert_same(data, ref2, f"{vol}: default restore from tape")


def test_tape_restore_reads_only_what_tracking_saw_written(mount, tmp_path):
    """Onto its own volume, a tape restore takes a grain the tracking has not
    seen written since the history's cut as matching without reading it:
    after three grains change, three are read, compared and fetched. A
    restore elsewhere (-r) has no tracking to go by and compares them all."""
    m = mount
    data, ref, kv = backed_up(m, tmp_path, "tt", 16 * MiB, 40, "-m TAPE")
    for g in (3, 100, 255):
        pwrite_sync(data, g * GRAIN + 100, b"changed after the backup")
    read0 = m.metric("acmfs_tape_bytes_read_total")
    kr = restore(m, "tt", f"-v {kv['version']} -m TAPE")
    assert kr["grains_copied"] == "3" and kr["grains_compared"] == "3", kr
    # from the pool: the manifest (24 B a grain), one pack index and 3 blocks
    got = m.metric("acmfs_tape_bytes_read_total") - read0
    assert 3 * GRAIN < got < 3 * GRAIN + 64 * 1024, got
    assert_same(data, ref, "restore -m TAPE after 3 grains changed")
    out = tmp_path / "elsewhere.img"
    kr = restore(m, "tt", f"-v {kv['version']} -m TAPE -r {out}")
    assert kr["grains_compared"] == str(16 * MiB // GRAIN), kr
    assert_same(out, ref, "restore -m TAPE -r")


def test_tape_restore_stops_comparing_what_no_longer_matches(mount, tmp_path):
    """Grains written since the cut are compared by hash before fetching
    while that pays: here the first half of the volume already holds the
    backup's bytes again (as after an interrupted restore) and is skipped;
    in the second half nothing matches, so after one chunk (16 MiB) of
    misses the rest is fetched without reading it first."""
    m = mount
    size = 64 * MiB
    data, ref, kv = backed_up(m, tmp_path, "tc", size, 50, "-m TAPE")
    fill(data, 0, size, seed=51)                    # all of it written over
    with open(ref, "rb") as f:                      # the first half put back
        pwrite_sync(data, 0, f.read(size // 2))
    kr = restore(m, "tc", f"-v {kv['version']} -m TAPE")
    grains = size // GRAIN
    assert kr["grains_copied"] == str(grains // 2), kr
    # the first half and the chunk after it were compared, the rest not
    assert kr["grains_compared"] == str(grains // 2 + 16 * MiB // GRAIN), kr
    assert_same(data, ref, "restore -m TAPE over a half-restored volume")


def test_tape_restore_probes_for_matches_again(mount, tmp_path):
    """Fetching unread is not for good: every 8th chunk is compared again.
    Over a volume whose last third already holds the backup's bytes, the
    first chunk's misses switch comparing off, the probe at the 9th chunk
    finds matches and switches it back on, and the last chunks are skipped."""
    m = mount
    chunk = 16 * MiB
    size = 12 * chunk
    data, ref, kv = backed_up(m, tmp_path, "tp", size, 60, "-m TAPE")
    fill(data, 0, size, seed=61)
    with open(ref, "rb") as f:                      # chunks 8..11 put back
        f.seek(8 * chunk)
        pwrite_sync(data, 8 * chunk, f.read(4 * chunk))
    kr = restore(m, "tp", f"-v {kv['version']} -m TAPE")
    per_chunk = chunk // GRAIN
    assert kr["grains_copied"] == str(8 * per_chunk), kr
    # chunk 0 (misses), 1..7 fetched unread, 8 the probe, 9..11 compared
    assert kr["grains_compared"] == str(5 * per_chunk), kr
    assert_same(data, ref, "restore -m TAPE after the probe")


def test_tape_restore_writes_around_the_page_cache(mount, tmp_path):
    """A tape restore writes the volume with direct I/O: the blocks go from
    the image's cache to the disk, so the TV's backing file is not left in
    the page cache (the writes that overwrote it were, through `data`), and
    reading `data` afterwards sees the restored bytes."""
    m = mount
    size = 64 * MiB
    data, ref, kv = backed_up(m, tmp_path, "tw", size, 70, "-m TAPE")
    fill(data, 0, size, seed=71)
    tvs = list(m.store.glob("vol/*/tv.img"))
    assert len(tvs) == 1, tvs

    def resident():
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(tvs[0])],
                             check=True, capture_output=True, text=True).stdout
        return int(out.split()[0])

    assert resident() > size // 2     # the overwrite sits in the page cache
    kr = restore(m, "tw", f"-v {kv['version']} -m TAPE")
    assert kr["grains_copied"] == str(size // GRAIN), kr
    assert resident() < size // 8, "restored volume left in the page cache"
    assert_same(data, ref, "restore -m TAPE with direct writes")


def test_tape_round_trip_file_pool(mount, tmp_path):
    reason = tape_probe(mount, tmp_path)
    if reason:
        pytest.fail(f"tape backups do not work: {reason}")
    tape_round_trip(mount, tmp_path, "tf", {})


def test_tape_round_trip_where_direct_io_is_refused(mount_factory, tmp_path):
    """On a file system that opens O_DIRECT but refuses the I/O (the fault
    shim's ACMFS_FAULT_NODIRECT), the file pool's pack writes and reads and
    the restore's direct writes and compare reads fall back to buffered I/O:
    backups succeed, tape.img and the restored volume are byte-exact."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACMFS_FAULT")}
    env["ACMFS_FAULT_NODIRECT"] = "1"
    m = mount_factory(name="nodirect", env=env)
    reason = tape_probe(m, tmp_path)
    if reason:
        pytest.fail(f"tape backups do not work: {reason}")
    tape_round_trip(m, tmp_path, "tn", {})
    assert "direct I/O refused" in m.stderr_path.read_text(), "the fault shim was not armed"


def test_tape_round_trip_s3rver(mount_factory, s3rver, tmp_path):
    m = mount_factory(name="s3", env=s3rver.env())
    reason = tape_probe(m, tmp_path)
    if reason:
        pytest.fail(f"tape backups do not work: {reason}")
    m.ctl(f"pool create s3p s3://{s3rver.bucket}/restore-test "
          f"endpoint={s3rver} region=us-east-1 path_style=1 encrypt=none")
    tape_round_trip(m, tmp_path, "ts", {})
    # (the volume uses the default pool; switch a second one to s3)
    m.create_volume("ts3", "8M", save=1)
    m.ctl("tapepolicy ts3 pool=s3p")
    data = m.vol("ts3", "data")
    fill(data, 0, 8 * MiB, seed=30)
    ref = tmp_path / "ts3.ref"
    copy_file(data, ref)
    kv = backup(m, "ts3", "-T -m BOTH")
    i = wait_hist(m, "ts3", kv["version"], timeout=120 * TIME_SCALE)
    assert i["tape_status"] == "succeeded" and i["pool"] == "s3p", \
        (i, log_tail(m, "ts3"))
    scribble(data, 8 * MiB, seed=31)
    kr = restore(m, "ts3", "-m TAPE")
    assert kr["media"] == "TAPE", kr
    assert_same(data, ref, "restore -m TAPE from s3rver")
