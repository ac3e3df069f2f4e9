#!/usr/bin/env bash
# setup.sh — bring a fresh Debian 12 machine to the point where acmfs builds,
# then build it.  Idempotent: every step checks before it acts.
#
#   scripts/setup.sh [--werror] [--asan] [--no-build]
#
#   --werror    configure build/ with -Dwerror=true (CI does)
#   --asan      also configure and build build-asan/ (ASan + UBSan)
#   --no-build  stop after installing dependencies
#
# As root, missing Debian packages are installed (apt-get update only when
# something is missing).  Not as root, the one `sudo apt-get install -y …`
# line needed is printed and the script exits 1.
#
# Environment: ACMFS_ASAN_CC (compiler for build-asan; default clang if
# present, else gcc).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

werror=false
asan=false
build=true
for arg in "$@"; do
	case $arg in
	--werror) werror=true ;;
	--asan) asan=true ;;
	--no-build) build=false ;;
	-h | --help)
		sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "setup.sh: unknown option: $arg" >&2
		exit 2
		;;
	esac
done

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ---------------------------------------------------------------- packages
# Each is needed for a reason; the README's dependency list says which.
PKGS=(meson ninja-build pkg-config gcc clang libfuse3-dev fuse3
	libsqlite3-dev sqlite3 libcmocka-dev libcurl4-openssl-dev libssl-dev libisal-dev
	python3 python3-pytest e2fsprogs util-linux fio awscli nodejs npm
	scdoc valgrind libclang-rt-14-dev rsync qemu-utils
	ceph-mon ceph-osd ceph-mgr radosgw ceph-common faketime
	libzstd-dev python3-cryptography python3-zstandard xfsprogs parted btrfs-progs)
# multi-buffer SHA-256 (tape/hashv.h): packaged for amd64 only, optional in the build
[[ $(dpkg --print-architecture) == amd64 ]] && PKGS+=(libipsec-mb-dev)

installed() {
	local st
	st=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
	[[ $st == "install ok installed" ]]
}

missing=()
for p in "${PKGS[@]}"; do
	if installed "$p"; then
		continue
	fi
	# Node.js builds from other repositories ship npm inside the nodejs
	# package (it `Provides: npm`); installing Debian's npm would conflict.
	if [[ $p == npm ]] && command -v npm >/dev/null 2>&1; then
		continue
	fi
	missing+=("$p")
done

if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "setup.sh: missing Debian packages; run:" >&2
		echo "sudo apt-get install -y ${missing[*]}"
		exit 1
	fi
	say "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------- npm: s3rver
# A local S3 server for the tape tests (tests/integration/conftest.py).
S3RVER_VERSION=3.7.1
NODE_PREFIX=$ROOT/.cache/node
s3rver_ok() {
	[[ -x $NODE_PREFIX/node_modules/.bin/s3rver ]] &&
		grep -q "\"version\": \"$S3RVER_VERSION\"" \
			"$NODE_PREFIX/node_modules/s3rver/package.json" 2>/dev/null
}
if ! s3rver_ok; then
	say "npm install s3rver@$S3RVER_VERSION into .cache/node"
	mkdir -p "$NODE_PREFIX"
	npm install --prefix "$NODE_PREFIX" --no-audit --no-fund \
		--loglevel=error "s3rver@$S3RVER_VERSION" >&2
fi

$build || exit 0

# ---------------------------------------------------------------- build
# configure DIR WERROR [meson setup args...]
# Sets up DIR, or reconfigures it only when werror differs, so running this
# again is cheap and does not disturb an incremental build.
configure() {
	local dir=$1 want=$2
	shift 2
	if [[ ! -f $dir/build.ninja ]]; then
		say "meson setup $dir"
		meson setup "$dir" -Dwerror="$want" "$@" >&2
		return
	fi
	local have
	have=$(meson introspect "$dir" --buildoptions 2>/dev/null |
		/usr/bin/python3 -c 'import json,sys
for o in json.load(sys.stdin):
    if o["name"] == "werror": print(str(o["value"]).lower())' || true)
	if [[ $have != "$want" ]]; then
		say "meson configure $dir -Dwerror=$want"
		meson configure "$dir" -Dwerror="$want" >&2
	fi
}

configure build "$werror"
say "ninja -C build"
ninja -C build >&2

if $asan; then
	asan_cc=${ACMFS_ASAN_CC:-}
	if [[ -z $asan_cc ]]; then
		if command -v clang >/dev/null 2>&1; then asan_cc=clang; else asan_cc=gcc; fi
	fi
	# Warnings as errors are the job of build/ (gcc); the sanitizer build is
	# about runtime checks, and clang warns about things gcc accepts.
	CC=$asan_cc configure build-asan false \
		-Db_sanitize=address,undefined -Db_lundef=false
	say "ninja -C build-asan"
	ninja -C build-asan >&2
fi
