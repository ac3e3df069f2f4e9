"""Fixtures for the acmfs integration tests: a real daemon on a real mount.

Environment:
  ACMFS_BUILD     build directory holding fs/acmfs (default: build; relative
                  paths are taken from the repository root). build-asan runs
                  the same tests against the sanitizer build.
  ACMFS_TEST_TMP  set by scripts/run-tests; only informative here (pytest's
                  --basetemp puts every mount below it, so run-tests can clean
                  up whatever a crashed test leaves behind).
  ACMFS_KEEP_TMP  1: keep passed tests' tmp_path too (by default it is
                  removed after the test, a failed test's is kept).
  ACMFS_RGW_ENV   the env file of a running scripts/ceph-rgw cluster (set by
                  scripts/run-tests, shared by its pytest runs); unset, the
                  `rgw` fixture starts its own cluster for the session.
  CI              true: a missing or broken RGW fails the tests that need
                  it (elsewhere they are skipped when Ceph is not installed).

Fixtures:
  build_dir, acmfs_bin   paths
  mount                  a mounted store (function scope), a `Mount`
  mount_factory          make more mounts: mount_factory(opts=[...], store=...)
  s3rver                 a local S3 server (session scope); the value is the
                         endpoint URL (a str) carrying .port, .directory,
                         .access_key, .secret_key, .bucket and .make_bucket()
  rgw                    Ceph RADOS Gateway on loopback (session scope), a
                         real S3 engine (scripts/ceph-rgw); the value is the
                         endpoint URL (a str) carrying .port, .access_key,
                         .secret_key, .region, .bucket (created), .env() and
                         .make_bucket(name)

Markers:
  asan   the test also runs in the ASan/UBSan pass of scripts/run-tests (every
         test in a module named test_backup*.py or test_datapath*.py is marked
         automatically)
  slow   takes more than a few seconds

The `mount` fixture fails the test when the daemon's stderr holds a sanitizer
report, or when the daemon exits non-zero (or not at all) after a clean
unmount. It always unmounts, even when the test failed.
"""

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Deadlines in seconds; ACMFS_TEST_TIME_SCALE stretches them (slow machines,
# valgrind).
TIME_SCALE = float(os.environ.get("ACMFS_TEST_TIME_SCALE", "1"))
MOUNT_TIMEOUT = 10 * TIME_SCALE
EXIT_TIMEOUT = 10 * TIME_SCALE

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
)

ASAN_MODULE_RE = re.compile(r"^test_(backup|datapath)")


