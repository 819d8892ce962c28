-- unpark: move a domain's parked mail (from the head of its list, where fresh mail is put)
-- to the head of the backlog lane, in order, unless the domain is paused; at most ARGV[2]
-- messages, no more than its free concurrency slots, and, for a domain with a rate, no more
-- than the send times its rate can still book within the horizon (so the gate books every
-- one of them and parks none again, and the booking never runs dry between two rounds).
-- Also frees the busy slot of a message that was just sent (ARGV[3], may be empty).
--
-- KEYS[1] the domain's parked list   KEYS[2] ready count    KEYS[3] books hash
-- KEYS[4] paused domains set         KEYS[5] the domain's busy set
-- KEYS[6] domain concurrency caps    KEYS[7] domains with parked mail (set)
-- KEYS[8] domain rate caps           KEYS[9] adaptive effective rates
-- KEYS[10] ids just unparked (set): the gate lets them compete for the domain again
-- KEYS[11] domain GCRA state hash (the booking, see gate.lua)
-- ARGV[1] domain   ARGV[2] most to move (0 = all)   ARGV[3] id whose slot is done
-- ARGV[4] burst (seconds)   ARGV[5] horizon (microseconds), as the gate is given them
--
-- Returns how many moved.

if redis.replicate_commands then redis.replicate_commands() end

local domain = ARGV[1]
if ARGV[3] ~= '' then
  redis.call('ZREM', KEYS[5], ARGV[3])
end
if redis.call('SISMEMBER', KEYS[4], domain) == 1 then
  return 0
end
local set_cap = redis.call('HGET', KEYS[8], domain)
if set_cap and not ((tonumber(set_cap) or 0) > 0) then
  return 0  -- a cap of 0 holds the domain like a pause
end
local waiting = redis.call('LLEN', KEYS[1])
if waiting == 0 then
  redis.call('SREM', KEYS[7], domain)
  return 0
end
local most = tonumber(ARGV[2])
if most <= 0 then most = waiting end
local cap = tonumber(redis.call('HGET', KEYS[6], domain) or '0') or 0
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', lib.now_us())
  local free = cap - redis.call('ZCARD', KEYS[5])
  if free < most then most = free end
end
local rate = tonumber(redis.call('HGET', KEYS[8], domain) or '0') or 0
local effective = tonumber(redis.call('HGET', KEYS[9], domain) or '0') or 0
if effective > 0 and (rate == 0 or effective < rate) then rate = effective end
if rate > 0 then
  -- Free send times within the horizon: slots go at tat - tau, tat + interval - tau, ...
  local now = lib.now_us()
  local interval, tau = lib.gcra(rate, tonumber(ARGV[4]))
  local tat = lib.tat(redis.call('HGET', KEYS[11], domain), now)
  local room = lib.room(tat, now, interval, tau, tonumber(ARGV[5]))
  if room < 0 then room = 0 end
  if room < most then most = room end
end
local moved = 0
if most > 0 then
  local ids = redis.call('LPOP', KEYS[1], most)
  if ids then
    for i = #ids, 1, -1 do
      lib.ready_push('backlog', 'drain:msg:' .. ids[i], ids[i], true)
      redis.call('SADD', KEYS[10], ids[i])
    end
    moved = #ids
  end
end
if moved > 0 then
  redis.call('HINCRBY', KEYS[3], 'parked', -moved)
end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('SREM', KEYS[7], domain)
end
return moved
