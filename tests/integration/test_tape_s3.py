"""Tape tier against a real S3 engine: the conftest `rgw` (a single-node Ceph
RADOS Gateway on loopback, scripts/ceph-rgw), at library level (acmfs-tapectl).

Between acmfs-tapectl and RGW sits a small proxy of our own (s3util.py) that
  * verifies every request's AWS SigV4 signature and payload hash with the RGW
    user's secret and answers 403 on mismatch, counting them (RGW verifies
    them again: a request the proxy let through is also one RGW accepts);
  * injects faults on demand: 503 SlowDown, 500, connection resets before a
    response, truncated bodies, corrupted PUT bodies.
awscli is the independent client: it lists what a backup stored and
downloads the objects, and tape/tools/restore-from-pool.py (following
docs/tape-format.md only) rebuilds the image from them byte for byte.

Needs: the acmfs-tapectl binary (env ACMFS_TAPECTL, else the one in the
build under test, ACMFS_BUILD/tape/), Ceph (scripts/setup.sh), awscli.
Run: /usr/bin/python3 -m pytest tests/integration/test_tape_s3.py
"""
import os
import random
import subprocess
import sys
import uuid

import pytest

from s3util import free_port, make_proxy, wait_port, Faults  # noqa: F401

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESTORE = os.path.join(REPO, "tape", "tools", "restore-from-pool.py")
BUCKET = "acmfs-test"
GRAIN = 65536
# the cluster may outlive this run (ACMFS_RGW_ENV): prefixes are this run's
RUN = uuid.uuid4().hex[:8]


def find_tapectl(build_dir):
    """ACMFS_TAPECTL, else the one of the build under test (ACMFS_BUILD):
    never another build directory's, which may be stale."""
    c = os.environ.get("ACMFS_TAPECTL") or str(build_dir / "tape" / "acmfs-tapectl")
    if not os.access(c, os.X_OK):
        pytest.fail(f"{c} does not exist: build it first (scripts/setup.sh)")
    return c


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def s3(rgw):
    """RGW behind the fault proxy: {port (RGW), proxy_port, env, faults,
    region, access_key, secret_key}."""
    rgw.make_bucket(BUCKET)
    faults = Faults()
    proxy = make_proxy(rgw.port, faults, rgw.access_key, rgw.secret_key)
    try:
        yield {"port": rgw.port, "proxy_port": proxy.server_address[1], "env": rgw.env(),
               "faults": faults, "region": rgw.region, "access_key": rgw.access_key,
               "secret_key": rgw.secret_key}
    finally:
        proxy.shutdown()
        proxy.server_close()


