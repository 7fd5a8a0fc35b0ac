#!/bin/sh
# Install fwlb on Debian (or another Linux) or FreeBSD: the binary, the unprivileged user,
# the chroot with its state directory, a first configuration, and the files of the chosen
# supervisor. Idempotent: a second run changes nothing and says so. Run as root.
#
# usage: supervise/install.sh [options]
#   --bin FILE        the binary to install [target/release/fwlb of this tree]
#   --prefix DIR      [/usr/local]: the binary goes to PREFIX/sbin
#   --destdir DIR     stage everything under DIR (packages, tests) [$DESTDIR]
#   --user NAME       the user the chrooted child runs as [_fwlb]
#   --no-user         do not create the user (if it does not exist, the state directory
#                     stays root's)
#   --chroot DIR      the chroot [/var/lib/fwlb; FreeBSD /var/db/fwlb]; the state
#                     directory DIR/state belongs to the user
#   --config FILE     [/etc/fwlb/fwlb.toml; FreeBSD PREFIX/etc/fwlb/fwlb.toml]; installed
#                     from conf/fwlb.toml only if absent
#   --runit           service directory SV-DIR/fwlb (run, log/run with svlogd), logs in
#                     /var/log/fwlb
#   --daemontools     the same with multilog
#   --sv-dir DIR      where service directories live [/etc/sv]
#   --enable          also link SV-DIR/fwlb into the scan directory (runsvdir/svscan start it
#                     within 5 seconds)
#   --scan-dir DIR    [/etc/service; FreeBSD /var/service]
#   --systemd         /etc/systemd/system/fwlb.service
#   --os NAME         Linux or FreeBSD [uname -s]: stage another system's layout
# On FreeBSD the rc.d script is always installed (PREFIX/etc/rc.d/fwlb; inert until
# fwlb_enable=YES).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")

bin="$top/target/release/fwlb"
prefix=/usr/local
destdir=${DESTDIR:-}
user=_fwlb
make_user=true
chroot_dir=
config=
sv=
sv_dir=/etc/sv
enable=false
scan_dir=
systemd=false
os=$(uname -s)

die() {
	echo "install.sh: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case $1 in
	--bin) bin=$2; shift ;;
	--prefix) prefix=$2; shift ;;
	--destdir) destdir=$2; shift ;;
	--user) user=$2; shift ;;
	--no-user) make_user=false ;;
	--chroot) chroot_dir=$2; shift ;;
	--config) config=$2; shift ;;
	--runit) sv=runit ;;
	--daemontools) sv=daemontools ;;
	--sv-dir) sv_dir=$2; shift ;;
	--enable) enable=true ;;
	--scan-dir) scan_dir=$2; shift ;;
	--systemd) systemd=true ;;
	--os) os=$2; shift ;;
	-h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	shift
done

case $os in
FreeBSD)
	: "${chroot_dir:=/var/db/fwlb}"
	: "${config:=$prefix/etc/fwlb/fwlb.toml}"
	: "${scan_dir:=/var/service}"
	;;
*)
	: "${chroot_dir:=/var/lib/fwlb}"
	: "${config:=/etc/fwlb/fwlb.toml}"
	: "${scan_dir:=/etc/service}"
	;;
