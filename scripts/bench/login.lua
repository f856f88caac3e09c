-- wrk script for scripts/bench-http.sh. BENCH_PATH chooses the traffic:
--   bare, throttled: the same username and address every time (for the throttled path an
--                    account its earlier wrong passwords locked);
--   verified:        a new username from a new /24 every time, so that nothing is refused and
--                    every request pays for a password check;
--   challenged:      the same traffic, sent to a replica that challenges every attempt;
--   bare-auth, forward-auth, forward-auth-baseline: GET /v1/auth with the session token in
--   BENCH_TOKEN.
-- It counts answers by status and prints one JSON line at the end.

local path = os.getenv("BENCH_PATH") or "bare"
if path == "bare-auth" or path == "forward-auth" or path == "forward-auth-baseline" then
  wrk.method = "GET"
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_TOKEN") or "")
else
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Forwarded-For"] = "203.0.113.7"
  wrk.body = '{"username":"bench-user","password":"not-the-password"}'
end

local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

local sent = 0
statuses = {}

function request()
  if path ~= "verified" and path ~= "challenged" then
    return wrk.format()
  end
  sent = sent + 1
  local address = string.format("%d.%d.%d.%d",
    11 + math.floor(sent / 65536) % 100, math.floor(sent / 256) % 256, sent % 256, id)
  local body = string.format('{"username":"bench-%d-%d","password":"not-the-password"}', id, sent)
  local headers = { ["Content-Type"] = "application/json", ["X-Forwarded-For"] = address }
  return wrk.format(nil, nil, headers, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  io.write(string.format(
    '{"path":"%s","requests":%d,"seconds":%.3f,"requests_per_sec":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"socket_errors":%d,"statuses":{%s}}\n',
    path, summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ",")))
end
