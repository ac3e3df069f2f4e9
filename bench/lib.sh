# bench/lib.sh — helpers shared by bench/backup.sh, bench/tape.sh and
# bench/restore.sh. Source it after setting BENCH_NAME; it cds to the repository
# root and sets ROOT, ACMFS, W (scratch directory, wiped), PY.
#
# Environment:
#   ACMFS      the daemon to measure (default build/fs/acmfs; a release build
#              is what the figures mean: meson setup -Dbuildtype=release)
#   BENCH_DIR  scratch space (default .cache/bench-<script>)
# shellcheck shell=bash

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ACMFS=${ACMFS:-$ROOT/build/fs/acmfs}
W=${BENCH_DIR:-$ROOT/.cache/bench-$BENCH_NAME}
PY=/usr/bin/python3
S3RVER=$ROOT/.cache/node/node_modules/.bin/s3rver
S3_BUCKET=bench
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; exit 1; }

[[ -x $ACMFS ]] || die "$ACMFS missing (build it, or set ACMFS=path/to/acmfs)"
[[ $(id -u) == 0 ]] || die "needs root (drop_caches, FUSE mounts)"

# ------------------------------------------------------------------ cleanup
PIDS=()
MOUNTS=()
bench_cleanup() {
	local m p
	for m in "${MOUNTS[@]}"; do
		if awk -v m="$m" '$5 == m {f=1} END {exit !f}' /proc/self/mountinfo; then
			fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" 2>/dev/null || true
		fi
	done
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	if [[ -n ${RGW_DIR:-} ]]; then
		"$ROOT/scripts/ceph-rgw" stop "$RGW_DIR" || true
	fi
	if [[ -z ${BENCH_KEEP:-} && -d $W ]]; then
		# keep the logs and the report, drop the large files
		find "$W" -type f -size +1M -delete 2>/dev/null || true
	fi
}
trap bench_cleanup EXIT

bench_init() {
	BENCH_LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
	rm -rf "$W"
	mkdir -p "$W"
	W=$(cd "$W" && pwd)
}

# ------------------------------------------------------------------ time
now_ns() { date +%s%N; }
# secs T0 [T1]: seconds between two now_ns stamps, 3 decimals
secs() { awk -v a="$1" -v b="${2:-$(now_ns)}" 'BEGIN {printf "%.3f", (b - a) / 1e9}'; }
# calc EXPR: floating-point arithmetic (awk syntax)
calc() { awk "BEGIN {printf \"%.${2:-2}f\", $1}"; }
# best "t1 t2 ...": the smallest of a list of times (rounds of one transfer)
best() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | head -n1; }
# verdict OK?: "met" / "**missed**"
verdict() { if awk "BEGIN {exit !($1)}"; then echo met; else echo "**missed**"; fi; }

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# timed WHAT CMD...: with cold caches, logs WHAT, runs CMD and sets T_S to
# the seconds it took
timed() {
	local what=$1 t0
	shift
	drop_caches
	log "$what"
	t0=$(now_ns)
	"$@"
	T_S=$(secs "$t0")
}

# ------------------------------------------------------------------ mounts
wait_mount() {
	local i
	for i in $(seq 150); do
		awk -v m="$1" '$5 == m {f=1} END {exit !f}' /proc/self/mountinfo && return 0
		kill -0 "$2" 2>/dev/null || die "daemon for $1 died (see $W/acmfs.log)"
		sleep 0.1
	done
	die "$1 not mounted after 15 s"
}

# start_acmfs STORE MNT -> ACMFS_PID
start_acmfs() {
	mkdir -p "$2"
	"$ACMFS" -f "$1" "$2" </dev/null >>"$W/acmfs.log" 2>&1 &
	ACMFS_PID=$!
	PIDS+=("$ACMFS_PID")
	MOUNTS+=("$2")
	wait_mount "$2" "$ACMFS_PID"
}

