#!/usr/bin/env python3
"""gen-corpus.py — write the seed corpora of the fuzz targets.

    tests/fuzz/gen-corpus.py [--pool DIR]

Writes tests/fuzz/corpus/<target>/<name> from encoders written here, from
the format documents (docs/tape-format.md, docs/tracking-format.md) — not
from the C code, so the seeds also cross-check the decoders. With --pool,
also copies real packs and manifests from a file:// pool written by the
daemon (tests/fuzz/pool-seeds.sh makes one). Each seed carries the prefix its
target expects (see the target's header comment). Idempotent.
"""
import argparse
import hashlib
import os
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


# ---------------------------------------------------------------- crc32c
def _crc_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _T[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# ---------------------------------------------------------------- ctl lines
CTL = [
    "volume create db 64M", "volume create db 64M save=3 grain=4K",
    "volume create vm01.disk-a 1G grain=1M from=/var/lib/img.raw",
    "volume delete db", "bv add db", "bv add db 4", "policy db save=2",
    "policy db save=5 interval=7", "tapepolicy db gens=3 days=30 pool=offsite",
    "pool create offsite s3://bucket/acm endpoint=http://127.0.0.1:9000 region=us-east-1 "
    "path_style=1 credentials=/etc/acmfs/s3.cred",
    "pool create local file:///srv/pool", "pool delete offsite", "pool import offsite",
    "pool gc offsite grace=3600",
    "backup", "backup -T", "backup -m DISK", "backup -T -m DISK", "backup -m TAPE -b GEN",
    "backup -m BOTH -b DAY", "restore", "restore -g 2", "restore -v 17 -m TAPE",
    "restore -t 2026-11-25T12:00:00Z -r /tmp/out.img", "restore -t 2026/11/25 12:00:00",
    "histdel -g 1", "histdel -v 3 -m DISK", "histdel -z", "canceltrk -bd db.bv1",
    "canceltrk -all", "tphistcopy -g 1 -b GEN", "cancel", "verify -v 2 -m TAPE",
    # refused ones
    "backup -T -m TAPE", "backup -m DISK -b GEN", "histdel", "histdel -g 1 -v 2",
    "canceltrk -bd x -all", "volume create ../x 64M", "volume create .hidden 64M",
    "volume create " + "a" * 65 + " 64M", "volume create a/b 64M", "volume create db 4097",
    "restore -r relative/path", "pool create p s3://user:pw@bucket/x",
    "pool create p s3://b secret_key=abc", "backup -m DISK -m DISK", "",
    "backup\nbackup", "backup\r\n", "\tbackup\t-T ", "volume create db 18446744073709551616",
]


def gen_ctl():
    for i, line in enumerate(CTL):
        put("cmd", f"seed-{i:03d}", line.encode() + (b"\n" if i % 2 == 0 else b""))
    put("cmd", "seed-nul", b"backup\x00-T\n")
    put("cmd", "seed-long", b"backup " + b"-T " * 1400)


# ---------------------------------------------------------------- tape
def manifest(volume="db", host="host1", parent="", size=4 * 65536, grain=65536,
             packs=(), refs=(), version=1, date=1764072000):
    nr = -(-size // grain)
    refs = list(refs) + [None] * (nr - len(refs))
    lv, lh, lp = len(volume), len(host), len(parent)
    hdr = 72 + lv + lh + lp
    nz = sum(1 for r in refs if r is not None)
    b = b"ACMFSMAN" + struct.pack("<IIQIIQQqQHHHH", 1, hdr, size, grain, len(packs), nr,
                                  version, date, nz, lv, lh, lp, 0)
    b += volume.encode() + host.encode() + parent.encode()
    for p in packs:
        b += p
    for r in refs:
        if r is None:
            b += struct.pack("<IIQ", 0xFFFFFFFF, 0, 0) + bytes(8)
        else:
            pack, off, prefix = r
            b += struct.pack("<IIQ", pack, grain, off) + prefix[:8]
    return b + hashlib.sha256(b).digest()


def pack(blocks, pid=b"\x11" * 16):
    body = b"ACMFSPAK" + struct.pack("<II", 1, 0) + pid
    entries = []
    for blk in blocks:
        entries.append((hashlib.sha256(blk).digest(), len(body), len(blk)))
        body += blk
    ioff = len(body)
    index = b"".join(h + struct.pack("<QII", off, ln, 0) for h, off, ln in entries)
    trailer = b"ACMFSEND" + struct.pack("<IIQ", 1, len(entries), ioff) + \
        hashlib.sha256(index).digest() + bytes(8)
    return body + index + trailer


def gen_tape():
    blk = [bytes([i + 1]) * 256 for i in range(3)]
    pid = bytes(range(16))
    put("manifest", "hole-only", b"\0" + manifest(size=65536))
    put("manifest", "mixed", b"\0" + manifest(
        packs=[pid], refs=[(0, 32, hashlib.sha256(blk[0]).digest()), None,
                           (0, 32 + 65536, hashlib.sha256(blk[1]).digest())]))
    put("manifest", "two-packs-parent", b"\0" + manifest(
        volume="vm01.disk-a", host="backup-host.example", size=3 * 4096 + 512, grain=4096,
        parent="manifests/vm01.disk-a/00000000000000000001-0123456789abcdef.mf",
        packs=[pid, b"\xee" * 16], refs=[(1, 32, b"\1" * 8), (0, 4128, b"\2" * 8), None,
                                         (0, 32, b"\3" * 8)], version=2))
    put("manifest", "fixup-mixed", b"\1" + manifest(packs=[pid], refs=[(0, 32, b"\5" * 8)]))
    put("manifest", "bad-magic", b"\0" + b"ACMFSMAX" + manifest()[8:])
    put("pack", "empty", b"\0" + pack([]))
    put("pack", "one", b"\0" + pack(blk[:1]))
    put("pack", "three", b"\1" + pack(blk, pid))
    put("pack", "key", b"\2packs/000102030405060708090a0b0c0d0e0f.pack")
    put("pack", "key2", b"\2000102030405060708090a0b0c0d0e0f.pack")


def gen_geometry():
    """Manifests and packs at and past the geometry bounds (format.h): each
    one field off, checksums fixed (flag bit 0), so the checks behind the
    checksum are where the fuzzer starts."""
    pid = bytes(range(16))
    ok = dict(packs=[pid], refs=[(0, 4096, b"\7" * 8)])
    put("manifest", "geo-grain-4k", b"\1" + manifest(size=3 * 4096, grain=4096, **ok))
    put("manifest", "geo-grain-16m", b"\1" + manifest(size=16 << 20, grain=16 << 20, **ok))
    # the largest volume's header alone (its refs would be 96 MiB): too short
    b = bytearray(manifest(size=16 << 20, grain=16 << 20, **ok))
    struct.pack_into("<QIIQ", b, 16, 64 << 40, 16 << 20, 1, 4 << 20)
    put("manifest", "geo-size-64t", b"\1" + bytes(b))
    for name, grain in (("geo-grain-128m", 128 << 20), ("geo-grain-0", 0),
                        ("geo-grain-odd", 65536 + 4096), ("geo-grain-2k", 2048)):
        b = bytearray(manifest(size=4 * 65536, **ok))
        struct.pack_into("<I", b, 24, grain)
        put("manifest", name, b"\1" + bytes(b))
    b = bytearray(manifest(size=4 * 65536, **ok))
    struct.pack_into("<I", b, 28, 5)           # more packs than stored grains
    put("manifest", "geo-packs-over", b"\1" + bytes(b))
    b = bytearray(manifest(size=4 * 65536, **ok))
    struct.pack_into("<Q", b, 16, (64 << 40) + 65536)
    put("manifest", "geo-size-over", b"\1" + bytes(b))
    # pack trailers claiming more than the object holds; bit 2 = a lying size
    blk = [bytes([i + 1]) * 4096 for i in range(2)]
    p = bytearray(pack(blk))
    struct.pack_into("<I", p, len(p) - 64 + 12, 0xFFFFFFFF)
    put("pack", "geo-n-max", b"\1" + bytes(p))
    p = pack(blk)
    put("pack", "geo-claim-200g", b"\4" + struct.pack("<Q", 200 << 30) + p[8:])
    put("pack", "geo-claim-exact", b"\4" + struct.pack("<Q", len(p)) + p[8:])


# ---------------------------------------------------------------- S3 listings
def s3_page(entries, truncated=False, token=None, trailer_fields=False, prefix="acm/pool/"):
    head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n" \
        "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">" \
        "<Name>bucket</Name><Prefix>%spacks/</Prefix><KeyCount>%d</KeyCount>" \
        "<MaxKeys>1000</MaxKeys>" % (prefix, len(entries))
    flags = "<IsTruncated>%s</IsTruncated>" % ("true" if truncated else "false")
    if token is not None:
        flags += "<NextContinuationToken>%s</NextContinuationToken>" % token
    body = "".join(
        "<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag>"
        "<Size>%s</Size><StorageClass>STANDARD</StorageClass></Contents>" % e
        for e in entries)
    if trailer_fields:                          # RGW and others: flags after the entries
        return (head + body + flags + "</ListBucketResult>").encode()
    return (head + flags + body + "</ListBucketResult>").encode()


def gen_s3_list():
    lm = "2026-11-25T12:00:00.000Z"
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    ents = [("acm/pool/packs/%032x.pack" % i, lm, md5, str(33554432 + i)) for i in range(3)]
    put("s3_list", "page", b"\2" + s3_page(ents))
    put("s3_list", "page-truncated", b"\2" + s3_page(ents, True, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM="))
    put("s3_list", "page-rgw-order", b"\2" + s3_page(ents, True, "token2", trailer_fields=True))
    put("s3_list", "page-stop", b"\6" + s3_page(ents))
    put("s3_list", "empty", b"\2" + s3_page([]))
    put("s3_list", "no-prefix", b"\0" + s3_page([("manifests/db/%020d-0123456789abcdef.mf" % 1,
                                                    "2026-01-02T03:04:05Z", md5, "1048608")],
                                                  prefix=""))
    put("s3_list", "entities", b"\0" + s3_page([("a&amp;b&lt;c&gt;&quot;&apos;", lm, md5, "1")],
                                                prefix=""))
    put("s3_list", "truncated-no-token", b"\2" + s3_page(ents, True))
    put("s3_list", "size-overflow", b"\2" + s3_page([(ents[0][0], lm, md5, "18446744073709551616")]))
    put("s3_list", "size-negative", b"\2" + s3_page([(ents[0][0], lm, md5, "-1")]))
    put("s3_list", "bad-date", b"\2" + s3_page([(ents[0][0], "yesterday", md5, "1")]))
    put("s3_list", "long-key", b"\2" + s3_page([("acm/pool/" + "k" * 1500, lm, md5, "1")] + ents))
    put("s3_list", "key-256", b"\2" + s3_page([("acm/pool/" + "k" * 256, lm, md5, "1")]))
    put("s3_list", "long-token", b"\2" + s3_page(ents, True, "t" * 1100))
    put("s3_list", "unclosed", b"\2" + s3_page(ents)[:-40])
    put("s3_list", "error-doc", b"\2<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>")
    put("s3_list", "html", b"\2<html><body>502 Bad Gateway</body></html>")
    for i, v in enumerate(["bytes 0-99/100", "bytes 5-4/10", "bytes 0-0/*", "bytes 1-2/2",
                           "Wed, 25 Nov 2026 12:00:00 GMT", "Sun, 06 Nov 1994 08:49:37 GMT",
                           "Thu, 31 Dec 1969 23:59:59 GMT", "2026-11-25T12:00:00.123Z",
                           "0", "007", "18446744073709551615", "18446744073709551616",
                           "<Key>abc</Key>", "<Key>" + "z" * 80 + "</Key>"]):
        put("s3_list", "value-%02d" % i, b"\x08" + v.encode())


# ---------------------------------------------------------------- tracking
def era_map(eras, grain=65536, era=None, seq=1):
    eras = list(eras)
    era = max(eras, default=0) if era is None else era
    data = b"".join(struct.pack("<I", e) for e in eras)
    h = b"ACMERA01" + struct.pack("<IIQII Q", 1, grain, len(eras), era, crc32c(data), seq) \
        + bytes(20)
    return h + struct.pack("<I", crc32c(h)) + data


def intent(nr_grains, grain, marks=()):
    rg = (64 << 20) // grain
    nreg = -(-nr_grains // rg)
    h = b"ACMINT01" + struct.pack("<IIQQ", 1, 0, rg, nreg) + bytes(28)
    bits = bytearray((nreg + 7) // 8)
    for r in marks:
        bits[r // 8] |= 1 << (r % 8)
    return h + struct.pack("<I", crc32c(h)) + bytes(bits)


def gen_track():
    def prefix(flags=0, p1=0, cur=5):
        return bytes([flags, p1, 0, 0]) + struct.pack("<I", cur)
    put("track_map", "zero", prefix() + era_map([0] * 16))
    put("track_map", "eras", prefix(cur=9) + era_map([i % 7 for i in range(100)]))
    put("track_map", "grain4k", prefix(cur=3) + era_map([1, 2, 3] * 40, grain=4096))
    put("track_map", "marked", prefix(4, 0b101, cur=4) + era_map([1] * 40000, grain=4096))
    put("track_map", "newer", prefix(cur=1) + era_map([2, 2], era=2))
    put("track_map", "fixup", prefix(1, cur=7) + era_map([3] * 8))
    put("track_map", "empty-vol", prefix() + era_map([]))
    for sel, grain in ((0, 4 << 20), (1, 8 << 20), (2, 16 << 20)):
        for nr in (1, 37, 512):
            rg = (64 << 20) // grain
            nreg = -(-nr // rg)
            marks = [r for r in range(nreg) if r % 3 == 0]
            p = bytes([0, sel]) + struct.pack("<H", nr - 1) + struct.pack("<I", 3)
            put("track_intent", f"g{sel}-n{nr}-clean", p + intent(nr, grain))
            put("track_intent", f"g{sel}-n{nr}-marks", p + intent(nr, grain, marks))
    put("track_intent", "fixup", bytes([1, 2, 10, 0]) + struct.pack("<I", 2)
        + intent(11, 16 << 20, [1]))


def copy_pool(pool):
    pool = Path(pool)
    n = 0
    for f in sorted(pool.glob("packs/*.pack"))[:4]:
        if f.stat().st_size <= 4 << 20:
            put("pack", "pool-" + f.name, b"\0" + f.read_bytes())
            put("pack", "poolkey-" + f.name, b"\2" + str(f.relative_to(pool)).encode())
            n += 1
    for f in sorted(pool.glob("manifests/*/*.mf"))[:6]:
        put("manifest", "pool-" + f.parent.name + "-" + f.name, b"\0" + f.read_bytes())
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", help="a file:// pool directory written by acmfs")
    ap.add_argument("--era-dir", action="append", default=[],
                    help="a STORE/vol/<id> directory: copy its era.map and intent")
    a = ap.parse_args()
    gen_ctl()
    gen_tape()
    gen_geometry()
    gen_s3_list()
    gen_track()
    if a.pool:
        print(f"gen-corpus: {copy_pool(a.pool)} objects from {a.pool}")
    for i, d in enumerate(a.era_dir):
        d = Path(d)
        m = (d / "era.map").read_bytes()
        put("track_map", f"store-{i}", bytes([0, 0, 0, 0]) + struct.pack("<I", 0xFFFFFFFF) + m)
    for t in sorted(CORPUS.iterdir()):
        print(f"gen-corpus: {t.name}: {len(list(t.iterdir()))} seeds")


if __name__ == "__main__":
    main()
