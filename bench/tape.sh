#!/usr/bin/env bash
# tape.sh — the tape tier (issues 5, 16) against its peers, all in one run on
# one loopback Ceph RADOS Gateway (scripts/ceph-rgw, started once for the run
# and stopped at its end); results go to BENCHMARKS.md.
#
#   bench/tape.sh [--size SIZE] [--no-write-md]
#
# The image: SIZE (default 2G) of incompressible random data, made as 4 part
# files; the volume is filled from them, so the peers move the same bytes.
# S3 pools s3r1..s3r3 = s3://$S3_BUCKET/acmfsN on RGW (127.0.0.1, path-style);
# upload and download run 3 rounds, acmfs and curl interleaved, best of each
# compared (on 2 shared cores, speeds swing between runs):
#   upload    backup -m TAPE, time until tape_status=succeeded, vs 4 parallel
#             curl PUTs of the 4 parts (the server's ceiling) and vs
#             aws s3 cp of the TV's backing file
#   download  cp history/<v>/tape.img to a file vs 4 parallel curl GETs of the
#             parts to files and vs aws s3 cp of the object to a file
#   change    1% of the grains rewritten at random, backup -m TAPE again:
#             bytes uploaded (acmfs_tape_bytes_uploaded_total delta) and time,
#             each against the first backup
# The same three on file:// pools in the scratch directory (3 rounds, a pool
# each, best compared), peer: plain cp of the TV's backing file (+ fdatasync:
# the file pool fsyncs its packs) and of the same bytes back. Caches dropped
# before every timed transfer.
# Targets (issue 16, on RGW): S3 upload and tape.img read each >= 0.9 x four
# parallel curl and >= 2 x aws s3 cp; (issue 5) second backup <= 2% of the
# bytes and <= 5% of the time of the first; file:// >= 0.8 x plain cp.
# Needs root, curl, awscli, Ceph (scripts/setup.sh installs ceph-mon ceph-osd
# ceph-mgr radosgw ceph-common). Environment: ACMFS, BENCH_DIR (needs
# ~25 x SIZE: the OSD's bluestore file holds ~8 x SIZE).
BENCH_NAME=tape.sh
SIZE=2G
WRITE_MD=true
while (($#)); do
	case $1 in
	--size) SIZE=$2; shift ;;
	--no-write-md) WRITE_MD=false ;;
	-h | --help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "tape.sh: unknown option $1" >&2; exit 2 ;;
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
make_parts "$W/img" "$NP" "$PART" tape

# the OSD holds 3 curl rounds, 3 acmfs pools, the aws copy and the increment
start_rgw "$W/rgw" $((((BYTES + (1 << 30) - 1) >> 30) * 8 + 8))
STORE=$W/store
MNT=$W/mnt
start_acmfs "$STORE" "$MNT"
bpy ctl "$MNT/ctl" "volume create ts $SIZE save=1" >/dev/null
bpy ctl "$MNT/ctl" "volume create tf $SIZE save=1" >/dev/null
VS=$MNT/volumes/ts
VF=$MNT/volumes/tf
GRAIN=$(sed -n 's/^grain=//p' "$VS/info")
TVS=$STORE/vol/1/tv.img
TVF=$STORE/vol/2/tv.img
[[ -f $TVS && -f $TVF ]] || die "backing files not found"
log "filling ts and tf from the parts"
fill_from_parts "$VS/data" "$W/img" "$NP"
fill_from_parts "$VF/data" "$W/img" "$NP"
uploaded() { bpy metric "$MNT" acmfs_tape_bytes_uploaded_total; }
# tape_backup VOLDIR WHAT: backup -m TAPE until tape_status=succeeded; sets
# TB_S (seconds), TB_V (version) and TB_BYTES (bytes uploaded)
tape_backup() {
	local u0 r
	u0=$(uploaded)
	r=$(bpy backup "$1" tape_status 900 "backup -m TAPE")
	log "$r"
	[[ $(kv status "$r") == succeeded ]] || die "$2: $r"
	TB_S=$(kv total_s "$r")
	TB_V=$(kv version "$r")
	TB_BYTES=$(($(uploaded) - u0))
}

# RGW and its OSD share the 2 cores with acmfs and the peers: speeds swing
# from run to run, so each S3 transfer is measured ROUNDS times, acmfs and
# its peer interleaved, and the best of each is compared (every time is
# listed in the report).
ROUNDS=3

# ------------------------------------------------------------------ S3 upload
# each round uploads to a fresh pool (a prefix of its own): nothing to dedup
S3_UP_ALL="" CURL_PUT_ALL=""
for r in $(seq "$ROUNDS"); do
	timed "peer: 4 parallel curl PUTs of $NP x $PART bytes (round $r)" \
		curl_put_parallel "$W/img" "$NP" "curl$r/img"
	CURL_PUT_ALL+=" $T_S"

	bpy ctl "$MNT/ctl" "pool create s3r$r s3://$S3_BUCKET/acmfs$r endpoint=$S3_EP path_style=1 encrypt=none" >/dev/null
	bpy ctl "$MNT/ctl" "tapepolicy ts pool=s3r$r" >/dev/null
	drop_caches
	log "acmfs: backup -m TAPE to s3 (round $r)"
	tape_backup "$VS" "S3 tape backup"
	S3_UP_ALL+=" $TB_S" S3_V1=$TB_V S3_UP_BYTES=$TB_BYTES
