#!/usr/bin/env python3
"""restore-from-pool.py — rebuild a volume image from a tape pool without acmfs.

Follows docs/tape-format.md and nothing else. POOL is a directory holding the
pool's objects: a file:// pool directory, or the output of
`aws s3 cp --recursive s3://bucket/prefix POOL`.

    restore-from-pool.py [--key FILE] POOL MANIFEST_KEY OUT   # rebuild one image
    restore-from-pool.py [--key FILE] POOL --list             # list the manifests

A pool without a `config` object is version 1 (python3 standard library
only). A version 2 pool also needs python3-zstandard, and when encrypted
python3-cryptography and --key FILE: its passphrase file (the content less
one trailing newline; refused if group or others may access it). --list
shows an encrypted pool's manifests without the key too (headers only).

Every structure's magic, version, bounds and checksum (version 2: tag) is
checked and every block is verified against its name; zero grains are left
as holes in OUT (sparse). OUT is written under a temporary name beside it
and renamed only when complete. Exit status: 0 done; 1 a damaged, foreign or
unknown object, or an I/O error; 2 usage, or a missing, unsafe or wrong key.
"""
import functools
import hashlib
import hmac
import os
import re
import stat
import struct
import sys
import tempfile

PACK_MAGIC = b"ACMFSPAK"
PACK_END_MAGIC = b"ACMFSEND"
MANIFEST_MAGIC = b"ACMFSMAN"
CONFIG_MAGIC = b"ACMFSCFG"
CONFIG_BYTES = 152
PACK_HEADER = 32
PACK_TRAILER = 64
ENTRY = 48
REF = 24
TAG = 16
NONCE = 12
ZERO_NONCE = bytes(NONCE)
ZERO_PACK = 0xFFFFFFFF
MANIFEST_FIXED = {1: 72, 2: 104}
PASS_MAX = 1024

# "Bounds: bucket contents are untrusted" (tape/format.h)
GRAIN_MIN, GRAIN_MAX = 4 << 10, 16 << 20
VOLUME_MAX = 64 << 40
MAX_GRAINS = 1 << 30
MAX_PACK_OFF = 1 << 40
# version 2 packs hold up to 8 x pack_bytes / grain (compressed) blocks
PACK_MAX_BLOCKS = {1: 1 << 20, 2: 8 << 20}
PACK_MAX_BYTES = {1: 4096 + (4 << 30) + ENTRY * (1 << 20) + PACK_TRAILER,
                  2: 4096 + (4 << 30) + GRAIN_MAX + NONCE + TAG + ENTRY * (8 << 20) + TAG
                  + PACK_TRAILER}
BLOCK_MAX = {1: GRAIN_MAX, 2: GRAIN_MAX + NONCE + TAG}
RUN_BYTES = 8 << 20  # adjacent blocks of a pack are fetched with one read up to this
OPEN_PACKS = 64      # pack files kept open at once
VOLUME_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
MANIFEST_KEY = re.compile(r"manifests/(.+)/([0-9]{20})-[0-9a-f]{16}\.mf")


class Error(Exception):
    status = 1


class FormatError(Error):
    """A damaged, hostile, foreign or unknown object."""


class KeyProblem(Error):
    """A missing, unsafe or wrong key."""
    status = 2


def _missing(module, package):
    return Error("version 2 pools need the python3 module %s (Debian: apt install %s)"
                 % (module, package))


@functools.lru_cache(None)
def _crypto():
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise _missing("cryptography", "python3-cryptography") from None
    return AESGCM, InvalidTag, Cipher, algorithms, modes


@functools.lru_cache(None)
def _zstd():
    try:
        import zstandard
    except ImportError:
        raise _missing("zstandard", "python3-zstandard") from None
    return zstandard, zstandard.ZstdDecompressor()


def _kdf(key, label):
    return hmac.new(key, label, hashlib.sha256).digest()


