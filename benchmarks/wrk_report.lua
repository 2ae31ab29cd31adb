-- wrk script for benchmarks/serve_bench.py: POSTs JSON bodies read from $WRK_BODIES (one per
-- line, sent round-robin), or GETs the URL when $WRK_BODIES is empty, and prints one
-- machine-readable summary line when the run is done.
local bodies = {}
local source = os.getenv("WRK_BODIES") or ""
if source ~= "" then
  for line in io.lines(source) do
    bodies[#bodies + 1] = line
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end
local next_body = 0

request = function()
  if #bodies == 0 then
    return wrk.format("GET")
  end
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