esac
[ -f "$bin" ] || die "no binary at $bin: build it (cargo build --release) or pass --bin FILE"
[ -f "$top/conf/fwlb.toml" ] || die "no conf/fwlb.toml next to $here"
for p in "$prefix" "$chroot_dir" "$config" "$sv_dir" "$scan_dir"; do
	case $p in
	/*) ;;
	*) die "$p: paths must be absolute" ;;
	esac
done

D=$destdir
changes=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

did() {
	echo "  $*"
	changes=$((changes + 1))
}

# A directory with this mode and owner (UID:GID, numeric or names).
dir() {
	if [ ! -d "$1" ]; then
		mkdir -p "$1"
		did "created $1"
	fi
	mode "$1" "$2"
	owner "$1" "$3"
}

mode() {
	if [ -z "$(find "$1" -prune -perm "$2")" ]; then
		chmod "$2" "$1"
		did "chmod $2 $1"
	fi
}

owner() {
	if [ -z "$(find "$1" -prune -user "${2%:*}" -group "${2#*:}")" ]; then
		chown "$2" "$1"
		did "chown $2 $1"
	fi
}

# file SRC DEST MODE: DEST gets SRC's content (replaced atomically when it differs).
file() {
	mkdir -p "$(dirname "$2")"
	if [ ! -f "$2" ] || ! cmp -s "$1" "$2"; then
		cp "$1" "$2.new"
		chmod "$3" "$2.new"
		mv -f "$2.new" "$2"
		did "installed $2"
	fi
	mode "$2" "$3"
	owner "$2" 0:0
}

# The supervisor files name the binary and the configuration: point them at this install.
paths() {
	sed -e "s|/usr/local/etc/fwlb/fwlb.toml|@CONFIG@|g" \
		-e "s|/etc/fwlb/fwlb.toml|@CONFIG@|g" \
		-e "s|/usr/local/sbin/fwlb|@BIN@|g" \
		-e "s|/var/lib/fwlb|@CHROOT@|g" "$1" |
		sed -e "s|@CONFIG@|$config|g" -e "s|@BIN@|$prefix/sbin/fwlb|g" \
			-e "s|@CHROOT@|$chroot_dir|g" >"$2"
}

echo "fwlb install ($os) into ${D:-/}:"

# 1. The binary.
file "$bin" "$D$prefix/sbin/fwlb" 0755

# 2. The user and group the chrooted child runs as.
if ! id "$user" >/dev/null 2>&1; then
	if $make_user; then
		case $os in
		FreeBSD)
			pw groupshow "$user" >/dev/null 2>&1 || pw groupadd "$user"
			pw useradd "$user" -g "$user" -d /nonexistent -s /usr/sbin/nologin -c "fwlb daemon"
			;;
		*)
			if getent group "$user" >/dev/null 2>&1; then
				g="-g $user"
			else
				g=--user-group
			fi
			# shellcheck disable=SC2086
			useradd --system $g --home-dir /nonexistent --no-create-home \
				--shell /usr/sbin/nologin --comment "fwlb daemon" "$user"
			;;
		esac
		did "created user $user"
	else
		echo "  (no user $user: $D$chroot_dir/state stays root's; create the user and run again)"
	fi
fi
if id "$user" >/dev/null 2>&1; then
	state_owner="$(id -u "$user"):$(id -g "$user")"
else
	state_owner=0:0
fi

# 3. The chroot: root's and empty but for the state directory, the child's one writable
#    place (state_file = "/state/fwlb.state": paths after the chroot are inside it).
dir "$D$chroot_dir" 0755 0:0
dir "$D$chroot_dir/state" 0750 "$state_owner"

# 4. A first configuration, never overwritten; only root reads it (the parent).
dir "$D$(dirname "$config")" 0755 0:0
if [ ! -f "$D$config" ]; then
	file "$top/conf/fwlb.toml" "$D$config" 0640
fi

# 5. The supervisor.
if [ -n "$sv" ]; then
	dir "$D/var/log/fwlb" 0750 0:0
	svc="$D$sv_dir/fwlb"
	dir "$D$sv_dir" 0755 0:0
	dir "$svc" 0755 0:0
	dir "$svc/log" 0755 0:0
	paths "$here/$sv/fwlb/run" "$tmp/run"
	file "$tmp/run" "$svc/run" 0755
	file "$here/$sv/fwlb/log/run" "$svc/log/run" 0755
	if $enable; then
		mkdir -p "$D$scan_dir"
		if [ "$(readlink "$D$scan_dir/fwlb" 2>/dev/null)" != "$sv_dir/fwlb" ]; then
			ln -sfn "$sv_dir/fwlb" "$D$scan_dir/fwlb"
			did "linked $D$scan_dir/fwlb -> $sv_dir/fwlb"
		fi
	fi
fi
if $systemd; then
	paths "$here/systemd/fwlb.service" "$tmp/fwlb.service"
	file "$tmp/fwlb.service" "$D/etc/systemd/system/fwlb.service" 0644
fi
if [ "$os" = FreeBSD ]; then
	paths "$top/rc.d/fwlb" "$tmp/rc.d"
	file "$tmp/rc.d" "$D$prefix/etc/rc.d/fwlb" 0555
fi

if [ "$changes" -eq 0 ]; then
	echo "  nothing to change"
	exit 0
fi
echo "next: edit $config ([daemon] user = \"$user\", chroot = \"$chroot_dir\"), then"
echo "  fwlb check -c $config"
if [ -n "$sv" ] && ! $enable; then
	echo "  ln -s $sv_dir/fwlb $scan_dir/"
fi
if $systemd; then
	echo "  systemctl daemon-reload && systemctl enable --now fwlb"
fi
if [ "$os" = FreeBSD ]; then
	echo "  sysrc fwlb_enable=YES && service fwlb start"
fi
