"""Integration tests of acmfiles (issue 20, file-level restore): the
filesystems inside a history mounted read-only and undone again.

Each test builds filesystems on a volume of a fresh store (mkfs on the
volume's `data`, or on regions of it attached with `losetup -o/--sizelimit`
for a partitioned volume, so the setup needs no partition support in the
kernel), backs it up, changes the volume afterwards, and checks that
`acmfiles` shows the backed-up files, read-only, and that `acmfiles -u` —
or any failure — leaves nothing behind: no mount under DIR, no loop device
whose backing file is on the acmfs mount, no subdirectory.

Needs root (loop devices, mount(2)). The `restore_dirs` fixture undoes
whatever a failed test left mounted before the acmfs mount is stopped.
"""

import errno
import hashlib
import os
import random
import shutil
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from test_backup import MiB, backup, needs_root, run, wait_hist

pytestmark = [needs_root,
              pytest.mark.skipif(not os.path.exists("/dev/loop-control"),
                                 reason="no loop devices")]

EXIT_FAIL, EXIT_USAGE, EXIT_NOENT, EXIT_BUSY = 1, 2, 3, 4


# --------------------------------------------------------------------- helpers

@pytest.fixture(scope="session")
def acmfiles_bin(build_dir):
    b = build_dir / "tools" / "acmfiles"
    if not os.access(b, os.X_OK):
        pytest.fail(f"{b} is not built")
    return b


def mounts_under(d):
    """Mount points at or below d (from /proc/self/mountinfo)."""
    d = os.path.realpath(d)
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == d or mp.startswith(d + "/"):
                out.append(mp)
    return out


def mount_opts(mp):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mp:
                sep = fields.index("-", 6)
                return set(fields[5].split(",")), fields[sep + 1]
    raise AssertionError(f"{mp} is not mounted")


