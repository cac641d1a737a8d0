#!/usr/bin/env bash
# TFTP benchmark: Kindling's TFTP server (matchbox/tftp, run by
# bench/tftp/kserve) against tftpd-hpa (in.tftpd) and dnsmasq's TFTP, over
# 127.0.0.1, with one client (bench/tftp/driver) for all three.
#
#   sudo bash bench/tftp/run.sh            # ~4 min; needs go, in.tftpd, dnsmasq, root
#
# Rows: file size x blksize x windowsize, RUNS downloads each (servers
# interleaved run by run), median reported. Then CONC concurrent 1 MiB
# downloads from each server. Root is needed because dnsmasq 2.90 has no
# TFTP port option: it listens on 127.0.0.1:69 (which must be free).
#
# Knobs (environment): RUNS (5), CONC (200), CONC_RUNS (3), SIZES_MIB ("1 20"),
# BLKSIZES ("512 1468"), WINDOWS ("0 4 16"; 0 = no windowsize option),
# PIN (1: servers on CPU 0, the client on CPU 1; 0: no pinning),
# KPORT (16969), HPA_PORT (16970). Output: bench/out/tftp/ (git-ignored):
# the binaries, server logs, raw driver output (raw.txt), summary.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-5}
CONC=${CONC:-200}
CONC_RUNS=${CONC_RUNS:-3}
SIZES_MIB=${SIZES_MIB:-"1 20"}
BLKSIZES=${BLKSIZES:-"512 1468"}
WINDOWS=${WINDOWS:-"0 4 16"}
PIN=${PIN:-1}
KPORT=${KPORT:-16969}
HPA_PORT=${HPA_PORT:-16970}
IN_TFTPD=${IN_TFTPD:-/usr/sbin/in.tftpd}
DNSMASQ=${DNSMASQ:-$(command -v dnsmasq || echo /usr/sbin/dnsmasq)}
OUT=$PWD/bench/out/tftp

die() { echo "run.sh: $*" >&2; exit 1; }
command -v go >/dev/null || die "go not found"
[ -x "$IN_TFTPD" ] || die "$IN_TFTPD not found (Debian: apt-get install tftpd-hpa)"
[ -x "$DNSMASQ" ] || die "dnsmasq not found (Debian: apt-get install dnsmasq-base)"
[ "$(id -u)" = 0 ] || die "needs root: dnsmasq's TFTP listens on port 69"
if ss -Hlun 'sport = :69' | grep -q .; then
	die "UDP port 69 is in use; dnsmasq needs it: $(ss -Hlunp 'sport = :69')"
fi
if [ "$PIN" = 1 ] && [ "$(nproc)" -lt 2 ]; then
	PIN=0
fi
if [ "$PIN" = 1 ]; then
	SRV_CPU=(taskset -c 0)
	CLI_CPU=(taskset -c 1)
else
	SRV_CPU=()
	CLI_CPU=()
fi

