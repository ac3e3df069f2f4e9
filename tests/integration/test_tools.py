"""The acm* tools against a real mount (tools/, docs/ctl-protocol.md).

Every tool runs as a subprocess on a mount made by conftest's `mount`
fixture; its exit status, stdout, stderr and --json output are checked
against the ctl replies, info files, tables and status.json of the same
mount. The source text's examples (acm-tso-14.0-7.4.9) are run with this
project's device names and must print exactly the lines it shows.

Capability probes: restore and tape copies are skipped only when the daemon
rejects the command word itself as unknown (EINVAL with "unknown" in the
reason); any other refusal is a failure.
"""

import errno
import json
import os
import shlex
import shutil
import subprocess

import pytest

from conftest import REPO

TOOLS = ["acmbackup", "acmrestore", "acmhistdisp", "acmhistdel", "acmtrkstat",
         "acmcanceltrk", "acmdevdisp", "acmtphistcopy", "acmadm"]

EXIT_USAGE, EXIT_NOENT, EXIT_BUSY, EXIT_NOSPC = 2, 3, 4, 5
EXIT_EXIST, EXIT_NOMOUNT = 8, 11

MiB = 1 << 20


# --------------------------------------------------------------------- helpers

@pytest.fixture(scope="session")
def tools_dir(build_dir):
    d = build_dir / "tools"
    missing = [t for t in TOOLS if not os.access(d / t, os.X_OK)]
    if missing:
        pytest.fail(f"tools not built in {d}: {', '.join(missing)}")
    return d


def base_env(mnt=None):
    env = {k: v for k, v in os.environ.items() if k != "ACMFS_MOUNT"}
    if mnt is not None:
        env["ACMFS_MOUNT"] = str(mnt)
    return env


class Tools:
    """Runs the tools of one build against one mount (via ACMFS_MOUNT)."""

    def __init__(self, tools_dir, mount):
        self.dir = tools_dir
        self.m = mount

    def run(self, tool, *args, env=None, cwd=None, timeout=120):
        return subprocess.run([str(self.dir / tool), *map(str, args)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout,
                              env=base_env(self.m.mnt) if env is None else env,
                              cwd=cwd)

    def ok(self, tool, *args, **kw):
        r = self.run(tool, *args, **kw)
        assert r.returncode == 0, \
            f"{tool} {args} -> {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        assert r.stderr == "", f"unexpected stderr from {tool}: {r.stderr!r}"
        return r.stdout

    def fails(self, code, tool, *args, match=None, **kw):
        """Expect exit `code` and exactly one `TOOL: error: …` line."""
        r = self.run(tool, *args, **kw)
        assert r.returncode == code, \
            f"{tool} {args} -> {r.returncode}, want {code}\n" \
            f"stdout: {r.stdout}\nstderr: {r.stderr}"
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), \
            f"want one error line, got {r.stderr!r}"
        assert r.stdout == ""
        if match:
            assert match in lines[0], f"{match!r} not in {lines[0]!r}"
        return lines[0]

    def json(self, tool, *args, **kw):
        return json.loads(self.ok(tool, *args, "--json", **kw))


@pytest.fixture
def tools(tools_dir, mount):
    return Tools(tools_dir, mount)


def status(mount):
    return json.loads(mount.path("status.json").read_text())


def status_volume(mount, vol):
    for v in status(mount)["volumes"]:
        if v["name"] == vol:
            return v
    raise AssertionError(f"{vol} not in status.json")


def write_pattern(mount, vol, byte, length=4 * MiB, off=0):
    with open(mount.vol(vol, "data"), "r+b") as f:
        f.seek(off)
        f.write(bytes([byte]) * length)
        f.flush()
        os.fsync(f.fileno())


def read_data(mount, vol, length=4 * MiB, off=0):
    with open(mount.vol(vol, "data"), "rb") as f:
        f.seek(off)
        return f.read(length)


def history_info(mount, vol, version):
    return mount.read_info(f"volumes/{vol}/history/{version}/info")


def histories(mount, vol):
    d = mount.vol(vol, "history")
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def table_rows(text):
    """Rows (as word lists) of a table file, header first."""
    return [ln.split() for ln in text.splitlines() if ln.strip()]


