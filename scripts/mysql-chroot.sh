#!/usr/bin/env bash
# Creates (once) a minimal Debian `sid` chroot holding Oracle MySQL 9.x
# (Debian's mysql-server-core and mysql-client-core), for the tests that
# need a real MySQL client or server. MySQL 9.x needs libc6 >= 2.38 and a
# newer libstdc++ than Debian 12 has; the host's libraries are never
# upgraded: everything MySQL needs lives inside the chroot, which shares
# the host's network, so its programs reach 127.0.0.1 as the host does.
#
#   scripts/mysql-chroot.sh          create it if missing, print its path
#
# RWPROXY_MYSQL_CHROOT   where (default /var/lib/rwproxy/sid-mysql): outside
#                        the work tree, so a fresh clone reuses it
# RWPROXY_MYSQL_MIRROR   Debian mirror (default: the host apt's own)
# Needs root (debootstrap, chroot). ~90 s and ~600 MB the first time.
set -euo pipefail

ROOT=${RWPROXY_MYSQL_CHROOT:-/var/lib/rwproxy/sid-mysql}
CACHE=$ROOT.cache
PACKAGES="mysql-server-core mysql-client-core"
log() { printf '[mysql-chroot %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ -x $ROOT/usr/sbin/mysqld && -x $ROOT/usr/bin/mysql ]]; then
	echo "$ROOT"
	exit 0
fi
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot)"

mirror=${RWPROXY_MYSQL_MIRROR:-}
if [[ -z $mirror && -r /etc/apt/sources.list.d/debian.sources ]]; then
	mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z $mirror && -r /etc/apt/sources.list ]]; then
	mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
fi
[[ -n $mirror ]] || die "no Debian mirror in the host's apt sources; set RWPROXY_MYSQL_MIRROR"

if ! command -v debootstrap >/dev/null; then
	log "installing debootstrap"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null 2>&1 ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
fi

unmount() {
	for m in "$ROOT/var/cache/apt/archives" "$ROOT/proc"; do
		if mountpoint -q "$m" 2>/dev/null; then umount "$m" || umount -l "$m"; fi
	done
}
trap unmount EXIT
mkdir -p "$CACHE/bootstrap" "$CACHE/apt/partial"
t0=$SECONDS
if [[ ! -x $ROOT/usr/bin/apt-get ]]; then
	# A chroot left half-made by an interrupted run is started over.
	[[ -e $ROOT ]] && { unmount; rm -rf --one-file-system "$ROOT"; }
	log "debootstrap --variant=minbase sid $ROOT $mirror"
	debootstrap --variant=minbase --cache-dir="$CACHE/bootstrap" sid "$ROOT" "$mirror" \
		>"$CACHE/debootstrap.log" 2>&1 ||
		{ tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
fi
# Snapshot mirrors serve Release files past their Valid-Until date; no
# service may start from a maintainer script inside the chroot.
printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
	>"$ROOT/etc/apt/apt.conf.d/99rwproxy"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
mountpoint -q "$ROOT/var/cache/apt/archives" || mount --bind "$CACHE/apt" "$ROOT/var/cache/apt/archives"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
chroot "$ROOT" apt-get -q update >"$CACHE/apt.log" 2>&1 ||
	{ tail -20 "$CACHE/apt.log" >&2; die "apt-get update in the chroot failed"; }
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -q --no-install-recommends $PACKAGES \
	>>"$CACHE/apt.log" 2>&1 || { tail -20 "$CACHE/apt.log" >&2; die "apt-get install in the chroot failed"; }
unmount
trap - EXIT
rm -f "$ROOT"/var/cache/apt/*.bin
log "$(chroot "$ROOT" mysqld --version) in $ROOT ($((SECONDS - t0)) s)"
echo "$ROOT"