def retry_busy(fn, timeout=5.0):
    """fn(), retried while it raises EBUSY, for a moment: FUSE sends RELEASE
    asynchronously after close(2), so a command that needs a file closed may
    see it open just after the close."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        try:
            return fn()
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "asan: also run in the ASan/UBSan pass of scripts/run-tests")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if ASAN_MODULE_RE.match(item.path.name if hasattr(item, "path")
                                else os.path.basename(str(item.fspath))):
            item.add_marker(pytest.mark.asan)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(autouse=True)
def _reclaim_tmp_path(request, tmp_path):
    """A passed test's tmp_path (stores, volumes, reference copies) is removed
    once its mounts are down: pytest would keep every test's until the
    session ends, and the suite's volumes add up to tens of GB. A failed
    test's stays for the post-mortem, as everything does with
    ACMFS_KEEP_TMP=1. (Autouse, so set up before and torn down after the
    mount fixtures.)"""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and os.environ.get("ACMFS_KEEP_TMP") != "1":
        shutil.rmtree(tmp_path, ignore_errors=True)


# --------------------------------------------------------------------- paths

@pytest.fixture(scope="session")
def build_dir():
    d = Path(os.environ.get("ACMFS_BUILD", "build"))
    if not d.is_absolute():
        d = REPO / d
    return d


@pytest.fixture(scope="session")
def acmfs_bin(build_dir):
    b = build_dir / "fs" / "acmfs"
    if not os.access(b, os.X_OK):
        pytest.fail(f"{b} does not exist: build it first (scripts/setup.sh)")
    return b


# --------------------------------------------------------------------- mounts

def mount_fstype(path):
    """The fstype of the mount whose mount point is exactly `path`, or None."""
    path = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mp = fields[4].replace("\\040", " ").replace("\\011", "\t") \
                .replace("\\012", "\n").replace("\\134", "\\")
            if mp != path:
                continue
            sep = fields.index("-", 6)
            found = fields[sep + 1]      # the last (topmost) mount wins
    return found


def is_acmfs_mounted(path):
    return mount_fstype(path) == "fuse.acmfs"


def fusermount_u(path, lazy=False):
    args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [str(path)]
    return subprocess.run(args, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


class Mount:
    """One store mounted by one daemon (restartable on the same store)."""

    def __init__(self, acmfs_bin, store, mnt, logdir, opts=(), env=None):
        self.bin = Path(acmfs_bin)
        self.store = Path(store)
        self.mnt = Path(mnt)
        self.logdir = Path(logdir)
        self.opts = list(opts)
        self.env = env
        self.proc = None
        self.starts = 0
        self.problems = []               # reasons to fail at teardown
        self.stderr_path = self.logdir / "acmfs.stderr"
        self.stdout_path = self.logdir / "acmfs.stdout"

    # -- life cycle ---------------------------------------------------------

    def start(self):
        assert self.proc is None, "already running"
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.stderr_path, "ab") as err, \
                open(self.stdout_path, "ab") as out:
            err.write(f"----- start {self.starts}\n".encode())
            err.flush()
            self.proc = subprocess.Popen(
                [str(self.bin), "-f", *self.opts, str(self.store),
                 str(self.mnt)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                env=self.env)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_acmfs_mounted(self.mnt):
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                raise RuntimeError(f"acmfs exited with {rc} before mounting:\n"
                                   + self.stderr_tail())
            if time.monotonic() > deadline:
                self._kill()
                raise RuntimeError(f"acmfs did not mount {self.mnt} within "
                                   f"{MOUNT_TIMEOUT:g} s:\n" + self.stderr_tail())
            time.sleep(0.02)
        return self

    def stop(self):
        """Clean unmount; records a problem if the daemon misbehaves."""
        if self.proc is None:
            if is_acmfs_mounted(self.mnt):
                fusermount_u(self.mnt, lazy=True)
            return None
        r = fusermount_u(self.mnt)
        if r.returncode != 0:
            self.problems.append(f"fusermount3 -u failed: {r.stdout.strip()}; "
                                 "used -z")
            fusermount_u(self.mnt, lazy=True)
        try:
            rc = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.problems.append(f"acmfs did not exit within {EXIT_TIMEOUT:g} s "
                                 "of the unmount")
            self._kill()
            return None
        self.proc = None
        if rc != 0:
            self.problems.append(f"acmfs exited with {rc} after a clean unmount")
        return rc

    def remount(self):
        self.stop()
        return self.start()

    def kill9(self):
        """SIGKILL the daemon (a crash), then detach the dead mount."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=EXIT_TIMEOUT)
        self.proc = None
        fusermount_u(self.mnt, lazy=True)
        deadline = time.monotonic() + EXIT_TIMEOUT
        while mount_fstype(self.mnt) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _kill(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if mount_fstype(self.mnt):
            fusermount_u(self.mnt, lazy=True)

    def teardown(self):
        try:
            self.stop()
        finally:
            self._kill()
        text = self.stderr_text()
        for pat in SANITIZER_PATTERNS:
            if pat in text:
                self.problems.append(f"sanitizer report in acmfs stderr ({pat!r})")
                break
        return self.problems

    # -- logs ---------------------------------------------------------------

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=60):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    # -- paths --------------------------------------------------------------

    def path(self, *parts):
        return self.mnt.joinpath(*parts)

    def vol(self, name, *parts):
        return self.mnt.joinpath("volumes", name, *parts)

    def ctl_path(self, vol=None):
        return self.mnt / "ctl" if vol is None else self.vol(vol, "ctl")

    # -- control files ------------------------------------------------------

    def ctl_err(self, cmd, vol=None):
        """Write one command, read the reply: (errno or 0, reply text).

        `cmd` as str gets a trailing newline; bytes are written as they are.
        """
        data = cmd if isinstance(cmd, bytes) else \
            (cmd if cmd.endswith("\n") else cmd + "\n").encode()
        fd = os.open(self.ctl_path(vol), os.O_RDWR)
        try:
            err = 0
            try:
                n = os.write(fd, data)
                if n != len(data):
                    raise AssertionError(f"short ctl write: {n} of {len(data)}")
            except OSError as e:
                err = e.errno
            chunks = []
            off = 0
            while off < (1 << 20):
                b = os.pread(fd, 65536, off)
                if not b:
                    break
                chunks.append(b)
                off += len(b)
            reply = b"".join(chunks).decode(errors="replace")
        finally:
            os.close(fd)
        return err, reply

    def ctl(self, cmd, vol=None):
        """Run one command; return the reply, raise OSError(errno) on error."""
        err, reply = self.ctl_err(cmd, vol)
        if err:
            shown = cmd if len(cmd) < 200 else cmd[:200] + "…"
            raise OSError(err, f"{os.strerror(err)}: {shown!r} -> "
                               f"{reply.strip()!r}")
        return reply

    @staticmethod
    def parse_reply(reply):
        """`ok k=v k=v` (first line) -> dict."""
        first = reply.splitlines()[0] if reply else ""
        words = first.split()
        assert words and words[0] == "ok", f"not an ok reply: {reply!r}"
        return dict(w.split("=", 1) for w in words[1:] if "=" in w)

    def metric(self, name):
        """The sum of a metric's samples in `metrics` (AssertionError if
        there is none)."""
        total, found = 0, False
        for ln in (self.mnt / "metrics").read_text().splitlines():
            if ln.startswith(name + " ") or ln.startswith(name + "{"):
                total += int(float(ln.split()[-1]))
                found = True
        assert found, f"no {name} in metrics"
        return total

    def read_info(self, path):
        """A key=value file (relative to the mount, or absolute) -> dict."""
        p = Path(path)
        if not p.is_absolute():
            p = self.mnt / p
        out = {}
        for line in p.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                out[k.strip()] = v.strip()
        return out

    def create_volume(self, name, size="16M", **opts):
        cmd = f"volume create {name} {size}"
        cmd += "".join(f" {k}={v}" for k, v in opts.items())
        return self.parse_reply(self.ctl(cmd))


