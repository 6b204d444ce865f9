-- wrk script of the benchmark: POSTs pre-signed callbacks, each thread its own file of bodies
-- (one JSON body per line, each with its own callId), counts every answer by status, and
-- prints one JSON summary line ("bench-wrk {...}") when done.
--
--   wrk -t T -c C -d D -s bench/post.lua URL -- BODY_DIR [LIMIT]
--
-- BODY_DIR holds bodies-1.txt ... bodies-T.txt. LIMIT (optional): each thread stops after
-- that many answers, so a run can send an exact number of callbacks. A thread that runs out
-- of bodies starts again from its first (counted as "wrapped": duplicated callIds).

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  local dir = args[1]
  limit = tonumber(args[2] or "0") or 0
  requests = {}
  local headers = { ["Content-Type"] = "application/json" }
  local file = assert(io.open(dir .. "/bodies-" .. id .. ".txt", "r"))
  for line in file:lines() do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  file:close()
  n = #requests
  index = 0
  wrapped = 0
  answered = 0
  statuses = {}
end

function request()
  index = index + 1
  if index > n then
    index = 1
    wrapped = wrapped + 1
  end
  return requests[index]
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  answered = answered + 1
  if limit > 0 and answered >= limit then
    wrk.thread:stop()
  end
end

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', "") .. '"'
end

function done(summary, latency, requests_)
  local totals = {}
  local sent = 0
  local wraps = 0
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, count in pairs(counts) do
      totals[status] = (totals[status] or 0) + count
    end
    sent = sent + (thread:get("index") or 0) + (thread:get("wrapped") or 0) * (thread:get("n") or 0)
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local parts = {}
  for status, count in pairs(totals) do
    parts[#parts + 1] = json_string(status) .. ":" .. count
  end
  local e = summary.errors
  io.write(string.format(
    'bench-wrk {"requests":%d,"duration_us":%d,"bytes":%d,"statuses":{%s},'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},'
      .. '"generated":%d,"wrapped":%d}\n',
    summary.requests, summary.duration, summary.bytes, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, sent, wraps))
end