def require_command(mount, cmd, vol=None):
    """Fail when the daemon does not know the command word at all.

    Returns (errno, reply) of the probe for the caller to use or ignore.
    """
    err, reply = mount.ctl_err(cmd, vol)
    if err == errno.EINVAL and "unknown" in reply.lower():
        pytest.fail(f"daemon does not implement {cmd.split()[0]!r}: {reply.strip()}")
    return err, reply


@pytest.fixture
def db(mount):
    """Volume `db` of 64 MiB (two backup volumes) with some data."""
    mount.create_volume("db", "64M")
    write_pattern(mount, "db", 0xA1)
    return "db"


# --------------------------------------------------------------------- no mount needed

@pytest.mark.parametrize("tool", TOOLS)
def test_help_and_version(tools_dir, tool):
    r = subprocess.run([str(tools_dir / tool), "--help"], capture_output=True,
                       text=True, env=base_env())
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith(f"usage: {tool}")
    assert "--json" in r.stdout and "-M DIR" in r.stdout
    r = subprocess.run([str(tools_dir / tool), "--version"], capture_output=True,
                       text=True, env=base_env())
    assert r.returncode == 0
    assert r.stdout.startswith(f"{tool} (acmfs) ")


USAGE_ERRORS = [
    ("acmbackup", [], "DEVICE is required"),
    ("acmbackup", ["-x", "db"], "unknown option '-x'"),
    ("acmbackup", ["-m", "FLOPPY", "db"], "-m takes"),
    ("acmbackup", ["-b", "WEEK", "db"], "-b takes"),
    ("acmbackup", ["-T", "-T", "db"], "given twice"),
    ("acmbackup", ["-w", "-m", "TAPE", "db"], "-w cannot"),
    ("acmbackup", ["db", "-m"], "needs"),
    ("acmbackup", ["db", "mail"], "unexpected argument"),
    ("acmrestore", ["-g", "1", "-v", "2", "db"], "exclude"),
    ("acmrestore", ["-g", "one", "db"], "takes a number"),
    ("acmrestore", ["-m", "BOTH", "db"], "-m takes"),
    ("acmrestore", ["-r", "a b.img", "db"], "blanks"),
    ("acmhistdel", ["db"], "exactly one of"),
    ("acmhistdel", ["-z", "-g", "1", "db"], "exactly one of"),
    ("acmhistdisp", ["-m", "BOTH"], "-m takes"),
    ("acmcanceltrk", ["db"], "exactly one of"),
    ("acmcanceltrk", ["db", "-bd", "db.bv1", "-all"], "exactly one of"),
    ("acmcanceltrk", ["db", "-bd", "../x"], "bad backup volume name"),
    ("acmdevdisp", ["-t", "-b"], "exclude"),
    ("acmtphistcopy", ["-g", "1", "-v", "1", "db"], "exclude"),
    ("acmtrkstat", ["--bogus"], "unknown option"),
    ("acmadm", [], "command is required"),
    ("acmadm", ["frobnicate"], "unknown command"),
    ("acmadm", ["volume", "create", "x"], "wrong number of arguments"),
]


@pytest.mark.parametrize("tool,args,match", USAGE_ERRORS,
                         ids=[f"{t}-{'_'.join(a) or 'none'}" for t, a, _ in USAGE_ERRORS])
def test_usage_errors(tools_dir, tool, args, match):
    r = subprocess.run([str(tools_dir / tool), *args], capture_output=True,
                       text=True, env=base_env("/nonexistent"))
    assert r.returncode == EXIT_USAGE, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), r.stderr
    assert match in lines[0]
    assert r.stdout == ""


