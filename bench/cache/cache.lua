-- wrk script for bench/cache/run: GETs cycling over one object set, keep-alive
-- (wrk's default), in one of two request forms:
--   abs     GET http://ORIGIN/PREFIX/N HTTP/1.1   (absolute-form, as to a forward proxy)
--   origin  GET /PREFIX/N HTTP/1.1                (origin-form, as to a reverse proxy)
-- Both send `Host: ORIGIN`. N = 0 .. COUNT-1.
-- Arguments (after `--`): FORM ORIGIN (host:port) PREFIX COUNT
-- done() prints one machine-readable RESULT line for the runner.

local reqs = {}
local i = 0

function init(args)
   local form, origin, prefix, count = args[1], args[2], args[3], tonumber(args[4])
   local base
   if form == "abs" then
      base = "http://" .. origin .. "/" .. prefix .. "/"
   elseif form == "origin" then
      base = "/" .. prefix .. "/"
   else
      error("cache.lua: FORM must be abs or origin, not " .. tostring(form))
   end
   for n = 0, count - 1 do
      reqs[#reqs + 1] = wrk.format("GET", base .. n, { Host = origin })
   end
   -- each thread starts at its own place in the cycle
   math.randomseed(os.time())
   i = math.random(#reqs) - 1
end

function request()
   i = i % #reqs + 1
   return reqs[i]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d mean_us=%.1f max_us=%d\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
