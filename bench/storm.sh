#!/usr/bin/env bash
# Boot storm: N simulated machines (default 1,000) each do DHCP DORA, a
# TFTP download of undionly.kpxe, then /boot.ipxe, /ipxe and /ignition,
# against one `kindling serve -dhcp server` in a network namespace. The
# driver runs in a second namespace joined by a veth pair; nothing leaves
# the two namespaces this script creates (and deletes).
#
#   bash bench/storm.sh            # N=1000 C=100
#   N=5000 C=200 bash bench/storm.sh
#
# Needs root, ip (iproute2), Debian's ipxe package (/usr/lib/ipxe).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
C=${C:-100}
OUT=bench/out/storm
ID=$$
SNS=kstorm-s-$ID
CNS=kstorm-c-$ID
mkdir -p "$OUT"

KPID=
cleanup() {
	[ -n "$KPID" ] && kill "$KPID" 2>/dev/null && wait "$KPID" 2>/dev/null || true
	ip netns del "$SNS" 2>/dev/null || true
	ip netns del "$CNS" 2>/dev/null || true
}
trap cleanup EXIT

echo "== build"
go build -o "$OUT/kindling" ./cmd/kindling
go build -o "$OUT/storm" ./bench/storm
go build -o "$OUT/gendata" ./bench/gendata
rm -rf "$OUT/data"
"$OUT/gendata" -n "$N" -o "$OUT/data" >/dev/null

echo "== namespaces $SNS (server 10.77.0.1/16) and $CNS (driver 10.77.0.2/16)"
ip netns add "$SNS"
ip netns add "$CNS"
ip link add ks0 netns "$SNS" type veth peer name kc0 netns "$CNS"
ip -n "$SNS" addr add 10.77.0.1/16 dev ks0
ip -n "$CNS" addr add 10.77.0.2/16 dev kc0
for ns in "$SNS" "$CNS"; do ip -n "$ns" link set lo up; done
ip -n "$SNS" link set ks0 up
ip -n "$CNS" link set kc0 up

ip netns exec "$SNS" "$OUT/kindling" serve -address 10.77.0.1:8080 -data-path "$OUT/data" -log-level warn \
	-dhcp server -dhcp-interface ks0 -dhcp-range 10.77.1.0-10.77.63.255 \
	-tftp-address 10.77.0.1:69 -tftp-root /usr/lib/ipxe >"$OUT/kindling.log" 2>&1 &
KPID=$!
for _ in $(seq 100); do
	ip netns exec "$CNS" curl -sf http://10.77.0.1:8080/healthz >/dev/null 2>&1 && break
	sleep 0.1
done

echo "== storm: $N machines, $C at once"
ip netns exec "$CNS" "$OUT/storm" -n "$N" -c "$C" -iface kc0 -server 10.77.0.1 | tee "$OUT/storm.txt"
echo "   kindling RSS: $(awk '/VmHWM/{print $2, $3}' /proc/$KPID/status 2>/dev/null || echo '?') peak; leases on disk: $(grep -o '"mac"' "$OUT/data/dhcp-leases.json" 2>/dev/null | wc -l)"