def gcm_open(key, nonce, data, aad, what):
    """AES-256-GCM: data is the ciphertext then the 16-byte tag."""
    AESGCM, InvalidTag, Cipher, algorithms, modes = _crypto()
    try:
        if len(data) <= 2**31 - 1:
            return AESGCM(key).decrypt(nonce, bytes(data), aad)
        # AESGCM's one-shot API stops at 2 GiB; a large manifest body goes in pieces
        d = Cipher(algorithms.AES(key), modes.GCM(nonce, bytes(data[-TAG:]))).decryptor()
        d.authenticate_additional_data(aad)
        out = bytearray()
        for i in range(0, len(data) - TAG, 1 << 26):
            out += d.update(data[i:min(i + (1 << 26), len(data) - TAG)])
        d.finalize()
        return out
    except InvalidTag:
        raise FormatError("%s fails its authentication tag" % what) from None


# ---------------------------------------------------------------- pool, keys

class Pool:
    """A pool's format: version 1 (no config), or version 2 with the config's
    pool id and, once the passphrase has unwrapped the master key, the subkeys
    (keys["name"|"block"|"index"|"manifest"])."""

    def __init__(self, version=1, encrypted=False, pool_id=None):
        self.version, self.encrypted, self.pool_id = version, encrypted, pool_id
        self.keys = None


def read_passphrase(path):
    """A key file's content less one trailing newline, 1..1024 bytes. Like
    ssh, refuses a file that group or others may access."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise KeyProblem("key file %s: %s" % (path, e.strerror)) from None
    with f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyProblem("key file %s is not a regular file" % path)
        if st.st_mode & 0o077:
            raise KeyProblem("key file %s: permissions %04o are too open; it must not be "
                             "accessible by group or others (chmod 600 %s)"
                             % (path, stat.S_IMODE(st.st_mode), path))
        data = f.read(PASS_MAX + 2)
    if data.endswith(b"\n"):
        data = data[:-1]
    if not 1 <= len(data) <= PASS_MAX:
        raise KeyProblem("key file %s must hold a passphrase of 1..%d bytes" % (path, PASS_MAX))
    return data


def parse_config(data, passphrase=None, name="pool"):
    """Checks a config object; with the passphrase also unwraps the keys."""
    if len(data) != CONFIG_BYTES or data[:8] != CONFIG_MAGIC:
        raise FormatError("config: bad magic or length")
    version, flags = struct.unpack_from("<II", data, 8)
    if version != 2:
        raise FormatError("config: unsupported version %d" % version)
    if hashlib.sha256(data[:120]).digest() != data[120:]:
        raise FormatError("config: checksum mismatch")
    if flags & ~1 or data[39]:
        raise FormatError("config: unknown flags or reserved bytes")
    pool = Pool(2, bool(flags & 1), data[16:32])
    if not pool.encrypted:
        if any(data[32:120]):
            raise FormatError("config: plain pool with KDF or key bytes")
        return pool
    kdf, log2n, r, p = struct.unpack_from("<IBBB", data, 32)
    if kdf != 1:
        raise FormatError("config: unsupported KDF %d" % kdf)
    if not (10 <= log2n <= 22 and 1 <= r <= 32 and 1 <= p <= 16) or (128 * r << log2n) > 1 << 30:
        raise FormatError("config: scrypt parameters out of bounds")
    if passphrase is None:
        return pool
    AESGCM, InvalidTag = _crypto()[:2]
    n = 1 << log2n
    try:  # maxmem: what OpenSSL's scrypt needs (V and B), and a little more
        kek = hashlib.scrypt(passphrase, salt=data[40:72], n=n, r=r, p=p,
                             maxmem=128 * r * (n + 2 + p) + (1 << 20), dklen=32)
    except (ValueError, MemoryError) as e:
        raise FormatError("config: scrypt log2 N=%d r=%d p=%d failed: %s" % (log2n, r, p, e))
    try:
        mk = AESGCM(kek).decrypt(ZERO_NONCE, data[72:120], data[:72])
    except InvalidTag:
        raise KeyProblem("wrong key for pool %s" % name) from None
    pool.keys = {k: _kdf(mk, b"acmfs v2 " + k.encode())
                 for k in ("name", "block", "index", "manifest")}
    return pool


def open_pool(root, key_file=None, need_key=True):
    """The pool at directory root; an encrypted one needs key_file unless
    need_key is false (then it has no keys)."""
    try:
        with open(os.path.join(root, "config"), "rb") as f:
            data = f.read(CONFIG_BYTES + 1)
    except FileNotFoundError:
        data = None
    pool = Pool() if data is None else parse_config(data)
    if not pool.encrypted:
        if key_file is not None:
            sys.stderr.write("restore-from-pool: note: pool %s is not encrypted, --key ignored\n"
                             % root)
        return pool
    if key_file is None:
        if need_key:
            raise KeyProblem("pool %s is encrypted: give its passphrase file with --key FILE"
                             % root)
        return pool
    return parse_config(data, read_passphrase(key_file), root)


def object_key(root, path):
    """The object key of the pool's file root/path, '/'-separated."""
    return os.path.relpath(os.path.join(root, path), root).replace(os.sep, "/")


