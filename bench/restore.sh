#!/usr/bin/env bash
# restore.sh — restores from disk and tape (issue 6) against their peers, in
# one run; results go to BENCHMARKS.md.
#
#   bench/restore.sh [--size SIZE] [--no-write-md]
#
# One volume db of SIZE (default 4G, save=1), filled from 4 part files of
# incompressible random data (the peers move the same bytes). In order:
#   1. backup -T -m DISK, wait; cp history/<v>/image to a file vs cp of the
#      BV's backing file STORE/vol/1/bv1.img (caches dropped before each)
#   2. 1% of the grains rewritten at random; `restore` (synchronous ctl write:
#      differential, the pair tracks) vs, after `canceltrk -all`, the same
#      restore, now full
#   3. backup -m TAPE to an S3 pool on s3rver (loopback), wait; the volume
#      overwritten with new random data (tape restore skips grains that
#      already match); `restore -v <v> -m TAPE` vs 4 parallel curl GETs of the
#      same bytes (the parts), 3 rounds interleaved, best of each compared
#      (s3rver's speed swings between runs); and vs aws s3 cp download
# Targets (issue 6): image cp >= 0.8 x native cp; differential <= 3% of full;
# tape restore >= 0.8 x curl GETs (aws s3 cp reported).
# Needs root, curl, awscli, npm (s3rver installed into .cache/node when
# missing). Environment: ACMFS, BENCH_DIR (needs ~5 x SIZE).
BENCH_NAME=restore.sh
SIZE=4G
WRITE_MD=true
while (($#)); do
	case $1 in
	--size) SIZE=$2; shift ;;
	--no-write-md) WRITE_MD=false ;;
	-h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "restore.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
source "$(dirname "$0")/lib.sh"
bench_init

BYTES=$(numfmt --from=iec "$SIZE")
NP=4
PART=$((BYTES / NP))
((PART % 65536 == 0)) || die "size must split into 4 parts of whole grains"
log "making $SIZE of random data in $NP parts"
make_parts "$W/img" "$NP" "$PART" restore

start_s3rver "$W/s3"
STORE=$W/store
MNT=$W/mnt
V=$MNT/volumes/db
start_acmfs "$STORE" "$MNT"
bpy ctl "$MNT/ctl" "pool create s3 s3://$S3_BUCKET/acmfs endpoint=$S3_EP path_style=1 encrypt=none" >/dev/null
bpy ctl "$MNT/ctl" "volume create db $SIZE save=1" >/dev/null
bpy ctl "$MNT/ctl" "tapepolicy db pool=s3" >/dev/null
GRAIN=$(sed -n 's/^grain=//p' "$V/info")
BV=$STORE/vol/1/bv1.img
log "filling db from the parts"
fill_from_parts "$V/data" "$W/img" "$NP"

# ------------------------------------------------------------------ cp of an image
log "backup -T -m DISK"
R=$(bpy backup "$V" disk_status 900 "backup -T -m DISK")
[[ $(kv status "$R") == succeeded ]] || die "backup: $R"
V1=$(kv version "$R")
[[ -f $BV ]] || die "$BV missing"

timed "acmfs: cp history/$V1/image" cp "$V/history/$V1/image" "$W/out.img"
IMG_CP_S=$T_S
rm -f "$W/out.img"
timed "peer: cp bv1.img" cp "$BV" "$W/out.img"
BV_CP_S=$T_S
rm -f "$W/out.img"

# ------------------------------------------------------------------ differential vs full
log "rewriting 1% of the grains at random"
NCHG=$(bpy change "$V/data" 1 "$GRAIN" 8)
drop_caches
log "acmfs: restore (differential)"
R=$(bpy ctl "$V/ctl" "restore -v $V1")
log "$R"
DIFF_S=$(calc "$(kv write_ms "$R") / 1000" 3)
DIFF_GRAINS=$(kv grains_copied "$R")

bpy ctl "$V/ctl" "canceltrk -all" >/dev/null
NCHG2=$(bpy change "$V/data" 1 "$GRAIN" 9)
drop_caches
log "acmfs: restore (full, after canceltrk -all)"
R=$(bpy ctl "$V/ctl" "restore -v $V1")
log "$R"
FULL_S=$(calc "$(kv write_ms "$R") / 1000" 3)
FULL_GRAINS=$(kv grains_copied "$R")

