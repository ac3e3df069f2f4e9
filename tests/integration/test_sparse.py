"""Sparse files through a mount (issue 19): `data`, `disk.img`, `tape.img`
and `image` report in st_blocks what their backing files (or, for a tape
image, its manifest's non-zero grains) hold, so that cp --sparse=always,
rsync -S, tar -S and qemu-img take their sparse paths; and the limits of a
volume's geometry (largest size, smallest grain for a size).

The volumes are 2 GiB holding a few MiB at scattered offsets. Whether a tool
took its sparse path is judged by the bytes the daemon served it (its
/proc/PID/io wchar: every FUSE reply is a write to /dev/fuse), never by a
clock. A copy is compared with the written extents: every written byte is
read back from it, and every data extent it holds is zero outside them
(reading its holes would be reading zeros), so nothing reads 2 GiB twice.

On the default file:// tape pool of a fresh store. Needs rsync and
qemu-img (qemu-utils; scripts/setup.sh installs both).
"""

import errno
import json
import os
import random
import shutil
import subprocess
import tarfile
import time

import pytest

from conftest import TIME_SCALE

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
GRAIN = 64 * KiB
SIZE = 2 * GiB
VOL = "sp"
JOB_TIMEOUT = 120 * TIME_SCALE
# what a sparse path may serve beyond the written bytes: page-cache
# read-ahead (1 MiB past each extent), grains around unaligned writes
SLACK = 48 * MiB


# --------------------------------------------------------------------- helpers

def vpath(m, vol, *parts):
    return m.vol(vol, *parts)


