-- wrk script used for every timed run (copied from the team's shared harness).
--   BENCH_API_KEY  if set and not empty, sent as "Authorization: Bearer <key>" on every request
--   BENCH_METHOD   GET (default) or POST
--   BENCH_BODY     POST body (default: a ~250-byte JSON document)
--   BENCH_BODY_FILE  POST body read from this file instead (bodies larger than an environment variable holds)
-- done() prints one machine-readable line: "BENCHJSON {...}" (latencies in microseconds).
local key = os.getenv("BENCH_API_KEY") or ""
local method = os.getenv("BENCH_METHOD") or "GET"

wrk.method = method
if key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
if method == "POST" then
  wrk.headers["Content-Type"] = "application/json"
  local body_file = os.getenv("BENCH_BODY_FILE")
  if body_file then
    local f = assert(io.open(body_file, "rb"))
    wrk.body = f:read("*a")
    f:close()
  end
  wrk.body = wrk.body or os.getenv("BENCH_BODY") or
    '{"template_id":"tpl_001","format":"png","fields":{"name":"Ada Lovelace","title":"Analyst",' ..
    '"email":"ada@example.com","phone":"+44 20 7946 0000","company":"Analytical Engines Ltd"},' ..
    '"options":{"dpi":300,"bleed_mm":3,"watermark":false},"callback_url":null}'
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_stdev_us":%.1f,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.stdev, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
