-- wrk script for the fixed-rate phase of bench/frontend/run: the requests of
-- proxy.lua, sent to a schedule instead of as fast as the connections allow.
--
-- Arguments (after `--`): ORIGIN PREFIX COUNT RATE CONNECTIONS
--   RATE         requests per second for this wrk thread (the runner uses -t1)
--   CONNECTIONS  wrk's -c value (needed to undo wrk's latency correction, below)
--
-- Pacing: each thread owns a schedule of slots t0 + k/RATE (t0: its first
-- delay() call). wrk calls delay() on a connection before each request; the
-- connection takes the next slot and waits until it (whole milliseconds, wrk's
-- timer unit). A connection that comes back after its slot has passed sends at
-- once and the request counts as "late" when more than LATE_US behind: the
-- schedule only holds while there are idle connections, so late requests mean
-- the load was not the offered one (too few connections, or a stalled frontend).
-- The clock is CLOCK_MONOTONIC through LuaJIT's ffi (wrk 4.1 links LuaJIT).
--
-- Latency: wrk measures from the moment a request is written to its response.
-- At the end of a run wrk "corrects" its histogram for coordinated omission of
-- a closed loop (stats_correct: every sample n >= 2e adds copies at n-e, n-2e,
-- ... > e, with e = duration / (requests / connections)). In a paced run the
-- other connections keep the schedule, so those copies are requests that never
-- happened; done() undoes the correction on wrk's histogram (read through ffi,
-- after checking that it reproduces wrk's own percentiles) and reports the
-- percentiles of the requests actually made (raw_*), next to wrk's (p*_us).
--
-- done() prints one RESULT line: proxy.lua's fields plus the ones above.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "proxy.lua")

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } paced_timespec;
int clock_gettime(int clock_id, paced_timespec *tp);
typedef struct { uint64_t count; uint64_t limit; uint64_t min; uint64_t max; uint64_t data[]; } paced_wrk_stats;
]]

local CLOCK_MONOTONIC = 1 -- <linux/time.h>
local LATE_US = 1000 -- a request sent more than this after its slot is late
local PERCENTILES = { 50, 99, 99.9 }

local ts = ffi.new("paced_timespec")
local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

-- ---------------------------------------------------------------- per thread

local interval_us
local t0
-- read by done() through thread:get()
paced_rate = 0
paced_connections = 0
paced_slots = 0
paced_late = 0
paced_max_lag_us = 0

local proxy_init = init
function init(args)
   proxy_init(args)
   local rate = tonumber(args[4])
   if not rate or rate <= 0 then
      error("paced.lua: RATE (4th argument) must be a positive number, got " .. tostring(args[4]))
   end
   interval_us = 1e6 / rate
   paced_rate = rate
   paced_connections = tonumber(args[5])
   if not paced_connections or paced_connections < 1 then
      error("paced.lua: CONNECTIONS (5th argument) must be wrk's -c, got " .. tostring(args[5]))
   end
end

function delay()
   local now = now_us()
   if t0 == nil then
      t0 = now
   end
   local slot = t0 + paced_slots * interval_us
   paced_slots = paced_slots + 1
   local wait = slot - now
   if wait <= 0 then
      if -wait > LATE_US then
         paced_late = paced_late + 1
      end
      if -wait > paced_max_lag_us then
         paced_max_lag_us = -wait
      end
      return 0
   end
   return math.floor(wait / 1000 + 0.5)
end

-- ---------------------------------------------------------------- main state

