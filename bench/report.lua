-- wrk script: plain GETs of the URL, ending with one machine-readable
-- RESULT line (as random_mac.lua does).
--
--   wrk -t2 -c4 -d10s --timeout 60s -s bench/report.lua http://127.0.0.1:18080/assets/big.img

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
