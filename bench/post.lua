-- wrk script for bench/wrk.sh: POSTs the JSON body in $BODY and, when the
-- run is over, prints one line of key=value figures:
--
--   RESULT requests=N rps=R p50_us=N p99_us=N err_connect=N err_read=N
--          err_write=N err_timeout=N non2xx=N
--
-- wrk's own status counter only counts answers above 399, so the script
-- counts every answer outside 200-299 itself (non2xx).
local body = os.getenv("BODY")
if body == nil or body == "" then
  error("BODY is not set: give the JSON message to POST")
end
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d rps=%.1f p50_us=%d p99_us=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d non2xx=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout, bad))
end
