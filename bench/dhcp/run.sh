#!/usr/bin/env bash
# DHCP benchmark: Kindling's DHCP server (server mode, leases persisted to a
# lease file) against dnsmasq (likewise), driven by perfdhcp (Debian
# kea-admin), all inside two network namespaces this script creates and
# deletes. Rerun it with:
#
#   sudo bash bench/dhcp/run.sh
#
# Topology: namespace kdhcpb-PID-s holds the server on veth ks0
# (10.214.0.1/16); kdhcpb-PID-c holds perfdhcp on kc0 (10.214.0.2/16).
# perfdhcp acts as a relay (giaddr 10.214.0.2), as it does by default, and
# the servers lease from 10.214.1.0-10.214.250.255. No traffic leaves the
# namespaces.
#
# Servers (SERVERS): kindling is the real `kindling serve -dhcp server`
# (data directory: a copy of examples/default; leases in
# DATA/dhcp-leases.json; HTTP on the server namespace's loopback, TFTP on
# :69 there; log level warn); kserve is matchbox/dhcp alone
# (bench/dhcp/kserve) with a lease file; dnsmasq persists to its lease
# file; kserve-mem and dnsmasq-mem keep leases in memory only.
#
# For each server it measures:
#   - sustained rate: 4-way DORA at a fixed rate (-r) for DURATION seconds,
#     rising through RATES, each step on a fresh server with an empty lease
#     file; the best rate with < 1% of exchanges not completed is the
#     result. "leases" is the number of leases in the lease file after the
#     step: every client perfdhcp got an ACK for (perfdhcp cycles through
#     CLIENTS MACs, so at high rates clients repeat and it tops out there;
#     it can exceed acks when the server's ACK was lost at perfdhcp).
#   - avalanche: perfdhcp --scenario avalanche, AVALANCHE (1000) clients at
#     once; "unanswered" is requests the server received (kernel UDP
#     counters in the server namespace) minus replies it sent.
#
# Where packets are lost is counted from the kernel's UDP counters (nstat)
# in each namespace: srv_drop is datagrams the server's socket buffer
# overflowed on, cli_drop the same for perfdhcp (at high rates perfdhcp's
# own default-size buffer overflows before the server's does).
#
# Knobs (environment): SERVERS ("kindling dnsmasq"; also kserve,
# kserve-mem, dnsmasq-mem), RATES, DURATION (10), CLIENTS (60000),
# AVALANCHE (1000). Output: bench/out/dhcp/ (summary.txt, perfdhcp reports,
# server logs). Needs root, ip, perfdhcp, dnsmasq, nstat, ss, go.
set -euo pipefail

cd "$(dirname "$0")/../.."
OUT=bench/out/dhcp
SERVERS=${SERVERS:-kindling dnsmasq}
RATES=${RATES:-250 500 1000 1500 2000 3000 4000 6000 8000 10000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-60000}
AVALANCHE=${AVALANCHE:-1000}
NS=kdhcpb-$$
S=$NS-s
C=$NS-c
SRV_IP=10.214.0.1
CLI_IP=10.214.0.2
RANGE_START=10.214.1.0
RANGE_END=10.214.250.255

