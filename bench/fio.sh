#!/usr/bin/env bash
# fio.sh — the data path of acmfs against the native file and libfuse's
# passthrough_ll, in one run; results go to BENCHMARKS.md.
#
#   bench/fio.sh [--runtime SECONDS] [--size SIZE] [--no-write-md]
#
# Targets, all the same 1 GiB file of incompressible data:
#   native          the volume's backing file in the store, directly
#   passthrough_ll  libfuse's example (built here from the source libfuse3-dev
#                   ships) mounted with -o source=STORE; the same backing file
#   acmfs           volumes/bench/data on an acmfs mount of that store
# Jobs: sequential 1 MiB read and write, 4 KiB random read and write, each at
# iodepth 1 and 16.
#
# Choices (see BENCHMARKS.md):
#   ioengine=io_uring  buffered I/O through io_uring's workers, so iodepth 16 is
#                      real concurrency even without O_DIRECT (libaio would run
#                      buffered I/O synchronously: iodepth would be ignored);
#                      falls back to libaio where io_uring is missing
#   direct=0           the way applications, VMs and loop devices use a file
#                      through FUSE; invalidate=1 drops the file's page cache
#                      before each job
#   end_fsync=1        writes count only once they reached the daemon's backing
#                      file, not the page cache
#   fallocate=none     a volume has a fixed size; nothing to preallocate
#
# Also measured: the daemon's RSS (VmRSS, VmHWM) with 10 volumes of 1 GiB.
# Needs root (FUSE mounts), fio, gcc and libfuse3-dev; the daemon must build.
# Environment: BENCH_DIR (scratch space, default .cache/bench-fio.sh; needs ~2 GiB),
# PT_OPTS (extra -o options for passthrough_ll, default none).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
RUNTIME=6
SIZE=1G
ROUNDS=2
WRITE_MD=true
while (($#)); do
	case $1 in
	--runtime) RUNTIME=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--no-write-md) WRITE_MD=false ;;
	-h | --help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "fio.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

# mounts, cleanup, scratch directory: the helpers the other benchmarks use
BENCH_NAME=fio.sh
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
EX=/usr/share/doc/libfuse3-dev/examples
command -v fio >/dev/null || die "fio missing: run scripts/setup.sh"
bench_init

# ------------------------------------------------------------------ build passthrough_ll
log "building passthrough_ll from $EX"
gcc -O2 -Wall -Wno-unused-result -I"$EX" "$EX/passthrough_ll.c" -o "$W/passthrough_ll" \
	$(pkg-config --cflags --libs fuse3)

# ------------------------------------------------------------------ the volume
STORE=$W/store
AMNT=$W/acmfs
PMNT=$W/passthrough
start_acmfs "$STORE" "$AMNT"
log "acmfs: volume create bench $SIZE, filling it with random data"
echo "volume create bench $SIZE" >"$AMNT/ctl"
DATA=$AMNT/volumes/bench/data
BYTES=$(stat -c %s "$DATA")
# incompressible, non-sparse content, written through acmfs
dd if=/dev/urandom of="$DATA" bs=1M count=$((BYTES / 1048576)) iflag=fullblock \
	conv=notrunc,fsync status=none
# find the backing file: the store file of that size whose first MiB matches
head -c 1048576 "$DATA" >"$W/marker"
BACKING=
while IFS= read -r -d '' f; do
	if [[ $(stat -c %s "$f") == "$BYTES" ]] && cmp -s -n 1048576 "$f" "$W/marker"; then
		BACKING=$f
		break
	fi
