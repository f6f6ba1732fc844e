-- wrk script: POST the example bodies given after `--`, in rotation, and print
-- the summary as one JSON line (so bench_ingest.py reads numbers, not prose).
local bodies = {}
local counter = 0

function init(args)
  for _, path in ipairs(args) do
    local file = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = file:read("*a")
    file:close()
  end
end

function request()
  counter = counter % #bodies + 1
  return wrk.format("POST", "/webhooks/whatsapp", { ["Content-Type"] = "application/json" },
                    bodies[counter])
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
