#!/usr/bin/env bash
# CPU profile of the real server under wrk load: runs bench/profserve
# (kindling serve + /debug/pprof on another port) on the data load.sh
# generated, warms ENDPOINT for every MAC, then runs wrk (random MAC, like
# load.sh) while taking a CPU profile, and prints its top functions.
#
#   bash bench/load.sh            # once, to generate bench/out/data
#   ENDPOINT=/ipxe bash bench/profile.sh
#   go tool pprof -http : bench/out/profserve bench/out/cpu-ipxe.prof
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=bench/out
ENDPOINT=${ENDPOINT:-/ipxe}
SECONDS_=${PROFILE_SECONDS:-10}
PORT=${PORT:-18080}
PPORT=${PPROF_PORT:-18099}
CONNS=${CONNS:-32}
MACS=$OUT/data/macs.txt
NAME=$(basename "$ENDPOINT")
[ -f "$MACS" ] || { echo "profile.sh: no $MACS; run bash bench/load.sh first" >&2; exit 1; }

go build -o "$OUT/profserve" ./bench/profserve
go build -o "$OUT/warm" ./bench/warm

pids=()
cleanup() {
	local pid
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"$OUT/profserve" -data-path "$OUT/data" -address "127.0.0.1:$PORT" -pprof "127.0.0.1:$PPORT" >"$OUT/profserve.log" 2>&1 &
pids+=("$!")
until curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/healthz"; do sleep 0.01; done
"$OUT/warm" -url "http://127.0.0.1:$PORT$ENDPOINT" -macs "$MACS" -c "$CONNS"
wrk -t2 -c"$CONNS" -d"$((SECONDS_ + 2))s" --latency -s bench/random_mac.lua "http://127.0.0.1:$PORT" -- "$MACS" "$ENDPOINT" >"$OUT/profile-wrk-$NAME.txt" &
WPID=$!
pids+=("$WPID")
sleep 1
curl -fsS -o "$OUT/cpu-$NAME.prof" "http://127.0.0.1:$PPORT/debug/pprof/profile?seconds=$SECONDS_"
wait "$WPID"
grep -E 'Requests/sec|^ +99%' "$OUT/profile-wrk-$NAME.txt"
go tool pprof -top -nodecount 30 "$OUT/profserve" "$OUT/cpu-$NAME.prof" 2>/dev/null | sed -n '4,40p'
echo "profile: $OUT/cpu-$NAME.prof (go tool pprof -http : $OUT/profserve $OUT/cpu-$NAME.prof)"