done
S3_UP_S=$(best "$S3_UP_ALL")
CURL_PUT_S=$(best "$CURL_PUT_ALL")

timed "peer: aws s3 cp upload of the TV's backing file" \
	aws --endpoint-url "$S3_EP" s3 cp --quiet "$TVS" s3://$S3_BUCKET/aws/img
AWS_PUT_S=$T_S

# ------------------------------------------------------------------ S3 download
S3_GET_ALL="" CURL_GET_ALL="" S3_CMP=identical
for r in $(seq "$ROUNDS"); do
	timed "acmfs: cp history/$S3_V1/tape.img (round $r)" \
		cp "$VS/history/$S3_V1/tape.img" "$W/out.img"
	S3_GET_ALL+=" $T_S"
	cmp -s "$W/out.img" "$TVS" || S3_CMP="**differs**"
	rm -f "$W/out.img"

	timed "peer: 4 parallel curl GETs (round $r)" curl_get_parallel "curl$r/img" "$NP" "$W/get"
	CURL_GET_ALL+=" $T_S"
	rm -f "$W"/get.*
done
S3_GET_S=$(best "$S3_GET_ALL")
CURL_GET_S=$(best "$CURL_GET_ALL")

timed "peer: aws s3 cp download" \
	aws --endpoint-url "$S3_EP" s3 cp --quiet s3://$S3_BUCKET/aws/img "$W/awsget.img"
AWS_GET_S=$T_S
rm -f "$W/awsget.img"

# ------------------------------------------------------------------ S3 1% change
log "rewriting 1% of ts's grains at random"
NCHG=$(bpy change "$VS/data" 1 "$GRAIN" 5)
drop_caches
tape_backup "$VS" "second S3 tape backup"
S3_UP2_S=$TB_S S3_UP2_BYTES=$TB_BYTES

# ------------------------------------------------------------------ file://
# the file pool fsyncs its packs: the peer's copy is made durable too
cp_durable() { cp "$1" "$2" && sync -d "$2"; }
# the same rounds on file:// pools (each upload to a pool of its own, under
# the scratch directory), against plain cp on the same disk
F_UP_ALL="" CP_UP_ALL="" F_GET_ALL="" CP_GET_ALL="" F_CMP=identical
for r in $(seq "$ROUNDS"); do
	mkdir -p "$W/fpool$r"
	bpy ctl "$MNT/ctl" "pool create f$r file://$W/fpool$r" >/dev/null
	bpy ctl "$MNT/ctl" "tapepolicy tf pool=f$r" >/dev/null
	drop_caches
	log "acmfs: backup -m TAPE of tf to file:// pool f$r (round $r)"
	tape_backup "$VF" "file tape backup"
	F_UP_ALL+=" $TB_S" F_V1=$TB_V F_UP_BYTES=$TB_BYTES

	timed "peer: cp tv.img + fdatasync (round $r)" cp_durable "$TVF" "$W/cp.img"
	CP_UP_ALL+=" $T_S"
	rm -f "$W/cp.img"

	timed "acmfs: cp history/$F_V1/tape.img (file://, round $r)" \
		cp "$VF/history/$F_V1/tape.img" "$W/out.img"
	F_GET_ALL+=" $T_S"
	cmp -s "$W/out.img" "$TVF" || F_CMP="**differs**"
	rm -f "$W/out.img"

	timed "peer: cp tv.img (round $r)" cp "$TVF" "$W/cp.img"
	CP_GET_ALL+=" $T_S"
	rm -f "$W/cp.img"
done
F_UP_S=$(best "$F_UP_ALL")
CP_UP_S=$(best "$CP_UP_ALL")
F_GET_S=$(best "$F_GET_ALL")
CP_GET_S=$(best "$CP_GET_ALL")

log "rewriting 1% of tf's grains at random"
NCHGF=$(bpy change "$VF/data" 1 "$GRAIN" 6)
drop_caches
tape_backup "$VF" "second file tape backup"
F_UP2_S=$TB_S F_UP2_BYTES=$TB_BYTES
stop_acmfs "$MNT" "$ACMFS_PID"

# ------------------------------------------------------------------ report
MIB=$((BYTES / 1048576))
mbs() { calc "$MIB / $1" 0; }
R_UP=$(calc "$CURL_PUT_S / $S3_UP_S")
R_UP_AWS=$(calc "$AWS_PUT_S / $S3_UP_S")
R_GET=$(calc "$CURL_GET_S / $S3_GET_S")
R_GET_AWS=$(calc "$AWS_GET_S / $S3_GET_S")
S3_BYTES_PCT=$(calc "100 * $S3_UP2_BYTES / $S3_UP_BYTES" 2)
S3_TIME_PCT=$(calc "100 * $S3_UP2_S / $S3_UP_S" 1)
R_FUP=$(calc "$CP_UP_S / $F_UP_S")
R_FGET=$(calc "$CP_GET_S / $F_GET_S")
F_BYTES_PCT=$(calc "100 * $F_UP2_BYTES / $F_UP_BYTES" 2)
F_TIME_PCT=$(calc "100 * $F_UP2_S / $F_UP_S" 1)

