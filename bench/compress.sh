#!/usr/bin/env bash
# compress.sh — tape format 2 (issue 18): what an encrypted, compressed pool
# stores and costs, against borg and restic, and what encryption and
# compression cost on data that does not compress; one run, results to
# BENCHMARKS.md.
#
#   bench/compress.sh [--size SIZE] [--random SIZE] [--no-rgw] [--no-write-md]
#
# Part 1, a real filesystem: a SIZE (default 4G) volume, ext4 made on its
# `data` through a loop device, holding copies of /usr/share, /usr/bin and
# /usr/lib/x86_64-linux-gnu (more of /usr/lib until >= 2 GB are used) and a
# generated SQLite database of 300,000 rows; unmounted, then
#   acmfs    backup -T to an encrypted file:// pool (key=FILE, zstd level 3,
#            the defaults) until tape_status=succeeded; stored = the pool
#            directory's bytes
#   borg     borg init -e repokey, borg create --compression zstd,3 of the
#            volume's backing file (the same image)
#   restic   restic init, restic backup --compression auto of the same file
# then a realistic change (5% of the package files rewritten as an upgrade
# does, the database's rows 10% updated and 30,000 inserted) and a second
# backup by all three: added bytes and time. Targets: stored bytes <= the
# smaller peer, time <= 0.5 x the faster peer.
# Part 2, random data (--random, default 1G, incompressible): backup -m TAPE
# (upload), cp history/V/tape.img, and restore -v V -m TAPE of the whole
# volume (overwritten first) on an encrypted zstd pool vs a format=1 pool
# (no encryption, no compression: what was fast before format 2), best of 2
# interleaved rounds, on file:// and on Ceph RGW (scripts/ceph-rgw; skipped
# with --no-rgw). Target: each >= 0.9 x the same without.
# Needs root, e2fsprogs, borgbackup and restic (installed with apt-get when
# missing), Ceph for part 2 on RGW. Environment: ACMFS, BENCH_DIR (needs
# ~4 x SIZE + 12 x --random).
BENCH_NAME=compress.sh
SIZE=4G
RSIZE=1G
RGW=true
WRITE_MD=true
while (($#)); do
	case $1 in
	--size) SIZE=$2; shift ;;
	--random) RSIZE=$2; shift ;;
	--no-rgw) RGW=false ;;
	--no-write-md) WRITE_MD=false ;;
	-h | --help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "compress.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
source "$(dirname "$0")/lib.sh"
bench_init