done < <(find "$STORE" -type f -print0)
[[ -n $BACKING ]] || { echo "fio.sh: backing file of the volume not found in $STORE" >&2; exit 1; }
REL=${BACKING#"$STORE"/}
log "backing file: store/$REL"

# ------------------------------------------------------------------ fio
ENGINE=io_uring
if ! fio --enghelp 2>/dev/null | grep -qw io_uring ||
	! fio --name=probe --filename="$W/marker" --size=4k --rw=read --ioengine=io_uring \
		--output=/dev/null 2>/dev/null; then
	ENGINE=libaio
fi
log "ioengine=$ENGINE runtime=${RUNTIME}s per job"

JOBS=(
	"seqread-1M-qd1 read 1M 1"
	"seqread-1M-qd16 read 1M 16"
	"seqwrite-1M-qd1 write 1M 1"
	"seqwrite-1M-qd16 write 1M 16"
	"randread-4K-qd1 randread 4k 1"
	"randread-4K-qd16 randread 4k 16"
	"randwrite-4K-qd1 randwrite 4k 1"
	"randwrite-4K-qd16 randwrite 4k 16"
)

# run_job TARGET FILE JOB ROUND
run_job() {
	local target=$1 file=$2 name rw bs qd extra
	read -r name rw bs qd <<<"$3"
	extra=()
	[[ $rw == *write ]] && extra+=(--end_fsync=1)
	log "$target: $name (round $4)"
	fio --name="$name" --filename="$file" --size="$BYTES" --rw="$rw" --bs="$bs" \
		--iodepth="$qd" --ioengine="$ENGINE" --direct=0 --invalidate=1 \
		--fallocate=none --time_based --runtime="$RUNTIME" --ramp_time=1 \
		--randrepeat=1 --norandommap --group_reporting "${extra[@]}" \
		--output-format=json --output="$W/fio-$target-$name-r$4.json"
}

# Both FUSE daemons serve the same backing file at once, and every job runs
# on the three targets back to back, ROUNDS times, in a rotating order: the
# machine's state (writeback, caches, other load) is then the same for all
# three, and the report takes each target's best round.
log "passthrough_ll -o source=store${PT_OPTS:+,$PT_OPTS}"
mkdir -p "$PMNT"
"$W/passthrough_ll" -f -o "source=$STORE${PT_OPTS:+,$PT_OPTS}" "$PMNT" </dev/null >"$W/passthrough.log" 2>&1 &
PT_PID=$!
PIDS+=("$PT_PID")
MOUNTS+=("$PMNT")
wait_mount "$PMNT" "$PT_PID"
declare -A FILE_OF=([acmfs]=$DATA [native]=$BACKING [passthrough_ll]=$PMNT/$REL)
ORDERS=("acmfs native passthrough_ll" "passthrough_ll acmfs native" "native passthrough_ll acmfs")
for j in "${JOBS[@]}"; do
	for ((r = 1; r <= ROUNDS; r++)); do
		for t in ${ORDERS[$(((r - 1) % 3))]}; do
			run_job "$t" "${FILE_OF[$t]}" "$j" "$r"
		done
	done
done
stop_acmfs "$PMNT" "$PT_PID"
stop_acmfs "$AMNT" "$ACMFS_PID"

# ------------------------------------------------------------------ RSS
log "RSS: 10 volumes of 1 GiB"
RSTORE=$W/rss-store
RMNT=$W/rss-mnt
start_acmfs "$RSTORE" "$RMNT"
RSS_IDLE=$(awk '/^VmRSS/ {print $2}' /proc/"$ACMFS_PID"/status)
for i in $(seq 0 9); do
	echo "volume create v$i 1G" >"$RMNT/ctl"
	# touch every volume: 16 MiB written and read back
	dd if=/dev/urandom of="$RMNT/volumes/v$i/data" bs=1M count=16 seek=$((i * 64)) \
		conv=notrunc,fsync status=none
	dd if="$RMNT/volumes/v$i/data" of=/dev/null bs=1M count=16 skip=$((i * 64)) status=none
done
RSS_10=$(awk '/^VmRSS/ {print $2}' /proc/"$ACMFS_PID"/status)
HWM_10=$(awk '/^VmHWM/ {print $2}' /proc/"$ACMFS_PID"/status)
stop_acmfs "$RMNT" "$ACMFS_PID"

# ------------------------------------------------------------------ report
export W RUNTIME ENGINE RSS_IDLE RSS_10 HWM_10 SIZE ROUNDS
REPORT=$W/report.md
$PY - >"$REPORT" <<'EOF'
import json, os, platform, subprocess, datetime
W = os.environ["W"]
jobs = ["seqread-1M-qd1", "seqread-1M-qd16", "seqwrite-1M-qd1", "seqwrite-1M-qd16",
        "randread-4K-qd1", "randread-4K-qd16", "randwrite-4K-qd1", "randwrite-4K-qd16"]
targets = ["native", "passthrough_ll", "acmfs"]

def figure(target, job):
    best = None
    for r in range(1, int(os.environ["ROUNDS"]) + 1):
        with open(f"{W}/fio-{target}-{job}-r{r}.json") as f:
            j = json.load(f)["jobs"][0]
        side = j["write"] if "write" in job else j["read"]
        v = side["bw_bytes"] / 2**20 if job.startswith("seq") else side["iops"]
        best = v if best is None else max(best, v)
    return best, "MiB/s" if job.startswith("seq") else "IOPS"

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                     text=True).stdout.strip() or "uncommitted"
fio = subprocess.run(["fio", "--version"], capture_output=True, text=True).stdout.strip()
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(f"Run {now} on {len(os.sched_getaffinity(0))} cores (`nproc`), "
      f"{cpu}, Linux {platform.release()}; {fio}; acmfs {rev}.")
