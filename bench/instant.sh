#!/usr/bin/env bash
# instant.sh — instant recovery (issue 20): restore -i and volume clone
# against the full restores they replace, in one run; results go to
# BENCHMARKS.md.
#
#   bench/instant.sh [--size SIZE] [--no-write-md]
#
# One volume db of SIZE (default 4G, save=1) holding ext4 with a SQLite
# database (1M rows, ~250 MB) and random files up to ~70% of the volume;
# `backup -T` (disk and tape: an S3 pool on Ceph RGW, the default encrypted
# and compressed format). Then, each after overwriting the volume with new
# random data (a lost volume) and dropping the caches:
#   1. tape: full `restore -m TAPE`, then mount + the first query, against
#      `restore -i -m TAPE`, mount + the same query (the time until the
#      database answers), and until the background fill has ended;
#   2. disk: the same with `restore -m DISK` / `restore -i -m DISK`
#      (after `canceltrk -all`, so that the full restore is full);
#   3. `volume clone` of a 64 GiB volume's history (1 GiB of data in it):
#      the ctl write's time;
#   4. `qemu-img convert` of a clone of db while it fills, against `cp` of
#      the history image it is a clone of.
# Targets (issue 20): first answer <= 5% of the full restore (tape and disk);
# fill <= 1.2 x the full restore; clone < 100 ms.
# Needs root, sqlite3, qemu-img, Ceph (scripts/setup.sh). Environment: ACMFS
# (a release build), BENCH_DIR (needs ~4 x SIZE + 2 GiB).
BENCH_NAME=instant.sh
SIZE=4G
WRITE_MD=true
while (($#)); do
	case $1 in
	--size) SIZE=$2; shift ;;
	--no-write-md) WRITE_MD=false ;;
	-h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "instant.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
source "$(dirname "$0")/lib.sh"
bench_init
command -v sqlite3 >/dev/null || die "sqlite3 missing"
command -v qemu-img >/dev/null || die "qemu-img missing"

BYTES=$(numfmt --from=iec "$SIZE")
MIB=$((BYTES / 1048576))
FS=$W/fs
LOOPDEV=""
fs_down() {
	if mountpoint -q "$FS"; then umount "$FS" || umount -l "$FS"; fi
	if [[ -n $LOOPDEV ]]; then losetup -d "$LOOPDEV" || true; fi
	LOOPDEV=""
}
trap 'fs_down; bench_cleanup' EXIT
fs_up() { # fs_up DATA [OPTS]: loop device + ext4 mount on $FS
	mkdir -p "$FS"
	LOOPDEV=$(losetup -f --show "$1")
	mount -t ext4 ${2:+-o "$2"} "$LOOPDEV" "$FS"
}
# what an application asks first: rows by key (a full scan would time
# reading the whole database, not the restore)
QUERY="select k, length(v) from t where k in (7, 250007, 500007, 750007, 999007);"
# read-only (the volume must still equal the image after the fill)
first_query() { sqlite3 -readonly "$FS/db.sqlite" "$QUERY"; }

start_rgw "$W/rgw" $((MIB * 3 / 1024 + 4))
STORE=$W/store
MNT=$W/mnt
V=$MNT/volumes/db
start_acmfs "$STORE" "$MNT"
umask 077
printf 'instant-bench passphrase\n' >"$W/pool.key"
bpy ctl "$MNT/ctl" "pool create s3 s3://$S3_BUCKET/acmfs endpoint=$S3_EP path_style=1 key=$W/pool.key" >/dev/null
bpy ctl "$MNT/ctl" "volume create db $SIZE save=1" >/dev/null
bpy ctl "$MNT/ctl" "tapepolicy db pool=s3" >/dev/null

# ------------------------------------------------------------------ the database
log "ext4 + SQLite (1M rows) + random files on db"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$V/data"
fs_up "$V/data"
sqlite3 "$FS/db.sqlite" "create table t (k integer primary key, v text);
  with recursive n(k) as (select 1 union all select k + 1 from n where k < 1000000)
  insert into t select k, hex(randomblob(100)) from n;" >/dev/null
