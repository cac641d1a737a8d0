#!/bin/sh
# build-image.sh OUTDIR — build a small Debian disk image for Kindling's
# installer mode and cache it in OUTDIR.
#
# Writes OUTDIR/debian-bookworm.raw.zst (a zstd-compressed raw GPT disk),
# OUTDIR/debian-bookworm.raw.zst.sha256 (its hash, `sha256sum` format) and
# prints the hash as the last line. A second run with the same script and
# settings prints the cached hash and builds nothing.
#
# The disk (SIZE, default 1536M):
#   1  bios   1 MiB   BIOS boot partition (EF02): GRUB's core image for BIOS
#   2  esp   63 MiB   EFI system partition (EF00, vfat): GRUB for UEFI, removable path
#   3  root  rest     Linux x86-64 root (8304), ext4, filesystem label "root"
# GRUB finds the root by its label and boots /vmlinuz with root=LABEL=root,
# on the serial console and the screen. systemd-networkd brings up every
# en*/eth* interface by DHCP, so a unit written by Ignition can call home.
#
# Needs root (loop devices, mount, chroot), debootstrap, gdisk, e2fsprogs,
# dosfstools, mtools, zerofree, zstd, and Debian's package mirror (MIRROR). Settings through
# the environment: SUITE (bookworm), MIRROR (the host's apt mirror, else http://deb.debian.org/debian),
# SIZE (1536M), KERNEL (linux-image-cloud-amd64), EXTRA (extra packages,
# space-separated; default curl).
set -eu

