"""Multipart upload of large objects (tape/backend_s3.c, pool option
multipart_mb=): packs and manifests above the threshold go up as
CreateMultipartUpload / UploadPart / CompleteMultipartUpload, each part
signed and CRC-checked like a single PUT and retried on its own; a failure
aborts the upload and leaves no object.

Two servers:
  * s3rver (3.7.1, behind the SigV4-checking fault proxy of s3util.py): it
    implements Create/UploadPart/Complete (no Abort; its completed object's
    ETag is a plain MD5, not the multipart "-N" form), so it proves the
    requests are well formed and signed, that parts are retried and that a
    failed upload stores nothing;
  * RGW (the `rgw` fixture of conftest.py, a real S3 engine; skipped while
    that fixture does not exist): the object's ETag must have the multipart
    "-N" suffix, N = the number of parts, and read back exact.

Run: ACMFS_BUILD=build /usr/bin/python3 -m pytest tests/integration/test_tape_s3_multipart.py
"""
import json
import os
import random
import subprocess
import sys

import pytest

from test_tape_s3 import BUCKET, RESTORE, Pool, files_equal, find_tapectl, s3  # noqa: F401

MIB = 1 << 20
PART_MB = 5
PACK_MB = 16


@pytest.fixture
def tapectl(build_dir):
    return find_tapectl(build_dir)


def random_image(path, mib, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(rng.randbytes(MIB))


def pack_sizes(pool):
    out = pool.aws("ls", "--recursive", "s3://%s/%s/packs/" % (BUCKET, pool.prefix))
    return [int(line.split()[2]) for line in out.splitlines() if line.endswith(".pack")]


def test_multipart_roundtrip_with_part_faults(s3, tapectl, tmp_path):
    pool = Pool(s3, "mp1", tapectl)
    opts = pool.opts.replace("pack_mb=1", "pack_mb=%d multipart_mb=%d" % (PACK_MB, PART_MB))
    pool.opts = opts
    img = tmp_path / "img"
    random_image(img, 40, 11)                  # 2 full packs of 16 MiB + one of 8
    f = s3["faults"]
    f.reset()
    # Creates, parts and Completes refused (503, 500) or cut (reset): each
    # request is retried on its own, the upload goes on
    f.methods = {"POST", "PUT"}
    f.queue = ["503", None, "reset", None, "500", "reset", None, "503"]
    try:
        r = pool.upload(str(img), "big", 1)
        assert not f.queue
        assert {"503", "500", "reset"} <= set(f.applied)
    finally:
        f.reset()
    sizes = pack_sizes(pool)
    assert len(sizes) == 3 and max(sizes) > PACK_MB * MIB  # over the threshold: multipart
    out = tmp_path / "out"
    pool.run("read", r["manifest"], str(out))
    assert files_equal(out, img)
    # an independent client and the documented format agree
    dl = tmp_path / "dl"
    pool.aws("cp", "--recursive", "--quiet", "s3://%s/%s" % (BUCKET, pool.prefix), str(dl))
    rebuilt = tmp_path / "rebuilt"
    subprocess.run([sys.executable, RESTORE, str(dl), r["manifest"], str(rebuilt)], check=True,
                   timeout=120)
    assert files_equal(rebuilt, img)
    assert s3["faults"].bad_signatures == 0
    # a multipart ETag ("-N", N parts) where the server makes them; s3rver
    # gives the completed object a plain MD5
    for key, size in pack_keys(pool):
        etag = head_etag(pool, key)
        assert etag.endswith("-%d" % -(-size // (PART_MB * MIB))) or \
            (len(etag) == 32 and "-" not in etag), (key, etag)


def pack_keys(pool):
    out = pool.aws("ls", "--recursive", "s3://%s/%s/packs/" % (BUCKET, pool.prefix))
    return [(line.split()[3], int(line.split()[2])) for line in out.splitlines()
            if line.endswith(".pack")]


def head_etag(pool, key):
    p = subprocess.run(["aws", "--endpoint-url", "http://127.0.0.1:%d" % pool.s3["port"],
                        "s3api", "head-object", "--bucket", BUCKET, "--key", key],
                       env=pool.s3["env"], capture_output=True, text=True, timeout=120,
                       check=True)
    return json.loads(p.stdout)["ETag"].strip('"')


def test_multipart_failure_leaves_no_object(s3, tapectl, tmp_path):
    pool = Pool(s3, "mp2", tapectl)
    pool.opts = pool.opts.replace("pack_mb=1", "pack_mb=%d multipart_mb=%d" % (PACK_MB, PART_MB))
    opts = pool.opts.replace("retries=6 retry_s=30", "retries=2 retry_s=5")
    img = tmp_path / "img"
    random_image(img, 12, 12)                  # one pack of 12 MiB: 3 parts
    f = s3["faults"]
    f.reset()
    f.methods = {"PUT"}
    f.queue = [None] + ["500"] * 20            # part 1 stored, part 2 never
    try:
        p = pool.run("upload", str(img), "fail", "1", check=False, opts=opts)
    finally:
        f.reset()
    assert p.returncode == 1
    assert "giving up" in p.stderr
    # atomic: neither the pack (only parts existed, then aborted) nor a manifest
    assert not [k for k in pool.keys() if k.startswith(("packs/", "manifests/"))]


# ------------------------------------------------------------------ RGW

def rgw_endpoint(request):
    """The conftest `rgw` fixture's endpoint and credentials."""
    v = request.getfixturevalue("rgw")
    return str(v), v.access_key, v.secret_key


def test_multipart_etag_on_rgw(request, tapectl, tmp_path):
    ep, ak, sk = rgw_endpoint(request)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ak, AWS_SECRET_ACCESS_KEY=sk,
               AWS_DEFAULT_REGION="us-east-1")
    bucket = "acmfs-mp-%d" % random.randrange(1 << 30)

    def aws(*args):
        return subprocess.run(["aws", "--endpoint-url", ep] + list(args), env=env,
                              capture_output=True, text=True, timeout=300, check=True).stdout

    aws("s3", "mb", "s3://" + bucket)
    url = "s3://%s/mp" % bucket
    opts = "endpoint=%s region=us-east-1 path_style=1 pack_mb=%d multipart_mb=%d" % (
        ep, PACK_MB, PART_MB)
    img = tmp_path / "img"
    random_image(img, 40, 13)

    def tapectl_run(*args):
        p = subprocess.run([tapectl, args[0], url, opts] + list(args[1:]), env=env,
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stdout

    res = dict(kv.split("=", 1) for kv in tapectl_run("upload", str(img), "big", "1").split())
    out = tmp_path / "out"
    tapectl_run("read", res["manifest"], str(out))
    assert files_equal(out, img)
    listing = json.loads(aws("s3api", "list-objects-v2", "--bucket", bucket,
                             "--prefix", "mp/packs/"))
    packs = listing.get("Contents", [])
    assert len(packs) == 3
    for o in packs:
        head = json.loads(aws("s3api", "head-object", "--bucket", bucket, "--key", o["Key"]))
        etag = head["ETag"].strip('"')
        parts = -(-o["Size"] // (PART_MB * MIB))
        if o["Size"] > PART_MB * MIB:
            assert etag.endswith("-%d" % parts), (o, etag)   # multipart ETag
        else:
            assert "-" not in etag