def served(m):
    """Bytes the daemon has written so far: its FUSE replies (plus its
    logs and catalog, a few KiB)."""
    with open(f"/proc/{m.proc.pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            if k == "wchar":
                return int(v)
    raise AssertionError("no wchar in /proc/PID/io")


def write_extents(m, vol, extents):
    fd = os.open(vpath(m, vol, "data"), os.O_WRONLY)
    try:
        for off, data in extents:
            assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def scattered(seed, size=SIZE):
    """A few MiB at scattered offsets: grain-aligned runs of 64 KiB..1 MiB,
    one unaligned write across a grain boundary, and the volume's last
    4 KiB. Returns [(offset, bytes)], sorted, not overlapping."""
    rng = random.Random(seed)
    half = size // 2 // (16 * MiB)       # the unaligned write's slot
    slots = sorted(rng.sample([s for s in range(1, size // (16 * MiB) - 1) if s != half], 8))
    out = []
    for s in slots:
        off = s * 16 * MiB + rng.randrange(0, 8 * MiB // GRAIN) * GRAIN
        out.append((off, rng.randbytes(rng.choice((1, 4, 8, 16)) * GRAIN)))
    out.append((size // 2 + GRAIN - 5000, rng.randbytes(10000)))
    out.append((size - 4 * KiB, rng.randbytes(4 * KiB)))
    out.sort()
    return out


def written_bytes(extents):
    return sum(len(d) for _, d in extents)


def hist_info(m, vol, v):
    try:
        return m.read_info(f"volumes/{vol}/history/{v}/info")
    except FileNotFoundError:
        return None


def backup_both(m, vol):
    """A full -m BOTH backup; waits until its disk copy and its tape copy
    succeeded. Returns the version."""
    v = int(m.parse_reply(m.ctl("backup -m BOTH", vol))["version"])
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        info = hist_info(m, vol, v)
        if info is not None and info.get("disk_status") != "executing" \
                and info.get("tape_status") != "executing":
            break
        assert time.monotonic() < deadline, f"version {v} still executing: {info}"
        time.sleep(0.05)
    assert info["disk_status"] == "succeeded" and info["tape_status"] == "succeeded", \
        (info, vpath(m, vol, "log").read_text()[-3000:])
    return v


def sparse_volume(m, seed=19):
    """Volume VOL (2 GiB) holding scattered(seed), and its version 1 on disk
    and on tape. Returns (extents, version)."""
    m.create_volume(VOL, "2G", save=1)
    ext = scattered(seed)
    write_extents(m, VOL, ext)
    return ext, backup_both(m, VOL)


def sources(m, v):
    """name -> path of every file that serves the image (or the volume)."""
    h = vpath(m, VOL, "history", str(v))
    return {"data": vpath(m, VOL, "data"), "disk.img": h / "disk.img",
            "tape.img": h / "tape.img", "image": h / "image"}


def assert_sparse_stat(path, ext, size=SIZE):
    """st_blocks covers what was written, and is nowhere near the size."""
    st = os.stat(path)
    assert st.st_size == size, path
    w = written_bytes(ext)
    assert w <= st.st_blocks * 512 <= w + 4 * MiB, \
        f"{path}: st_blocks {st.st_blocks} for {w} bytes written in a {size}-byte file"


def assert_same_image(path, ext, size=SIZE, sparse=True):
    """path holds exactly the volume of `ext` (zeros elsewhere) and, if
    sparse, is about as sparse."""
    st = os.stat(path)
    assert st.st_size == size, f"{path}: size {st.st_size}"
    spans = [(off, off + len(d)) for off, d in ext]
    with open(path, "rb") as f:
        for off, d in ext:
            f.seek(off)
            assert f.read(len(d)) == d, f"{path}: written bytes at {off} differ"
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                d0 = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                assert e.errno == errno.ENXIO
                break
            d1 = min(os.lseek(fd, d0, os.SEEK_HOLE), size)
            # the data extent [d0, d1) is zero outside the written spans
            p = d0
            for a, b in spans + [(size, size)]:
                if b <= p:
                    continue
                if a >= d1:
                    break
                if a > p:
                    f.seek(p)
                    assert f.read(a - p).count(0) == a - p, f"{path}: non-zero in [{p}, {a})"
                p = max(p, b)
            if p < d1:
                f.seek(p)
                assert f.read(d1 - p).count(0) == d1 - p, f"{path}: non-zero in [{p}, {d1})"
            pos = d1
    if sparse:
        w = written_bytes(ext)
        assert st.st_blocks * 512 <= w + 8 * MiB, \
            f"{path}: the copy is not sparse: {st.st_blocks} blocks for {w} bytes"


def run(args, **kw):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300 * TIME_SCALE, **kw)
    assert r.returncode == 0, f"{args} -> {r.returncode}: {r.stdout[-2000:]}"
    return r.stdout


def check_tool(m, ext, src, copy, tool, read_all=False):
    """Run tool(src, copy); the copy must be the image, sparse. Unless the
    tool reads every byte by design (read_all), it must have been served
    about the written bytes, not the file's size."""
    assert_sparse_stat(src, ext)
    before = served(m)
    tool(src, copy)
    got = served(m) - before
    if not read_all:
        assert got < written_bytes(ext) + SLACK, \
            f"{src}: {got} bytes read for {written_bytes(ext)} written: not a sparse copy"
    assert_same_image(copy, ext)


def drop_disk_image(m, v):
    """rm disk.img: `image` is then read from tape."""
    for _ in range(100):
        try:
            os.unlink(vpath(m, VOL, "history", str(v), "disk.img"))
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.05)
    raise AssertionError("disk.img stayed busy")


# --------------------------------------------------------------------- tests

def test_st_blocks_follow_the_data(mount):
    m = mount
    ext, v = sparse_volume(m)
    src = sources(m, v)
    for name in ("data", "disk.img", "tape.img", "image"):
        assert_sparse_stat(src[name], ext)
        assert os.stat(src[name]).st_blocks > 0
    # a tape image counts whole grains: its non-zero grains, as `blocks`
    info = hist_info(m, VOL, v)
    assert os.stat(src["tape.img"]).st_blocks == int(info["blocks"]) * GRAIN // 512

    # a write shows at the next stat (the attributes are cached for a while)
    more = [(SIZE // 4 + 3 * GRAIN, random.Random(7).randbytes(2 * MiB))]
    write_extents(m, VOL, more)
    assert_sparse_stat(src["data"], ext + more)
    # the history's images do not change
    assert_sparse_stat(src["disk.img"], ext)

    # `image` from tape once the disk image is gone: the tape's count (once
    # the kernel's cached attributes expire, 5 s)
    drop_disk_image(m, v)
    want = int(info["blocks"]) * GRAIN // 512
    deadline = time.monotonic() + 15 * TIME_SCALE
    while os.stat(src["image"]).st_blocks != want and time.monotonic() < deadline:
        time.sleep(0.2)
    assert os.stat(src["image"]).st_blocks == want

    # an empty volume says 0 blocks for `data` (nothing to read); its tape
    # image, known only by the catalog's count, at least one
    m.create_volume("empty", "1G", save=1)
    ve = backup_both(m, "empty")
    assert os.stat(vpath(m, "empty", "data")).st_blocks == 0
    assert os.stat(vpath(m, "empty", "history", str(ve), "disk.img")).st_blocks == 0
    assert os.stat(vpath(m, "empty", "history", str(ve), "tape.img")).st_blocks == 1

    # a dense volume: every block, exactly the size
    m.create_volume("dense", "32M", save=1)
    buf = os.urandom(32 * MiB)
    write_extents(m, "dense", [(0, buf)])
    vd = backup_both(m, "dense")
    h = vpath(m, "dense", "history", str(vd))
    for p in (vpath(m, "dense", "data"), h / "disk.img", h / "tape.img", h / "image"):
        assert os.stat(p).st_blocks == 32 * MiB // 512, p


def test_st_blocks_follow_writes_with_writeback_cache(mount_factory):
    m = mount_factory(opts=["-o", "writeback"])
    m.create_volume(VOL, "2G", save=1)
    ext = scattered(5)
    write_extents(m, VOL, ext)            # fsync'ed: the daemon has it all
    assert_sparse_stat(vpath(m, VOL, "data"), ext)
    more = [(SIZE // 3, random.Random(8).randbytes(MiB))]
    write_extents(m, VOL, more)
    assert_sparse_stat(vpath(m, VOL, "data"), ext + more)


def test_cp_sparse_always(mount, tmp_path):
    m = mount
    ext, v = sparse_volume(m)
    src = sources(m, v)

    def cp(s, d):
        run(["cp", "--sparse=always", str(s), str(d)])

    for name in ("data", "disk.img", "tape.img", "image"):
        check_tool(m, ext, src[name], tmp_path / f"cp-{name}", cp)
        os.unlink(tmp_path / f"cp-{name}")
    drop_disk_image(m, v)
    check_tool(m, ext, src["image"], tmp_path / "cp-image-from-tape", cp)


def test_tar_sparse_round_trip(mount, tmp_path):
    m = mount
    ext, v = sparse_volume(m)
    src = sources(m, v)
    for name in ("data", "disk.img", "tape.img", "image"):
        arc = tmp_path / f"{name}.tar"
        out = tmp_path / f"x-{name}"
        out.mkdir()

        def tar(s, d):
            run(["tar", "-S", "-cf", str(arc), "-C", str(s.parent), s.name])
            # stored sparse: a map and the data, not 2 GiB of zeros
            assert arc.stat().st_size < written_bytes(ext) + 4 * MiB, arc.stat().st_size
            with tarfile.open(arc) as t:
                assert t.getmembers()[0].issparse()
            run(["tar", "-xf", str(arc), "-C", str(d.parent)])

        check_tool(m, ext, src[name], out / src[name].name, tar)
        shutil.rmtree(out)
        arc.unlink()


def test_rsync_sparse(mount, tmp_path):
    """rsync reads its source whole (it looks for no holes there): the
    copy must still be the image, with holes (-S)."""
    if not shutil.which("rsync"):
        pytest.fail("rsync is not installed (scripts/setup.sh)")
    m = mount
    ext, v = sparse_volume(m)
    src = sources(m, v)

    def rsync(s, d):
        run(["rsync", "-S", str(s), str(d)])

    for name in ("data", "disk.img", "tape.img"):
        check_tool(m, ext, src[name], tmp_path / f"r-{name}", rsync, read_all=True)
        os.unlink(tmp_path / f"r-{name}")


def test_qemu_img_convert(mount, tmp_path):
    if not shutil.which("qemu-img"):
        pytest.fail("qemu-img is not installed (qemu-utils, scripts/setup.sh)")
    m = mount
    ext, v = sparse_volume(m)
    src = sources(m, v)

    def convert(s, d):
        run(["qemu-img", "convert", "-f", "raw", "-O", "raw", str(s), str(d)])

    for name in ("data", "disk.img", "tape.img", "image"):
        info = json.loads(run(["qemu-img", "info", "-f", "raw", "--output=json",
                               str(src[name])]))
        # what qemu-img reports as the disk size is st_blocks
        assert info["virtual-size"] == SIZE
        assert info["actual-size"] < written_bytes(ext) + 4 * MiB, (name, info)
        check_tool(m, ext, src[name], tmp_path / f"q-{name}", convert)
        os.unlink(tmp_path / f"q-{name}")


# --------------------------------------------------------------------- limits

@pytest.mark.parametrize("cmd, words", [
    # over the largest volume
    ("volume create big 65T", ("64 TiB", "largest")),
    # 2^28 grains + 16 at grain 4K: 1 TiB is the most a 4 KiB grain takes
    (f"volume create big {(1 << 40) + 64 * KiB} grain=4K",
     ("grain 4K:", "268435472 grains", "the most is 268435456", "grain=8K ")),
    # the default grain (64K) takes 16 TiB; one grain more needs 128K
    (f"volume create big {(16 << 40) + 64 * KiB}", ("grain 64K (the default)", "grain=128K ")),
    (f"volume create big {(16 << 40) + 64 * KiB} grain=64K", ("grain 64K:", "grain=128K ")),
])
def test_volume_geometry_limits(mount, cmd, words):
    m = mount
    err, reply = m.ctl_err(cmd)
    assert err == errno.EINVAL, (err, reply)
    assert reply.startswith("error: "), reply
    for w in words:
        assert w in reply, (w, reply)
    assert not vpath(m, "big").exists()
    assert not (m.store / "volumes" / "big").exists()


def race_holes_and_data(m, size, seed, media, step):
    """A thin volume of `size` with scattered extents, a backup -m MEDIA,
    then right after the cut one grain in each `step` bytes (holes the copy
    has not reached yet, most of them) and every extent overwritten. Waits
    for the copy; the history's image must be the volume as at the cut."""
    m.create_volume("thin", f"{size // GiB}G", save=1)
    before = scattered(seed, size)
    write_extents(m, "thin", before)
    v = m.parse_reply(m.ctl(f"backup -m {media}", "thin"))["version"]
    holes = [(k * step + 5 * GRAIN, b"\xa5" * GRAIN) for k in range(size // step)]
    write_extents(m, "thin", holes + [(off, b"\x5a" * len(d)) for off, d in before])
    status = "tape_status" if media == "TAPE" else "disk_status"
    deadline = time.monotonic() + JOB_TIMEOUT
    while hist_info(m, "thin", v)[status] == "executing":
        assert time.monotonic() < deadline, "copy still running"
        time.sleep(0.02)
    assert hist_info(m, "thin", v)[status] == "succeeded"
    img = vpath(m, "thin", "history", v, "tape.img" if media == "TAPE" else "image")
    fd = os.open(img, os.O_RDONLY)
    try:
        for off, d in before:
            assert os.pread(fd, len(d), off) == d, f"written extent at {off}"
        for off, d in holes:
            assert os.pread(fd, len(d), off) == bytes(len(d)), f"hole at {off} not a hole"
    finally:
        os.close(fd)
    return v, before, holes


def test_full_copy_of_a_thin_volume_is_point_in_time(mount):
    """A full copy skips the volume file's holes a span at a time (core/vol.c
    skip_hole); writes racing with it, into holes and into data, must not
    reach the history: its image is the volume as at the backup."""
    v, before, holes = race_holes_and_data(mount, 256 * GiB, 23, "DISK", 16 * GiB)
    # the copy moved what the volume held, not its size
    assert os.stat(vpath(mount, "thin", "history", v, "disk.img")).st_blocks * 512 <= \
        written_bytes(before) + len(holes) * GRAIN + SLACK


def test_tape_upload_of_a_thin_volume_skips_holes_point_in_time(mount):
    """backup -m TAPE asks the volume file for its holes (zero_until in
    core/tapejob.c) instead of reading them; writes racing with the upload,
    into holes and into data, must not reach the tape history."""
    race_holes_and_data(mount, 64 * GiB, 29, "TAPE", 4 * GiB)
