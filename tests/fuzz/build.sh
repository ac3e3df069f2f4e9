#!/usr/bin/env bash
# tests/fuzz/build.sh — build the libFuzzer targets straight from the sources.
#
#   tests/fuzz/build.sh [OUTDIR]        (default: build-fuzz/)
#
# Needs clang with its fuzzer runtime (Debian: clang, libclang-rt-14-dev).
# Every target is built with -fsanitize=fuzzer,address,undefined; UBSan
# findings abort (-fno-sanitize-recover), so they count as crashes.
# CC (default clang) and EXTRA_CFLAGS may be overridden. Prints the targets
# built, one per line: OUTDIR/fuzz_<name>.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/build-fuzz}
CC=${CC:-clang}
mkdir -p "$out"

if ! "$CC" --version 2>/dev/null | grep -qi clang; then
	echo "build.sh: $CC is not clang (libFuzzer needs clang)" >&2
	exit 2
fi

cflags=(-std=c17 -D_GNU_SOURCE -DACMFS_VERSION='"fuzz"' -g -O1 -fno-omit-frame-pointer
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	-Wall -Wextra -Wno-unused-parameter
	-I"$root/core" -I"$root/tape" -I"$here")
# shellcheck disable=SC2206
cflags+=(${EXTRA_CFLAGS:-})
libs=(-lsqlite3 -lcurl -lcrypto -lzstd -lpthread)

# Every core/*.c and tape/*.c, instrumented, in one archive: each target
# pulls in only the objects it needs, and new modules need no edit here.
# A source that does not compile is reported and left out; only the targets
# that need it then fail to link.
objdir=$out/obj
rm -rf "$objdir"
mkdir -p "$objdir"
pids=() objs=()
for src in "$root"/core/*.c "$root"/tape/*.c; do
	o=$objdir/$(basename "$(dirname "$src")")_$(basename "${src%.c}").o
	"$CC" "${cflags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" -c -o "$o" "$src" &
	pids+=($!)
	objs+=("$o")
done
have=()
for i in "${!pids[@]}"; do
	if wait "${pids[$i]}"; then
		have+=("${objs[$i]}")
	else
		echo "build.sh: warning: ${objs[$i]##*/} did not compile; left out" >&2
	fi
done
rm -f "$out/libacmfs-fuzz.a"
ar rcs "$out/libacmfs-fuzz.a" "${have[@]}"

status=0
for t in cmd manifest pack track_map track_intent s3_list; do
	if "$CC" "${cflags[@]}" -o "$out/fuzz_$t" "$here/fuzz_$t.c" "$here/fuzz_common.c" \
		"$out/libacmfs-fuzz.a" "${libs[@]}"; then
		echo "$out/fuzz_$t"
	else
		echo "build.sh: fuzz_$t failed to build" >&2
		status=1
	fi
done
exit $status
