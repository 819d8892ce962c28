-- claim: hand ready messages to a worker, if delivery is not paused and the global rate
-- allows (GCRA, clocked by the Redis server so every machine agrees). Suspects (messages
-- a dead worker held) go first and one at a time. Then the fresh lane goes before the
-- backlog lane, except on every share-th claim, when the backlog goes first: fresh mail
-- is not stuck behind a backlog, and the backlog still moves. Ids an operator rule swept
-- into quarantine are dropped when met.
--
-- The GCRA is hand-written (its arithmetic is in the prelude, _lib.lua) rather than taken
-- from a library (redis-cell, a Python limiter): it must be one atomic step with the pop, on
-- a stock Redis without modules, clocked by the server; a client-side limiter would race
-- between machines.
--
-- KEYS[1] backlog lane        KEYS[2] in-flight hash (id -> owner)
-- KEYS[3] lease key of owner  KEYS[4] paused flag
-- KEYS[5] global rate (msgs/s; absent = unlimited; 0, or anything not a positive
--         number, holds delivery as a pause does)
-- KEYS[6] GCRA state (theoretical arrival time, microseconds)
-- KEYS[7] suspect list        KEYS[8] swept set
-- KEYS[9] fresh lane          KEYS[10] claim counter   KEYS[11] burst (seconds)
-- ARGV[1] N, most ids wanted
-- ARGV[2] owner name
-- ARGV[3] lease time to live, milliseconds
-- ARGV[4] default burst, seconds of rate that may go at once
-- ARGV[5] share: every share-th claim serves the backlog lane first
--
-- Returns {wait_ms, isolated, fresh, id...}: wait_ms -1 when paused, > 0 when the rate
-- says wait (no ids), 0 with the claimed ids otherwise (none when nothing is ready);
-- isolated is 1 when the id is a suspect to be worked alone; fresh is how many ids came
-- from the fresh lane, counted from the front (> 0) or from the back (< 0).

if redis.replicate_commands then redis.replicate_commands() end

if redis.call('EXISTS', KEYS[4]) == 1 then
  return {-1, 0, 0}
end

local wrong = lib.wrong_types({KEYS[1], 'list', KEYS[2], 'hash', KEYS[7], 'list', KEYS[8], 'set',
                               KEYS[9], 'list'})
if wrong then return wrong end

local want = tonumber(ARGV[1])
local isolated = 0
local sources
if redis.call('LLEN', KEYS[7]) > 0 then
  sources, isolated, want = {KEYS[7]}, 1, 1
elseif redis.call('INCR', KEYS[10]) % tonumber(ARGV[5]) == 0 then
  sources = {KEYS[1], KEYS[9]}
else
  sources = {KEYS[9], KEYS[1]}
end

local rate = 0
local set_rate = redis.call('GET', KEYS[5])
if set_rate then
  rate = tonumber(set_rate) or 0
  if not (rate > 0) then
    return {-1, 0, 0}
  end
  if rate == math.huge then rate = 0 end
end
local now, tat, interval = 0, 0, 0
if rate > 0 then
  now = lib.now_us()
  local burst_s = tonumber(redis.call('GET', KEYS[11]) or ARGV[4]) or tonumber(ARGV[4])
  local tau
  interval, tau = lib.gcra(rate, burst_s)
  tat = lib.tat(redis.call('GET', KEYS[6]), now)
  local room = lib.room(tat, now, interval, tau, 0)
  if room < 1 then
    return {math.max(1, math.ceil((tat - tau - now) / 1000)), 0, 0}
  end
  if room < want then want = room end
end

local ids = {}
local fresh = 0
local swept = redis.call('SCARD', KEYS[8]) > 0
for position, source in ipairs(sources) do
  local need = want - #ids
  if need <= 0 then break end
  local before = #ids
  local popped = redis.call('LPOP', source, need)
  if popped then
    for _, id in ipairs(popped) do
      if not (swept and redis.call('SREM', KEYS[8], id) == 1) then
        table.insert(ids, id)
      end
    end
  end
  if source == KEYS[9] then
    fresh = #ids - before
    if position > 1 then fresh = -fresh end
  end
end
if #ids == 0 then
  return {0, isolated, 0}
end

local owner = ARGV[2]
for _, id in ipairs(ids) do
  redis.call('HSET', KEYS[2], id, owner)
end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])

if rate > 0 then
  lib.keep_tat(KEYS[6], tat + #ids * interval, now)
end

table.insert(ids, 1, fresh)
table.insert(ids, 1, isolated)
table.insert(ids, 1, 0)
return ids
