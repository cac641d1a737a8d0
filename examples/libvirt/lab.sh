#!/usr/bin/env bash
# Define and start N libvirt VMs that network-boot from Kindling, or remove
# them again. See README.md for the whole walk-through.
#
#   ./lab.sh net [-network kindling|kindling-libvirt-dhcp]   (define and start the network only)
#   ./lab.sh up [-n 3] [-uefi] [-network kindling|kindling-libvirt-dhcp] [-memory MiB] [-disk-size GiB]
#   ./lab.sh status
#   ./lab.sh down
#
# Environment: LIBVIRT_DEFAULT_URI (default qemu:///system), POOL_DIR
# (disks, default /var/lib/libvirt/images), LOG_DIR (serial logs, default
# /var/log/libvirt/qemu), PREFIX (VM names, default kindling-vm), and
# DRY_RUN=1 to print the virsh/virt-install commands instead of running them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
export LIBVIRT_DEFAULT_URI=${LIBVIRT_DEFAULT_URI:-qemu:///system}
POOL_DIR=${POOL_DIR:-/var/lib/libvirt/images}
LOG_DIR=${LOG_DIR:-/var/log/libvirt/qemu}
PREFIX=${PREFIX:-kindling-vm}

n=3 uefi=0 network=kindling memory=1024 disk=4

usage() {
	sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

run() {
	if [ "${DRY_RUN:-0}" = 1 ]; then
		printf '%q ' "$@"
		echo
	else
		"$@"
	fi
}

# network_file maps a network name to its definition in this directory.
network_file() {
	case $1 in
	kindling) echo "$here/network-kindling-dhcp.xml" ;;
	kindling-libvirt-dhcp) echo "$here/network-libvirt-dhcp.xml" ;;
	*) echo "unknown network $1: want kindling or kindling-libvirt-dhcp" >&2; exit 2 ;;
	esac
}

# server_ip is the host's address on the network: where Kindling listens.
server_ip() {
	case $1 in
	kindling) echo 192.168.150.1 ;;
	kindling-libvirt-dhcp) echo 192.168.151.1 ;;
	esac
}

# mac is machine i's address: the same as `kindling lab` gives its
# machines, so one data directory's groups select both.
mac() { printf '52:54:00:00:%02x:%02x' $(($1 >> 8 & 255)) $(($1 & 255)); }

net_up() {
	local file
	file=$(network_file "$1")
	if ! virsh net-info "$1" >/dev/null 2>&1; then
		run virsh net-define "$file"
	fi
	if ! virsh net-info "$1" 2>/dev/null | grep -Eq '^Active:[[:space:]]+yes'; then
		run virsh net-start "$1"
	fi
}

up() {
	while [ $# -gt 0 ]; do
		case $1 in
		-n) n=$2; shift 2 ;;
		-uefi) uefi=1; shift ;;
		-network) network=$2; shift 2 ;;
		-memory) memory=$2; shift 2 ;;
		-disk-size) disk=$2; shift 2 ;;
		*) usage ;;
		esac
	done
	if [ "${DRY_RUN:-0}" != 1 ]; then
		command -v virsh >/dev/null || { echo "virsh not found (Debian package libvirt-clients)" >&2; exit 1; }
		command -v virt-install >/dev/null || { echo "virt-install not found (Debian package virtinst)" >&2; exit 1; }
	fi
	net_up "$network"
	# Disk first, network second: the empty disk falls through to PXE at
	# once, and a machine that installed itself boots its disk afterwards.
	local firmware=(--boot useserial=on) # SeaBIOS and iPXE text on the serial log
	if [ "$uefi" = 1 ]; then
		firmware=(--boot uefi)
	fi
	local i name
	for i in $(seq 1 "$n"); do
		name=$PREFIX$i
		if virsh dominfo "$name" >/dev/null 2>&1; then
			echo "$name exists already: ./lab.sh down first" >&2
			exit 1
		fi
		run virt-install --name "$name" --memory "$memory" --vcpus 1 \
			--import --osinfo detect=on,require=off \
			--disk "path=$POOL_DIR/$name.qcow2,size=$disk,format=qcow2,bus=virtio,boot.order=1" \
			--network "network=$network,model=virtio,mac=$(mac "$i"),boot.order=2" \
			"${firmware[@]}" \
			--graphics none --serial "file,path=$LOG_DIR/$name.serial.log" \
			--noautoconsole
	done
	local ip
	ip=$(server_ip "$network")
	cat <<EOF

$n machine(s) are booting on libvirt network $network. Kindling must serve them
(in another terminal, as root):
EOF
	if [ "$network" = kindling ]; then
		echo "  kindling serve -address $ip:8080 -dhcp server -dhcp-interface virbr-kindling \\"
		echo "    -dhcp-range 192.168.150.100-192.168.150.199 -dhcp-router $ip -dhcp-dns $ip [-data-path DIR]"
	else
		echo "  kindling serve -address $ip:8080 [-data-path DIR]"
	fi
	cat <<EOF
Follow them: curl -s 'http://$ip:8080/events?mac=$(mac 1)'
             tail -f $LOG_DIR/${PREFIX}1.serial.log
Remove them: $0 down
EOF
}

status() {
	virsh list --all --name | grep "^$PREFIX" | while read -r name; do
		printf '%s\t%s\n' "$name" "$(virsh domstate "$name")"
	done
	virsh net-list --all | grep -E 'kindling' || true
}

down() {
	local name
	for name in $(virsh list --all --name | grep "^$PREFIX" || true); do
		if [ "$(virsh domstate "$name")" != "shut off" ]; then
			run virsh destroy "$name"
		fi
		# --nvram: UEFI variable store; --remove-all-storage: the disk.
		run virsh undefine "$name" --nvram --remove-all-storage
	done
	local net
	for net in kindling kindling-libvirt-dhcp; do
		if virsh net-info "$net" >/dev/null 2>&1; then
			if virsh net-info "$net" | grep -Eq '^Active:[[:space:]]+yes'; then
				run virsh net-destroy "$net"
			fi
			run virsh net-undefine "$net"
		fi
	done
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
net)
	[ "${1:-}" = -network ] && network=${2:?}
	net_up "$network"
	;;
up) up "$@" ;;
status) status ;;
down) down ;;
*) usage ;;
esac