# ---------------------------------------------------------------- manifests

def manifest_header(buf):
    """Checks a manifest's header against the bounds (buf holds at least its
    fixed part); returns its fields and the object length they imply."""
    if len(buf) < MANIFEST_FIXED[1] or buf[:8] != MANIFEST_MAGIC:
        raise FormatError("manifest: bad magic or too short")
    (version, hdr, size, grain, nr_packs, nr_grains, hist_version, date,
     blocks_total, lv, lh, lp, flags) = struct.unpack_from("<IIQIIQQqQHHHH", buf, 8)
    if version not in MANIFEST_FIXED:
        raise FormatError("manifest: unsupported version %d" % version)
    fixed = MANIFEST_FIXED[version]
    if len(buf) < fixed:
        raise FormatError("manifest: too short")
    if flags & ~(1 if version == 2 else 0):
        raise FormatError("manifest: unknown flags")
    if not 1 <= lv <= 128 or lh >= 256 or lp >= 256 or hdr != fixed + lv + lh + lp:
        raise FormatError("manifest: bad header length")
    if not GRAIN_MIN <= grain <= GRAIN_MAX or grain & (grain - 1) or not 1 <= size <= VOLUME_MAX:
        raise FormatError("manifest: bad size or grain")
    if nr_grains != -(-size // grain) or nr_grains > MAX_GRAINS:
        raise FormatError("manifest: size/grain/nr_grains disagree")
    if not nr_packs <= blocks_total <= nr_grains:
        raise FormatError("manifest: bad pack or block count")
    encrypted = bool(flags & 1)
    m = {"format": version, "encrypted": encrypted, "H": hdr, "size": size, "grain": grain,
         "nr_packs": nr_packs, "nr_grains": nr_grains, "version": hist_version, "date": date,
         "blocks_total": blocks_total, "lengths": (lv, lh, lp)}
    return m, hdr + 16 * nr_packs + REF * nr_grains + (TAG if encrypted else 0) + 32


def read_manifest(root, key):
    """A manifest object's bytes, its length checked against its header first."""
    with open(os.path.join(root, key), "rb") as f:
        head = f.read(MANIFEST_FIXED[2])
        total = manifest_header(head)[1]
        if total != os.fstat(f.fileno()).st_size:
            raise FormatError("manifest %s: length mismatch" % key)
        return head + f.read()


def parse_manifest(data, key=None, pool=None):
    """Checks and decodes a manifest: key is its object key (needed for an
    encrypted one), pool its Pool (None: not checked against a config). An
    encrypted manifest without the pool's keys gives its header only
    (packs and refs None)."""
    m, total = manifest_header(data)
    if len(data) != total:
        raise FormatError("manifest: length mismatch")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise FormatError("manifest: checksum mismatch")
    hdr, (lv, lh, _) = m["H"], m["lengths"]
    names = data[MANIFEST_FIXED[m["format"]]:hdr]
    try:
        if b"\0" in names:
            raise ValueError
        m["volume"] = names[:lv].decode()
        m["host"] = names[lv:lv + lh].decode()
        m["parent"] = names[lv + lh:].decode()
    except ValueError:
        raise FormatError("manifest: bad names") from None
    if not VOLUME_NAME.fullmatch(m["volume"]):
        raise FormatError("manifest: bad volume name")
    v2 = m["format"] == 2
    if pool is not None and pool.version != m["format"]:
        raise FormatError("manifest: version %d in a version %d pool" % (m["format"], pool.version))
    if v2:
        salt = data[88:104]
        if pool is not None and (data[72:88] != pool.pool_id or m["encrypted"] != pool.encrypted):
            raise FormatError("manifest: not of this pool (pool id or encryption differ)")
        if not m["encrypted"] and any(salt):
            raise FormatError("manifest: salt in a plain manifest")
        k = MANIFEST_KEY.fullmatch(key or "")
        if key is not None and not (k and k.group(1) == m["volume"]
                                    and int(k.group(2)) == m["version"]):
            raise FormatError("manifest: header does not match its key %s" % key)
    body = memoryview(data)[hdr:total - 32]
    m["packs"] = m["refs"] = None
    if m["encrypted"]:
        if pool is None or pool.keys is None:
            return m
        if key is None:
            raise FormatError("manifest: an encrypted manifest needs its object key")
        body = gcm_open(_kdf(pool.keys["manifest"], salt), ZERO_NONCE, body,
                        key.encode() + data[:hdr], "manifest %s" % key)
        body = memoryview(body)
    p16 = 16 * m["nr_packs"]
    m["packs"] = [bytes(body[i:i + 16]).hex() for i in range(0, p16, 16)]
    m["refs"] = refs = list(struct.iter_unpack("<IIQ8s", body[p16:]))
    max_len = m["grain"] + (NONCE + TAG if m["encrypted"] else 0)
    stored = 0
    for pack, length, off, prefix in refs:
        if pack == ZERO_PACK:
            if length or off or any(prefix):
                raise FormatError("manifest: bad hole reference")
            continue
        if (pack >= m["nr_packs"] or not PACK_HEADER <= off < MAX_PACK_OFF or
                (length != m["grain"] if not v2 else not 1 <= length <= max_len)):
            raise FormatError("manifest: bad grain reference")
        stored += 1
    if stored != m["blocks_total"]:
        raise FormatError("manifest: blocks_total mismatch")
    return m


# ---------------------------------------------------------------- packs

def read_pack_index(path, pool=None):
    """A pack's index after all checks: {offset: (length, name)} in version 1,
    {offset: (stored length, name, flags)} in version 2. pool: its Pool (None:
    not checked against a config; an encrypted pack then cannot be read)."""
    pid = os.path.basename(path)[:-len(".pack")]
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(PACK_HEADER)
        if len(head) < PACK_HEADER or head[:8] != PACK_MAGIC:
            raise FormatError("%s: bad pack header" % path)
        version, flags = struct.unpack_from("<II", head, 8)
        if version not in PACK_MAX_BLOCKS or (pool is not None and version != pool.version):
            raise FormatError("%s: unsupported pack version %d" % (path, version))
        encrypted = bool(flags & 1)
        if flags & ~(1 if version == 2 else 0) or (
                pool is not None and encrypted != pool.encrypted):
            raise FormatError("%s: bad pack flags" % path)
        if version == 2 and head[16:32].hex() != pid:
            raise FormatError("%s: pack id does not match its key" % path)
        if size < PACK_HEADER + PACK_TRAILER or size > PACK_MAX_BYTES[version]:
            raise FormatError("%s: bad pack size" % path)
        f.seek(size - PACK_TRAILER)
        tr = f.read(PACK_TRAILER)
        if tr[:8] != PACK_END_MAGIC:
            raise FormatError("%s: bad pack trailer" % path)
        tversion, nr, index_off = struct.unpack_from("<IIQ", tr, 8)
        index_sha = tr[24:56]
        tail = struct.pack("<II", flags, 0) if version == 2 else bytes(8)
        if tversion != version or tr[56:64] != tail:
            raise FormatError("%s: bad trailer version/flags/reserved" % path)
        stored = nr * ENTRY + (TAG if encrypted else 0)
        if (nr > PACK_MAX_BLOCKS[version] or not PACK_HEADER <= index_off <= MAX_PACK_OFF or
                nr > index_off - PACK_HEADER or index_off + stored + PACK_TRAILER != size):
            raise FormatError("%s: trailer does not match the object size" % path)
        f.seek(index_off)
        index = f.read(stored)
    if len(index) != stored or hashlib.sha256(index).digest() != index_sha:
        raise FormatError("%s: index checksum mismatch" % path)
    if encrypted:
        if pool is None or pool.keys is None:
            raise KeyProblem("%s: an encrypted pack needs the pool's key" % path)
        index = gcm_open(_kdf(pool.keys["index"], head[16:32]), ZERO_NONCE, index,
                         head + struct.pack("<IQ", nr, index_off), "%s: index" % path)
    entries = {}
    nxt = PACK_HEADER
    for name, off, length, fl in struct.iter_unpack("<32sQII", index):
        if version == 1:
            ok = fl == 0
        else:
            ok = (not fl & ~0xff03 and 12 <= (fl >> 8) <= 24 and
                  bool(fl & 2) == encrypted)
        if (not ok or not 1 <= length <= BLOCK_MAX[version] or off < nxt or off > index_off or
                length > index_off - off):
            raise FormatError("%s: bad index entry at offset %d" % (path, off))
        nxt = off + length
        entries[off] = (length, name, fl) if version == 2 else (length, name)
    return entries


class Packs:
    """The packs of a pool, opened on demand: each index read and checked
    once, at most OPEN_PACKS files open."""

    def __init__(self, root, pool):
        self.root, self.pool = root, pool
        self.indexes, self.files = {}, {}

    def path(self, pid):
        return os.path.join(self.root, "packs", pid + ".pack")

    def index(self, pid):
        if pid not in self.indexes:
            self.indexes[pid] = read_pack_index(self.path(pid), self.pool)
        return self.indexes[pid]

    def read(self, pid, off, length):
        f = self.files.pop(pid, None)
        if f is None:
            if len(self.files) >= OPEN_PACKS:
                self.files.pop(next(iter(self.files))).close()
            f = open(self.path(pid), "rb")
        self.files[pid] = f  # most recently used last
        f.seek(off)
        data = f.read(length)
        if len(data) != length:
            raise FormatError("%s: short read" % self.path(pid))
        return memoryview(data)

    def close(self):
        for f in self.files.values():
            f.close()
        self.files.clear()


def open_block(pool, ent, stored, grain, what):
    """A stored block's grain, checked against its index entry's name."""
    if pool.version == 1:
        block = stored
    else:
        _, name, flags = ent
        raw_len = 1 << ((flags >> 8) & 0xff)
        if raw_len != grain:
            raise FormatError("%s: raw length %d is not the grain" % (what, raw_len))
        body = stored
        if pool.encrypted:
            if not NONCE + TAG <= len(stored) <= raw_len + NONCE + TAG:
                raise FormatError("%s: bad stored length" % what)
            body = gcm_open(_kdf(pool.keys["block"], name), bytes(stored[:NONCE]),
                            stored[NONCE:], struct.pack("<II", flags, raw_len), what)
        if flags & 1:
            zstandard, dctx = _zstd()
            try:  # a frame's claimed size is checked before anything is allocated for it
                if zstandard.frame_content_size(body) not in (-1, raw_len):
                    raise FormatError("%s: zstd frame of the wrong size" % what)
                body = dctx.decompress(body, max_output_size=raw_len)
            except zstandard.ZstdError as e:
                raise FormatError("%s: zstd: %s" % (what, e)) from None
        block = body
        if len(block) != raw_len:
            raise FormatError("%s: wrong raw length" % what)
    if pool.encrypted:
        ok = hmac.compare_digest(_kdf(pool.keys["name"], block), ent[1])
    else:
        ok = hashlib.sha256(block).digest() == ent[1]
    if not ok:
        raise FormatError("%s: block fails its name" % what)
    return block


def grains(m, pool, packs):
    """Yields (g, grain) for every stored grain of manifest m, verified; each
    run of adjacent blocks of one pack is fetched with one read."""
    refs, g = m["refs"], 0
    while g < len(refs):
        pack, length, off, _ = refs[g]
        if pack == ZERO_PACK:
            g += 1
            continue
        pid = m["packs"][pack]
        index = packs.index(pid)
        run, end = [], off
        while g < len(refs) and refs[g][0] == pack and refs[g][2] == end and end - off < RUN_BYTES:
            _, length, o, prefix = refs[g]
            ent = index.get(o)
            if ent is None or ent[0] != length or ent[1][:8] != prefix:
                raise FormatError("grain %d: no matching block in pack %s" % (g, pid))
            run.append((g, ent, o - off, length))
            end += length
            g += 1
        data = packs.read(pid, off, end - off)
        for i, ent, at, length in run:
            yield i, open_block(pool, ent, data[at:at + length], m["grain"],
                                "grain %d (pack %s offset %d)" % (i, pid, off + at))


# ---------------------------------------------------------------- commands

def list_manifests(root, key_file=None):
    pool = open_pool(root, key_file, need_key=False)
    for d, _, files in os.walk(os.path.join(root, "manifests")):
        for name in sorted(files):
            if name.endswith(".mf") and not name.startswith("."):
                key = os.path.relpath(os.path.join(d, name), root).replace(os.sep, "/")
                m = parse_manifest(read_manifest(root, key), key, pool)
                print("%s volume=%s version=%d size=%d grain=%d blocks=%d host=%s" %
                      (key, m["volume"], m["version"], m["size"], m["grain"],
                       m["blocks_total"], m["host"]))


def restore(root, manifest_key, out, key_file=None):
    pool = open_pool(root, key_file)
    key = object_key(root, manifest_key)
    m = parse_manifest(read_manifest(root, key), key, pool)
    if pool.version == 2:
        _zstd()  # missing modules are reported before any output exists
    grain, size = m["grain"], m["size"]
    packs = Packs(root, pool)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(out) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(out)))
    try:
        with os.fdopen(fd, "wb") as o:
            if not pool.encrypted:  # the mode open() would give; decrypted images stay 0600
                umask = os.umask(0)
                os.umask(umask)
                os.fchmod(o.fileno(), 0o666 & ~umask)
            o.truncate(size)
            for g, block in grains(m, pool, packs):
                start = g * grain
                o.seek(start)
                o.write(block[:min(grain, size - start)])
            o.flush()
            os.fsync(o.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        packs.close()


def main(argv):
    args, key_file, it = [], None, iter(argv[1:])
    for a in it:
        if a == "--key":
            key_file = next(it, None)
            if key_file is None:
                args = []
                break
        elif a.startswith("--key="):
            key_file = a[len("--key="):]
        else:
            args.append(a)
    try:
        if len(args) == 2 and args[1] == "--list":
            list_manifests(args[0], key_file)
        elif len(args) == 3:
            restore(args[0], args[1], args[2], key_file)
        else:
            sys.stderr.write(__doc__)
            return 2
    except (Error, OSError) as e:
        sys.stderr.write("restore-from-pool: %s\n" % e)
        return e.status if isinstance(e, Error) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
