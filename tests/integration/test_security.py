"""Security of the mount (issue 8, suite 7).

- Without allow_other, another uid gets EACCES on everything under the mount.
- With -o allow_other, default_permissions is forced (the kernel checks modes;
  mountinfo shows it) and a non-owner cannot write any ctl, cannot write the
  volume data, cannot delete histories, and so cannot use `restore -r` to
  make the (root) daemon write anywhere.
- S3 credentials given through the environment or a 0600 credentials file
  never appear in the daemon's argv, mountinfo, any file of the mount
  (status.json, metrics, tables, logs, info), the store's files (catalog,
  acmfs.log), the daemon's stderr or a ctl reply — also when every request
  fails (an S3 pool on 127.0.0.1:9, where nothing listens) and errors are
  logged. A credentials file that others can read is refused.
- TLS peers are verified: an https endpoint with an untrusted certificate
  fails the tape copy (EACCES, the reason in the log); ca=PEM trusts it.
- Volume and pool names with '/', '..', NUL, a leading '.', or more than 64
  characters are refused with EINVAL and create nothing.

The non-owner is uid/gid 65534 with no groups, in a child process (setpriv),
so the tests need root; they skip otherwise.
"""

import errno
import json
import os
import stat
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import TIME_SCALE, make_traversable, run_as_nobody

NOBODY = 65534
JOB_TIMEOUT = 120 * TIME_SCALE

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root")


# ---------------------------------------------------------------- helpers

PROBE = r"""
import errno, json, os, sys
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
def write_file(p, data, flags=os.O_WRONLY):
    fd = os.open(p, flags)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def read_file(p):
    with open(p, "rb") as f:
        f.read(4096)
ops = json.loads(sys.argv[1])
for name, (op, path, arg) in ops.items():
    if op == "stat":
        attempt(name, lambda: os.stat(path))
    elif op == "listdir":
        attempt(name, lambda: os.listdir(path))
    elif op == "read":
        attempt(name, lambda: read_file(path))
    elif op == "write":
        attempt(name, lambda: write_file(path, arg.encode()))
    elif op == "rdwr":
        attempt(name, lambda: write_file(path, arg.encode(), os.O_RDWR))
    elif op == "unlink":
        attempt(name, lambda: os.unlink(path))
    elif op == "rmdir":
        attempt(name, lambda: os.rmdir(path))
    elif op == "chmod":
        attempt(name, lambda: os.chmod(path, 0o666))
    elif op == "truncate":
        attempt(name, lambda: os.truncate(path, 0))
    elif op == "mkdir":
        attempt(name, lambda: os.mkdir(path))
print(json.dumps(results))
"""


def as_nobody(ops):
    """Run {name: (op, path, arg)} as uid 65534; {name: "ok" | "EACCES" | ...}."""
    ops = {k: (v[0], str(v[1]), v[2] if len(v) > 2 else "") for k, v in ops.items()}
    r = run_as_nobody([sys.executable, "-c", PROBE, json.dumps(ops)], timeout=60)
    assert r.returncode == 0, f"probe failed: {r.stderr}"
    return json.loads(r.stdout)


def mountinfo_line(mnt):
    mnt = os.path.realpath(mnt)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4] == mnt:
                found = line
    assert found, f"{mnt} not in mountinfo"
    return found


def mount_options(mnt):
    """(per-mount options, super options) of the mount at mnt."""
    fields = mountinfo_line(mnt).split()
    sep = fields.index("-", 6)
    return set(fields[5].split(",")), set(fields[sep + 3].split(","))


def vol_data(m, name):
    with open(m.vol(name, "data"), "rb") as f:
        return f.read()


def write_vol(m, name, data, off=0):
    fd = os.open(m.vol(name, "data"), os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, off) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def hist_info(m, vol, v):
    try:
        return m.read_info(f"volumes/{vol}/history/{v}/info")
    except FileNotFoundError:
        return None


def wait_done(m, vol, v, timeout=JOB_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        info = hist_info(m, vol, v)
        if info is not None and info.get("disk_status") != "executing" \
                and info.get("tape_status") != "executing":
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"{vol} version {v} still executing after "
                                 f"{timeout:g} s: {info}")
        time.sleep(0.1)


def open_tree(m):
    """Make the way to the mount point traversable by nobody (tmp_path is
    0700); the mount's own modes are the daemon's business."""
    make_traversable(m.mnt.parent)


# ---------------------------------------------------------------- access