# stop_acmfs MNT PID: unmount and wait for the daemon to exit
stop_acmfs() {
	fusermount3 -u "$1" || fusermount3 -u -z "$1"
	local i
	for i in $(seq 300); do
		kill -0 "$2" 2>/dev/null || return 0
		sleep 0.1
	done
	kill "$2" 2>/dev/null || true
}

# ------------------------------------------------------------------ data
# make_parts PREFIX NPARTS PART_BYTES SEED: NPARTS files PREFIX.0.. of
# incompressible pseudo-random bytes (AES-CTR keystream: fast, reproducible)
make_parts() {
	local i
	for ((i = 0; i < $2; i++)); do
		{ openssl enc -aes-128-ctr -nosalt -pass "pass:acmfs-bench-$4-$i" </dev/zero 2>/dev/null || true; } |
			head -c "$3" >"$1.$i"
	done
}

# fill_from_parts DATA PREFIX NPARTS: write the parts, in order, over DATA
fill_from_parts() {
	local i
	for ((i = 0; i < $3; i++)); do cat "$2.$i"; done |
		dd of="$1" bs=1M iflag=fullblock conv=notrunc,fsync status=none
}

# fill_random DATA BYTES SEED: overwrite DATA with fresh random bytes
fill_random() {
	{ openssl enc -aes-128-ctr -nosalt -pass "pass:acmfs-bench-$3" </dev/zero 2>/dev/null || true; } |
		head -c "$2" | dd of="$1" bs=1M iflag=fullblock conv=notrunc,fsync status=none
}

# ------------------------------------------------------------------ python helpers
read -r -d '' BENCH_PY <<'EOF' || true
import os, sys, time, random, errno

def ctl_write(path, cmd):
    fd = os.open(path, os.O_RDWR)
    try:
        t0 = time.perf_counter()
        try:
            os.write(fd, cmd.encode())
            err = None
        except OSError as e:
            err = e
        t1 = time.perf_counter()
        try:
            os.lseek(fd, 0, 0)
        except OSError:
            pass
        reply = os.read(fd, 65536).decode(errors="replace")
    finally:
        os.close(fd)
    if err is not None:
        sys.stderr.write("ctl %s: %r failed: %s: %s\n" % (path, cmd, errno.errorcode.get(err.errno, err.errno), reply.strip()))
        sys.exit(1)
    first = reply.splitlines()[0] if reply else ""
    if first.startswith("ok"):
        first = first[2:].strip()
    return (t1 - t0) * 1000.0, first

def info(path):
    d = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            d[k] = v
    return d

def wait_done(voldir, version, key, timeout, t0):
    p = "%s/history/%s/info" % (voldir, version)
    deadline = time.monotonic() + timeout
    while True:
        st = info(p).get(key, "?")
        if st != "executing":
            return st, time.perf_counter() - t0
        if time.monotonic() > deadline:
            sys.stderr.write("timeout waiting for %s %s\n" % (p, key))
            return "timeout", time.perf_counter() - t0
        time.sleep(0.005)

cmd = sys.argv[1]
if cmd == "ctl":            # ctl CTLFILE COMMAND -> write_ms=… reply keys
    ms, first = ctl_write(sys.argv[2], sys.argv[3])
    print("write_ms=%.2f %s" % (ms, first))
elif cmd == "backup":       # backup VOLDIR KEY TIMEOUT COMMAND
    voldir, key, timeout, command = sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
    t0 = time.perf_counter()
    ms, first = ctl_write(voldir + "/ctl", command)
    kv = dict(w.split("=", 1) for w in first.split() if "=" in w)
    st, total = wait_done(voldir, kv["version"], key, timeout, t0)
    print("write_ms=%.2f total_s=%.3f status=%s %s" % (ms, total, st, first))