OUT=${1:?usage: build-image.sh OUTDIR}
SUITE=${SUITE:-bookworm}
# The host's own Debian mirror when it has one (CI machines reach only
# their package registries), else Debian's.
if [ -z "${MIRROR:-}" ]; then
	MIRROR=$(sed -n 's|^URIs: *\([^ ]*/debian\)/*$|\1|p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
	[ -n "$MIRROR" ] || MIRROR=$(sed -n 's|^deb  *\(http[^ ]*/debian\)/* .*|\1|p' /etc/apt/sources.list 2>/dev/null | head -n1)
fi
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SIZE=${SIZE:-1536M}
KERNEL=${KERNEL:-linux-image-cloud-amd64}
EXTRA=${EXTRA:-curl}
NAME=debian-$SUITE.raw.zst

log() { printf '[build-image %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (loop devices, mount, chroot)"
for t in debootstrap sgdisk mkfs.ext4 mkfs.fat mcopy zerofree zstd losetup partx sha256sum; do
	command -v $t >/dev/null 2>&1 || die "$t not found (apt-get install debootstrap gdisk e2fsprogs dosfstools mtools zerofree zstd util-linux coreutils)"
done

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
KEY=$( { cat "$0"; echo "$SUITE $MIRROR $SIZE $KERNEL $EXTRA"; } | sha256sum | cut -c1-64)
if [ -f "$OUT/$NAME" ] && [ -f "$OUT/$NAME.sha256" ] && [ "$(cat "$OUT/$NAME.key" 2>/dev/null)" = "$KEY" ]; then
	log "cached: $OUT/$NAME ($(stat -c %s "$OUT/$NAME") bytes)"
	cut -d' ' -f1 "$OUT/$NAME.sha256"
	exit 0
fi

T0=$(date +%s)
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
RAW=$WORK/disk.raw
MNT=$WORK/mnt
LOOP=
cleanup() {
	set +e
	for m in var/cache/apt/archives dev/pts dev proc sys ""; do
		mountpoint -q "$MNT/$m" 2>/dev/null && umount -l "$MNT/$m"
	done
	[ -n "$LOOP" ] && { partx -d "$LOOP" 2>/dev/null; losetup -d "$LOOP"; }
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

log "disk $SIZE: bios + esp + root"
truncate -s "$SIZE" "$RAW"
sgdisk -o \
	-n 1:2048:+1M -t 1:EF02 -c 1:bios \
	-n 2:0:+63M -t 2:EF00 -c 2:esp \
	-n 3:0:0 -t 3:8304 -c 3:root "$RAW" >/dev/null
LOOP=$(losetup -f --show -P "$RAW")
# Kernels without GPT support (some container hosts) scan nothing: add the
# partitions from user space then.
for i in 1 2 3 4 5 6 7 8 9 10; do [ -b "${LOOP}p3" ] && break; sleep 0.2; done
[ -b "${LOOP}p3" ] || partx -a "$LOOP" 2>/dev/null || true
[ -b "${LOOP}p3" ] || die "${LOOP}p3 did not appear"
mkfs.fat -F 32 -n ESP "${LOOP}p2" >/dev/null
# No 64bit/metadata_csum changes needed: GRUB 2.06 reads both.
mkfs.ext4 -q -L root "${LOOP}p3"
mkdir -p "$MNT"
mount "${LOOP}p3" "$MNT"

log "debootstrap $SUITE (minbase) from $MIRROR"
# Keep documentation and translations out of the image from the start.
mkdir -p "$MNT/etc/dpkg/dpkg.cfg.d"
cat > "$MNT/etc/dpkg/dpkg.cfg.d/01-kindling-small" <<'D'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
D
# Packages are downloaded outside the image (--cache-dir here, a tmpfs for
# apt below): deleted files would leave their data in free blocks, and
# the compressed image would carry it.
mkdir -p "$WORK/debs"
debootstrap --cache-dir="$WORK/debs" --variant=minbase --include=systemd-sysv,udev "$SUITE" "$MNT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
	{ tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (is $MIRROR reachable?)"; }
log "debootstrap done in $(( $(date +%s) - T0 ))s"

mount -t proc proc "$MNT/proc"
mount -t sysfs sys "$MNT/sys"
mount --bind /dev "$MNT/dev"
mount --bind /dev/pts "$MNT/dev/pts"
mount -t tmpfs tmpfs "$MNT/var/cache/apt/archives"

cat > "$MNT/etc/apt/sources.list" <<S
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
S
printf '#!/bin/sh\nexit 101\n' > "$MNT/usr/sbin/policy-rc.d"; chmod +x "$MNT/usr/sbin/policy-rc.d"
cat > "$MNT/etc/fstab" <<'F'
LABEL=root  /          ext4  errors=remount-ro  0 1
LABEL=ESP   /boot/efi  vfat  umask=0077,nofail  0 2
F
echo debian > "$MNT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n' > "$MNT/etc/hosts"
# initramfs-tools: only what a VM or a common server needs to find its root.
mkdir -p "$MNT/etc/initramfs-tools/conf.d"
echo MODULES=dep > "$MNT/etc/initramfs-tools/conf.d/kindling"
echo 'COMPRESS=zstd' >> "$MNT/etc/initramfs-tools/conf.d/kindling"

log "installing $KERNEL, GRUB (BIOS + UEFI), $EXTRA"
in_chroot() { DEBIAN_FRONTEND=noninteractive LC_ALL=C chroot "$MNT" "$@"; }
in_chroot apt-get -q update >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "apt-get update in the image failed"; }
in_chroot apt-get -q install -y --no-install-recommends \
	"$KERNEL" grub-pc-bin grub-efi-amd64-bin grub2-common zstd $EXTRA >>"$WORK/apt.log" 2>&1 ||
	{ tail -30 "$WORK/apt.log" >&2; die "installing packages in the image failed"; }
# MODULES=dep sized the initramfs for the build host; rebuild it with the
# drivers any machine may need to reach its root.
echo MODULES=most > "$MNT/etc/initramfs-tools/conf.d/kindling"
echo 'COMPRESS=zstd' >> "$MNT/etc/initramfs-tools/conf.d/kindling"
in_chroot update-initramfs -u -k all >>"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log" >&2; die "update-initramfs failed"; }

log "bootloader"
in_chroot grub-install --target=i386-pc --boot-directory=/boot "$LOOP" >>"$WORK/apt.log" 2>&1 ||
	{ tail -20 "$WORK/apt.log" >&2; die "grub-install (BIOS) failed"; }
# UEFI: one standalone GRUB image (modules inside) at the removable-media
# path of the ESP. It finds the root by label and reads the same grub.cfg.
# The ESP is filled with mtools, so the build host needs no vfat support.
cat > "$MNT/tmp/early.cfg" <<'G'
search --no-floppy --label root --set=root
configfile ($root)/boot/grub/grub.cfg
G
in_chroot grub-mkstandalone -O x86_64-efi -o /tmp/BOOTX64.EFI \
	--modules="part_gpt ext2 search_label" "boot/grub/grub.cfg=/tmp/early.cfg" >>"$WORK/apt.log" 2>&1 ||
	{ tail -20 "$WORK/apt.log" >&2; die "grub-mkstandalone (UEFI) failed"; }
export MTOOLS_SKIP_CHECK=1
mmd -i "${LOOP}p2" ::/EFI ::/EFI/BOOT 2>>"$WORK/apt.log"
mcopy -i "${LOOP}p2" "$MNT/tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI 2>>"$WORK/apt.log"
rm -f "$MNT/tmp/BOOTX64.EFI" "$MNT/tmp/early.cfg"
cat > "$MNT/boot/grub/grub.cfg" <<'G'
# Written by Kindling's build-image.sh: boot the installed Debian by label.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set default=0
set timeout=1
search --no-floppy --label root --set=root
menuentry 'Debian (Kindling image)' {
	linux /vmlinuz root=LABEL=root ro console=tty0 console=ttyS0,115200n8
	initrd /initrd.img
}
G

log "network, serial console"
cat > "$MNT/etc/systemd/network/50-dhcp.network" <<'N'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
N
in_chroot systemctl enable systemd-networkd.service >/dev/null 2>&1
in_chroot systemctl enable serial-getty@ttyS0.service >/dev/null 2>&1 || true

rm -f "$MNT/usr/sbin/policy-rc.d"
in_chroot apt-get clean
rm -rf "$MNT/var/lib/apt/lists/"* "$MNT/var/log/"*.log "$MNT/var/cache/debconf/"*-old
: > "$MNT/etc/machine-id"    # systemd makes a new one on first boot
rm -f "$MNT/var/lib/dbus/machine-id"
log "root filesystem uses $(df -h --output=used "$MNT" | tail -1 | tr -d ' ')"

for m in var/cache/apt/archives dev/pts dev proc sys ""; do umount "$MNT/$m"; done
e2fsck -fy "${LOOP}p3" >/dev/null 2>&1 || true
# Deleted files (debootstrap's packages) left their data in free blocks:
# zero them so the image compresses to what it holds.
zerofree "${LOOP}p3"
partx -d "$LOOP" 2>/dev/null || true
losetup -d "$LOOP"; LOOP=
sgdisk -v "$RAW" | grep -q 'No problems found' || die "sgdisk -v $RAW reports problems"

log "compressing (zstd)"
zstd -q -T0 -10 -f "$RAW" -o "$WORK/$NAME"
mv "$WORK/$NAME" "$OUT/$NAME"
(cd "$OUT" && sha256sum "$NAME" > "$NAME.sha256")
echo "$KEY" > "$OUT/$NAME.key"
log "built $OUT/$NAME ($(stat -c %s "$OUT/$NAME") bytes) in $(( $(date +%s) - T0 ))s"
cut -d' ' -f1 "$OUT/$NAME.sha256"