mkdir -p "$OUT"
DATA=$(mktemp -d /tmp/kindling-tftp-bench.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building driver and kserve"
go build -o "$OUT/driver" ./bench/tftp/driver
go build -o "$OUT/kserve" ./bench/tftp/kserve

chmod 755 "$DATA" # tftpd-hpa and dnsmasq drop to nobody
for m in $SIZES_MIB; do
	head -c $((m << 20)) /dev/urandom >"$DATA/f${m}m"
done
[ -f "$DATA/f1m" ] || head -c $((1 << 20)) /dev/urandom >"$DATA/f1m"
chmod 644 "$DATA"/*

declare -A PID
"${SRV_CPU[@]}" "$OUT/kserve" -addr "127.0.0.1:$KPORT" -root "$DATA" 2>"$OUT/kserve.log" &
PIDS+=($!)
PID[kindling]=$!
"${SRV_CPU[@]}" "$IN_TFTPD" -L -s "$DATA" -a "127.0.0.1:$HPA_PORT" 2>"$OUT/tftpd-hpa.log" &
PIDS+=($!)
PID[tftpd-hpa]=$!
# -k: foreground; -C /dev/null: no system config; --port=0: no DNS;
# --tftp-max: the default 50 would refuse part of the concurrent run.
"${SRV_CPU[@]}" "$DNSMASQ" -k -C /dev/null --port=0 --enable-tftp --tftp-root="$DATA" \
	--listen-address=127.0.0.1 --bind-interfaces --tftp-max=$((CONC + 50)) --quiet-tftp \
	--pid-file="$OUT/dnsmasq.pid" --log-facility="$OUT/dnsmasq.log" &
PIDS+=($!)
PID[dnsmasq]=$!
TICKS=$(getconf CLK_TCK)
# utime + stime (+ waited-for children) of a process, in clock ticks
cputicks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }

declare -A ADDR=([kindling]="127.0.0.1:$KPORT" [tftpd-hpa]="127.0.0.1:$HPA_PORT" [dnsmasq]="127.0.0.1:69")
SERVERS=(kindling tftpd-hpa dnsmasq)

# Wait until each server answers, then warm up (page cache, first fork).
for s in "${SERVERS[@]}"; do
	ok=0
	for _ in $(seq 50); do
		if "$OUT/driver" -addr "${ADDR[$s]}" -name f1m -local "$DATA/f1m" -blksize 1468 -timeout 100ms >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.1
	done
	[ "$ok" = 1 ] || die "$s does not answer on ${ADDR[$s]}"
done

rcvbuf_start=$(awk '/^Udp:/ {n++; if (n == 2) print $6}' /proc/net/snmp)
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

{
	echo "# TFTP benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), Linux $(uname -r), $(go version | cut -d' ' -f3), $("$DNSMASQ" --version | head -1 | cut -d' ' -f1-3), $("$IN_TFTPD" -V | head -1)."
	if [ "$PIN" = 1 ]; then echo "Servers pinned to CPU 0, the client to CPU 1."; else echo "No CPU pinning."; fi
	echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
	echo "Median of $RUNS downloads per cell, ms (lower is better). tftpd-hpa and dnsmasq 2.90 do not"
	echo "implement windowsize: they ignore the option, so their windowsize rows are lock-step transfers."
	echo
	echo "| file | blksize | windowsize | kindling | tftpd-hpa | dnsmasq | kindling vs faster peer |"
	echo "| --- | --- | --- | --- | --- | --- | --- |"
} >"$OUT/summary.md"
: >"$OUT/raw.txt"

misses=0
for m in $SIZES_MIB; do
	for b in $BLKSIZES; do
		for w in $WINDOWS; do
			declare -A T=()
			for _ in $(seq "$RUNS"); do
				for s in "${SERVERS[@]}"; do
					line=$("${CLI_CPU[@]}" "$OUT/driver" -addr "${ADDR[$s]}" -name "f${m}m" -local "$DATA/f${m}m" -blksize "$b" -window "$w")
					echo "f${m}m blksize=$b window=$w $s $line" >>"$OUT/raw.txt"
					T[$s]+="$(sed 's/.*median_ms=\([0-9.]*\).*/\1/' <<<"$line") "
				done
			done
			k=$(tr ' ' '\n' <<<"${T[kindling]}" | grep . | median)
			h=$(tr ' ' '\n' <<<"${T[tftpd-hpa]}" | grep . | median)
			d=$(tr ' ' '\n' <<<"${T[dnsmasq]}" | grep . | median)
			verdict=$(awk -v k="$k" -v h="$h" -v d="$d" 'BEGIN {f = (h < d) ? h : d; printf "%.2fx %s", f / k, (k <= f) ? "ok" : "MISSED"}')
			[[ $verdict == *MISSED ]] && misses=$((misses + 1))
			wl=$w
			[ "$w" = 0 ] && wl="none"
			row="| ${m} MiB | $b | $wl | $k | $h | $d | $verdict |"
			echo "$row" | tee -a "$OUT/summary.md"
			unset T
		done
	done
done

{
	echo
	echo "$CONC concurrent 1 MiB downloads, all started at once, $CONC_RUNS rounds per cell (servers"
	echo "interleaved); wall time until the last download of a round ends, median round, and every round:"
	echo
	echo "| server | options | completed | failed | wall ms, median | wall ms, all rounds | per download p50 / p99 ms (median round) | server CPU ms per round, median |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
} >>"$OUT/summary.md"
conc_fail=0
for opts in "1468 4" "512 0"; do
	read -r b w <<<"$opts"
	declare -A W=() OK=() FAIL=() LINE=() CPU=()
	for _ in $(seq "$CONC_RUNS"); do
		for s in "${SERVERS[@]}"; do
			c0=$(cputicks "${PID[$s]}")
			line=$("${CLI_CPU[@]}" "$OUT/driver" -addr "${ADDR[$s]}" -name f1m -local "$DATA/f1m" -blksize "$b" -window "$w" -c "$CONC" 2>>"$OUT/raw.txt") || true
			c1=$(cputicks "${PID[$s]}")
			CPU[$s]+="$(((c1 - c0) * 1000 / TICKS)) "
			echo "concurrent $s blksize=$b window=$w $line server_cpu_ticks=$((c1 - c0))" >>"$OUT/raw.txt"
			W[$s]+="$(sed -n 's/.*wall_ms=\([0-9.]*\).*/\1/p' <<<"$line") "
			OK[$s]=$((${OK[$s]:-0} + $(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$line")))
			FAIL[$s]=$((${FAIL[$s]:-0} + CONC - $(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$line")))
			LINE[$s]+="$line"$'\n'
		done
	done
	wl=$w
	[ "$w" = 0 ] && wl="none"
	for s in "${SERVERS[@]}"; do
		med=$(tr ' ' '\n' <<<"${W[$s]}" | grep . | median)
		# the per-download percentiles of the round whose wall time is the median
		mline=$(grep -F "wall_ms=$med " <<<"${LINE[$s]}" | head -1 || true)
		p50=$(sed -n 's/.*per_download_p50_ms=\([0-9.]*\).*/\1/p' <<<"$mline")
		p99=$(sed -n 's/.*p99_ms=\([0-9.]*\).*/\1/p' <<<"$mline")
		cpu=$(tr ' ' '\n' <<<"${CPU[$s]}" | grep . | median)
		# in.tftpd forks a child per transfer and does not wait for it,
		# so the children's CPU time is not in its /proc stat.
		[ "$s" = tftpd-hpa ] && cpu="n/a (forked children)"
		echo "| $s | blksize $b, windowsize $wl | ${OK[$s]}/$((CONC * CONC_RUNS)) | ${FAIL[$s]} | $med | $(xargs <<<"${W[$s]}" | tr ' ' ',') | ${p50:-–} / ${p99:-–} | $cpu |" | tee -a "$OUT/summary.md"
		if [ "$s" = kindling ] && [ "${FAIL[$s]}" != 0 ]; then conc_fail=1; fi
	done
	unset W OK FAIL LINE CPU
done
rcvbuf_end=$(awk '/^Udp:/ {n++; if (n == 2) print $6}' /proc/net/snmp)
{
	echo
	echo "UDP receive-buffer drops during the run (/proc/net/snmp RcvbufErrors, all sockets): $((rcvbuf_end - rcvbuf_start))."
	echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
} >>"$OUT/summary.md"

echo
cat "$OUT/summary.md"
if [ "$misses" -gt 0 ] || [ "$conc_fail" = 1 ]; then
	echo "run.sh: target missed: $misses rows slower than the faster peer; concurrent failures: $conc_fail" >&2
	exit 2
fi
