-- wrk script: each request asks PATH?mac=MAC for a MAC picked at random
-- from a list file (one MAC per line, as bench/gendata writes it), and the
-- run ends with one machine-readable RESULT line. With THINK_MS set in
-- the environment, each connection waits that many milliseconds before its
-- next request (wrk's delay()), to measure latency at a set load rather
-- than at saturation; unset, wrk sends as fast as answers come.
--
--   [THINK_MS=1] wrk -t2 -c32 -d12s --latency -s bench/random_mac.lua \
--       http://127.0.0.1:18080 -- bench/out/data/macs.txt /ipxe

local requests = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

function init(args)
  local file, path = args[1], args[2]
  if file == nil or path == nil then
    error("usage: wrk ... -s random_mac.lua URL -- MACFILE PATH")
  end
  for mac in io.lines(file) do
    if mac ~= "" then
      requests[#requests + 1] = wrk.format("GET", path .. "?mac=" .. mac)
    end
  end
  if #requests == 0 then
    error("no MACs in " .. file)
  end
  math.randomseed(os.time() * 1000 + (id or 0))
end

function request()
  return requests[math.random(#requests)]
end

-- wrk looks for delay() when it loads the script: define it only when
-- asked, so an unpaced run takes wrk's direct path.
local think = tonumber(os.getenv("THINK_MS") or "")
if think and think > 0 then
  function delay()
    return think
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.status, e.connect + e.read + e.write + e.timeout))
end
