#!/usr/bin/env bash
# demo.sh — set up, build, mount a demo store and walk through a backup.
#
#   scripts/demo.sh
#
# Mounts ./demo/store on ./demo/mnt (a previous demo mount is unmounted and its
# store started afresh), then prints and runs a short scenario: create a
# volume, write to it, take differential snapshot backups, and restore one
# with cp.  The demo stays mounted; the last lines say how to unmount.
# Steps the daemon does not support yet are reported, not fatal.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=demo
STORE=$DEMO/store
MNT=$DEMO/mnt
LOG=$DEMO/acmfs.log
PIDFILE=$DEMO/acmfs.pid
ACMFS=build/fs/acmfs

if [[ -t 1 ]]; then
	B=$'\033[1m' G=$'\033[1;32m' Y=$'\033[1;33m' R=$'\033[0m'
else
	B= G= Y= R=
fi

say() { printf '\n%s# %s%s\n' "$B" "$*" "$R"; }
# run CMD...: print it like a shell prompt, then run it (fatal on failure)
run() {
	printf '%s$ %s%s\n' "$G" "$*" "$R"
	eval "$*"
}
# try CMD...: as run, but a failure means "not available yet", not an error
try() {
	printf '%s$ %s%s\n' "$G" "$*" "$R"
	local rc=0
	eval "$*" || rc=$?
	if ((rc)); then
		printf '%s  -> not available yet (exit status %d); going on%s\n' "$Y" "$rc" "$R"
		return 1
	fi
}

is_mounted() { awk -v m="$ROOT/$MNT" '$5 == m {f=1} END {exit !f}' /proc/self/mountinfo; }

# ------------------------------------------------------------------ setup
say "setting up and building (scripts/setup.sh)"
scripts/setup.sh

# ------------------------------------------------------------------ mount
mkdir -p "$DEMO"
if is_mounted; then
	say "unmounting the previous demo"
	run "fusermount3 -u $MNT" || fusermount3 -u -z "$MNT"
fi
if [[ -f $PIDFILE ]]; then
	pid=$(cat "$PIDFILE")
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	rm -f "$PIDFILE"
fi
rm -rf "$STORE" "$DEMO"/*.img
mkdir -p "$MNT"

say "mounting a fresh store $STORE on $MNT (daemon log: $LOG)"
printf '%s$ %s%s\n' "$G" "$ACMFS -f $STORE $MNT &" "$R"
setsid "$ACMFS" -f "$STORE" "$MNT" </dev/null >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 100); do
	is_mounted && break
	if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
		echo "acmfs exited; its log:" >&2
		cat "$LOG" >&2
		exit 1
	fi
	sleep 0.1
done
is_mounted || {
	echo "acmfs did not mount $MNT in 10 s; see $LOG" >&2
	exit 1
}

V=$MNT/volumes/db

# ------------------------------------------------------------------ scenario
say "the mount: global files, and a README that explains the tree"
run "ls -l $MNT"
run "head -n 12 $MNT/README"

say "create a 64 MiB transaction volume 'db' (two backup volumes come with it)"
run "echo 'volume create db 64M' > $MNT/ctl"
run "ls -l $V"

say "write 8 MiB of data into it, as an application or a VM would"
run "dd if=/dev/urandom of=$V/data bs=1M count=8 conv=notrunc,fsync status=none"
run "cat $V/info"

say "a differential snapshot backup (QuickOPC): instant, copied in the background"
run "cp --sparse=always $V/data $DEMO/at-backup-1.img"
backup1=false
if try "echo 'backup -T -m DISK' > $V/ctl"; then backup1=true; fi
try "cat $V/histdisp" || true
try "cat $V/trkstat" || true

say "overwrite 1 MiB at offset 20 MiB; tracking notes the changed grains"
run "dd if=/dev/urandom of=$V/data bs=64K count=16 seek=320 conv=notrunc,fsync status=none"
try "cat $V/trkstat" || true

say "second backup, to the second backup volume (save=2): its first -T copy is full"
run "cp --sparse=always $V/data $DEMO/at-backup-2.img"
backups=false
if $backup1 && try "echo 'backup -T -m DISK' > $V/ctl"; then backups=true; fi

if $backups; then
	say "overwrite 1 MiB more, at offset 40 MiB"
	run "dd if=/dev/urandom of=$V/data bs=64K count=16 seek=640 conv=notrunc,fsync status=none"

	say "third backup: back to db.bv1 (the oldest generation is released); a differential copy of only the grains written since db.bv1's last copy"
	run "cp --sparse=always $V/data $DEMO/at-backup-3.img"
	if ! try "echo 'backup -T -m DISK' > $V/ctl"; then backups=false; fi
fi
if $backups; then
	# the image is readable at once; wait (bounded) for the copy only so that
	# histdisp shows the finished state
	for _ in $(seq 100); do
		grep -q '^disk_status=executing' "$V/history/latest/info" 2>/dev/null || break
		sleep 0.1
	done
	try "cat $V/histdisp" || true
	try "grep -E '^(version|bv|disk_status|copy|grains_copied)=' $V/history/latest/info" || true
	try "tail -n 6 $V/log" || true
	try "ls -l $V/history $V/generations" || true

	say "restore with nothing but cp, and check it against the data at backup time"
	out=/tmp/acmfs-demo-restore.img
	if try "cp --sparse=always $V/history/latest/image $out" &&
		try "cmp $out $DEMO/at-backup-3.img"; then
		echo "  -> identical: the latest image is the volume as it was at the third backup"
	fi
	try "cmp $V/generations/2/image $DEMO/at-backup-2.img" &&
		echo "  -> identical: generation 2 is the volume as it was at the second backup"
else
	say "backups are not available in this build yet: skipping the restore"
fi

say "the demo stays mounted"
cat <<EOF
  browse:    ls $MNT/volumes/db; cat $MNT/volumes/db/log
  unmount:   fusermount3 -u $MNT
  again:     scripts/demo.sh   (starts from a fresh store)
EOF