@pytest.fixture
def mount_factory(acmfs_bin, tmp_path):
    """mount_factory(opts=(), store=None, name='m', start=True) -> Mount."""
    mounts = []

    def make(opts=(), store=None, name=None, start=True, env=None):
        name = name or f"m{len(mounts)}"
        base = tmp_path / name
        base.mkdir()
        m = Mount(acmfs_bin, store or base / "store", base / "mnt", base,
                  opts=opts, env=env)
        mounts.append(m)
        if start:
            m.start()
        return m

    yield make
    problems = []
    for m in mounts:
        for p in m.teardown():
            problems.append(f"{m.mnt}: {p}")
    if problems:
        tails = "\n".join(f"--- {m.stderr_path}:\n{m.stderr_tail()}"
                          for m in mounts)
        pytest.fail("daemon problems:\n  " + "\n  ".join(problems) + "\n"
                    + tails, pytrace=False)


@pytest.fixture
def mount(mount_factory):
    """A freshly created store mounted on a fresh directory."""
    return mount_factory(name="main")


# --------------------------------------------------------------------- s3rver

class S3rver(str):
    """The endpoint URL, plus what a test needs to talk to the server."""
    port: int
    directory: Path
    access_key = "S3RVER"
    secret_key = "S3RVER"
    bucket = "acmfs"

    def env(self):
        e = dict(os.environ)
        e.update(AWS_ACCESS_KEY_ID=self.access_key,
                 AWS_SECRET_ACCESS_KEY=self.secret_key,
                 AWS_DEFAULT_REGION="us-east-1")
        return e

    def make_bucket(self, name):
        subprocess.run(["aws", "--endpoint-url", str(self), "s3", "mb",
                        f"s3://{name}"], env=self.env(), check=True,
                       stdout=subprocess.DEVNULL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_s3rver(d, tls=None):
    """Start s3rver on 127.0.0.1 serving directory d (with TLS when tls =
    (key, cert)); yields the S3rver endpoint and stops the server after."""
    exe = REPO / ".cache" / "node" / "node_modules" / ".bin" / "s3rver"
    if not os.access(exe, os.X_OK):
        pytest.skip("s3rver not installed (scripts/setup.sh installs it)")
    port = free_port()
    log = open(d.parent / f"s3rver-{port}.log", "wb")
    argv = [str(exe), "-d", str(d), "-a", "127.0.0.1", "-p", str(port),
            "--silent", "--configure-bucket", S3rver.bucket]
    if tls:
        argv += ["--key", str(tls[0]), "--cert", str(tls[1])]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 15 * TIME_SCALE
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"s3rver exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("s3rver did not answer in time")
            time.sleep(0.05)
        ep = S3rver(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
        ep.port = port
        ep.directory = d
        yield ep
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory):
    yield from _run_s3rver(tmp_path_factory.mktemp("s3rver"))


@pytest.fixture(scope="session")
def s3rver_tls(tmp_path_factory):
    """s3rver over https with a fresh self-signed certificate for 127.0.0.1;
    the endpoint's .ca is that certificate (the only thing that trusts it)."""
    d = tmp_path_factory.mktemp("s3rver-tls")
    key, cert = d.parent / "s3rver-tls.key", d.parent / "s3rver-tls.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2",
                    "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    for ep in _run_s3rver(d, tls=(key, cert)):
        ep.ca = cert
        yield ep


# --------------------------------------------------------------------- RGW

CEPH_RGW = REPO / "scripts" / "ceph-rgw"
RGW_START_TIMEOUT = 150 * TIME_SCALE


class RGW(str):
    """A Ceph RADOS Gateway (scripts/ceph-rgw): the endpoint URL, plus what a
    test needs to talk to it, like S3rver."""
    port: int
    access_key: str
    secret_key: str
    region: str
    env_file: Path
    bucket = "acmfs"

    @classmethod
    def from_env_file(cls, path):
        vals = {}
        for line in Path(path).read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = line.split("=", 1)
                vals[k.strip()] = v.strip()
        missing = {"RGW_ENDPOINT", "RGW_ACCESS_KEY", "RGW_SECRET_KEY",
                   "RGW_REGION"} - set(vals)
        if missing:
            raise RuntimeError(f"{path} lacks {', '.join(sorted(missing))}")
        ep = cls(vals["RGW_ENDPOINT"])
        ep.port = int(ep.rsplit(":", 1)[1].rstrip("/"))
        ep.access_key = vals["RGW_ACCESS_KEY"]
        ep.secret_key = vals["RGW_SECRET_KEY"]
        ep.region = vals["RGW_REGION"]
        ep.env_file = Path(path)
        return ep

    def env(self):
        """os.environ with this user's credentials (awscli, acmfs)."""
        e = dict(os.environ)
        e.update(AWS_ACCESS_KEY_ID=self.access_key,
                 AWS_SECRET_ACCESS_KEY=self.secret_key,
                 AWS_DEFAULT_REGION=self.region)
        return e

    def aws(self, *args, check=True, timeout=120):
        """`aws --endpoint-url RGW ARGS...` -> CompletedProcess (text)."""
        return subprocess.run(["aws", "--endpoint-url", str(self), *args],
                              env=self.env(), capture_output=True, text=True,
                              timeout=timeout * TIME_SCALE, check=check)

    def make_bucket(self, name):
        """Create bucket `name` unless it exists already (the cluster may be
        shared by several pytest runs)."""
        if self.aws("s3api", "head-bucket", "--bucket", name,
                    check=False).returncode == 0:
            return
        r = self.aws("s3api", "create-bucket", "--bucket", name, check=False)
        if r.returncode != 0 and "BucketAlreadyOwnedByYou" not in r.stderr:
            raise RuntimeError(f"creating bucket {name} on RGW failed: "
                               f"{r.stderr.strip()}")


def _rgw_unavailable(why):
    """No cluster: fail in CI, where RGW is part of the suite; elsewhere
    skip, but only when Ceph is not installed at all."""
    if os.environ.get("CI") == "true" or shutil.which("radosgw"):
        pytest.fail(f"RGW unavailable: {why}", pytrace=False)
    pytest.skip(f"RGW unavailable: {why}")


@pytest.fixture(scope="session")
def rgw(tmp_path_factory):
    """The session's RGW: the cluster named by ACMFS_RGW_ENV (run-tests
    starts one per run), else one started here and stopped at the end."""
    envf = os.environ.get("ACMFS_RGW_ENV")
    own = None
    if envf:
        if not os.path.isfile(envf):
            pytest.fail(f"ACMFS_RGW_ENV={envf}: no such file (the cluster of "
                        "scripts/run-tests did not start?)", pytrace=False)
    else:
        if not shutil.which("radosgw") or not shutil.which("ceph-osd"):
            _rgw_unavailable("Ceph is not installed (scripts/setup.sh installs "
                             "ceph-mon ceph-osd ceph-mgr radosgw ceph-common)")
        own = tmp_path_factory.mktemp("rgw")
        try:
            r = subprocess.run([str(CEPH_RGW), "start", str(own)],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=RGW_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            subprocess.run([str(CEPH_RGW), "stop", str(own)], timeout=60)
            _rgw_unavailable(f"scripts/ceph-rgw start {own} took over "
                             f"{RGW_START_TIMEOUT:g} s")
        if r.returncode != 0:
            _rgw_unavailable(f"scripts/ceph-rgw start {own} exited "
                             f"{r.returncode}:\n{r.stderr[-4000:]}")
        envf = own / "env"
    try:
        ep = RGW.from_env_file(envf)
        ep.make_bucket(RGW.bucket)
        yield ep
    finally:
        if own is not None:
            subprocess.run([str(CEPH_RGW), "stop", str(own)], timeout=60,
                           stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------- helpers

def run_as_nobody(argv, **kw):
    """Run argv as uid/gid 65534 with no supplementary groups."""
    if os.getuid() != 0:
        pytest.skip("needs root to switch to nobody")
    setpriv = shutil.which("setpriv")
    if setpriv:
        cmd = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
               *argv]
    else:
        import shlex
        cmd = ["su", "nobody", "-s", "/bin/sh", "-c", shlex.join(argv)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)


def make_traversable(path):
    """Give o+x to `path` and its ancestors that lack it (for other users)."""
    p = Path(path).resolve()
    for d in [p, *p.parents]:
        st = d.stat()
        if not st.st_mode & 0o001:
            os.chmod(d, (st.st_mode & 0o7777) | 0o001)

