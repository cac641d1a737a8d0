#!/usr/bin/env bash
# Load test of a real kindling server with 10,000 machines, against the
# targets in bench/README.md. Rerun it with:
#
#   bash bench/load.sh
#
# It builds kindling, generates data in bench/out/, starts the server on
# 127.0.0.1, measures start-up, runs wrk against /ipxe and /ignition with a
# random MAC per request, reads the server's memory, then serves a 100 MiB
# asset from kindling and from nginx and compares. Every process it starts
# is stopped on exit. Only 127.0.0.1 is used. Takes about 2 minutes.
#
# Knobs (environment): N (machines, 10000), DURATION (wrk run per endpoint,
# 12s), ASSET_DURATION (per asset run, 10s), PORT (18080), NGINX_PORT
# (18081), CONNS (32), THREADS (2), THINK_MS (think time of the paced /ipxe
# run, 1).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=bench/out
N=${N:-10000}
DURATION=${DURATION:-12s}
ASSET_DURATION=${ASSET_DURATION:-10s}
PORT=${PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
THINK=${THINK_MS:-1}
unset THINK_MS # only the paced run gets it (wrk reads it from the environment)
URL=http://127.0.0.1:$PORT
NGINX_URL=http://127.0.0.1:$NGINX_PORT

for tool in go wrk curl; do
	command -v "$tool" >/dev/null || { echo "load.sh: $tool is required" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "load.sh: nginx is required (apt-get install nginx-light or nginx)" >&2; exit 1; }

pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT

# stop PID: end one process this script started, and wait for it.
stop() {
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

for p in "$PORT" "$NGINX_PORT"; do
	if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
		echo "load.sh: something already listens on 127.0.0.1:$p; set PORT / NGINX_PORT" >&2
		exit 1
	fi
done

now_ns() { date +%s%N; }

mkdir -p "$OUT"
echo "== build"
go build -o "$OUT/kindling" ./cmd/kindling
go build -o "$OUT/gendata" ./bench/gendata
go build -o "$OUT/warm" ./bench/warm

echo "== generate $N machines"
"$OUT/gendata" -n "$N" -o "$OUT/data" -asset-mib 100
MACS=$OUT/data/macs.txt

# start LEVEL LOG: start kindling at log level LEVEL, logging to LOG; sets
# KPID and STARTUP_MS (from exec until /healthz answers 200).
start() {
	local level=$1 log=$2 t0 t1
	t0=$(now_ns)
	"$OUT/kindling" serve -data-path "$OUT/data" -address "127.0.0.1:$PORT" -log-level "$level" >"$log" 2>&1 &
	KPID=$!
	pids+=("$KPID")
	until curl -fs -o /dev/null --max-time 1 "$URL/healthz"; do
		if ! kill -0 "$KPID" 2>/dev/null; then
			echo "load.sh: kindling exited during start-up:" >&2
			cat "$log" >&2
			exit 1
		fi
		if (($(now_ns) - t0 > 30000000000)); then
			echo "load.sh: kindling did not answer /healthz within 30s" >&2
			exit 1
		fi
		sleep 0.005
	done
	t1=$(now_ns)
	STARTUP_MS=$(((t1 - t0) / 1000000))
}

# field NAME FILE: the value of NAME=… on the RESULT line wrk's script wrote.
field() { grep '^RESULT ' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# run_wrk NAME CONNS DURATION ARGS…: run wrk, keep its output in OUT/NAME.txt,
# and fail on any non-2xx answer or socket error.
run_wrk() {
	local name=$1 c=$2 d=$3
	shift 3
	echo "== wrk $name: -t$THREADS -c$c -d$d $*"
	# WRK_CPU, when set, pins wrk to that CPU (taskset).
	${WRK_CPU:+taskset -c "$WRK_CPU"} wrk -t"$THREADS" -c"$c" -d"$d" --latency "$@" >"$OUT/$name.txt"
	sed -n '/Latency Distribution/,/^Requests\/sec/p;/Transfer\/sec/p' "$OUT/$name.txt" | sed 's/^/   /'
	local bad errs
	bad=$(field non2xx "$OUT/$name.txt")
	errs=$(field socket_errors "$OUT/$name.txt")
	if [ "${bad:-1}" != 0 ] || [ "${errs:-1}" != 0 ]; then
		echo "load.sh: wrk $name: $bad non-2xx answers, $errs socket errors (see $OUT/$name.txt)" >&2
		exit 1
	fi
}

rps() { awk -v r="$(field requests "$OUT/$1.txt")" -v d="$(field duration_us "$OUT/$1.txt")" 'BEGIN { printf "%.0f", r / (d / 1e6) }'; }
p99ms() { awk -v p="$(field p99_us "$OUT/$1.txt")" 'BEGIN { printf "%.2f", p / 1000 }'; }
mibps() { awk -v b="$(field bytes "$OUT/$1.txt")" -v d="$(field duration_us "$OUT/$1.txt")" 'BEGIN { printf "%.0f", b / 1048576 / (d / 1e6) }'; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

echo "== start-up at log level info (for the catalog load figure)"
start info "$OUT/kindling-info.log"
STARTUP_INFO_MS=$STARTUP_MS
LOAD_TOOK=$(sed -n 's/.*msg="catalog loaded".* took=\([^ ]*\).*/\1/p' "$OUT/kindling-info.log" | head -1)
echo "   $STARTUP_INFO_MS ms until /healthz answered; log: catalog loaded took=$LOAD_TOOK"
stop "$KPID"

echo "== start-up at log level warn (the server measured below)"
start warn "$OUT/kindling.log"
echo "   $STARTUP_MS ms until /healthz answered (pid $KPID)"
RSS_IDLE=$(status_kib "$KPID" VmRSS)

# Every machine's iPXE script is the same request each time, so the first
# pass fills the render cache; wrk's own first seconds do it anyway, but a
# warm pass also checks every machine gets a 200.
echo "== /ipxe warm pass (every MAC once; checks every machine gets 200)"
"$OUT/warm" -url "$URL/ipxe" -macs "$MACS" -c "$CONNS" -want "#!ipxe" | tee "$OUT/warm-ipxe.txt" | sed 's/^/   /'
RSS_IPXE_WARM=$(status_kib "$KPID" VmHWM)
run_wrk ipxe "$CONNS" "$DURATION" -s bench/random_mac.lua "$URL" -- "$MACS" /ipxe
# The run above is closed-loop at saturation: wrk sends the next request
# the moment an answer arrives, so kindling and wrk fight for the 2 CPUs
# and p99 measures that fight. This one paces each connection (THINK_MS
# think time) to measure p99 at about the target load instead.
THINK_MS=$THINK run_wrk ipxe-paced "$CONNS" "$DURATION" -s bench/random_mac.lua "$URL" -- "$MACS" /ipxe
# And once more at saturation with a core each: every thread of kindling
# on CPU 0, wrk on CPU 1, so p99 measures the server, not the scheduler
# sharing two cores between it and its load generator.
if command -v taskset >/dev/null; then
	taskset -a -p -c 0 "$KPID" >/dev/null
	WRK_CPU=1 run_wrk ipxe-pinned "$CONNS" "$DURATION" -s bench/random_mac.lua "$URL" -- "$MACS" /ipxe
	taskset -a -p -c 0,1 "$KPID" >/dev/null
fi
HWM_IPXE=$(status_kib "$KPID" VmHWM)

echo "== /ignition warm pass (each machine's first render: Butane → Ignition)"
"$OUT/warm" -url "$URL/ignition" -macs "$MACS" -c "$CONNS" -want '"ignition":{"version"' | tee "$OUT/warm-ignition.txt" | sed 's/^/   /'
WARM_IGN=$(sed -n 's/.* in \([^ ]*\) (\([0-9]*\) req\/s.*p99 \([^ ]*\) .*/\1 (\2 req\/s, p99 \3)/p' "$OUT/warm-ignition.txt")
HWM_IGN_WARM=$(status_kib "$KPID" VmHWM)
run_wrk ignition "$CONNS" "$DURATION" -s bench/random_mac.lua "$URL" -- "$MACS" /ignition

RSS=$(status_kib "$KPID" VmRSS)
HWM=$(status_kib "$KPID" VmHWM)
echo "   kindling VmRSS ${RSS} kB, VmHWM ${HWM} kB"

echo "== nginx on 127.0.0.1:$NGINX_PORT serving the same file"
NGX=$(cd "$OUT" && pwd)/nginx
mkdir -p "$NGX/tmp"
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$NGX/nginx.conf" <<EOF
# generated by bench/load.sh
$user_line
daemon off;
worker_processes 2;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    types { application/octet-stream img; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $(cd "$OUT/data" && pwd);
        location /assets/ { }
    }
}
EOF
"$NGINX" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" &
NPID=$!
pids+=("$NPID")
for _ in $(seq 200); do
	curl -fs -o /dev/null --max-time 1 -r 0-0 "$NGINX_URL/assets/big.img" && break
	sleep 0.02
done
SIZE=$(stat -c %s "$OUT/data/assets/big.img")
for u in "$URL" "$NGINX_URL"; do
	got=$(curl -fs -o /dev/null -w '%{size_download}' "$u/assets/big.img")
	[ "$got" = "$SIZE" ] || { echo "load.sh: $u/assets/big.img gave $got bytes, want $SIZE" >&2; exit 1; }
done

for c in 4 64; do
	run_wrk "asset-kindling-c$c" "$c" "$ASSET_DURATION" --timeout 120s -s bench/report.lua "$URL/assets/big.img"
	run_wrk "asset-nginx-c$c" "$c" "$ASSET_DURATION" --timeout 120s -s bench/report.lua "$NGINX_URL/assets/big.img"
done
RSS_END=$(status_kib "$KPID" VmRSS)
HWM_END=$(status_kib "$KPID" VmHWM)

stop "$NPID"
stop "$KPID"

# ratio C: kindling's asset throughput as a percentage of nginx's at C connections.
ratio() { awk -v a="$(mibps "asset-kindling-c$1")" -v b="$(mibps "asset-nginx-c$1")" 'BEGIN { printf "%.0f", 100 * a / b }'; }
verdict() { if awk -v x="$1" -v t="$2" "BEGIN { exit !(x $3 t) }"; then echo ok; else echo MISSED; fi; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
row() { printf '%-50s %-34s %-18s %s\n' "$@"; }

{
	echo
	echo "Summary: $N machines; kindling and wrk share $(nproc) CPUs; wrk -t$THREADS; $(date -u +%Y-%m-%dT%H:%MZ)"
	row "measure" "result" "target" "verdict"
	row "start-up, exec -> /healthz 200 (log level warn)" "$STARTUP_MS ms" "< 2000 ms" "$(verdict "$STARTUP_MS" 2000 '<')"
	row "start-up, exec -> /healthz 200 (log level info)" "$STARTUP_INFO_MS ms" "" ""
	row "  of which catalog load+validate (log took=)" "$LOAD_TOOK" "" ""
	row "/ipxe c=$CONNS, saturation" "$(rps ipxe) req/s, p99 $(p99ms ipxe) ms" ">= 20000, < 5 ms" \
		"$(verdict "$(rps ipxe)" 20000 '>=') / p99 $(verdict "$(p99ms ipxe)" 5 '<')"
	row "/ipxe c=$CONNS, paced (${THINK} ms think time)" "$(rps ipxe-paced) req/s, p99 $(p99ms ipxe-paced) ms" ">= 20000, < 5 ms" \
		"$(verdict "$(rps ipxe-paced)" 20000 '>=') / p99 $(verdict "$(p99ms ipxe-paced)" 5 '<')"
	if [ -f "$OUT/ipxe-pinned.txt" ]; then
		row "/ipxe c=$CONNS, saturation, a core each" "$(rps ipxe-pinned) req/s, p99 $(p99ms ipxe-pinned) ms" ">= 20000, < 5 ms" \
			"$(verdict "$(rps ipxe-pinned)" 20000 '>=') / p99 $(verdict "$(p99ms ipxe-pinned)" 5 '<')"
	fi
	row "/ignition first render of all, c=$CONNS" "$WARM_IGN" "" ""
	row "/ignition c=$CONNS, saturation, after warm" "$(rps ignition) req/s, p99 $(p99ms ignition) ms" ">= 10000" "$(verdict "$(rps ignition)" 10000 '>=')"
	row "RSS after start-up (VmRSS)" "$(mib "$RSS_IDLE") MiB" "" ""
	row "peak RSS (VmHWM) after /ipxe warm pass" "$(mib "$RSS_IPXE_WARM") MiB" "" ""
	row "peak RSS (VmHWM) after /ipxe runs" "$(mib "$HWM_IPXE") MiB" "" ""
	row "peak RSS (VmHWM) after /ignition warm pass" "$(mib "$HWM_IGN_WARM") MiB" "" ""
	row "RSS after /ignition run (VmRSS / VmHWM)" "$(mib "$RSS") / $(mib "$HWM") MiB" "< 150 MiB" "$(verdict "$(mib "$HWM")" 150 '<')"
	row "RSS after asset runs (VmRSS / VmHWM)" "$(mib "$RSS_END") / $(mib "$HWM_END") MiB" "< 150 MiB" "$(verdict "$(mib "$HWM_END")" 150 '<')"
	for c in 4 64; do
		row "100 MiB asset c=$c: kindling / nginx" \
			"$(mibps "asset-kindling-c$c") / $(mibps "asset-nginx-c$c") MiB/s = $(ratio "$c")%" ">= 80%" "$(verdict "$(ratio "$c")" 80 '>=')"
	done
	echo "raw wrk output: $OUT/*.txt; server log: $OUT/kindling.log"
} | tee "$OUT/summary.txt"