ROWS_OK=$(first_query)
FILES=$((MIB * 7 / 10 / 256))
for ((i = 0; i < FILES; i++)); do
	{ openssl enc -aes-128-ctr -nosalt -pass "pass:instant-$i" </dev/zero 2>/dev/null || true; } |
		head -c $((256 << 20)) >"$FS/file$i"
done
USED=$(df -BM --output=used "$FS" | tail -n1 | tr -d ' M')
fs_down

log "backup -T (disk and tape)"
R=$(bpy backup "$V" tape_status 1800 "backup -T")
[[ $(kv status "$R") == succeeded ]] || die "backup: $R"
VER=$(kv version "$R")
[[ $(sed -n 's/^disk_status=//p' "$V/history/$VER/info") == succeeded ]] || die "disk copy"

wait_filled() { # -> FILL_S since $1 (now_ns)
	local i
	for i in $(seq 36000); do
		grep -q '^state=ok' "$V/info" && grep -q '^restore_execute=----' "$V/info" && break
		sleep 0.05
	done
	FILL_S=$(secs "$1")
}

# run_pair MEDIA: full restore vs live restore from MEDIA
run_pair() {
	local media=$1 t0 r
	fill_random "$V/data" "$BYTES" "instant-lost-$media-1"
	drop_caches
	log "full restore -m $media"
	t0=$(now_ns)
	r=$(bpy ctl "$V/ctl" "restore -v $VER -m $media")
	FULL_RESTORE_S=$(secs "$t0")
	fs_up "$V/data" ro,noload
	[[ $(first_query) == "$ROWS_OK" ]] || die "wrong rows after the full restore"
	FULL_S=$(secs "$t0")
	fs_down
	log "$r"
	cmp -s "$V/data" "$V/history/$VER/image" || die "full restore: volume != image"

	fill_random "$V/data" "$BYTES" "instant-lost-$media-2"
	drop_caches
	log "restore -i -m $media"
	t0=$(now_ns)
	r=$(bpy ctl "$V/ctl" "restore -i -v $VER -m $media")
	CTL_MS=$(kv write_ms "$r")
	fs_up "$V/data" ro,noload
	[[ $(first_query) == "$ROWS_OK" ]] || die "wrong rows during the live restore"
	FIRST_S=$(secs "$t0")
	FIRST_PCT_AT=$(sed -n 's/^restore_execute=//p' "$V/info")
	fs_down
	wait_filled "$t0"
	log "$r; first answer after $FIRST_S s, fill done after $FILL_S s"
	cmp -s "$V/data" "$V/history/$VER/image" || die "live restore: volume != image"
}

run_pair TAPE
T_FULL=$FULL_S T_FULL_RESTORE=$FULL_RESTORE_S T_FIRST=$FIRST_S T_FILL=$FILL_S T_CTL=$CTL_MS T_AT=$FIRST_PCT_AT
bpy ctl "$V/ctl" "canceltrk -all" >/dev/null
run_pair DISK
D_FULL=$FULL_S D_FULL_RESTORE=$FULL_RESTORE_S D_FIRST=$FIRST_S D_FILL=$FILL_S D_CTL=$CTL_MS D_AT=$FIRST_PCT_AT

# ------------------------------------------------------------------ clones
log "a 64 GiB volume with 1 GiB of data, backed up"
bpy ctl "$MNT/ctl" "volume create big 64G save=1" >/dev/null
for ((i = 0; i < 4; i++)); do
	{ openssl enc -aes-128-ctr -nosalt -pass "pass:big-$i" </dev/zero 2>/dev/null || true; } |
		head -c $((256 << 20)) |
		dd of="$MNT/volumes/big/data" bs=1M seek=$((i * 16384)) iflag=fullblock conv=notrunc,fsync status=none
done
R=$(bpy backup "$MNT/volumes/big" disk_status 900 "backup -m DISK")
[[ $(kv status "$R") == succeeded ]] || die "backup big: $R"
CLONE_ALL=""
for r in 1 2 3; do
	R=$(bpy ctl "$MNT/ctl" "volume clone bigc$r big")
	CLONE_ALL+=" $(kv write_ms "$R")"
