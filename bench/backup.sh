#!/usr/bin/env bash
# backup.sh — snapshot and differential (QuickOPC) backups to disk (issue 4),
# each figure next to its peer, in one run; results go to BENCHMARKS.md.
#
#   bench/backup.sh [--size SIZE] [--runtime SECONDS] [--no-write-md]
#
# One volume of SIZE (default 4G, save=1 so the second -T backup reuses the
# tracking pair), every byte written with incompressible random data (no
# sparse part). In order:
#   1. backup -T -m DISK: time of the ctl write returning; full physical copy
#      (poll history info until succeeded) vs cp --sparse=always of the TV's
#      backing file (+ fdatasync, as the copier ends with one) — caches
#      dropped before each
#   2. 1% of the grains rewritten at random, backup -T -m DISK again: the
#      differential copy time vs the full copy time
#   3. fio 4 KiB randwrite on db (pair tracking) and, interleaved, on a
#      second volume nb of the same size that never had a backup
#   4. 10,000 tape-only history rows inserted into catalog.db (unmounted),
#      remount, time of reading volumes/db/histdisp (vs the sqlite3 CLI
#      selecting the same rows)
# Targets (issue 4): write < 100 ms; full copy >= 0.9 x cp; differential
# <= 3% of full; fio with tracking >= 0.9 x without; histdisp < 100 ms.
# Needs root, fio, sqlite3. Environment: ACMFS, BENCH_DIR (needs ~4 x SIZE).
BENCH_NAME=backup.sh
SIZE=4G
RUNTIME=10
WRITE_MD=true
while (($#)); do
	case $1 in
	--size) SIZE=$2; shift ;;
	--runtime) RUNTIME=$2; shift ;;
	--no-write-md) WRITE_MD=false ;;
	-h | --help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "backup.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
source "$(dirname "$0")/lib.sh"
command -v fio >/dev/null || die "fio missing"
command -v sqlite3 >/dev/null || die "sqlite3 missing"
bench_init

STORE=$W/store
MNT=$W/mnt
V=$MNT/volumes/db
start_acmfs "$STORE" "$MNT"
bpy ctl "$MNT/ctl" "volume create db $SIZE save=1" >/dev/null
bpy ctl "$MNT/ctl" "volume create nb $SIZE save=1" >/dev/null
DATA=$V/data
BYTES=$(stat -c %s "$DATA")
GRAIN=$(sed -n 's/^grain=//p' "$V/info")
TV=$STORE/vol/1/tv.img
[[ -f $TV ]] || die "backing file $TV not found"
log "filling db ($SIZE) with random data"
fill_random "$DATA" "$BYTES" backup
log "filling nb ($SIZE, never backed up: the no-tracking fio peer) with random data"
fill_random "$MNT/volumes/nb/data" "$BYTES" backup-nb

# ------------------------------------------------------------------ fio
ENGINE=io_uring
fio --name=probe --filename="$W/probe" --size=4k --rw=read --ioengine=io_uring \
	--output=/dev/null >/dev/null 2>&1 || ENGINE=libaio
rm -f "$W/probe"
# run_fio LABEL QD FILE -> IOPS
run_fio() {
	log "fio randwrite 4k qd$2 ($1)"
	fio --name="randwrite-$1-qd$2" --filename="$3" --size="$BYTES" --rw=randwrite --bs=4k \
		--iodepth="$2" --ioengine="$ENGINE" --direct=0 --invalidate=1 --end_fsync=1 \
		--fallocate=none --time_based --runtime="$RUNTIME" --ramp_time=1 --randrepeat=1 \
		--norandommap --group_reporting --output-format=json \
		--output="$W/fio-$1-qd$2.json" >/dev/null
	"$PY" -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["jobs"][0]["write"]["iops"])' \
		"$W/fio-$1-qd$2.json"
}

# ------------------------------------------------------------------ full copy
drop_caches
log "backup -T -m DISK (first: full copy)"
R=$(bpy backup "$V" disk_status 600 "backup -T -m DISK")
log "$R"
[[ $(kv status "$R") == succeeded && $(kv copy "$R") == full ]] || die "full backup: $R"
FULL_WRITE_MS=$(kv write_ms "$R")
FULL_S=$(kv total_s "$R")
COPY_BYTES=$(bpy metric "$MNT" acmfs_copy_bytes_total)