local threads = {}
function setup(thread)
   threads[#threads + 1] = thread
end

-- wrk's stats_percentile on a histogram h[0 .. len-1] of values lo .. lo+len-1
local function percentile(h, lo, len, count, p)
   local rank = math.floor((p / 100) * count + 0.5 + 0.5)
   local total = 0
   for j = 0, len - 1 do
      total = total + h[j]
      if total >= rank then
         return lo + j
      end
   end
   return 0
end

-- Returns raw percentiles {p50, p99, p99.9}, max, sample count and the number of
-- samples wrk added; or nil and why when wrk's histogram is not what we expect.
local function raw_latency(latency, summary, connections)
   local ok, s = pcall(function() return ffi.cast("paced_wrk_stats **", latency)[0] end)
   if not ok then
      return nil, "cannot read wrk's histogram: " .. tostring(s)
   end
   local count = tonumber(s.count)
   if count == 0 then
      return nil, "no latency samples"
   end
   local lo, hi = tonumber(s.min), tonumber(s.max)
   if hi < lo or hi >= tonumber(s.limit) or hi ~= latency.max or lo ~= latency.min then
      return nil, "wrk's histogram header does not match (min/max/limit)"
   end
   local len = hi - lo + 1
   local h = ffi.new("double[?]", len)
   for v = lo, hi do
      h[v - lo] = tonumber(s.data[v])
   end
   for _, p in ipairs(PERCENTILES) do
      if percentile(h, lo, len, count, p) ~= latency:percentile(p) then
         return nil, "percentile " .. p .. " from wrk's histogram differs from wrk's"
      end
   end
   -- undo stats_correct (wrk.c main(): e = runtime_us / (complete / connections),
   -- integer divisions), from the top down so every bucket holds its own samples
   -- when it is reached
   local added = 0
   local per_conn = math.floor(summary.requests / connections)
   if per_conn > 0 then
      local e = math.floor(summary.duration / per_conn)
      if e > 0 then
         for n = hi, 2 * e, -1 do
            local c = n >= lo and h[n - lo] or 0
            if c > 0 then
               local m = n - e
               while m > e do
                  if m >= lo then
                     h[m - lo] = h[m - lo] - c
                  end
                  added = added + c
                  m = m - e
               end
            end
         end
      end
   end
   local samples = 0
   local raw_max = lo
   for j = 0, len - 1 do
      if h[j] < 0 then
         return nil, "undoing wrk's correction left a negative count"
      end
      samples = samples + h[j]
      if h[j] > 0 then
         raw_max = lo + j
      end
   end
   -- every response wrk counted is in the histogram unless its latency was
   -- beyond --timeout (then wrk counts a timeout instead)
   if samples ~= summary.requests - summary.errors.timeout then
      return nil, string.format("undoing wrk's correction left %d samples for %d responses",
                                samples, summary.requests - summary.errors.timeout)
   end
   local out = {}
   for k, p in ipairs(PERCENTILES) do
      out[k] = percentile(h, lo, len, samples, p)
   end
   return out, raw_max, samples, added
end

function done(summary, latency, requests)
   local slots, late, lag, rate = 0, 0, 0, 0
   for _, t in ipairs(threads) do
      slots = slots + t:get("paced_slots")
      late = late + t:get("paced_late")
      lag = math.max(lag, t:get("paced_max_lag_us"))
      rate = rate + t:get("paced_rate")
   end
   local connections = threads[1]:get("paced_connections")
   local line = result_line(summary, latency)
   local raw, raw_max, samples, added = raw_latency(latency, summary, connections)
   if raw then
      line = line .. string.format(" hist_ok=1 raw_p50_us=%d raw_p99_us=%d raw_p999_us=%d raw_max_us=%d samples=%d wrk_added=%d",
                                   raw[1], raw[2], raw[3], raw_max, samples, added)
   else
      io.stderr:write("paced.lua: reporting wrk's corrected percentiles: " .. tostring(raw_max) .. "\n")
      line = line .. string.format(" hist_ok=0 raw_p50_us=%d raw_p99_us=%d raw_p999_us=%d raw_max_us=%d samples=%d wrk_added=0",
                                   latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
                                   latency.max, summary.requests)
   end
   io.write(line .. string.format(" rate=%.1f slots=%d late=%d max_lag_us=%d\n", rate, slots, late, lag))
end