for tool in ip perfdhcp dnsmasq nstat go; do
	command -v "$tool" >/dev/null || { echo "run.sh: needs $tool" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (network namespaces)" >&2; exit 1; }

mkdir -p "$OUT"
SERVER_PID=
cleanup() {
	stop_server
	ip netns del "$S" 2>/dev/null || true
	ip netns del "$C" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$S"
ip netns add "$C"
ip -n "$S" link add ks0 type veth peer name kc0 netns "$C"
ip -n "$S" addr add $SRV_IP/16 dev ks0
ip -n "$C" addr add $CLI_IP/16 dev kc0
for n in "$S" "$C"; do ip -n "$n" link set lo up; done
ip -n "$S" link set ks0 up
ip -n "$C" link set kc0 up

echo "building kindling and kserve"
go build -o "$OUT/kindling" ./cmd/kindling
go build -o "$OUT/kserve" ./bench/dhcp/kserve

# start_server NAME: starts server NAME in namespace S; LEASES is where
# its leases go.
start_server() {
	local name=$1
	LEASES=$OUT/$name-leases
	rm -f "$LEASES" "$LEASES.tmp"
	case $name in
	kindling)
		rm -rf "$OUT/data"
		cp -r examples/default "$OUT/data"
		LEASES=$OUT/data/dhcp-leases.json
		ip netns exec "$S" "$OUT/kindling" serve -data-path "$OUT/data" -address 127.0.0.1:18080 \
			-dhcp server -dhcp-interface ks0 -dhcp-range $RANGE_START-$RANGE_END -log-level warn 2>"$OUT/$name.log" &
		SERVER_PID=$!
		;;
	kserve | kserve-mem)
		local lf=()
		[ "$name" = kserve ] && lf=(-lease-file "$LEASES")
		ip netns exec "$S" "$OUT/kserve" -interface ks0 -range $RANGE_START-$RANGE_END "${lf[@]}" 2>"$OUT/$name.log" &
		SERVER_PID=$!
		;;
	dnsmasq | dnsmasq-mem)
		local lf=(--dhcp-leasefile="$LEASES")
		[ "$name" = dnsmasq-mem ] && lf=(--leasefile-ro)
		ip netns exec "$S" dnsmasq --no-daemon --conf-file=/dev/null --user=root --no-ping --port=0 \
			--interface=ks0 --bind-interfaces --dhcp-authoritative \
			--dhcp-range=$RANGE_START,$RANGE_END,255.255.0.0,1h --dhcp-lease-max=70000 \
			"${lf[@]}" --pid-file="$OUT/dnsmasq.pid" 2>"$OUT/$name.log" &
		SERVER_PID=$!
		;;
	*)
		echo "unknown server $name" >&2
		exit 1
		;;
	esac
	for _ in $(seq 50); do
		ip netns exec "$S" ss -ulnH 'sport = :67' | grep -q . && return 0
		sleep 0.1
	done
	echo "$name did not bind port 67; log:" >&2
	cat "$OUT/$name.log" >&2
	exit 1
}

stop_server() {
	if [ -n "$SERVER_PID" ]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=
	fi
}

# leases_in NAME FILE: number of leases in a server's lease file.
leases_in() {
	case $1 in
	kindling | kserve) grep -c '"mac"' "$2" 2>/dev/null || echo 0 ;;
	dnsmasq) wc -l <"$2" 2>/dev/null || echo 0 ;;
	*) echo - ;;
	esac
}

# pstat FILE SECTION FIELD: a number from a perfdhcp report.
pstat() {
	awk -v sec="$2" -v f="$3" '
		/^\*\*\*Statistics for: / { in_sec = index($0, sec) > 0 }
		in_sec && index($0, f ":") == 1 { sub(/^[^:]*: */, ""); print $1; exit }
	' "$1"
}

# udp NS NAME: a UDP counter (absolute, nstat) in namespace NS.
udp() { ip netns exec "$1" nstat -az "$2" | awk -v n="$2" '$1 == n { print $2 }'; }

SUMMARY=$OUT/summary.txt
{
	echo "DHCP benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, kernel $(uname -r)"
	echo "perfdhcp $(perfdhcp -v 2>&1 | awk '{print $2}'), $(dnsmasq --version | head -1)"
	echo "rates: $RATES; $DURATION s per step; $CLIENTS distinct clients; avalanche $AVALANCHE"
	echo
	printf '%-14s %7s %9s %9s %9s %7s %9s %8s %8s %8s %s\n' server rate discover acks achieved lost% leases ack_ms srv_drop cli_drop result
} | tee "$SUMMARY"