elif cmd == "change":       # change FILE PERCENT GRAIN SEED [BYTES]: rewrite PERCENT% of grains
    path, pct, grain, seed = sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    nbytes = int(sys.argv[6]) if len(sys.argv) > 6 else grain
    size = os.stat(path).st_size
    ngr = size // grain
    k = max(1, round(ngr * pct / 100.0))
    rnd = random.Random(seed)
    grains = sorted(rnd.sample(range(ngr), k))
    fd = os.open(path, os.O_WRONLY)
    for g in grains:
        os.pwrite(fd, os.urandom(nbytes), g * grain)
    os.fsync(fd)
    os.close(fd)
    print(k)
elif cmd == "metric":       # metric MNT NAME: sum of the samples of NAME
    tot = 0.0
    with open(sys.argv[2] + "/metrics") as f:
        for line in f:
            if line.startswith("#"):
                continue
            name = line.split("{")[0].split()[0]
            if name == sys.argv[3]:
                tot += float(line.split()[-1])
    print("%d" % tot)
elif cmd == "readtime":     # readtime FILE N: N reads of FILE, prints min median max ms and bytes
    ts = []
    n = 0
    for i in range(int(sys.argv[3])):
        t0 = time.perf_counter()
        with open(sys.argv[2], "rb") as f:
            n = len(f.read())
        ts.append((time.perf_counter() - t0) * 1000)
    s = sorted(ts)
    print("first=%.1f min=%.1f median=%.1f max=%.1f bytes=%d" % (ts[0], s[0], s[len(s)//2], s[-1], n))
EOF
bpy() { "$PY" -c "$BENCH_PY" "$@"; }

# kv KEY LINE: the value of KEY=… in a line of key=value words
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -n1; }

# ------------------------------------------------------------------ s3rver
# start_s3rver DIR -> S3_EP (http://127.0.0.1:PORT), S3_PID; bucket $S3_BUCKET made
# (the S3 benchmarks run on RGW, start_rgw; s3rver stays for bench/restore.sh)
start_s3rver() {
	if [[ ! -x $S3RVER ]]; then
		log "installing s3rver@3.7.1 into .cache/node"
		npm install --silent --prefix "$ROOT/.cache/node" s3rver@3.7.1 >/dev/null
	fi
	command -v aws >/dev/null || die "aws (awscli) missing"
	local port
	port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	mkdir -p "$1"
	"$S3RVER" --silent --address 127.0.0.1 --port "$port" --directory "$1" \
		</dev/null >"$W/s3rver.log" 2>&1 &
	S3_PID=$!
	PIDS+=("$S3_PID")
	S3_EP=http://127.0.0.1:$port
	local i
	for i in $(seq 150); do
		curl -s -o /dev/null "$S3_EP/" && break
		kill -0 "$S3_PID" 2>/dev/null || die "s3rver died (see $W/s3rver.log)"
		sleep 0.1
	done
	aws --endpoint-url "$S3_EP" s3 mb "s3://$S3_BUCKET" >/dev/null
}

# ------------------------------------------------------------------ RGW
# start_rgw DIR [OSD_GIB] -> S3_EP, S3_ENGINE; the AWS_* credentials exported
# (for awscli, curl and the acmfs daemons started after it); bucket $S3_BUCKET
# made. A single-node Ceph cluster with the RADOS Gateway (scripts/ceph-rgw),
# the real S3 engine of the benchmarks (issue 16); stopped by bench_cleanup.
# OSD_GIB: size of the sparse bluestore file (what the run stores at most).
start_rgw() {
	command -v aws >/dev/null || die "aws (awscli) missing"
	RGW_DIR=$1
	log "starting Ceph RGW under $RGW_DIR"
	CEPH_RGW_OSD_GIB=${2:-10} "$ROOT/scripts/ceph-rgw" start "$RGW_DIR" ||
		die "Ceph RGW did not start (scripts/setup.sh installs the packages)"
	local RGW_ENDPOINT RGW_ACCESS_KEY RGW_SECRET_KEY RGW_REGION
	# shellcheck disable=SC1091
	source "$RGW_DIR/env"
	S3_EP=$RGW_ENDPOINT
	export AWS_ACCESS_KEY_ID=$RGW_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$RGW_SECRET_KEY
	export AWS_DEFAULT_REGION=$RGW_REGION
	S3_ENGINE="Ceph RGW $(ceph --version 2>/dev/null | cut -d' ' -f3) (single node, one bluestore OSD on a file, beast) on 127.0.0.1"
	set_curl_s3
	aws --endpoint-url "$S3_EP" s3 mb "s3://$S3_BUCKET" >/dev/null
}

# curl with SigV4 for the current credentials (RGW wants x-amz-content-sha256)
set_curl_s3() {
	CURL_S3=(curl -sS -f --aws-sigv4 "aws:amz:$AWS_DEFAULT_REGION:s3"
		--user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY"
		-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
}
set_curl_s3

# curl_put_parallel PREFIX NPARTS KEYPREFIX: PUT PREFIX.i to S3_BUCKET/KEYPREFIX.i, all at once
curl_put_parallel() {
	local i pids=()
	for ((i = 0; i < $2; i++)); do
		"${CURL_S3[@]}" -o /dev/null -T "$1.$i" "$S3_EP/$S3_BUCKET/$3.$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || die "curl PUT failed"; done
}

# curl_get_parallel KEYPREFIX NPARTS OUTPREFIX: GET S3_BUCKET/KEYPREFIX.i to OUTPREFIX.i
curl_get_parallel() {
	local i pids=()
	for ((i = 0; i < $2; i++)); do
		"${CURL_S3[@]}" -o "$3.$i" "$S3_EP/$S3_BUCKET/$1.$i" &
		pids+=($!)
	done
	for i in "${pids[@]}"; do wait "$i" || die "curl GET failed"; done
}

# ------------------------------------------------------------------ report
machine_line() {
	local cpu rev bt=""
	cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
	rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
	git -C "$ROOT" diff --quiet HEAD -- core fs tape 2>/dev/null || rev="$rev+uncommitted"
	local intro
	intro=$(dirname "$(dirname "$ACMFS")")/meson-info/intro-buildoptions.json
	[[ -f $intro ]] && bt=$("$PY" -c 'import json,sys; print(next(o["value"] for o in json.load(open(sys.argv[1])) if o["name"]=="buildtype"))' "$intro")
	printf 'Run %s on %s cores (`nproc`), %s, %s GiB RAM, Linux %s, %s; acmfs %s (%s build). Load average at start / end of the run: %s / %s (other jobs on the machine share the 2 cores: compare ratios, both sides of each ratio ran under the same load).\n' \
		"$(date -u '+%Y-%m-%d %H:%M UTC')" "$(nproc)" "$cpu" \
		"$(awk '/MemTotal/ {printf "%.0f", $2/1048576}' /proc/meminfo)" "$(uname -r)" \
		"$(findmnt -no FSTYPE -T "$W") scratch fs" "$rev" "${bt:-unknown}" \
		"$BENCH_LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# md_section TITLE SCRIPT REPORTFILE: replace the script's block in
# BENCHMARKS.md (between its markers), or append "## TITLE" with the block
md_section() {
	"$PY" - "$ROOT/BENCHMARKS.md" "$1" "$2" "$3" <<'EOF'
import sys, re, os
md, title, script, report = sys.argv[1:5]
body = open(report).read().rstrip() + "\n"
begin = "<!-- %s results: begin -->" % script
end = "<!-- %s results: end -->" % script
if os.path.exists(md):
    text = open(md).read()
else:
    import platform, subprocess, datetime
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    text = ("# Benchmarks\n\nMachine: %d cores (`nproc`), %s, Linux %s; file created %s.\n"
            % (os.cpu_count(), cpu, platform.release(),
               datetime.date.today().isoformat()))
block = begin + "\n" + body + end
if begin in text and end in text:
    text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, text, flags=re.S)
else:
    text = text.rstrip() + "\n\n## " + title + "\n\n" + block + "\n"
open(md, "w").write(text)
EOF
}