# ------------------------------------------------------------------ tape restore
log "backup -m TAPE to s3 (the volume = history $V1 = the parts)"
R=$(bpy backup "$V" tape_status 900 "backup -m TAPE")
log "$R"
[[ $(kv status "$R") == succeeded ]] || die "tape backup: $R"
VT=$(kv version "$R")
TAPE_UP_S=$(kv total_s "$R")
log "peers: uploading the parts (curl) and the image (aws)"
curl_put_parallel "$W/img" "$NP" curl/img
aws --endpoint-url "$S3_EP" s3 cp --quiet "$BV" "s3://$S3_BUCKET/aws/img"
# s3rver (one Node.js process on the same 2 cores) swings by 2x between
# runs: the tape restore and the curl GETs run ROUNDS times, interleaved,
# and the best of each is compared (all times are in the report)
ROUNDS=3
TAPE_ALL="" CURL_GET_ALL="" TAPE_CMP=identical
for r in $(seq "$ROUNDS"); do
	log "overwriting db with new random data (round $r)"
	fill_random "$V/data" "$BYTES" "restore-overwrite$r"
	drop_caches
	log "acmfs: restore -v $VT -m TAPE (round $r)"
	R=$(bpy ctl "$V/ctl" "restore -v $VT -m TAPE")
	log "$R"
	TAPE_ALL+=" $(calc "$(kv write_ms "$R") / 1000" 3)"
	TAPE_GRAINS=$(kv grains_copied "$R")
	log "checking the restored volume"
	cat "$W"/img.? | cmp -s - "$V/data" || TAPE_CMP="**differs**"

	timed "peer: 4 parallel curl GETs (round $r)" curl_get_parallel curl/img "$NP" "$W/get"
	CURL_GET_ALL+=" $T_S"
	rm -f "$W"/get.*
done
TAPE_S=$(best "$TAPE_ALL")
CURL_GET_S=$(best "$CURL_GET_ALL")
timed "peer: aws s3 cp download" \
	aws --endpoint-url "$S3_EP" s3 cp --quiet "s3://$S3_BUCKET/aws/img" "$W/awsget.img"
AWS_GET_S=$T_S
rm -f "$W/awsget.img"
stop_acmfs "$MNT" "$ACMFS_PID"

# ------------------------------------------------------------------ report
MIB=$((BYTES / 1048576))
mbs() { calc "$MIB / $1" 0; }
R_CP=$(calc "$BV_CP_S / $IMG_CP_S")
DIFF_PCT=$(calc "100 * $DIFF_S / $FULL_S" 1)
R_TAPE=$(calc "$CURL_GET_S / $TAPE_S")
R_TAPE_AWS=$(calc "$AWS_GET_S / $TAPE_S")

REPORT=$W/report.md
{
	machine_line
	echo "Volume $MIB MiB, grain $GRAIN, every byte random (no sparse part); s3rver 3.7.1 on 127.0.0.1 (same 2 cores);"
	echo "$(aws --version 2>&1 | cut -d' ' -f1), $(curl --version | head -n1 | cut -d' ' -f1-2). Caches dropped before every timed step."
	echo
	echo "| measurement | acmfs | peer | ratio | target | |"
	echo "|---|---:|---:|---:|---|---|"
	echo "| \`cp history/$V1/image\` (disk history, copy done) to a file vs \`cp\` of bv1.img | $IMG_CP_S s ($(mbs "$IMG_CP_S") MiB/s) | $BV_CP_S s ($(mbs "$BV_CP_S") MiB/s) | $R_CP × | ≥ 0.8 × | $(verdict "$R_CP >= 0.8") |"
	echo "| differential \`restore\`, $NCHG grains (1%) rewritten ($DIFF_GRAINS grains copied) vs full \`restore\` after \`canceltrk -all\` ($FULL_GRAINS grains) | $DIFF_S s | $FULL_S s ($(mbs "$FULL_S") MiB/s) | $DIFF_PCT % | ≤ 3 % | $(verdict "$DIFF_PCT <= 3") |"
	echo "| tape \`restore -m TAPE\` from s3rver over new random data ($TAPE_GRAINS grains written) vs 4 parallel curl GETs to files | $TAPE_S s ($(mbs "$TAPE_S") MiB/s) | $CURL_GET_S s ($(mbs "$CURL_GET_S") MiB/s) | $R_TAPE × | ≥ 0.8 × | $(verdict "$R_TAPE >= 0.8") |"
	echo "| same vs \`aws s3 cp\` download | $TAPE_S s | $AWS_GET_S s ($(mbs "$AWS_GET_S") MiB/s) | $R_TAPE_AWS × | (reference) | |"
	echo
	echo "Tape restore and curl GETs: best of $ROUNDS interleaved rounds; all times (s): acmfs$TAPE_ALL, curl$CURL_GET_ALL."
	echo "Restores are timed as the ctl write (synchronous). The tape history was made by \`backup -m TAPE\` ($TAPE_UP_S s); after the tape restore the volume is $TAPE_CMP to the image."
	echo "Peer ratio = peer time / acmfs time (> 1: acmfs faster)."
} >"$REPORT"
cat "$REPORT"
$WRITE_MD && md_section "Restores: disk, differential, tape (bench/restore.sh)" bench/restore.sh "$REPORT" &&
	log "results written to BENCHMARKS.md"
exit 0