def test_private_mount_others_get_eacces(mount):
    """(The name avoids the words of the mount option: see the next test.)"""
    m = mount
    m.create_volume("db", "4M")
    write_vol(m, "db", b"x" * 4096)
    open_tree(m)
    res = as_nobody({
        "stat_root": ("stat", m.mnt / "README"),
        "list": ("listdir", m.mnt),
        "read_readme": ("read", m.mnt / "README"),
        "read_data": ("read", m.vol("db", "data")),
        "write_ctl": ("write", m.ctl_path(), "volume create evil 4M\n"),
        "write_vctl": ("write", m.ctl_path("db"), "backup -m DISK\n"),
        "write_data": ("write", m.vol("db", "data"), "evil"),
    })
    assert res == {k: "EACCES" for k in res}, res
    # nothing changed
    assert not m.vol("evil").exists()
    assert vol_data(m, "db")[:4096] == b"x" * 4096
    assert not list(m.vol("db", "history").iterdir())
    # the owner's own modes are private
    assert stat.S_IMODE(os.stat(m.vol("db", "data")).st_mode) & 0o077 == 0
    assert stat.S_IMODE(os.stat(m.mnt / "volumes").st_mode) & 0o077 == 0


def test_option_word_in_a_path_opens_nothing(mount_factory):
    """Only `-o allow_other` opens the mount: the words in the store or mount
    point path (here .../x_allow_other_dir/store and .../mnt) must not make
    the daemon believe it was given (fs/main.c once looked for the substring
    in every argument), which widens every mode to 0644/0755."""
    m = mount_factory(name="x_allow_other_dir")
    per_mount, sup = mount_options(m.mnt)
    assert "allow_other" not in sup | per_mount
    m.create_volume("db", "4M")
    modes = {p: stat.S_IMODE(os.stat(m.path(*p.split("/"))).st_mode)
             for p in ("volumes", "volumes/db", "volumes/db/data", "ctl", "status.json",
                       "volumes/db/log")}
    wide = {p: oct(md) for p, md in modes.items() if md & 0o077}
    assert not wide, f"modes open to others without allow_other: {wide}"
    assert "default_permissions" not in sup | per_mount


def test_allow_other_forces_default_permissions(mount_factory, tmp_path):
    m = mount_factory(opts=["-o", "allow_other"], name="ao")
    per_mount, sup = mount_options(m.mnt)
    assert "default_permissions" in sup | per_mount, mountinfo_line(m.mnt)
    assert "allow_other" in sup | per_mount, mountinfo_line(m.mnt)

    m.create_volume("db", "4M")
    ref = os.urandom(1 << 20)
    write_vol(m, "db", ref)
    v = int(m.parse_reply(m.ctl("backup -m DISK", "db"))["version"])
    wait_done(m, "db", v)
    hist_before = m.vol("db", "histdisp").read_text()
    open_tree(m)

    # a world-writable place the root daemon could write to, if it were asked
    drop = tmp_path / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)
    make_traversable(drop)
    target = drop / "restored.img"
    hist = m.vol("db", "history", str(v))

    res = as_nobody({
        # reading is what allow_other is for
        "read_readme": ("read", m.mnt / "README"),
        "list_volumes": ("listdir", m.mnt / "volumes"),
        "read_histdisp": ("read", m.vol("db", "histdisp")),
        # but no ctl, no data, no history changes, no attribute changes
        "ctl_global": ("write", m.ctl_path(), "volume create evil 4M\n"),
        "ctl_global_rdwr": ("rdwr", m.ctl_path(), "pool delete default\n"),
        "ctl_backup": ("write", m.ctl_path("db"), "backup -m DISK\n"),
        "ctl_histdel": ("rdwr", m.ctl_path("db"), f"histdel -v {v}\n"),
        "ctl_restore_r": ("write", m.ctl_path("db"), f"restore -v {v} -r {target}\n"),
        "ctl_restore_r_rdwr": ("rdwr", m.ctl_path("db"), f"restore -r {target}\n"),
        "ctl_restore": ("write", m.ctl_path("db"), "restore\n"),
        "ctl_canceltrk": ("write", m.ctl_path("db"), "canceltrk -all\n"),
        "write_data": ("write", m.vol("db", "data"), "evil"),
        "rdwr_data": ("rdwr", m.vol("db", "data"), "evil"),
        "truncate_data": ("truncate", m.vol("db", "data")),
        "rm_disk_img": ("unlink", hist / "disk.img"),
        "rmdir_hist": ("rmdir", hist),
        "chmod_ctl": ("chmod", m.ctl_path()),
        "chmod_data": ("chmod", m.vol("db", "data")),
        "mkdir_vol": ("mkdir", m.mnt / "volumes" / "evil"),
    })
    for k in ("read_readme", "list_volumes", "read_histdisp"):
        assert res.pop(k) == "ok", k
    bad = {k: r for k, r in res.items() if r not in ("EACCES", "EPERM")}
    assert not bad, f"a non-owner got through: {bad}"

    # nothing changed
    assert not target.exists(), "restore -r wrote a file for a non-owner"
    assert not m.vol("evil").exists()
    assert vol_data(m, "db")[:len(ref)] == ref
    assert m.vol("db", "histdisp").read_text() == hist_before
    assert (hist / "disk.img").read_bytes()[:len(ref)] == ref
    assert stat.S_IMODE(os.stat(m.ctl_path()).st_mode) & 0o022 == 0
    assert stat.S_IMODE(os.stat(m.vol("db", "data")).st_mode) & 0o022 == 0

    # the owner (root) still can, on the same mount
    m.ctl(f"restore -v {v} -r {target}", "db")
    deadline = time.monotonic() + JOB_TIMEOUT
    while (not target.exists() or target.stat().st_size < len(ref)) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert target.read_bytes()[:len(ref)] == ref