need=()
command -v borg >/dev/null || need+=(borgbackup)
command -v restic >/dev/null || need+=(restic)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if ((${#need[@]})); then
	log "installing ${need[*]}"
	apt-get install -y -qq "${need[@]}" >/dev/null || die "apt-get install ${need[*]} failed"
fi

LOOPDEV=""
FSMNT=$W/fs
cleanup_fs() {
	if mountpoint -q "$FSMNT" 2>/dev/null; then umount "$FSMNT" || umount -l "$FSMNT" || true; fi
	if [[ -n $LOOPDEV ]]; then losetup -d "$LOOPDEV" 2>/dev/null || true; LOOPDEV=""; fi
}
trap 'cleanup_fs; bench_cleanup' EXIT

PASS=$W/pool.pass
printf 'compress bench passphrase %s\n' "$RANDOM$RANDOM" >"$PASS"
chmod 600 "$PASS"
export BORG_PASSPHRASE=$(head -n1 "$PASS") RESTIC_PASSWORD=$(head -n1 "$PASS")
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_BASE_DIR=$W/borg-base RESTIC_CACHE_DIR=$W/restic-cache

# the daemon takes the S3 credentials from its environment: RGW first
RBYTES=$(numfmt --from=iec "$RSIZE")
$RGW && start_rgw "$W/rgw" $(((RBYTES >> 30) * 6 + 6))
STORE=$W/store
MNT=$W/mnt
start_acmfs "$STORE" "$MNT"
bpy ctl "$MNT/ctl" "volume create fsv $SIZE save=1" >/dev/null
VD=$MNT/volumes/fsv
TV=$STORE/vol/1/tv.img
[[ -f $TV ]] || die "backing file $TV not found"
GRAIN=$(sed -n 's/^grain=//p' "$VD/info")
mkdir -p "$W/pool-fs"
bpy ctl "$MNT/ctl" "pool create encfs file://$W/pool-fs key=$PASS" >/dev/null
bpy ctl "$MNT/ctl" "tapepolicy fsv pool=encfs" >/dev/null

uploaded() { bpy metric "$MNT" acmfs_tape_bytes_uploaded_total; }
dir_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}'; }
gb() { calc "$1 / 1e9" 2; }

# ------------------------------------------------------------------ the corpus
fs_mount() {
	LOOPDEV=$(losetup --find --show "$VD/data")
	mkdir -p "$FSMNT"
	mount "$LOOPDEV" "$FSMNT"
}
fs_umount() {
	sync -f "$FSMNT"
	umount "$FSMNT"
	losetup -d "$LOOPDEV"
	LOOPDEV=""
}

log "building the corpus: ext4 on the volume, system directories, a SQLite database"
LOOPDEV=$(losetup --find --show "$VD/data")
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$LOOPDEV"
losetup -d "$LOOPDEV"
LOOPDEV=""
fs_mount
mkdir -p "$FSMNT/usr/lib"
cp -a /usr/share /usr/bin "$FSMNT/usr/"
cp -a /usr/lib/x86_64-linux-gnu "$FSMNT/usr/lib/"
used() { df -B1 --output=used "$FSMNT" | tail -n1 | tr -d ' '; }
for d in /usr/lib/*/; do
	(($(used) >= 2200000000)) && break
	[[ $d == /usr/lib/x86_64-linux-gnu/ ]] && continue
	cp -a "$d" "$FSMNT/usr/lib/" 2>/dev/null || true
done
mkdir -p "$FSMNT/srv/db"
"$PY" - "$FSMNT/srv/db/app.sqlite" <<'EOF'
import random, sqlite3, sys
rng = random.Random(18)
db = sqlite3.connect(sys.argv[1])
db.execute("create table orders (id integer primary key, customer text, item text, "
           "qty integer, price real, note text, created text)")
words = "alpha beta gamma delta tape pool volume backup grain history restore".split()
rows = []
for i in range(300000):
    rows.append((i, "customer-%06d" % rng.randrange(40000), rng.choice(words) + "-%04d" % rng.randrange(9999),
                 rng.randrange(1, 50), round(rng.uniform(1, 999), 2),
                 " ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))),
                 "2026-%02d-%02d %02d:%02d:%02d" % (rng.randrange(1, 13), rng.randrange(1, 29),
                                                   rng.randrange(24), rng.randrange(60), rng.randrange(60))))
db.executemany("insert into orders values (?,?,?,?,?,?,?)", rows)
db.execute("create index orders_customer on orders(customer)")
db.commit()
db.close()
EOF
USED=$(used)
NFILES=$(find "$FSMNT" -type f | wc -l)
fs_umount
log "corpus: $(gb "$USED") GB used, $NFILES files"
((USED >= 2000000000)) || die "the corpus holds only $USED bytes (< 2 GB)"

# ------------------------------------------------------------------ first backups
# acmfs_backup: backup -T until the tape copy succeeded; sets AB_S, AB_BYTES
acmfs_backup() {
	local r
	drop_caches
	log "acmfs: backup -T to the encrypted file:// pool ($1)"
	r=$(bpy backup "$VD" tape_status 1800 "backup -T")
	log "$r"
	[[ $(kv status "$r") == succeeded ]] || die "acmfs $1: $r"
	AB_S=$(kv total_s "$r")
	AB_V=$(kv version "$r")
}
borg_backup() {
	timed "borg: create --compression zstd,3 ($1)" \
		borg create --compression zstd,3 "$W/borg::$1" "$TV"
	BB_S=$T_S
}
restic_backup() {
	timed "restic: backup --compression auto ($1)" \
		restic -q -r "$W/restic" backup --compression auto "$TV"
	RB_S=$T_S
}

borg init -e repokey "$W/borg" >/dev/null
restic -q -r "$W/restic" init >/dev/null
# the image the peers read must hold what acmfs backs up: the daemon writes
# through to tv.img, and the file system was unmounted and synced above
acmfs_backup first
A1_S=$AB_S A1_BYTES=$(dir_bytes "$W/pool-fs") A1_V=$AB_V
borg_backup first
B1_S=$BB_S B1_BYTES=$(dir_bytes "$W/borg")
restic_backup first
R1_S=$RB_S R1_BYTES=$(dir_bytes "$W/restic")

# ------------------------------------------------------------------ the change
log "changing the corpus: an upgrade of 5% of the package files, database updates"
fs_mount
"$PY" - "$FSMNT" <<'EOF'
import os, random, sqlite3, sys
root = sys.argv[1]
rng = random.Random(180)
files = []
for sub in ("usr/bin", "usr/lib", "usr/share"):
    for d, _, names in os.walk(os.path.join(root, sub)):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append(p)
files.sort()
changed = rng.sample(files, len(files) // 20)
nbytes = 0
for p in changed:
    # as a package upgrade does: a new file (new blocks) in the old one's place,
    # most of its content the same, some of it rebuilt
    data = bytearray(open(p, "rb").read())
    for _ in range(1 + len(data) // 65536):
        if data:
            at = rng.randrange(len(data))
            data[at:at + 64] = os.urandom(min(64, len(data) - at))
    tmp = p + ".dpkg-new"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, p)
    nbytes += len(data)
db = sqlite3.connect(os.path.join(root, "srv/db/app.sqlite"))
db.execute("update orders set qty = qty + 1, note = note || ' updated' where id % 10 = 3")
db.executemany("insert into orders (customer, item, qty, price, note, created) values (?,?,?,?,?,?)",
               [("customer-%06d" % rng.randrange(40000), "item-%04d" % rng.randrange(9999),
                 rng.randrange(1, 50), 9.99, "new order", "2026-12-04 12:00:00")
                for _ in range(30000)])
db.commit()
db.close()
print("%d files (%d bytes) rewritten" % (len(changed), nbytes), file=sys.stderr)
EOF
fs_umount

acmfs_backup second
A2_S=$AB_S A2_BYTES=$(($(dir_bytes "$W/pool-fs") - A1_BYTES))
borg_backup second
B2_S=$BB_S B2_BYTES=$(($(dir_bytes "$W/borg") - B1_BYTES))
restic_backup second
R2_S=$RB_S R2_BYTES=$(($(dir_bytes "$W/restic") - R1_BYTES))

# the second history reads back exact (against the image it was taken from)
drop_caches
cmp -s "$VD/history/$AB_V/tape.img" "$TV" && FS_CMP=identical || FS_CMP="**differs**"
log "tape.img of the second backup vs the image: $FS_CMP"
rm -rf "$W/borg" "$W/restic" "$BORG_BASE_DIR" "$RESTIC_CACHE_DIR"
bpy ctl "$MNT/ctl" "volume delete fsv" >/dev/null || true

# ------------------------------------------------------------------ random data
bpy ctl "$MNT/ctl" "volume create rv $RSIZE save=1" >/dev/null
VR=$MNT/volumes/rv
log "filling rv with $RSIZE of random data"
fill_random "$VR/data" "$RBYTES" rv1
ROUNDS=3
# one_pool KIND NAME URL OPTS ROUND: upload, cp tape.img, full restore on a
# fresh pool; appends to UP_<NAME> GET_<NAME> RST_<NAME>
CMP=identical
one_pool() {
	local tag=$2 r v t0 before
	bpy ctl "$MNT/ctl" "pool create $tag$5 $3 $4" >/dev/null
	bpy ctl "$MNT/ctl" "tapepolicy rv pool=$tag$5" >/dev/null
	drop_caches
	log "acmfs: backup -m TAPE of rv to $tag$5 ($1)"
	r=$(bpy backup "$VR" tape_status 900 "backup -m TAPE")
	[[ $(kv status "$r") == succeeded ]] || die "upload to $tag$5: $r"
	v=$(kv version "$r")
	eval "UP_$tag+=\" $(kv total_s "$r")\""
	timed "acmfs: cp history/$v/tape.img ($tag$5)" cp "$VR/history/$v/tape.img" "$W/out.img"
	eval "GET_$tag+=\" $T_S\""
	before=$(sha256sum <"$W/out.img")
	rm -f "$W/out.img"
	fill_random "$VR/data" "$RBYTES" "rv-over-$tag$5"
	drop_caches
	log "acmfs: restore -v $v -m TAPE ($tag$5)"
	t0=$(now_ns)
	bpy ctl "$VR/ctl" "restore -v $v -m TAPE" >/dev/null
	eval "RST_$tag+=\" $(secs "$t0")\""
	[[ $(sha256sum <"$VR/data") == "$before" ]] || CMP="**differs**"
}
UP_fplain="" GET_fplain="" RST_fplain="" UP_fenc="" GET_fenc="" RST_fenc=""
UP_splain="" GET_splain="" RST_splain="" UP_senc="" GET_senc="" RST_senc=""
for r in $(seq "$ROUNDS"); do
	mkdir -p "$W/fp$r" "$W/fe$r"
	one_pool file:// fplain "file://$W/fp$r" "format=1" "$r"
	one_pool file:// fenc "file://$W/fe$r" "key=$PASS" "$r"
done
if $RGW; then
	EP="endpoint=$S3_EP path_style=1"
	for r in $(seq "$ROUNDS"); do
		one_pool RGW splain "s3://$S3_BUCKET/plain$r" "$EP format=1 encrypt=none" "$r"
		one_pool RGW senc "s3://$S3_BUCKET/enc$r" "$EP key=$PASS" "$r"
	done
fi
stop_acmfs "$MNT" "$ACMFS_PID"

# ------------------------------------------------------------------ report
ratio_row() { # WHAT PLAIN_ALL ENC_ALL
	local p e rt
	p=$(best "$2") e=$(best "$3")
	rt=$(calc "$p / $e")
	echo "| $1 | $e s | $p s | $rt × | ≥ 0.9 × | $(verdict "$rt >= 0.9") |"
}
MINPEER_B=$((B1_BYTES < R1_BYTES ? B1_BYTES : R1_BYTES))
FASTPEER_S=$(best "$B1_S $R1_S")
MINPEER2_B=$((B2_BYTES < R2_BYTES ? B2_BYTES : R2_BYTES))
FASTPEER2_S=$(best "$B2_S $R2_S")
RB1=$(calc "$A1_BYTES / $MINPEER_B")
RT1=$(calc "$A1_S / $FASTPEER_S")
RB2=$(calc "$A2_BYTES / $MINPEER2_B")
RT2=$(calc "$A2_S / $FASTPEER2_S")
REPORT=$W/report.md
{
	machine_line
	echo "Corpus: a $SIZE ext4 volume (grain $GRAIN) holding $NFILES files, $(gb "$USED") GB used (copies of /usr/share, /usr/bin, /usr/lib/…, a 300,000-row SQLite database);"
	echo "$(borg --version), $(restic version | cut -d' ' -f1-2); acmfs: encrypted file:// pool (AES-256-GCM, zstd level 3, the defaults). Peers back up the volume's backing file (the same image); all three repositories on the same disk; caches dropped before each backup."
	echo "Change: 5% of the package files rewritten (new files in place, ~1 in 1000 bytes changed), 10% of the database rows updated, 30,000 inserted."
	echo
	echo "| backup | acmfs | borg (zstd,3) | restic (auto) | acmfs / best peer | target | |"
	echo "|---|---:|---:|---:|---:|---|---|"
	echo "| first: bytes stored | $(gb "$A1_BYTES") GB | $(gb "$B1_BYTES") GB | $(gb "$R1_BYTES") GB | $RB1 × | ≤ 1 × | $(verdict "$RB1 <= 1") |"
	echo "| first: time | $A1_S s | $B1_S s | $R1_S s | $RT1 × | ≤ 0.5 × | $(verdict "$RT1 <= 0.5") |"
	echo "| second (after the change): bytes added | $(gb "$A2_BYTES") GB | $(gb "$B2_BYTES") GB | $(gb "$R2_BYTES") GB | $RB2 × | ≤ 1 × | $(verdict "$RB2 <= 1") |"
	echo "| second: time | $A2_S s | $B2_S s | $R2_S s | $RT2 × | ≤ 0.5 × | $(verdict "$RT2 <= 0.5") |"
	echo
	echo "acmfs time = \`backup -T\` written until \`tape_status=succeeded\` (the disk copy runs meanwhile); its second tape.img vs the image: $FS_CMP."
	echo
	rgw_times=""
	$RGW && rgw_times="; RGW upload$UP_senc vs$UP_splain, cp$GET_senc vs$GET_splain, restore$RST_senc vs$RST_splain"
	echo "Random data, $RSIZE (incompressible), best of $ROUNDS interleaved rounds, a fresh pool each: encrypted + zstd vs \`format=1\` (plain, uncompressed; all times (s): file:// upload$UP_fenc vs$UP_fplain, cp$GET_fenc vs$GET_fplain, restore$RST_fenc vs$RST_fplain$rgw_times)."
	echo
	echo "| random data | encrypted + zstd | format=1 | ratio | target | |"
	echo "|---|---:|---:|---:|---|---|"
	ratio_row "file:// upload (\`backup -m TAPE\`)" "$UP_fplain" "$UP_fenc"
	ratio_row "file:// \`cp tape.img\`" "$GET_fplain" "$GET_fenc"
	ratio_row "file:// \`restore -m TAPE\` (all grains)" "$RST_fplain" "$RST_fenc"
	if $RGW; then
		ratio_row "RGW upload" "$UP_splain" "$UP_senc"
		ratio_row "RGW \`cp tape.img\`" "$GET_splain" "$GET_senc"
		ratio_row "RGW \`restore -m TAPE\` (all grains)" "$RST_splain" "$RST_senc"
		echo
		echo "RGW: $S3_ENGINE (same 2 cores as acmfs)."
	fi
	echo "Ratio = time without / time with (≥ 1: encryption and compression cost nothing). Read-back and restore checks: $CMP."
} >"$REPORT"
cat "$REPORT"
$WRITE_MD && md_section "Tape format 2: encryption and compression (bench/compress.sh)" bench/compress.sh "$REPORT" &&
	log "results written to BENCHMARKS.md"
exit 0