print(f"File {os.environ['SIZE']} of random data; ioengine={os.environ['ENGINE']}, "
      f"direct=0, invalidate=1, end_fsync=1 on writes, {os.environ['RUNTIME']} s per job "
      f"after 1 s ramp; the three targets run each job back to back, "
      f"{os.environ['ROUNDS']} rounds in rotating order, best round shown.")
print()
print("| job | unit | native | passthrough_ll | acmfs | acmfs / passthrough_ll |")
print("|---|---|---:|---:|---:|---:|")
worst = None
for job in jobs:
    vals = {t: figure(t, job) for t in targets}
    unit = vals["acmfs"][1]
    ratio = vals["acmfs"][0] / vals["passthrough_ll"][0] if vals["passthrough_ll"][0] else 0
    worst = ratio if worst is None else min(worst, ratio)
    mark = "" if ratio >= 0.95 else " (below 0.95)"
    print(f"| {job} | {unit} | " + " | ".join(f"{vals[t][0]:.0f}" for t in targets)
          + f" | {ratio:.2f}{mark} |")
print()
print(f"Lowest ratio acmfs/passthrough_ll: {worst:.2f} (target: at least 0.95 for every job).")
print()
print(f"Daemon RSS: {int(os.environ['RSS_IDLE'])/1024:.1f} MiB mounted and idle; "
      f"{int(os.environ['RSS_10'])/1024:.1f} MiB with 10 volumes of 1 GiB, each "
      f"written and read (16 MiB); peak (VmHWM) {int(os.environ['HWM_10'])/1024:.1f} MiB.")
EOF
cat "$REPORT"

if $WRITE_MD; then
	MD=$ROOT/BENCHMARKS.md
	$PY - "$MD" "$REPORT" <<'EOF'
import sys, re, os
md, report = sys.argv[1], open(sys.argv[2]).read().rstrip() + "\n"
begin, end = "<!-- bench/fio.sh results: begin -->", "<!-- bench/fio.sh results: end -->"
text = open(md).read() if os.path.exists(md) else "# Benchmarks\n"
block = f"{begin}\n{report}{end}"
if begin in text and end in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, text,
                  flags=re.S)
else:
    text = text.rstrip() + "\n\n## Data path: fio (bench/fio.sh)\n\n" + block + "\n"
open(md, "w").write(text)
EOF
	log "results written to BENCHMARKS.md"
fi