# ---------------------------------------------------------------- credentials

def _all_text_under(root, skip_names=("data", "image", "disk.img", "tape.img")):
    """{path: bytes} of every regular file under root (mount or store)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for fn in filenames:
            if fn in skip_names:
                continue
            p = os.path.join(dirpath, fn)
            try:
                with open(p, "rb") as f:
                    out[p] = f.read(64 << 20)
            except OSError:
                pass
    return out


def _ctl_reply(m, cmd, vol=None):
    err, reply = m.ctl_err(cmd, vol)
    return err, reply


def test_credentials_never_appear(mount_factory, tmp_path):
    secret_env = "envSECRET" + uuid.uuid4().hex
    key_env = "AKIAENV" + uuid.uuid4().hex[:12].upper()
    secret_file = "fileSECRET" + uuid.uuid4().hex
    key_file = "AKIAFILE" + uuid.uuid4().hex[:12].upper()
    secret_loose = "looseSECRET" + uuid.uuid4().hex
    secret_ctl = "ctlSECRET" + uuid.uuid4().hex
    secrets = [secret_env, secret_file, secret_loose, secret_ctl]

    cred = tmp_path / "s3.cred"
    cred.write_text(f"access_key_id={key_file}\nsecret_access_key={secret_file}\n")
    os.chmod(cred, 0o600)
    loose = tmp_path / "loose.cred"
    loose.write_text(f"access_key_id=AKIALOOSE\nsecret_access_key={secret_loose}\n")
    os.chmod(loose, 0o644)

    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID=key_env, AWS_SECRET_ACCESS_KEY=secret_env,
               AWS_DEFAULT_REGION="us-east-1")
    m = mount_factory(env=env, name="cred")
    replies = []

    def ctl(cmd, vol=None, ok=True):
        err, reply = m.ctl_err(cmd, vol)
        replies.append(reply)        # what the daemon said, not what we sent
        if ok:
            assert err == 0, f"{cmd!r}: {os.strerror(err)}: {reply}"
        return err, reply

    dead = "endpoint=http://127.0.0.1:9 region=us-east-1 path_style=1 encrypt=none retries=0"
    # pool create reads the store at once: against a dead endpoint it fails,
    # with the credentials loaded and used for signing
    for cmd in (f"pool create envpool s3://bucket/env {dead}",
                f"pool create filepool s3://bucket/file {dead} credentials={cred}"):
        err, reply = ctl(cmd, ok=False)
        assert err in (errno.EIO, errno.ETIMEDOUT, errno.ECONNREFUSED), reply

    # a credentials file others can read is refused, and nothing is created
    err, reply = ctl(f"pool create loosepool s3://bucket/x {dead} credentials={loose}",
                     ok=False)
    assert err != 0, f"a 0644 credentials file was accepted: {reply}"
    assert "loosepool" not in m.path("status.json").read_text()

    # secrets in a ctl line are refused (and must not be echoed or logged)
    for bad in (f"pool create p1 s3://AKIA:{secret_ctl}@bucket/x {dead}",
                f"pool create p2 s3://bucket/x {dead} secret_access_key={secret_ctl}",
                f"pool create p3 s3://bucket/x {dead} aws_secret_access_key={secret_ctl}"):
        err, _ = ctl(bad, ok=False)
        assert err == errno.EINVAL, bad

    ctl("pool import filepool", ok=False)

    # collect every place a credential could surface
    places = {}
    pid = m.proc.pid
    places[f"/proc/{pid}/cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes()
    places["mountinfo"] = Path("/proc/self/mountinfo").read_bytes()
    places.update(_all_text_under(m.mnt))
    # the store: catalog (+WAL), acmfs.log, per-volume files, tape dir
    places.update(_all_text_under(m.store, skip_names=()))
    places["ctl replies"] = "\n".join(replies).encode()
    m.stop()
    places["daemon stderr"] = m.stderr_path.read_bytes()
    places.update({k: v for k, v in _all_text_under(m.store, skip_names=()).items()})

    assert any(p.endswith("status.json") for p in places), "status.json not read"
    assert any(p.endswith("/log") for p in places), "no log read"
    # the failures did get logged (so the grep below means something)
    logs = b"".join(v for k, v in places.items() if k.endswith("/log")
                    or k == "daemon stderr" or k.endswith("acmfs.log"))
    assert b"failed" in logs or b"error" in logs, "no error was logged"

    leaks = [(s, where) for s in secrets for where, data in places.items()
             if s.encode() in data]
    assert not leaks, "secrets found: " + ", ".join(
        f"{s[:12]}… in {w}" for s, w in leaks)
    # the access key ids are not secret to AWS, but the spec says no
    # credential appears in output or logs
    ids = [(k, where) for k in (key_env, key_file) for where, data in places.items()
           if k.encode() in data]
    assert not ids, "access key ids found: " + ", ".join(f"{k} in {w}" for k, w in ids)


# ---------------------------------------------------------------- names

BAD_NAMES = [
    b"a/b", b"..", b"../x", b"x/..", b".", b".hidden", b"a" * 65, b"a\x00b", b"/abs",
    b"-dash", b"a b", b"\xc3\xa9t\xc3\xa9", b"a\\b", b"a*", b"$(id)",
]


def store_tree(store):
    """Every path in the store but the logs and the catalog's own files."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(store):
        for n in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, n), store)
            if rel.startswith("log") or rel.startswith("catalog.db") or \
                    rel == "acmfs.log":
                continue
            out.add(rel)
    return out


