#!/usr/bin/env bash
# gc.sh — pool gc of a shared pool on Ceph RGW (issue 16): two hosts (two
# daemons, two stores, host names benchA and benchB) each make N/2 tape
# histories of a volume in one bucket, the second half of each host's
# histories each differing from the one before by 5% of its grains (incremental tape
# copies, so packs are shared between histories); then each host deletes its
# oldest N/4 histories and host A runs `pool gc grace=0`. Reported: the time
# of the gc, the object-store requests it made (acmfs counts each HTTP
# request, retries included) and what it reclaimed; as a yardstick, the time
# of `aws s3 ls --recursive` of the same bucket prefix (one listing, what any
# collector must at least do) in the same run.
#
#   bench/gc.sh [--histories N] [--size SIZE] [--no-write-md]
#
# Defaults: N=100 histories, SIZE=64M per volume. Needs root, awscli, Ceph
# (scripts/setup.sh). Environment: ACMFS, BENCH_DIR.
BENCH_NAME=gc.sh
N=100
SIZE=64M
WRITE_MD=true
while (($#)); do
	case $1 in
	--histories) N=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--no-write-md) WRITE_MD=false ;;
	-h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "gc.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
source "$(dirname "$0")/lib.sh"
bench_init
((N % 4 == 0 && N >= 4)) || die "--histories must be a multiple of 4"
BYTES=$(numfmt --from=iec "$SIZE")

start_rgw "$W/rgw" 8

# start_host NAME -> mounts $W/NAME/mnt with -o host=NAME
start_host() {
	local d=$W/$1
	mkdir -p "$d/mnt"
	"$ACMFS" -f -o "host=$1" "$d/store" "$d/mnt" </dev/null >>"$W/acmfs-$1.log" 2>&1 &
	local pid=$!
	PIDS+=("$pid")
	MOUNTS+=("$d/mnt")
	wait_mount "$d/mnt" "$pid"
	bpy ctl "$d/mnt/ctl" "pool create shared s3://$S3_BUCKET/gc endpoint=$S3_EP path_style=1 encrypt=none" >/dev/null
	bpy ctl "$d/mnt/ctl" "volume create db $SIZE save=1" >/dev/null
	bpy ctl "$d/mnt/ctl" "tapepolicy db pool=shared" >/dev/null
}
start_host benchA
start_host benchB
GRAIN=$(sed -n 's/^grain=//p' "$W/benchA/mnt/volumes/db/info")

make_histories() { # HOST: N/2 tape histories, each after a 5% change
	local h=$1 r i
	local vd=$W/$h/mnt/volumes/db
	fill_random "$vd/data" "$BYTES" "gc-$h"
	for ((i = 0; i < N / 2; i++)); do
		((i == 0)) || bpy change "$vd/data" 5 "$GRAIN" "$((i * 7 + ${#h}))" >/dev/null
		r=$(bpy backup "$vd" tape_status 600 "backup -m TAPE")
		[[ $(kv status "$r") == succeeded ]] || die "$h backup $i: $r"
	done
}
log "making $N tape histories on two hosts"
T0=$(now_ns)
make_histories benchA &
PA=$!
make_histories benchB
wait "$PA" || die "host A's backups failed"
MAKE_S=$(secs "$T0")
versions_of() { # HOST: its tape history versions, oldest first
	awk '/^Tape-Gen/ {t=1; next} t && $1 ~ /^[0-9]+$/ {print $2}' \
		"$W/$1/mnt/volumes/db/histdisp" | sort -n
}
DEL=$((N / 4))
for h in benchA benchB; do
	for v in $(versions_of "$h" | head -n "$DEL"); do
		bpy ctl "$W/$h/mnt/volumes/db/ctl" "histdel -v $v -m TAPE" >/dev/null
	done
done
MANIFESTS=$(aws --endpoint-url "$S3_EP" s3 ls --recursive "s3://$S3_BUCKET/gc/manifests/" | wc -l)
PACKS=$(aws --endpoint-url "$S3_EP" s3 ls --recursive "s3://$S3_BUCKET/gc/packs/" | wc -l)
log "pool holds $MANIFESTS manifests and $PACKS packs after the deletes"

timed "peer: aws s3 ls --recursive of the pool" \
	aws --endpoint-url "$S3_EP" s3 ls --recursive "s3://$S3_BUCKET/gc/" >/dev/null
LS_S=$T_S
timed "acmfs: pool gc shared grace=0 on host A" \
	bpy ctl "$W/benchA/mnt/ctl" "pool gc shared grace=0" >"$W/gc.out"
GC_S=$T_S
GC=$(cat "$W/gc.out")
log "$GC"
PACKS_AFTER=$(aws --endpoint-url "$S3_EP" s3 ls --recursive "s3://$S3_BUCKET/gc/packs/" | wc -l)

# every remaining history of both hosts still reads back (its blocks verified)
for h in benchA benchB; do
	for v in $(versions_of "$h"); do
		cat "$W/$h/mnt/volumes/db/history/$v/tape.img" >/dev/null ||
			die "$h version $v unreadable after gc"
	done
done
KEPT=$(($(versions_of benchA | wc -l) + $(versions_of benchB | wc -l)))

REQ=$(kv requests "$GC")
REPORT=$W/report.md
{
	machine_line
	echo
	echo "S3 engine: $S3_ENGINE."
	echo
	echo "$N tape histories of a $SIZE volume (grain $GRAIN), $((N / 2)) per host, each after a 5% change of the previous (made in $MAKE_S s); each host then deleted its $DEL oldest: $MANIFESTS manifests and $PACKS packs in the pool. Host A's \`pool gc shared grace=0\`:"
	echo
	echo "| what | figure |"
	echo "|---|---|"
	echo "| gc time | $GC_S s |"
	echo "| requests | $REQ ($(calc "$REQ / $MANIFESTS" 1) per manifest read) |"
	echo "| packs deleted / repacked | $(kv packs_deleted "$GC") / $(kv packs_repacked "$GC") (packs $PACKS -> $PACKS_AFTER) |"
	echo "| bytes freed | $(kv bytes_freed "$GC") |"
	echo "| yardstick: \`aws s3 ls --recursive\` of the pool | $LS_S s (gc / listing = $(calc "$GC_S / $LS_S" 1)x) |"
	echo
	echo "All $KEPT remaining histories of both hosts read back (every block verified) after the gc."
} >"$REPORT"
cat "$REPORT"
$WRITE_MD && md_section "Shared pool gc on RGW (bench/gc.sh)" bench/gc.sh "$REPORT" &&
	log "results written to BENCHMARKS.md"