done
CLONE_MS=$(best "$CLONE_ALL")
CLONE_GRAINS=$(kv grains_to_fill "$R")
for r in 1 2 3; do bpy ctl "$MNT/ctl" "volume delete bigc$r" >/dev/null; done

log "clone of db; qemu-img convert of it while it fills vs cp of the history image"
drop_caches
R=$(bpy ctl "$MNT/ctl" "volume clone dbc db -v $VER -m DISK")
t0=$(now_ns)
qemu-img convert -O raw "$MNT/volumes/dbc/data" "$W/convert.img"
QEMU_S=$(secs "$t0")
cmp -s "$W/convert.img" "$V/history/$VER/image" || die "qemu-img convert of the clone != image"
rm -f "$W/convert.img"
wait_for_clone() {
	local i
	for i in $(seq 36000); do
		grep -q '^state=ok' "$MNT/volumes/dbc/info" && break
		sleep 0.05
	done
}
wait_for_clone
timed "peer: cp history/$VER/image" cp "$V/history/$VER/image" "$W/cp.img"
CP_S=$T_S
rm -f "$W/cp.img"
stop_acmfs "$MNT" "$ACMFS_PID"

# ------------------------------------------------------------------ report
pct() { calc "100 * $1 / $2" 1; }
T_PCT=$(pct "$T_FIRST" "$T_FULL") D_PCT=$(pct "$D_FIRST" "$D_FULL")
T_FR=$(calc "$T_FILL / $T_FULL_RESTORE") D_FR=$(calc "$D_FILL / $D_FULL_RESTORE")
R_QEMU=$(calc "$CP_S / $QEMU_S")
REPORT=$W/report.md
{
	machine_line
	echo "Volume db $MIB MiB (grain 64K): ext4, a SQLite database of 1M rows and random files, $USED MiB used; the history on disk and on an"
	echo "encrypted, compressed S3 pool on $S3_ENGINE. Before each restore the volume is overwritten with new random data and the caches dropped."
	echo "\"first answer\": from the ctl write to the answer of \`$QUERY\` (losetup, mount of the ext4, sqlite3)."
	echo
	echo "| measurement | acmfs | against | ratio | target | |"
	echo "|---|---:|---:|---:|---|---|"
	echo "| tape: \`restore -i -m TAPE\` → first answer vs full \`restore -m TAPE\` → same answer | $T_FIRST s (ctl write $T_CTL ms; fill at $T_AT %) | $T_FULL s | $T_PCT % | ≤ 5 % | $(verdict "$T_PCT <= 5") |"
	echo "| tape: the live restore's fill, to its end, vs the full restore | $T_FILL s | $T_FULL_RESTORE s | $T_FR × | ≤ 1.2 × | $(verdict "$T_FR <= 1.2") |"
	echo "| disk: \`restore -i -m DISK\` → first answer vs full \`restore -m DISK\` → same answer | $D_FIRST s (ctl write $D_CTL ms; fill at $D_AT %) | $D_FULL s | $D_PCT % | ≤ 5 % | $(verdict "$D_PCT <= 5") |"
	echo "| disk: the fill, to its end, vs the full restore | $D_FILL s | $D_FULL_RESTORE s | $D_FR × | ≤ 1.2 × | $(verdict "$D_FR <= 1.2") |"
	echo "| \`volume clone\` of a 64 GiB history (1 GiB of data: $CLONE_GRAINS grains to fill), the ctl write | $CLONE_MS ms | | | < 100 ms | $(verdict "$CLONE_MS < 100") |"
	echo "| \`qemu-img convert -O raw\` of a clone of db while it fills vs \`cp\` of the history image | $QEMU_S s | $CP_S s | $R_QEMU × | (reference) | |"
	echo
	echo "Clone ctl writes (ms):$CLONE_ALL (best shown). Every restore and the convert were checked byte for byte against the history image."
	echo "Ratio columns: acmfs / the full restore for the first two kinds of rows (lower is better), cp time / convert time for the last."
} >"$REPORT"
cat "$REPORT"
$WRITE_MD && md_section "Instant recovery: restore -i and volume clone (bench/instant.sh)" bench/instant.sh "$REPORT" &&
	log "results written to BENCHMARKS.md"
exit 0