def loops_backed_by(prefix):
    """{loopN: backing file} for loop devices whose file is below prefix."""
    prefix = os.path.realpath(prefix)
    out = {}
    for d in Path("/sys/block").glob("loop*"):
        try:
            back = (d / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue
        if back.startswith(prefix + "/"):
            out[d.name] = back
    return out


class Files:
    """Runs acmfiles against one mount; remembers DIRs to undo at the end."""

    def __init__(self, binary, m):
        self.bin, self.m, self.dirs = binary, m, []

    def run(self, *args, timeout=60):
        env = {k: v for k, v in os.environ.items() if k != "ACMFS_MOUNT"}
        env["ACMFS_MOUNT"] = str(self.m.mnt)
        for a in args:
            if isinstance(a, Path) and a not in self.dirs:
                self.dirs.append(a)
        return subprocess.run([str(self.bin), *map(str, args)],
                              stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, env=env)

    def ok(self, *args):
        r = self.run(*args)
        assert r.returncode == 0, f"acmfiles {args} -> {r.returncode}: {r.stderr}"
        assert r.stderr == "", f"unexpected stderr: {r.stderr!r}"
        return r.stdout

    def fails(self, code, *args, match=None):
        """Exit `code`, one `acmfiles: error: …` line (after any notes)."""
        r = self.run(*args)
        assert r.returncode == code, \
            f"acmfiles {args} -> {r.returncode}, want {code}: {r.stderr}"
        lines = [ln for ln in r.stderr.splitlines()
                 if not ln.startswith("acmfiles: note: ")]
        assert len(lines) == 1 and lines[0].startswith("acmfiles: error: "), r.stderr
        if match:
            assert match in lines[0], lines[0]
        return lines[0]

    def assert_clean(self, d, exists=True):
        """Nothing mounted under d, no loop device on the mount, d empty
        (or gone when `exists` is False)."""
        assert mounts_under(d) == [], mounts_under(d)
        assert loops_backed_by(self.m.mnt) == {}, loops_backed_by(self.m.mnt)
        if exists:
            assert sorted(os.listdir(d)) == []
        else:
            assert not os.path.lexists(d)


@pytest.fixture
def files(acmfiles_bin, mount):
    f = Files(acmfiles_bin, mount)
    yield f
    # a failed test may leave mounts: undo them, then anything still there
    for d in f.dirs:
        if os.path.exists(os.path.join(d, ".acmfiles")):
            f.run("-u", d)
        for mp in sorted(mounts_under(d), reverse=True):
            subprocess.run(["umount", "-l", mp], check=False)
    for dev in loops_backed_by(mount.mnt):
        subprocess.run(["losetup", "-d", f"/dev/{dev}"], check=False)


def fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Attached:
    """`losetup` of a file (or of a region of it) and a mount of what it
    holds, undone on exit; the file is fsync'd after the detach so that a
    backup sees what the filesystem wrote (SPEC §5)."""

    def __init__(self, path, where, offset=None, length=None):
        self.path, self.where = path, Path(where)
        self.region = [] if offset is None else \
            ["-o", str(offset), "--sizelimit", str(length)]
        self.dev = None
        self.mounted = False

    def __enter__(self):
        self.dev = run("losetup", "-f", "--show", *self.region,
                       self.path).stdout.strip()
        return self

    def mount(self):
        self.where.mkdir(parents=True, exist_ok=True)
        run("mount", self.dev, self.where)
        self.mounted = True
        return self.where

    def __exit__(self, *exc):
        try:
            if self.mounted:
                run("umount", self.where, check=exc[0] is None)
        finally:
            run("losetup", "-d", self.dev, check=False)
            fsync_file(self.path)


def mkfs(kind, dev):
    cmd = {"ext4": ["mkfs.ext4", "-q", "-F", "-E", "nodiscard"],
           "xfs": ["mkfs.xfs", "-q", "-f", "-K"],
           "btrfs": ["mkfs.btrfs", "-q", "-f", "-K"]}[kind]
    run(*cmd, dev)


def write_files(root, tag, n=12):
    """Files whose content depends on `tag`; -> {relpath: sha256}."""
    rng = random.Random(tag)
    sums = {}
    (Path(root) / "sub").mkdir(exist_ok=True)
    for i in range(n):
        rel = f"sub/f{i}.bin" if i % 3 else f"f{i}.bin"
        b = tag.encode() + rng.randbytes(rng.choice([10, 5000, 300_000]))
        (Path(root) / rel).write_bytes(b)
        sums[rel] = hashlib.sha256(b).hexdigest()
    return sums


def sums_of(root):
    out = {}
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != "lost+found"]
        for n in names:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def fs_volume(m, tmp_path, vol, size, kind, tag, save=2):
    """A volume holding one `kind` filesystem with files of `tag`."""
    m.create_volume(vol, size, save=save)
    data = m.vol(vol, "data")
    mkfs(kind, data)
    with Attached(data, tmp_path / f"live-{vol}") as a:
        sums = write_files(a.mount(), tag)
    return sums


def change_volume(m, tmp_path, vol, tag, region=(None, None)):
    """Rewrite the live filesystem's files (after a backup)."""
    with Attached(m.vol(vol, "data"), tmp_path / f"live-{vol}", *region) as a:
        return write_files(a.mount(), tag)


def disk_backup(m, vol):
    kv = backup(m, vol, "-m DISK")
    assert wait_hist(m, vol, kv["version"])["disk_status"] == "succeeded"
    return kv["version"]


def check_read_only(path):
    with pytest.raises(OSError) as e:
        (Path(path) / "new-file").write_bytes(b"x")
    assert e.value.errno == errno.EROFS
    opts, _ = mount_opts(str(path))
    assert {"ro", "nosuid", "nodev", "noexec"} <= opts, opts


def state_of(d):
    """DIR/.acmfiles as {key: [values]}."""
    out = {}
    text = (Path(d) / ".acmfiles").read_text()
    lines = text.splitlines()
    assert lines[0] == "acmfiles 1", text
    for ln in lines[1:]:
        k, v = ln.split(" ", 1)
        out.setdefault(k, []).append(v)
    return out