drop_caches
log "peer: cp --sparse=always tv.img + fdatasync"
t0=$(now_ns)
cp --sparse=always "$TV" "$W/cp.img"
t1=$(now_ns)
sync -d "$W/cp.img"
t2=$(now_ns)
CP_S=$(secs "$t0" "$t1")
CPSYNC_S=$(secs "$t0" "$t2")
rm -f "$W/cp.img"

# ------------------------------------------------------------------ differential
log "rewriting 1% of the grains at random"
NCHG=$(bpy change "$DATA" 1 "$GRAIN" 4)
drop_caches
log "backup -T -m DISK (second: differential)"
R=$(bpy backup "$V" disk_status 600 "backup -T -m DISK")
log "$R"
[[ $(kv status "$R") == succeeded && $(kv copy "$R") == diff ]] || die "differential backup: $R"
DIFF_WRITE_MS=$(kv write_ms "$R")
DIFF_S=$(kv total_s "$R")
DIFF_GRAINS=$(kv grains "$R")

# a third backup with nothing changed: the write alone, warm
R=$(bpy backup "$V" disk_status 600 "backup -T -m DISK")
NOCHG_WRITE_MS=$(kv write_ms "$R")
NOCHG_S=$(kv total_s "$R")

# interleaved, so drift (page cache, store fs) hits both alike
NB=$MNT/volumes/nb/data
FIO_NT1=$(run_fio notrack 1 "$NB")
FIO_T1=$(run_fio track 1 "$DATA")
FIO_NT16=$(run_fio notrack 16 "$NB")
FIO_T16=$(run_fio track 16 "$DATA")
grep -q tracking "$V/trkstat" || die "pair not tracking after the tracked fio run"

# ------------------------------------------------------------------ histdisp
stop_acmfs "$MNT" "$ACMFS_PID"
NROWS=10000
log "inserting $NROWS tape-only history rows into catalog.db"
read -r VOLID NEXTV < <(sqlite3 -separator ' ' "$STORE/catalog.db" \
	"SELECT id, next_version FROM volumes WHERE name='db'")
NOW=$(date +%s)
sqlite3 "$STORE/catalog.db" <<EOF
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $NROWS)
INSERT INTO histories(vol_id, version, date, differential, media, bv_id, disk_status,
    copy_full, grains_total, grains_copied, tape_status, pool, manifest, blocks, btype,
    verify_state, verify_date, cut_era)
SELECT $VOLID, $NEXTV + i, $NOW - 86400 * 30 + i, 0, 2, 0, 0, 0, 0, 0, 2, 'default',
    'bench-' || ($NEXTV + i), $((BYTES / GRAIN)), 0, 0, 0, 0 FROM n;
UPDATE volumes SET next_version = $NEXTV + $NROWS WHERE id = $VOLID;
COMMIT;
EOF
t0=$(now_ns)
start_acmfs "$STORE" "$MNT"
MOUNT_S=$(secs "$t0")
HD=$(bpy readtime "$V/histdisp" 7)
HDG=$(bpy readtime "$MNT/histdisp" 7)
HDJ=$(bpy readtime "$MNT/status.json" 3)
HD_LINES=$(wc -l <"$V/histdisp")
log "histdisp: $HD ($HD_LINES lines); global $HDG; status.json $HDJ"
t0=$(now_ns)
sqlite3 "file:$STORE/catalog.db?mode=ro" "SELECT * FROM histories WHERE vol_id=$VOLID ORDER BY version DESC" \
	>/dev/null 2>&1 || true
SQL_MS=$(calc "$(secs "$t0") * 1000" 1)
stop_acmfs "$MNT" "$ACMFS_PID"

