-- wrk script for bench/frontend/run: absolute-form proxy requests
--   GET http://ORIGIN/PREFIX/N HTTP/1.1
-- cycling over N = 0 .. COUNT-1, keep-alive (wrk's default), as fast as the
-- connections allow (the maximum-rate phase; paced.lua reuses this file and adds a schedule).
-- Arguments (after `--`): ORIGIN (host:port) PREFIX COUNT
-- done() prints one machine-readable RESULT line for the runner.

local reqs = {}
local i = 0

function init(args)
   local origin, prefix, count = args[1], args[2], tonumber(args[3])
   for n = 0, count - 1 do
      reqs[#reqs + 1] = wrk.format("GET", "http://" .. origin .. "/" .. prefix .. "/" .. n,
                                   { Host = origin })
   end
   -- each thread starts at its own place in the cycle
   math.randomseed(os.time())
   i = math.random(#reqs) - 1
end

function request()
   i = i % #reqs + 1
   return reqs[i]
end

-- The RESULT line without its trailing newline: counts, errors and wrk's latency
-- percentiles (µs). Latencies are wrk's, i.e. after its closed-loop correction
-- (stats_correct), as wrk prints them.
function result_line(summary, latency)
   local e = summary.errors
   return string.format(
      "RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d p999_us=%d mean_us=%.1f max_us=%d",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max)
end

function done(summary, latency, requests)
   io.write(result_line(summary, latency) .. "\n")
end