declare -A BEST
for srv in $SERVERS; do
	BEST[$srv]=0
	for rate in $RATES; do
		start_server "$srv"
		rep=$OUT/$srv-r$rate.txt
		se0=$(udp "$S" UdpRcvbufErrors) ce0=$(udp "$C" UdpRcvbufErrors)
		ip netns exec "$C" perfdhcp -4 -l $CLI_IP -r "$rate" -R "$CLIENTS" -p "$DURATION" -W 2000000 $SRV_IP >"$rep" 2>&1 || true
		se1=$(udp "$S" UdpRcvbufErrors) ce1=$(udp "$C" UdpRcvbufErrors)
		stop_server
		disc=$(pstat "$rep" DISCOVER-OFFER "sent packets")
		acks=$(pstat "$rep" REQUEST-ACK "received packets")
		ackms=$(pstat "$rep" REQUEST-ACK "avg delay")
		disc=${disc:-0} acks=${acks:-0}
		lost=$(awk -v d="$disc" -v a="$acks" 'BEGIN { if (d == 0) print 100; else printf "%.2f", 100 * (d - a) / d }')
		achieved=$(awk -v a="$acks" -v t="$DURATION" 'BEGIN { printf "%.0f", a / t }')
		nleases=$(leases_in "$srv" "$LEASES")
		ok=pass
		awk -v l="$lost" 'BEGIN { exit !(l < 1) }' || ok=FAIL
		printf '%-14s %7s %9s %9s %9s %7s %9s %8s %8s %8s %s\n' "$srv" "$rate" "$disc" "$acks" "$achieved" "$lost" "$nleases" "$ackms" \
			$((se1 - se0)) $((ce1 - ce0)) "$ok" | tee -a "$SUMMARY"
		[ "$ok" = pass ] || break
		BEST[$srv]=$rate
	done
done

# Avalanche. received: DHCP requests that reached the server's socket
# (delivered + overflowed); unanswered: received minus replies sent;
# clients: how many of the AVALANCHE clients perfdhcp got an ACK for in
# the end (it retransmits with back-off until all are answered).
echo | tee -a "$SUMMARY"
printf '%-14s %9s %9s %9s %10s %9s %9s %8s %s\n' avalanche received replies srv_drop unanswered cli_drop clients resent time | tee -a "$SUMMARY"
for srv in $SERVERS; do
	start_server "$srv"
	in0=$(udp "$S" UdpInDatagrams) out0=$(udp "$S" UdpOutDatagrams) se0=$(udp "$S" UdpRcvbufErrors) ce0=$(udp "$C" UdpRcvbufErrors)
	rep=$OUT/$srv-avalanche.txt
	ip netns exec "$C" perfdhcp -4 --scenario avalanche -R "$AVALANCHE" -l $CLI_IP $SRV_IP >"$rep" 2>&1 || true
	sleep 0.5
	in1=$(udp "$S" UdpInDatagrams) out1=$(udp "$S" UdpOutDatagrams) se1=$(udp "$S" UdpRcvbufErrors) ce1=$(udp "$C" UdpRcvbufErrors)
	stop_server
	resent=$(awk -F': ' '/^Requests resent/ { print $2 }' "$rep")
	took=$(awk '/^It took/ { print $3 }' "$rep")
	recv=$((in1 - in0 + se1 - se0))
	printf '%-14s %9s %9s %9s %10s %9s %9s %8s %s\n' "$srv" $recv $((out1 - out0)) $((se1 - se0)) $((recv - (out1 - out0))) \
		$((ce1 - ce0)) "$(pstat "$rep" REQUEST-ACK "received packets")" "${resent:-?}" "${took:-?}" | tee -a "$SUMMARY"
done

echo | tee -a "$SUMMARY"
for srv in $SERVERS; do echo "best sustained rate with < 1% lost: $srv ${BEST[$srv]}/s" | tee -a "$SUMMARY"; done
