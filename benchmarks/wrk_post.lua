-- wrk script: POST a CloudEvent 0.1 with a unique eventID per request to /receive.
-- Usage: wrk -t2 -c10 -d10s -s wrk_post.lua http://127.0.0.1:PORT -- PREFIX
-- Prints one JSON line with the totals (accepted = requests - non-2xx/3xx).

local thread_count = 0
local template = '{"cloudEventsVersion":"0.1","eventType":"org.pacifica.metadata.ingest",'
  .. '"eventID":"%s-%d","source":"/pacifica/metadata/ingest","contentType":"application/json",'
  .. '"data":[{"destinationTable":"Transactions._id","value":1}]}'
local headers = { ["Content-Type"] = "application/json" }

function setup(thread)
  thread:set("thread_number", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  prefix = (args[1] or "wrk") .. "-t" .. tostring(thread_number)
  counter = 0
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/receive", headers, string.format(template, prefix, counter))
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, '
      .. '"read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