# -------------------------------------------------------------- whole images

@pytest.mark.parametrize("kind,size", [("ext4", "64M"), ("xfs", "320M"),
                                       ("btrfs", "256M")])
def test_whole_image_shows_the_backup_read_only(files, mount, tmp_path, kind, size):
    # mkfs.xfs and mkfs.btrfs come with scripts/setup.sh: missing is a failure
    assert shutil.which(f"mkfs.{kind}"), f"mkfs.{kind} missing (scripts/setup.sh installs it)"
    m = mount
    sums = fs_volume(m, tmp_path, "db", size, kind, "backed-up")
    ver = disk_backup(m, "db")
    assert change_volume(m, tmp_path, "db", "changed") != sums
    d = tmp_path / "restore"
    assert files.ok("db", d) == f"{d}/disk {kind}\n"
    assert sums_of(d / "disk") == sums
    check_read_only(d / "disk")
    _, fstype = mount_opts(str(d / "disk"))
    assert fstype == kind
    st = state_of(d)
    image = os.path.realpath(m.vol("db", "history", ver, "image"))
    assert st["backing"] == [image] and st["version"] == [ver], st
    assert st["fs"] == [f"disk {kind}"], st
    assert stat.S_IMODE(os.stat(d / ".acmfiles").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    # one read-only loop device, on the history's image
    loops = loops_backed_by(m.mnt)
    assert list(loops.values()) == [image], loops
    loop = next(iter(loops))
    assert Path(f"/sys/block/{loop}/ro").read_text().strip() == "1"
    assert files.ok("-u", d) == ""
    files.assert_clean(d)


def test_unmount_waits_for_a_busy_subdir(files, mount, tmp_path):
    m = mount
    sums = fs_volume(m, tmp_path, "db", "64M", "ext4", "one")
    disk_backup(m, "db")
    d = tmp_path / "r"
    files.ok("db", d)
    name = sorted(sums)[0]
    fd = os.open(d / "disk" / name, os.O_RDONLY)
    try:
        files.fails(EXIT_BUSY, "-u", d, match=f"{d}/disk")
        assert mounts_under(d) == [f"{d}/disk"]
        st = state_of(d)       # rewritten with what is left, still valid
        assert st["fs"] == ["disk ext4"] and st["file"] == ["image"], st
        assert len(loops_backed_by(m.mnt)) == 1
    finally:
        os.close(fd)
    files.ok("-u", d)
    files.assert_clean(d)


# ----------------------------------------------------------- partitioned

def partition(data, label, parts):
    """parted: a label and partitions [(type-word, start MiB, end MiB)]."""
    args = ["parted", "-s", data, "mklabel", label]
    for word, a, b in parts:
        args += ["mkpart", *word.split(), f"{a}MiB", f"{b}MiB"]
    run(*args)


def test_gpt_image_ext4_and_xfs(files, mount, tmp_path):
    m = mount
    m.create_volume("pv", "512M", save=1)
    data = m.vol("pv", "data")
    layout = {"p1": ("ext4", 1, 129), "p2": ("xfs", 129, 511)}
    partition(data, "gpt", [("p1 ext4", 1, 129), ("p2 xfs", 129, 511)])
    want = {}
    for sub, (kind, a, b) in layout.items():
        region = (a * MiB, (b - a) * MiB)
        with Attached(data, tmp_path / f"live-{sub}", *region) as at:
            mkfs(kind, at.dev)
            want[sub] = write_files(at.mount(), f"{sub}-backed-up")
    disk_backup(m, "pv")
    for sub, (kind, a, b) in layout.items():
        change_volume(m, tmp_path, "pv", f"{sub}-later", (a * MiB, (b - a) * MiB))
    d = tmp_path / "restore"
    assert files.ok("pv", d) == f"{d}/p1 ext4\n{d}/p2 xfs\n"
    for sub in layout:
        assert sums_of(d / sub) == want[sub], sub
        check_read_only(d / sub)
    assert state_of(d)["fs"] == ["p1 ext4", "p2 xfs"]
    files.ok("-u", d)
    files.assert_clean(d)


def test_mbr_image_with_a_logical_partition(files, mount, tmp_path):
    m = mount
    m.create_volume("mb", "128M", save=1)
    data = m.vol("mb", "data")
    partition(data, "msdos", [("primary ext4", 1, 33), ("extended", 33, 127),
                              ("logical ext4", 34, 126)])
    want = {}
    for sub, (a, b) in {"p1": (1, 33), "p5": (34, 126)}.items():
        with Attached(data, tmp_path / f"live-{sub}", a * MiB, (b - a) * MiB) as at:
            mkfs("ext4", at.dev)
            want[sub] = write_files(at.mount(), sub)
    disk_backup(m, "mb")
    d = tmp_path / "restore"
    r = files.run("mb", d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{d}/p1 ext4\n{d}/p5 ext4\n"
    # a kernel that parses MBRs also lists the extended partition itself
    assert r.stderr in ("", "acmfiles: note: p2: no ext2/3/4, xfs or btrfs "
                            "filesystem; skipped\n"), r.stderr
    for sub in want:
        assert sums_of(d / sub) == want[sub], sub
    files.ok("-u", d)
    files.assert_clean(d)


def test_a_damaged_partition_undoes_the_mounted_ones(files, mount, tmp_path):
    """p1 mounts, p2 claims to be xfs but is not: nothing may remain."""
    m = mount
    m.create_volume("dm", "64M", save=1)
    data = m.vol("dm", "data")
    partition(data, "gpt", [("p1", 1, 33), ("p2", 33, 63)])
    with Attached(data, tmp_path / "live", 1 * MiB, 32 * MiB) as at:
        mkfs("ext4", at.dev)
        write_files(at.mount(), "x")
    fd = os.open(data, os.O_WRONLY)
    try:
        os.pwrite(fd, b"XFSB" + random.Random(1).randbytes(4092), 33 * MiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    disk_backup(m, "dm")
    d = tmp_path / "restore"
    files.fails(EXIT_FAIL, "dm", d, match="p2: the xfs filesystem of dm")
    files.assert_clean(d, exists=False)
    # an existing DIR stays, empty
    d.mkdir()
    files.fails(EXIT_FAIL, "dm", d, match="p2")
    files.assert_clean(d)


def test_an_interrupt_during_setup_undoes_it(files, acmfiles_bin, mount, tmp_path):
    """SIGTERM is held while setting up; one that arrived (here: sent while
    the parent had it blocked, a mask the child inherits) undoes the setup."""
    m = mount
    fs_volume(m, tmp_path, "db", "64M", "ext4", "one")
    disk_backup(m, "db")
    d = tmp_path / "r"
    env = dict(os.environ, ACMFS_MOUNT=str(m.mnt))
    p = subprocess.Popen(
        [str(acmfiles_bin), "db", str(d)], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}))
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 9, (p.returncode, err)
    assert out == "" and err == "acmfiles: error: interrupted: everything undone\n", err
    files.assert_clean(d, exists=False)


# ------------------------------------------------------------ refusals

def test_garbage_image_is_refused_and_leaves_nothing(files, mount, tmp_path):
    m = mount
    m.create_volume("junk", "16M", save=1)
    fd = os.open(m.vol("junk", "data"), os.O_WRONLY)
    try:
        os.pwrite(fd, random.Random(20).randbytes(16 * MiB), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    disk_backup(m, "junk")
    d = tmp_path / "restore"
    files.fails(EXIT_FAIL, "junk", d, match="no filesystem found in ")
    files.assert_clean(d, exists=False)
    d.mkdir()
    files.fails(EXIT_FAIL, "junk", d, match="no filesystem found in ")
    files.assert_clean(d)


def test_unmount_of_an_ordinary_directory_is_refused(files, mount, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "keep").write_text("x")
    files.fails(EXIT_NOENT, "-u", d, match="holds no acmfiles mount")
    files.fails(EXIT_NOENT, "-u", tmp_path / "missing")
    # a state file that is not one, or that others could have written
    st = d / ".acmfiles"
    st.write_text("acmfiles 1\nloop 0\nbacking /x\nfs ../.. ext4\n")
    os.chmod(st, 0o600)
    files.fails(EXIT_FAIL, "-u", d, match="not a valid acmfiles state file")
    st.write_text("acmfiles 1\nloop 0\nbacking /x\nfile image\nfs p1 ext4\n")
    os.chmod(st, 0o666)
    files.fails(7, "-u", d, match="not a state file of acmfiles")
    assert sorted(os.listdir(d)) == [".acmfiles", "keep"]


def test_dir_must_be_empty_and_options_checked(files, mount, tmp_path):
    m = mount
    fs_volume(m, tmp_path, "db", "64M", "ext4", "one")
    disk_backup(m, "db")
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    files.fails(EXIT_FAIL, "db", full, match="is not empty")
    assert os.listdir(full) == ["x"]
    d = tmp_path / "r"
    files.ok("db", d)
    files.fails(EXIT_BUSY, "db", d, match="already holds an acmfiles mount")
    assert mounts_under(d) == [f"{d}/disk"]
    files.ok("-u", d)
    for args in (["-g", "1", "-v", "1", "db", d], ["-g", "0", "db", d],
                 ["-m", "BOTH", "db", d], ["db"], ["-u", "-g", "1", d]):
        files.fails(EXIT_USAGE, *args)
    files.fails(EXIT_NOENT, "nosuch", d, match="no such volume")
    # root mounts below DIR: others must not be able to swap its entries
    os.chmod(d, 0o777)
    files.fails(7, "db", d, match="not be writable by group or others")
    os.chmod(d, 0o700)
    files.assert_clean(d)


# ------------------------------------------------- generations and tape

def test_generation_and_version_select_the_history(files, mount, tmp_path):
    m = mount
    sums = {1: fs_volume(m, tmp_path, "db", "64M", "ext4", "first")}
    v1 = disk_backup(m, "db")
    sums[2] = change_volume(m, tmp_path, "db", "second")
    v2 = disk_backup(m, "db")
    change_volume(m, tmp_path, "db", "third")
    d = tmp_path / "r"
    for args, want, ver in ((["-g", "2"], 1, v1), (["-v", v2], 2, v2), ([], 2, v2),
                            (["-g", "1", "-m", "DISK"], 2, v2),
                            (["-v", v1, "-m", "DISK"], 1, v1)):
        files.ok(*args, "db", d)
        assert sums_of(d / "disk") == sums[want], args
        assert state_of(d)["version"] == [ver]
        files.ok("-u", d)
    files.fails(EXIT_NOENT, "-g", "3", "db", d, match="no disk generation 3")
    files.fails(EXIT_NOENT, "-v", "99", "db", d, match="no version 99")
    files.fails(EXIT_NOENT, "-m", "TAPE", "db", d, match="no tape generation 1")
    files.assert_clean(d)


def test_tape_history(files, mount, tmp_path):
    """The store's default pool (file://STORE/tape)."""
    m = mount
    sums = fs_volume(m, tmp_path, "db", "64M", "ext4", "taped")
    kv = backup(m, "db", "-m TAPE")
    assert wait_hist(m, "db", kv["version"])["tape_status"] == "succeeded"
    change_volume(m, tmp_path, "db", "later")
    d = tmp_path / "r"
    files.ok("-m", "TAPE", "db", d)
    assert sums_of(d / "disk") == sums
    assert state_of(d)["backing"] == [
        os.path.realpath(m.vol("db", "history", kv["version"], "tape.img"))]
    files.ok("-u", d)
    # `image` of a tape-only history is its tape copy; it has no disk copy
    files.ok("db", d)
    assert sums_of(d / "disk") == sums
    files.ok("-u", d)
    files.fails(EXIT_NOENT, "-v", kv["version"], "-m", "DISK", "db", d,
                match="has no disk history")
    files.assert_clean(d)
