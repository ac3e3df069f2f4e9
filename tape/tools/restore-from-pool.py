#!/usr/bin/env python3
"""restore-from-pool.py — rebuild a volume image from a tape pool without acmfs.

Follows docs/tape-format.md and nothing else (python3 standard library only).
POOL is a directory holding the pool's objects: a file:// pool directory, or
the output of `aws s3 cp --recursive s3://bucket/prefix POOL`.

    restore-from-pool.py POOL MANIFEST_KEY OUT     # rebuild one image
    restore-from-pool.py POOL --list               # list the manifests

Every structure's magic, version and checksum is checked and every block is
verified against its SHA-256; any mismatch aborts with exit status 1. Zero
grains are left as holes in OUT (sparse).
"""
import hashlib
import os
import struct
import sys

PACK_MAGIC = b"ACMFSPAK"
PACK_END_MAGIC = b"ACMFSEND"
MANIFEST_MAGIC = b"ACMFSMAN"
VERSION = 1
PACK_HEADER = 32
PACK_TRAILER = 64
ENTRY = 48
REF = 24
ZERO_PACK = 0xFFFFFFFF


class FormatError(Exception):
    pass


def parse_manifest(data):
    if len(data) < 72 + 32 or data[:8] != MANIFEST_MAGIC:
        raise FormatError("manifest: bad magic or too short")
    (version, header_bytes, size, grain, nr_packs, nr_grains, hist_version, date,
     blocks_total, lv, lh, lp, reserved) = struct.unpack_from("<IIQIIQQqQHHHH", data, 8)
    if version != VERSION:
        raise FormatError("manifest: unsupported version %d" % version)
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise FormatError("manifest: checksum mismatch")
    if header_bytes != 72 + lv + lh + lp or reserved != 0:
        raise FormatError("manifest: bad header length")
    if grain == 0 or nr_grains != (size + grain - 1) // grain:
        raise FormatError("manifest: size/grain/nr_grains disagree")
    if len(data) != header_bytes + 16 * nr_packs + REF * nr_grains + 32:
        raise FormatError("manifest: length mismatch")
    p = 72
    volume = data[p:p + lv].decode()
    host = data[p + lv:p + lv + lh].decode()
    parent = data[p + lv + lh:p + lv + lh + lp].decode()
    p = header_bytes
    packs = [data[p + 16 * i:p + 16 * (i + 1)].hex() for i in range(nr_packs)]
    p += 16 * nr_packs
    refs = []
    for g in range(nr_grains):
        pack, length, off = struct.unpack_from("<IIQ", data, p)
        prefix = data[p + 16:p + 24]
        refs.append((pack, length, off, prefix))
        p += REF
    return {"volume": volume, "host": host, "parent": parent, "size": size, "grain": grain,
            "version": hist_version, "date": date, "blocks_total": blocks_total,
            "packs": packs, "refs": refs}


def read_pack_index(path):
    """Returns {offset: (length, sha256)} for a pack file, after all checks."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(PACK_HEADER)
        if len(head) < PACK_HEADER or head[:8] != PACK_MAGIC:
            raise FormatError("%s: bad pack header" % path)
        if struct.unpack_from("<I", head, 8)[0] != VERSION:
            raise FormatError("%s: unsupported pack version" % path)
        f.seek(size - PACK_TRAILER)
        tr = f.read(PACK_TRAILER)
        if tr[:8] != PACK_END_MAGIC:
            raise FormatError("%s: bad pack trailer" % path)
        version, nr, index_off = struct.unpack_from("<IIQ", tr, 8)
        index_sha = tr[24:56]
        if version != VERSION or tr[56:64] != bytes(8):
            raise FormatError("%s: bad trailer version/reserved" % path)
        if index_off + nr * ENTRY + PACK_TRAILER != size:
            raise FormatError("%s: trailer does not match the object size" % path)
        f.seek(index_off)
        index = f.read(nr * ENTRY)
    if hashlib.sha256(index).digest() != index_sha:
        raise FormatError("%s: index checksum mismatch" % path)
    entries = {}
    for i in range(nr):
        h = index[i * ENTRY:i * ENTRY + 32]
        off, length, flags = struct.unpack_from("<QII", index, i * ENTRY + 32)
        if flags != 0:
            raise FormatError("%s: unknown block flags" % path)
        entries[off] = (length, h)
    return entries


def list_manifests(pool):
    root = os.path.join(pool, "manifests")
    for d, _, files in os.walk(root):
        for name in sorted(files):
            if name.endswith(".mf"):
                path = os.path.join(d, name)
                key = os.path.relpath(path, pool)
                with open(path, "rb") as f:
                    m = parse_manifest(f.read())
                print("%s volume=%s version=%d size=%d grain=%d blocks=%d host=%s" %
                      (key, m["volume"], m["version"], m["size"], m["grain"],
                       m["blocks_total"], m["host"]))


def restore(pool, manifest_key, out):
    with open(os.path.join(pool, manifest_key), "rb") as f:
        m = parse_manifest(f.read())
    grain, size = m["grain"], m["size"]
    indexes = {}
    files = {}
    with open(out, "wb") as o:
        o.truncate(size)
        for g, (pack, length, off, prefix) in enumerate(m["refs"]):
            if pack == ZERO_PACK:
                continue  # hole
            pid = m["packs"][pack]
            path = os.path.join(pool, "packs", pid + ".pack")
            if pid not in indexes:
                indexes[pid] = read_pack_index(path)
                files[pid] = open(path, "rb")
            ent = indexes[pid].get(off)
            if ent is None or ent[0] != length or ent[1][:8] != prefix:
                raise FormatError("grain %d: no matching block in pack %s" % (g, pid))
            f = files[pid]
            f.seek(off)
            block = f.read(length)
            if hashlib.sha256(block).digest() != ent[1]:
                raise FormatError("grain %d: block fails its SHA-256" % g)
            start = g * grain
            o.seek(start)
            o.write(block[:min(grain, size - start)])
    for f in files.values():
        f.close()


def main(argv):
    if len(argv) == 3 and argv[2] == "--list":
        list_manifests(argv[1])
        return 0
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    try:
        restore(argv[1], argv[2], argv[3])
    except (FormatError, OSError) as e:
        sys.stderr.write("restore-from-pool: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