# ------------------------------------------------------------------ report
GIB=$(calc "$BYTES / 1073741824" 1)
FULL_MBS=$(calc "$COPY_BYTES / 1048576 / $FULL_S" 0)
CP_MBS=$(calc "$BYTES / 1048576 / $CP_S" 0)
CPSYNC_MBS=$(calc "$BYTES / 1048576 / $CPSYNC_S" 0)
R_FULL=$(calc "$CPSYNC_S / $FULL_S")
R_FULL_NOSYNC=$(calc "$CP_S / $FULL_S")
DIFF_PCT=$(calc "100 * $DIFF_S / $FULL_S" 1)
R_FIO1=$(calc "$FIO_T1 / $FIO_NT1")
R_FIO16=$(calc "$FIO_T16 / $FIO_NT16")
HD_MED=$(kv median "$HD")
HDG_MED=$(kv median "$HDG")
MAXW=$(awk -v a="$FULL_WRITE_MS" -v b="$DIFF_WRITE_MS" -v c="$NOCHG_WRITE_MS" \
	'BEGIN {m = a; if (b > m) m = b; if (c > m) m = c; print m}')

REPORT=$W/report.md
{
	machine_line
	echo "Volume $GIB GiB, grain $GRAIN, every byte random (no sparse part), save=1."
	echo "Caches dropped (\`sync; echo 3 > drop_caches\`) before each copy measurement."
	echo
	echo "| measurement | acmfs | peer | ratio | target | |"
	echo "|---|---:|---:|---:|---|---|"
	echo "| \`backup -T -m DISK\` write returning, full / diff / nothing changed | $FULL_WRITE_MS / $DIFF_WRITE_MS / $NOCHG_WRITE_MS ms | — | — | < 100 ms | $(verdict "$MAXW < 100") |"
	echo "| full physical copy (write → \`disk_status=succeeded\`) vs \`cp --sparse=always\` tv.img + fdatasync | $FULL_S s ($FULL_MBS MiB/s) | $CPSYNC_S s ($CPSYNC_MBS MiB/s) | $R_FULL × | ≥ 0.9 × | $(verdict "$R_FULL >= 0.9") |"
	echo "| same, peer \`cp\` alone (its data left dirty in the page cache) | $FULL_S s | $CP_S s ($CP_MBS MiB/s) | $R_FULL_NOSYNC × | (reference) | |"
	echo "| differential copy, $NCHG grains (1%) rewritten at random ($DIFF_GRAINS grains copied) vs the full copy | $DIFF_S s | $FULL_S s | $DIFF_PCT % | ≤ 3 % | $(verdict "$DIFF_PCT <= 3") |"
	echo "| \`backup -T\` with nothing changed, write → succeeded | $NOCHG_S s | — | — | | |"
	echo "| fio 4 KiB randwrite qd1, tracking vs no backup | $FIO_T1 IOPS | $FIO_NT1 IOPS | $R_FIO1 × | ≥ 0.9 × | $(verdict "$R_FIO1 >= 0.9") |"
	echo "| fio 4 KiB randwrite qd16, tracking vs no backup | $FIO_T16 IOPS | $FIO_NT16 IOPS | $R_FIO16 × | ≥ 0.9 × | $(verdict "$R_FIO16 >= 0.9") |"
	echo "| \`cat volumes/db/histdisp\`, $NROWS tape rows + 1 disk row ($HD_LINES lines), median of 7 | $HD_MED ms | sqlite3 CLI select of the rows: $SQL_MS ms | — | < 100 ms | $(verdict "$HD_MED < 100") |"
	echo "| \`cat histdisp\` (global), same rows, median of 7 | $HDG_MED ms | | | < 100 ms | $(verdict "$HDG_MED < 100") |"
	echo
	echo "histdisp timings (ms): volume $HD; global $HDG; status.json $HDJ. Mount with the $NROWS extra rows: $MOUNT_S s."
	echo "fio: ioengine=$ENGINE, direct=0, invalidate=1, end_fsync=1, ${RUNTIME} s after a 1 s ramp, on \`volumes/db/data\`;"
	echo "\"no backup\" = volume nb (same size, random data, never backed up), \"tracking\" = volume db after its -T backups (pair db/db.bv1 tracking, no copy running); runs interleaved nb, db, nb, db."
} >"$REPORT"
cat "$REPORT"
$WRITE_MD && md_section "Disk backups: snapshot and differential (bench/backup.sh)" bench/backup.sh "$REPORT" &&
	log "results written to BENCHMARKS.md"
exit 0