@pytest.mark.parametrize("name", BAD_NAMES, ids=lambda n: repr(n)[2:-1][:20])
def test_bad_names_refused(mount, name):
    m = mount
    before_vols = sorted(os.listdir(m.mnt / "volumes"))
    before_tree = store_tree(m.store)
    status = m.path("status.json").read_text()
    cmds = [b"volume create " + name + b" 4M\n",
            b"pool create " + name + b" file://" + str(m.store.parent / "pool").encode()
            + b"\n"]
    for cmd in cmds:
        err, reply = m.ctl_err(cmd)
        assert err == errno.EINVAL, (cmd, err, reply)
        assert reply.startswith("error"), reply
    assert sorted(os.listdir(m.mnt / "volumes")) == before_vols
    assert store_tree(m.store) == before_tree
    assert m.path("status.json").read_text() == status
    assert not (m.store.parent / "pool").exists()


def test_name_limits_accepted(mount):
    """The boundary: 64 characters of the allowed set are fine."""
    m = mount
    name = "A1._-" + "z" * 59
    assert len(name) == 64
    m.create_volume(name, "4M")
    assert m.vol(name, "data").stat().st_size == 4 << 20
    m.ctl(f"pool create {name} file://{m.store.parent / 'pool64'}")
    assert name in m.path("status.json").read_text()


def test_tls_peer_is_verified(mount_factory, s3rver_tls):
    """An https endpoint whose certificate nothing trusts is refused (the
    tape copy fails, the log says why); trusting it with ca=PEM works, and
    the tape image then reads back exactly."""
    m = mount_factory(env=s3rver_tls.env(), name="tls")
    ep = f"endpoint={s3rver_tls} region=us-east-1 path_style=1 encrypt=none"
    # pool create reads the store (its config) at once: refused, not retried
    err, reply = m.ctl_err(f"pool create untrusted s3://{s3rver_tls.bucket}/untrusted {ep}")
    assert err == errno.EACCES, reply
    assert "Permission denied" in reply, reply
    assert "certificate" in m.stderr_path.read_text()  # the backend's reason
    assert "untrusted" not in m.path("status.json").read_text()
    m.ctl(f"pool create trusted s3://{s3rver_tls.bucket}/trusted {ep} ca={s3rver_tls.ca}")
    m.create_volume("v", "4M")
    data = os.urandom(4 << 20)
    write_vol(m, "v", data)

    m.ctl("tapepolicy v pool=trusted")
    v2 = m.parse_reply(m.ctl("backup -m TAPE", vol="v"))["version"]
    assert wait_done(m, "v", v2)["tape_status"] == "succeeded"
    assert m.vol("v", "history", v2, "tape.img").read_bytes() == data