class Pool:
    def __init__(self, s3, prefix, tapectl, extra=""):
        self.s3, self.prefix, self.tapectl = s3, "%s-%s" % (prefix, RUN), tapectl
        self.url = "s3://%s/%s" % (BUCKET, self.prefix)
        self.opts = ("endpoint=http://127.0.0.1:%d region=%s path_style=1 pack_mb=1 "
                     "retries=6 retry_s=30 timeout_s=10 %s"
                     % (s3["proxy_port"], s3["region"], extra)).strip()

    def run(self, *args, check=True, env=None, opts=None, timeout=120):
        cmd = [self.tapectl] + [a for a in args[:1]] + [self.url, opts or self.opts] + \
            list(args[1:])
        if args[0].startswith("-"):
            raise ValueError
        p = subprocess.run(cmd, env=env or self.s3["env"], capture_output=True, text=True,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("%s failed: %s" % (args[0], p.stderr))
        return p

    def upload(self, image, volume, version, parent=None, changed=None, **kw):
        args = ["upload", image, volume, str(version)] + ([parent] if parent else [])
        if changed is not None:
            cmd = [self.tapectl, "-c", changed, "upload", self.url, self.opts] + args[1:]
            p = subprocess.run(cmd, env=self.s3["env"], capture_output=True, text=True,
                               timeout=120)
            assert p.returncode == 0, p.stderr
        else:
            p = self.run(*args, **kw)
        if p.returncode:
            return p
        return dict(line.split("=", 1) for line in p.stdout.split())

    def aws(self, *args):
        return subprocess.run(["aws", "--endpoint-url",
                               "http://127.0.0.1:%d" % self.s3["port"], "s3"] + list(args),
                              env=self.s3["env"], capture_output=True, text=True, timeout=120,
                              check=True).stdout

    def keys(self):
        # `aws s3 ls` exits 1 when nothing matches
        p = subprocess.run(["aws", "--endpoint-url", "http://127.0.0.1:%d" % self.s3["port"],
                            "s3", "ls", "--recursive", "s3://%s/%s/" % (BUCKET, self.prefix)],
                           env=self.s3["env"], capture_output=True, text=True, timeout=120)
        assert p.returncode in (0, 1) and not (p.returncode and p.stdout), p.stderr
        out = p.stdout
        return [line.split()[-1][len(self.prefix) + 1:] for line in out.splitlines() if line]


def make_image(path, nr_grains, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for g in range(nr_grains):
            if g % 5 == 0:
                f.write(bytes(GRAIN))          # holes
            elif g % 9 == 0:
                f.write(b"D" * GRAIN)         # duplicates
            else:
                f.write(rng.randbytes(GRAIN))
        f.write(rng.randbytes(12345))          # partial last grain


@pytest.fixture
def tapectl(build_dir):
    return find_tapectl(build_dir)


def files_equal(a, b):
    with open(a, "rb") as x, open(b, "rb") as y:
        return x.read() == y.read()


# ---------------------------------------------------------------- tests

def test_upload_read_restore(s3, tapectl, tmp_path):
    pool = Pool(s3, "t1", tapectl)
    img = tmp_path / "img"
    make_image(img, 100, 1)
    r = pool.upload(str(img), "vol1", 1)
    assert int(r["grains_read"]) == 101
    keys = pool.keys()
    assert r["manifest"] in keys
    packs = [k for k in keys if k.startswith("packs/") and k.endswith(".pack")]
    assert len(packs) >= 4                      # ~6 MiB of blocks in 1 MiB packs
    out = tmp_path / "out"
    pool.run("read", r["manifest"], str(out))
    assert files_equal(out, img)
    # independent client + documented format: rebuild without acmfs
    dl = tmp_path / "dl"
    pool.aws("cp", "--recursive", "--quiet", pool.url, str(dl))
    rebuilt = tmp_path / "rebuilt"
    subprocess.run([sys.executable, RESTORE, str(dl), r["manifest"], str(rebuilt)], check=True,
                   timeout=120)
    assert files_equal(rebuilt, img)
    lst = pool.run("list").stdout
    assert r["manifest"] in lst and "volume=vol1 version=1" in lst
    assert s3["faults"].bad_signatures == 0


def test_incremental_uploads_only_changes(s3, tapectl, tmp_path):
    pool = Pool(s3, "t2", tapectl)
    img = tmp_path / "img"
    make_image(img, 200, 2)
    r1 = pool.upload(str(img), "vol2", 1)
    rng = random.Random(7)
    changed = sorted(rng.sample(range(200), 2))  # 1% of the grains
    with open(img, "r+b") as f:
        for g in changed:
            f.seek(g * GRAIN)
            f.write(rng.randbytes(GRAIN))
    ch = tmp_path / "changed"
    ch.write_text("".join("%d\n" % g for g in changed))
    r2 = pool.upload(str(img), "vol2", 2, parent=r1["manifest"], changed=str(ch))
    assert int(r2["grains_read"]) == 2
    assert int(r2["blocks_new"]) == 2
    assert int(r2["bytes_uploaded"]) < 0.02 * int(r1["bytes_uploaded"])
    out = tmp_path / "out"
    pool.run("read", r2["manifest"], str(out))
    assert files_equal(out, img)


def test_gc_reclaims_orphans_keeps_shared(s3, tapectl, tmp_path):
    pool = Pool(s3, "t3", tapectl)
    a, b = tmp_path / "a", tmp_path / "b"
    make_image(a, 64, 3)
    make_image(b, 64, 4)
    with open(a, "rb") as fa, open(b, "r+b") as fb:   # b shares its second half with a
        fa.seek(32 * GRAIN)
        fb.seek(32 * GRAIN)
        fb.write(fa.read())
    ra = pool.upload(str(a), "va", 1)
    rb = pool.upload(str(b), "vb", 1)
    pool.run("rm", ra["manifest"])
    g = pool.run("gc", "0").stdout
    stats = dict(line.split("=") for line in g.split())
    assert int(stats["packs_deleted"]) + int(stats["packs_repacked"]) >= 1
    out = tmp_path / "out"
    pool.run("read", rb["manifest"], str(out))
    assert files_equal(out, b)
    assert pool.run("verify", rb["manifest"]).stdout.strip() == "bad_grains=0"
    pool.run("rm", rb["manifest"])
    pool.run("gc", "0")
    assert [k for k in pool.keys() if k.startswith("packs/")] == []
    assert [k for k in pool.keys() if k.startswith("manifests/")] == []


def test_transient_faults_are_retried(s3, tapectl, tmp_path):
    pool = Pool(s3, "t4", tapectl)
    img = tmp_path / "img"
    make_image(img, 40, 5)
    f = s3["faults"]
    f.queue = ["503", "reset", None, "500", "503"]
    r = pool.upload(str(img), "vf", 1)
    assert not f.queue
    f.queue = [None, None, "truncate", "reset", None, "truncate", "503"]
    out = tmp_path / "out"
    pool.run("read", r["manifest"], str(out))
    assert files_equal(out, img)
    assert {"503", "500", "reset", "truncate"} <= set(f.applied)


def test_put_corrupted_on_the_way_is_refused_and_sent_again(s3, tapectl, tmp_path):
    """A PUT carries a signed CRC-32 of its body (x-amz-checksum-crc32); the
    server recomputes it, so a pack damaged in transit is refused (400
    BadDigest) instead of stored, and the backend sends it again."""
    pool = Pool(s3, "t8", tapectl)
    img = tmp_path / "img"
    make_image(img, 40, 8)
    f = s3["faults"]
    digests = f.bad_digests
    f.methods = {"PUT"}
    f.queue = ["corrupt", None, "corrupt"]
    try:
        r = pool.upload(str(img), "vc", 1)
        assert f.applied.count("corrupt") == 2
    finally:
        f.reset()
    assert f.bad_digests == digests        # every intact body matched its CRC
    out = tmp_path / "out"
    pool.run("read", r["manifest"], str(out))
    assert files_equal(out, img)
    assert pool.run("verify", r["manifest"]).stdout.strip() == "bad_grains=0"


def test_persistent_faults_fail_without_manifest(s3, tapectl, tmp_path):
    pool = Pool(s3, "t5", tapectl, extra="")
    opts = pool.opts.replace("retries=6 retry_s=30", "retries=2 retry_s=5")
    img = tmp_path / "img"
    make_image(img, 10, 6)
    f = s3["faults"]
    f.always = "503"
    try:
        p = pool.run("upload", str(img), "vx", "1", check=False, opts=opts)
    finally:
        f.always = None
    assert p.returncode == 1
    assert "giving up" in p.stderr
    assert not [k for k in pool.keys() if k.startswith("manifests/")]


def test_bad_signature_is_rejected(s3, tapectl, tmp_path):
    pool = Pool(s3, "t6", tapectl)
    env = dict(s3["env"], AWS_SECRET_ACCESS_KEY="not-the-secret")
    before = s3["faults"].bad_signatures
    p = pool.run("list", check=False, env=env)
    assert p.returncode == 1
    assert s3["faults"].bad_signatures > before
    assert "not-the-secret" not in p.stderr


def test_credentials_file(s3, tapectl, tmp_path):
    pool = Pool(s3, "t7", tapectl)
    cred = tmp_path / "cred"
    cred.write_text("access_key_id=%s\nsecret_access_key=%s\n"
                    % (s3["access_key"], s3["secret_key"]))
    env = {k: v for k, v in s3["env"].items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.chmod(cred, 0o644)
    p = pool.run("list", check=False, env=env, opts=pool.opts + " credentials=%s" % cred)
    assert p.returncode == 1 and "0600" in p.stderr
    assert s3["secret_key"] not in p.stderr
    os.chmod(cred, 0o600)
    pool.run("list", env=env, opts=pool.opts + " credentials=%s" % cred)
