-- wrk script for bench/server/run.sh: POSTs the original API's example request and, at
-- the end, prints one JSON line (parseable) with throughput and latency percentiles.
-- BENCH_NAME names the target in that line.
wrk.method = "POST"
wrk.body = '{"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  local ok = summary.requests - e.status
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"name": "%s", "requests": %d, "errors": %d, "non2xx": %d, "rps": %.1f, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    os.getenv("BENCH_NAME") or "target", ok,
    e.connect + e.read + e.write + e.timeout + e.status, e.status,
    ok / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
