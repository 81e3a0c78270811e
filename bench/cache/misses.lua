-- wrk script for bench/cache/misses: GETs of URLs drawn UNIFORMLY at random
-- from COUNT distinct small objects, so that most requests are misses until a
-- cache holds most of the set. Absolute-form request lines, as to a forward
-- proxy (`GET http://ORIGIN/s/N HTTP/1.1`, `Host: ORIGIN`), keep-alive (wrk's
-- default). N = 0 .. COUNT-1.
-- Arguments (after `--`): ORIGIN (host:port) COUNT SEED
-- The same SEED gives the same sequence of URLs, so every server of a run gets
-- the same requests in the same order (as far as it gets through them).
-- done() prints one machine-readable RESULT line for the runner.

local reqs = {}
local n = 0

-- Up to PREBUILT objects, every request is formatted once in init(); above that
-- (e.g. 100,000,000 objects: practically every request a miss), each is formatted
-- when it is sent.
local PREBUILT = 1000000
local base, host

function init(args)
   local origin, count, seed = args[1], tonumber(args[2]), tonumber(args[3])
   if not (origin and count and seed) then
      error("misses.lua: arguments ORIGIN COUNT SEED")
   end
   base, host, n = "http://" .. origin .. "/s/", { Host = origin }, count
   if count <= PREBUILT then
      for i = 0, count - 1 do
         reqs[i + 1] = wrk.format("GET", base .. i, host)
      end
   end
   math.randomseed(seed)
end

function request()
   local i = math.random(n)
   return reqs[i] or wrk.format("GET", base .. (i - 1), host)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d mean_us=%.1f max_us=%d\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