log "S3 on RGW: upload ${R_UP}x 4 parallel curl PUTs, ${R_UP_AWS}x aws s3 cp;" \
	"download ${R_GET}x 4 parallel curl GETs, ${R_GET_AWS}x aws s3 cp"

REPORT=$W/report.md
{
	machine_line
	echo "Image $MIB MiB of random data (no holes, nothing to dedup), grain $GRAIN; $S3_ENGINE (same 2 cores as acmfs),"
	echo "$(aws --version 2>&1 | cut -d' ' -f1), $(curl --version | head -n1 | cut -d' ' -f1-2). Caches dropped before every timed transfer."
	echo "Uploads and downloads: best of $ROUNDS interleaved rounds each; all times (s): S3 upload acmfs$S3_UP_ALL, curl$CURL_PUT_ALL;"
	echo "download acmfs$S3_GET_ALL, curl$CURL_GET_ALL; file:// upload acmfs$F_UP_ALL, cp$CP_UP_ALL; file:// download acmfs$F_GET_ALL, cp$CP_GET_ALL."
	echo
	echo "| measurement | acmfs | peer | ratio | target | |"
	echo "|---|---:|---:|---:|---|---|"
	echo "| S3 upload: \`backup -m TAPE\` until \`tape_status=succeeded\` vs 4 parallel \`curl -T\` (4 × $((PART / 1048576)) MiB) | $S3_UP_S s ($(mbs "$S3_UP_S") MiB/s) | $CURL_PUT_S s ($(mbs "$CURL_PUT_S") MiB/s) | $R_UP × | ≥ 0.9 × | $(verdict "$R_UP >= 0.9") |"
	echo "| same vs \`aws s3 cp\` upload | $S3_UP_S s | $AWS_PUT_S s ($(mbs "$AWS_PUT_S") MiB/s) | $R_UP_AWS × | ≥ 2 × | $(verdict "$R_UP_AWS >= 2") |"
	echo "| S3 download: \`cp history/$S3_V1/tape.img\` to a file vs 4 parallel curl GETs to files | $S3_GET_S s ($(mbs "$S3_GET_S") MiB/s) | $CURL_GET_S s ($(mbs "$CURL_GET_S") MiB/s) | $R_GET × | ≥ 0.9 × | $(verdict "$R_GET >= 0.9") |"
	echo "| same vs \`aws s3 cp\` download | $S3_GET_S s | $AWS_GET_S s ($(mbs "$AWS_GET_S") MiB/s) | $R_GET_AWS × | ≥ 2 × | $(verdict "$R_GET_AWS >= 2") |"
	echo "| S3 second backup, $NCHG grains (1%) rewritten: bytes uploaded vs first | $S3_UP2_BYTES B | $S3_UP_BYTES B | $S3_BYTES_PCT % | ≤ 2 % | $(verdict "$S3_BYTES_PCT <= 2") |"
	echo "| S3 second backup: time vs first | $S3_UP2_S s | $S3_UP_S s | $S3_TIME_PCT % | ≤ 5 % | $(verdict "$S3_TIME_PCT <= 5") |"
	echo "| file:// upload: \`backup -m TAPE\` vs \`cp\` of tv.img + fdatasync | $F_UP_S s ($(mbs "$F_UP_S") MiB/s) | $CP_UP_S s ($(mbs "$CP_UP_S") MiB/s) | $R_FUP × | ≥ 0.8 × | $(verdict "$R_FUP >= 0.8") |"
	echo "| file:// download: \`cp history/$F_V1/tape.img\` vs \`cp\` of tv.img | $F_GET_S s ($(mbs "$F_GET_S") MiB/s) | $CP_GET_S s ($(mbs "$CP_GET_S") MiB/s) | $R_FGET × | ≥ 0.8 × | $(verdict "$R_FGET >= 0.8") |"
	echo "| file:// second backup, $NCHGF grains (1%) rewritten: bytes vs first | $F_UP2_BYTES B | $F_UP_BYTES B | $F_BYTES_PCT % | ≤ 2 % | $(verdict "$F_BYTES_PCT <= 2") |"
	echo "| file:// second backup: time vs first | $F_UP2_S s | $F_UP_S s | $F_TIME_PCT % | ≤ 5 % | $(verdict "$F_TIME_PCT <= 5") |"
	echo
	echo "Read-back check: S3 tape.img vs the volume at backup time: $S3_CMP; file:// tape.img: $F_CMP."
	echo "Bytes uploaded = \`acmfs_tape_bytes_uploaded_total\` delta (pack objects and manifest). Peer ratio = peer time / acmfs time (> 1: acmfs faster)."
} >"$REPORT"
cat "$REPORT"
$WRITE_MD && md_section "Tape tier: S3 and file:// pools (bench/tape.sh)" bench/tape.sh "$REPORT" &&
	log "results written to BENCHMARKS.md"
exit 0