def test_mount_not_acmfs(tools_dir, tmp_path):
    for args, env in ((["-M", tmp_path], base_env()), ([], base_env(tmp_path))):
        r = subprocess.run([str(tools_dir / "acmtrkstat"), *map(str, args)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == EXIT_NOMOUNT
        assert r.stderr.startswith("acmtrkstat: error: ")
        assert "is not an acmfs mount" in r.stderr


def acmfs_mounts():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-", 6)
            if fields[sep + 1] == "fuse.acmfs":
                out.append(fields[4])
    return out


def test_no_mount_found(tools_dir):
    if acmfs_mounts():
        pytest.skip("an acmfs mount exists on this machine")
    r = subprocess.run([str(tools_dir / "acmdevdisp")], capture_output=True,
                       text=True, env=base_env())
    assert r.returncode == EXIT_NOMOUNT
    assert r.stderr == ("acmdevdisp: error: no acmfs mount found; mount one, "
                        "or give -M DIR or ACMFS_MOUNT\n")


# --------------------------------------------------------------------- mount discovery

def test_mount_discovery(tools_dir, mount_factory):
    a = mount_factory(name="a")
    a.create_volume("db", "16M")
    t = Tools(tools_dir, a)
    # -M, ACMFS_MOUNT
    assert "db" in t.ok("acmdevdisp", "-M", a.mnt, env=base_env())
    assert "db" in t.ok("acmdevdisp", env=base_env(a.mnt))
    # the path of a data file names its own mount
    out = t.ok("acmbackup", "-m", "DISK", a.vol("db", "data"), env=base_env())
    assert out == f"{a.vol('db', 'data')} acmbackup completed\n"
    # the only acmfs mount in mountinfo
    if acmfs_mounts() == [str(a.mnt)]:
        assert "db" in t.ok("acmdevdisp", env=base_env())
    # several mounts, none chosen
    b = mount_factory(name="b")
    r = t.run("acmdevdisp", env=base_env())
    assert r.returncode == EXIT_NOMOUNT
    assert r.stderr.startswith("acmdevdisp: error: several acmfs mounts (")
    assert str(a.mnt) in r.stderr and str(b.mnt) in r.stderr
    # a path on the other mount than -M names
    t.fails(EXIT_USAGE, "acmbackup", "-M", b.mnt, a.vol("db", "data"),
            env=base_env(), match="is not on the acmfs mount")


def test_device_errors(tools, mount, db):
    tools.fails(EXIT_NOENT, "acmbackup", "nosuch", match="no such volume: nosuch")
    tools.fails(EXIT_NOENT, "acmbackup", "bad/../name", match="bad/../name")
    tools.fails(EXIT_USAGE, "acmbackup", "-bad!", match="unknown option")
    tools.fails(EXIT_USAGE, "acmbackup", "db!", match="bad device name")
    tools.fails(EXIT_USAGE, "acmbackup", mount.mnt / "ctl",
                match="is not the data file")
    tools.fails(EXIT_NOENT, "acmbackup", mount.vol("zz", "data"))
    for tool in ("acmtrkstat", "acmdevdisp", "acmhistdisp"):
        tools.fails(EXIT_NOENT, tool, "nosuch", match="no such volume")
    # relative path of the data file, from inside the mount
    out = tools.ok("acmbackup", "-m", "DISK", "volumes/db/data", cwd=mount.mnt)
    assert out == "volumes/db/data acmbackup completed\n"


# --------------------------------------------------------------------- acmbackup

def test_acmbackup_source_example(tools, mount, db):
    """# acmbackup -T /dev/dsk/c1t0d1s1  ->  /dev/dsk/c1t0d1s1 acmbackup completed"""
    r = tools.run("acmbackup", "-T", "db")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "db acmbackup completed\n"
    assert r.stderr == ""
    v = histories(mount, "db")[-1]
    info = history_info(mount, "db", v)
    assert info["differential"] == "1"
    assert info["media"] == "BOTH"
    # waited: neither side is still executing, and both succeeded
    assert info["disk_status"] == "succeeded"
    assert info["tape_status"] == "succeeded"


def test_acmbackup_json_matches_state(tools, mount, db):
    doc = tools.json("acmbackup", "-T", "-m", "DISK", "db")
    assert doc["device"] == "db" and doc["command"] == "acmbackup"
    assert doc["result"] == "completed"
    rep = doc["reply"]
    assert rep["volume"] == "db" and rep["media"] == "DISK"
    assert rep["copy"] == "full"         # first -T backup to a BV is full
    info = history_info(mount, "db", rep["version"])
    assert str(rep["version"]) == info["version"]
    assert rep["bv"] == info["bv"]
    hist = doc["history"]
    assert hist["disk_status"] == "succeeded" == info["disk_status"]
    assert hist["tape_status"] == "none"
    assert hist["generation"] == 1
    sv = status_volume(mount, "db")
    h = [h for h in sv["histories"] if h["version"] == rep["version"]][0]
    assert h["disk"]["bv"] == rep["bv"] and h["differential"] is True


def test_acmbackup_differential_second(tools, mount, db):
    first = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    second = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    assert first["bv"] != second["bv"]       # save=2: each BV its own pair
    write_pattern(mount, "db", 0xB2, length=64 * 1024)
    third = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    assert third["bv"] == first["bv"]
    assert third["copy"] == "diff"
    assert third["grains"] >= 1


def test_acmbackup_w_returns_with_disk_history(tools, mount, db):
    out = tools.ok("acmbackup", "-w", "db")
    assert out == "db acmbackup completed\n"
    v = histories(mount, "db")[-1]
    info = history_info(mount, "db", v)
    assert info["generation"] == "1"
    assert info["disk_status"] in ("executing", "succeeded")
    assert mount.vol("db", "history", str(v), "disk.img").exists()
    doc = tools.json("acmbackup", "-w", "-m", "DISK", "db")
    assert "history" not in doc and doc["reply"]["media"] == "DISK"


def test_acmbackup_errors(tools, mount, db):
    # -T with -m TAPE: refused by the daemon (EINVAL), nothing changes
    before = histories(mount, "db")
    line = tools.fails(EXIT_USAGE, "acmbackup", "-T", "-m", "TAPE", "db")
    assert histories(mount, "db") == before
    err, reply = mount.ctl_err("backup -T -m TAPE", "db")
    assert err == errno.EINVAL
    first = reply.splitlines()[0]
    assert first.startswith("error: ")
    assert line == "acmbackup: error: " + first[len("error: "):]


def test_volume_without_backup_volume_is_refused(mount):
    # every volume has at least one BV (save >= 1), so acmbackup's ENOSPC
    # "no backup volume" cannot arise; save=0 itself is a clear EINVAL
    err, reply = mount.ctl_err("volume create nobv 16M save=0")
    assert err == errno.EINVAL, reply
    assert not (mount.mnt / "volumes" / "nobv").exists()


def test_progress_bar_only_on_a_terminal(tools, mount, db):
    if not shutil.which("script"):
        pytest.skip("script(1) missing")
    tool = tools.dir / "acmbackup"
    cmd = f"{shlex.quote(str(tool))} -m DISK db"
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True,
                       text=True, env=base_env(mount.mnt), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "db acmbackup completed" in r.stdout
    assert "100%" in r.stdout and "ETA" in r.stdout and "[" in r.stdout
    # the same in a pipe: no bar, no escape codes, nothing on stderr
    r = tools.run("acmbackup", "-m", "DISK", "db")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == "db acmbackup completed\n"


def test_acmrestore_progress_on_terminal(tools, mount, db):
    require_command(mount, "restore -v 999999", "db")
    tools.ok("acmbackup", "-m", "DISK", "db")
    tool = tools.dir / "acmrestore"
    r = subprocess.run(["script", "-qec", f"{shlex.quote(str(tool))} db", "/dev/null"],
                       capture_output=True, text=True, env=base_env(mount.mnt),
                       timeout=120)
    assert r.returncode == 0, r.stdout
    assert "db acmrestore completed" in r.stdout


# --------------------------------------------------------------------- acmtrkstat / acmcanceltrk

TRK_HEADER = "Server Transaction-Disk Backup-Disk Status Execute Update".split()


def test_acmtrkstat_source_example(tools, mount, db):
    out = tools.ok("acmtrkstat")
    rows = table_rows(out)
    assert rows[0] == TRK_HEADER and len(rows) == 1       # nothing tracks yet
    rep = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    out = tools.ok("acmtrkstat")
    assert out == mount.path("trkstat").read_text()
    rows = table_rows(out)
    assert rows[0] == TRK_HEADER
    assert len(rows) == 2
    server, tv, bv, st, execute, update = rows[1]
    assert (tv, bv) == ("db", rep["bv"])
    assert st in ("tracking", "executing")
    if st == "tracking":
        assert execute == "----" and update.endswith("%")
    # per device
    assert table_rows(tools.ok("acmtrkstat", "db")) == rows
    # --json against status.json
    doc = tools.json("acmtrkstat")
    assert len(doc) == 1
    row = doc[0]
    assert set(row) == {"server", "transaction_disk", "backup_disk", "status",
                        "execute", "update"}
    assert row["server"] == status(mount)["server"]
    bvs = {b["name"]: b for b in status_volume(mount, "db")["backup_volumes"]}
    b = bvs[row["backup_disk"]]
    assert b["tracking"] is True
    assert row["status"] == b["status"]
    if row["status"] == "tracking":
        assert row["execute"] is None
        assert row["update"] == b["update"]
    assert tools.json("acmtrkstat", "db") == doc


def test_acmcanceltrk_source_example(tools, mount, db):
    """# acmcanceltrk DEV -bd BD  ->  DEV acmcanceltrk completed"""
    rep = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    assert rep["bv"] == "db.bv1"
    r = tools.run("acmcanceltrk", "db", "-bd", "db.bv1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "db acmcanceltrk completed\n" and r.stderr == ""
    assert len(table_rows(tools.ok("acmtrkstat"))) == 1
    bvs = {b["name"]: b for b in status_volume(mount, "db")["backup_volumes"]}
    assert bvs["db.bv1"]["tracking"] is False
    # the next -T backup to that BV is full again
    tools.ok("acmbackup", "-T", "-m", "DISK", "db")          # -> db.bv2
    again = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    assert again["bv"] == "db.bv1" and again["copy"] == "full"


def test_acmcanceltrk_all_and_errors(tools, mount, db):
    tools.ok("acmbackup", "-T", "-m", "DISK", "db")
    tools.ok("acmbackup", "-T", "-m", "DISK", "db")
    assert len(table_rows(tools.ok("acmtrkstat"))) == 3
    doc = tools.json("acmcanceltrk", "-all", "db")
    assert doc["result"] == "completed" and doc["reply"]["volume"] == "db"
    assert sorted(str(doc["reply"]["bv"]).split(",")) == ["db.bv1", "db.bv2"]
    assert len(table_rows(tools.ok("acmtrkstat"))) == 1
    tools.fails(EXIT_NOENT, "acmcanceltrk", "db", "-bd", "db.bv9")
    tools.fails(EXIT_NOENT, "acmcanceltrk", "nosuch", "-all")


# --------------------------------------------------------------------- acmdevdisp

DEV_HEADER = "Server Device Size Device-Mode Mount-Point Backup-Engine".split()


def devdisp_modes(text):
    out = {}
    for ln in text.splitlines()[1:]:
        w = ln.split()
        if w:
            out[w[1]] = "Transaction" if w[4] == "Transaction" else " ".join(w[4:6])
    return out


def test_acmdevdisp(tools, mount, db):
    out = tools.ok("acmdevdisp")
    assert out == mount.path("devdisp").read_text()
    assert table_rows(out)[0] == DEV_HEADER
    assert devdisp_modes(out) == {"db": "Transaction", "db.bv1": "Backup (free)",
                                  "db.bv2": "Backup (free)"}
    assert "64.0 Mbyte" in out
    assert devdisp_modes(tools.ok("acmdevdisp", "-t")) == {"db": "Transaction"}
    assert set(devdisp_modes(tools.ok("acmdevdisp", "-b"))) == {"db.bv1", "db.bv2"}
    assert devdisp_modes(tools.ok("acmdevdisp", "db")) == devdisp_modes(out)
    doc = tools.json("acmdevdisp")
    sv = status_volume(mount, "db")
    assert [d["device"] for d in doc] == ["db", "db.bv1", "db.bv2"]
    tv = doc[0]
    assert tv["device_mode"] == "Transaction"
    assert tv["mount_point"] == "volumes/db/data"
    assert tv["size"] == "64.0 Mbyte" and tv["size_bytes"] == sv["size"]
    assert tv["backup_engine"] == "AdvancedCopy"
    assert tv["server"] == status(mount)["server"]
    for d in doc[1:]:
        assert d["mount_point"] is None
        b = [b for b in sv["backup_volumes"] if b["name"] == d["device"]][0]
        assert d["device_mode"] == b["mode"]
    assert [d["device"] for d in tools.json("acmdevdisp", "-b")] == ["db.bv1", "db.bv2"]


def test_acmdevdisp_used_T(tools, mount, db):
    """Source text: after deleting a -T history the BV is `Backup (used)`,
    and `Backup (used-T)` with -u."""
    rep = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    bv, v = rep["bv"], rep["version"]
    assert devdisp_modes(tools.ok("acmdevdisp", "-b"))[bv] == "Backup (used)"
    tools.ok("acmhistdel", "-v", v, "db")
    assert devdisp_modes(tools.ok("acmdevdisp"))[bv] == "Backup (used)"
    assert devdisp_modes(tools.ok("acmdevdisp", "-u"))[bv] == "Backup (used-T)"
    doc = tools.json("acmdevdisp", "-u", "-b")
    assert {d["device"]: d["device_mode"] for d in doc}[bv] == "Backup (used-T)"
    # a conventional backup frees its BV when the history goes
    rep = tools.json("acmbackup", "-m", "DISK", "db")["reply"]
    tools.ok("acmhistdel", "-v", rep["version"], "db")
    assert devdisp_modes(tools.ok("acmdevdisp", "-u"))[rep["bv"]] == "Backup (free)"


# --------------------------------------------------------------------- acmhistdisp / acmhistdel

def test_acmhistdisp(tools, mount, db):
    a = tools.json("acmbackup", "-T", "-m", "DISK", "db")["reply"]
    b = tools.json("acmbackup", "-m", "DISK", "db")["reply"]
    out = tools.ok("acmhistdisp")
    assert out == mount.path("histdisp").read_text()
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0].startswith("Server=") and "Device=db" in lines[0]
    assert lines[1].split() == ["Generation", "Version", "Backup-Date",
                                "Backup-Device", "Status", "Execute"]
    assert lines[2].split()[:2] == ["1", str(b["version"])]
    assert lines[3].split()[:2] == ["2", str(a["version"])]
    assert lines[4].split() == ["Tape-Gen", "Version", "Backup-Date", "Pool-Name",
                                "Status", "Execute", "Blocks"]
    assert tools.ok("acmhistdisp", "db") == mount.vol("db", "histdisp").read_text()
    disk_only = tools.ok("acmhistdisp", "-m", "DISK")
    assert "Generation" in disk_only and "Tape-Gen" not in disk_only
    tape_only = tools.ok("acmhistdisp", "-m", "TAPE", "db")
    assert "Tape-Gen" in tape_only and "Generation" not in tape_only
    long = [ln.split() for ln in tools.ok("acmhistdisp", "-l", "db").splitlines()]
    assert long[1][-4:] == ["Diff", "Copy", "Grains", "Verify"]
    assert long[2][-4:-2] == ["no", "full"]       # b: conventional, full copy
    assert long[3][-4:-2] == ["yes", "full"]      # a: first -T, full copy
    assert long[2][-2] == history_info(mount, "db", b["version"])["grains_copied"]

    doc = tools.json("acmhistdisp")
    assert doc["server"] == status(mount)["server"]
    (vol,) = doc["volumes"]
    assert vol["device"] == "db" and vol["mount_point"] == "volumes/db/data"
    assert vol["tape"] == []
    assert [d["version"] for d in vol["disk"]] == [b["version"], a["version"]]
    for row in vol["disk"]:
        info = history_info(mount, "db", row["version"])
        assert str(row["generation"]) == info["generation"]
        assert row["backup_device"] == info["bv"]
        assert row["status"] == info["disk_status"] == "succeeded"
        assert row["execute"] is None
        assert row["differential"] == (info["differential"] == "1")
        assert row["copy"] == info["copy"]
        assert str(row["grains_copied"]) == info["grains_copied"]
        assert row["date"] == info["date"]
    assert "tape" not in tools.json("acmhistdisp", "-m", "DISK", "db")["volumes"][0]


def test_acmhistdel(tools, mount, db):
    a = tools.json("acmbackup", "-m", "DISK", "db")["reply"]
    b = tools.json("acmbackup", "-m", "DISK", "db")["reply"]
    out = tools.ok("acmhistdel", "-g", "1", "-m", "DISK", "db")
    assert out == "db acmhistdel completed\n"
    assert not mount.vol("db", "history", str(b["version"]), "disk.img").exists()
    doc = tools.json("acmhistdel", "-v", a["version"], "db")
    assert doc["reply"]["deleted"] == a["version"]
    assert not mount.vol("db", "history", str(a["version"])).exists()
    tools.fails(EXIT_NOENT, "acmhistdel", "-v", "999", "db")
    tools.fails(EXIT_NOENT, "acmhistdel", "-g", "5", "db")
    tools.ok("acmbackup", "-m", "DISK", "db")
    tools.ok("acmbackup", "-m", "DISK", "db")
    assert tools.ok("acmhistdel", "-z", "db") == "db acmhistdel completed\n"
    assert tools.json("acmhistdisp", "db")["volumes"][0]["disk"] == []


# --------------------------------------------------------------------- acmrestore

def test_acmrestore_source_example(tools, mount, db):
    """# acmrestore DEV  ->  DEV acmrestore completed"""
    require_command(mount, "restore -v 999999", "db")
    tools.ok("acmbackup", "-m", "DISK", "db")
    write_pattern(mount, "db", 0xEE)
    r = tools.run("acmrestore", "db")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "db acmrestore completed\n" and r.stderr == ""
    assert read_data(mount, "db") == bytes([0xA1]) * (4 * MiB)
    assert mount.read_info("volumes/db/info")["state"] == "ok"


def test_acmrestore_options_and_json(tools, mount, db, tmp_path):
    require_command(mount, "restore -v 999999", "db")
    old = tools.json("acmbackup", "-m", "DISK", "db")["reply"]
    write_pattern(mount, "db", 0x22)
    tools.ok("acmbackup", "-m", "DISK", "db")
    write_pattern(mount, "db", 0x33)
    doc = tools.json("acmrestore", "-g", "2", "db")
    assert doc["result"] == "completed"
    assert doc["reply"]["version"] == old["version"]
    assert doc["reply"]["volume"] == "db"
    assert read_data(mount, "db") == bytes([0xA1]) * (4 * MiB)
    # -r: relative path, restored elsewhere; the volume is untouched
    write_pattern(mount, "db", 0x44)
    out = tools.ok("acmrestore", "-v", old["version"], "-r", "copy.img",
                   "db", cwd=tmp_path)
    assert out == "db acmrestore completed\n"
    with open(tmp_path / "copy.img", "rb") as f:
        assert f.read(4 * MiB) == bytes([0xA1]) * (4 * MiB)
    assert read_data(mount, "db") == bytes([0x44]) * (4 * MiB)
    tools.fails(EXIT_NOENT, "acmrestore", "-v", "999", "db")
    tools.fails(EXIT_NOENT, "acmrestore", "-g", "9", "db")


def test_acmrestore_busy(tools, mount, db):
    require_command(mount, "restore -v 999999", "db")
    tools.ok("acmbackup", "-m", "DISK", "db")
    with open(mount.vol("db", "data"), "r+b"):
        tools.fails(EXIT_BUSY, "acmrestore", "db")


# --------------------------------------------------------------------- tape

def test_acmtphistcopy(tools, mount, db):
    rep = tools.json("acmbackup", "-m", "DISK", "db")["reply"]
    require_command(mount, "tphistcopy -v 999999", "db")
    r = tools.run("acmtphistcopy", "db")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "db acmtphistcopy completed\n"
    info = history_info(mount, "db", rep["version"])
    assert info["tape_status"] == "succeeded"
    assert info["tape_generation"] == "1"
    doc = tools.json("acmhistdisp", "-m", "TAPE", "db")
    (row,) = doc["volumes"][0]["tape"]
    assert row["version"] == rep["version"] and row["status"] == "succeeded"
    assert row["pool_name"] == info["pool"]
    assert str(row["blocks"]) == info["blocks"]
    tools.fails(EXIT_NOENT, "acmtphistcopy", "-v", "999", "db")


# --------------------------------------------------------------------- acmadm

def test_acmadm(tools, mount, tmp_path):
    out = tools.ok("acmadm", "volume", "create", "db", "64M", "save=2")
    pairs = dict(w.split("=", 1) for w in out.split())
    assert pairs["volume"] == "db" and pairs["size"] == str(64 * MiB)
    assert mount.vol("db", "data").stat().st_size == 64 * MiB
    tools.fails(EXIT_EXIST, "acmadm", "volume", "create", "db", "64M")
    tools.fails(EXIT_USAGE, "acmadm", "volume", "create", "b@d", "64M")
    tools.fails(EXIT_USAGE, "acmadm", "volume", "create", "odd", "1000")
    doc = tools.json("acmadm", "volume", "create", "mail", "16M", "grain=128K")
    assert doc["reply"]["volume"] == "mail" and doc["reply"]["grain"] == 128 * 1024
    # from=PATH, relative
    src = tmp_path / "src.img"
    src.write_bytes(b"\x5a" * MiB)
    tools.ok("acmadm", "volume", "create", "imported", "1M", "from=src.img",
             cwd=tmp_path)
    tools.fails(EXIT_USAGE, "acmadm", "volume", "create", "x", "1M", "from=a b",
                match="blanks")
    assert mount.vol("imported", "data").read_bytes() == b"\x5a" * MiB
    # bv add, policy
    tools.ok("acmadm", "bv", "add", "db", "1")
    assert len(status_volume(mount, "db")["backup_volumes"]) == 3
    tools.ok("acmadm", "policy", "db", "save=3")
    assert mount.read_info("volumes/db/info")["save"] == "3"
    tools.fails(EXIT_NOENT, "acmadm", "bv", "add", "nosuch")
    # status
    assert json.loads(tools.ok("acmadm", "status", "--json")) == status(mount)
    text = tools.ok("acmadm", "status")
    assert f"mount: {mount.mnt}" in text and "[trkstat]" in text
    # delete
    tools.ok("acmadm", "volume", "delete", "mail")
    assert not mount.vol("mail").exists()
    tools.fails(EXIT_NOENT, "acmadm", "volume", "delete", "mail")


def test_acmadm_pool_and_tapepolicy(tools, mount, tmp_path):
    tools.ok("acmadm", "volume", "create", "db", "16M")
    err, reply = require_command(mount, "pool delete nosuchpool")
    pooldir = tmp_path / "pool2"
    pooldir.mkdir()
    tools.ok("acmadm", "pool", "create", "p2", f"file://{pooldir}")
    assert "p2" in [p["name"] for p in status(mount)["pools"]]
    tools.fails(EXIT_EXIST, "acmadm", "pool", "create", "p2", f"file://{pooldir}")
    tools.ok("acmadm", "tapepolicy", "db", "gens=2", "pool=p2")
    info = mount.read_info("volumes/db/info")
    assert info["tape_gens"] == "2" and info["pool"] == "p2"
    tools.fails(EXIT_NOENT, "acmadm", "tapepolicy", "db", "pool=nosuch")


# --------------------------------------------------------------------- completion, man pages

def complete(mount, words, cword=None):
    script = REPO / "tools" / "completion" / "acmfs.bash"
    cword = len(words) - 1 if cword is None else cword
    arr = " ".join(shlex.quote(w) for w in words)
    fn = "_acmfs_acmadm" if words[0] == "acmadm" else "_acmfs_tools"
    prog = (f"source {shlex.quote(str(script))}; COMP_WORDS=({arr}); "
            f"COMP_CWORD={cword}; {fn}; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True,
                       env=base_env(mount.mnt))
    assert r.returncode == 0, r.stderr
    return sorted(x for x in r.stdout.split("\n") if x)


def test_bash_completion(mount):
    mount.create_volume("db", "16M")
    mount.create_volume("dbx", "16M")
    mount.create_volume("mail", "16M")
    assert complete(mount, ["acmbackup", "-T", "d"]) == ["db", "dbx"]
    assert complete(mount, ["acmbackup", "-m", ""]) == ["BOTH", "DISK", "TAPE"]
    assert complete(mount, ["acmrestore", "-m", ""]) == ["DISK", "TAPE"]
    assert "-bd" in complete(mount, ["acmcanceltrk", "db", "-"])
    assert complete(mount, ["acmcanceltrk", "db", "-bd", "db."]) == ["db.bv1", "db.bv2"]
    assert "--json" in complete(mount, ["acmtrkstat", "--"])
    assert complete(mount, ["acmadm", ""]) == sorted(
        ["volume", "bv", "policy", "tapepolicy", "pool", "verify", "cancel", "status"])
    assert complete(mount, ["acmadm", "volume", "delete", "m"]) == ["mail"]


def test_man_pages_built(build_dir):
    if not shutil.which("scdoc"):
        pytest.skip("scdoc not installed: man pages are skipped")
    for t in TOOLS:
        page = build_dir / "tools" / (t + (".8" if t == "acmadm" else ".1"))
        assert page.exists(), page
        text = page.read_text()
        assert ".SH EXIT STATUS" in text and t in text
