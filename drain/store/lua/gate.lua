-- gate: may this message go to its destination domain now? Checked by a worker before
-- sending, only for domains an operator limited, paused, or that are throttling us.
-- (The GCRA is hand-written for the same reason as in claim.lua: atomic with the booking,
-- on a stock Redis, clocked by the server.)
--
-- KEYS[1] domain rate caps hash        KEYS[2] adaptive effective rates hash
-- KEYS[3] domain concurrency caps hash KEYS[4] paused domains set
-- KEYS[5] domain GCRA state hash       KEYS[6] the domain's busy set (id scored by slot expiry)
-- KEYS[7] the domain's parked list     KEYS[8] ids just unparked (set)
-- KEYS[9] domain send-time GCRA state hash: what actually went, so that mail that comes
--         back late from a reservation cannot bunch up beyond the rate and burst
-- ARGV[1] domain   ARGV[2] message id   ARGV[3] burst (seconds)
-- ARGV[4] slot life (ms): a busy slot lapses on its own after this (a worker died)
-- ARGV[5] the message's reserved send time (microseconds; 0 = none)
-- ARGV[6] horizon (microseconds): a send time further out than this is not reserved
--
-- Returns {verdict, value}:
--   {0, 0}     go (a concurrency slot is taken if the domain has a cap)
--   {1, slot}  not yet: a send time is reserved for it (microseconds); hold it till then
--   {2, 0}     the domain is paused: park it
--   {3, 0}     the domain is at its concurrency cap: park it until a slot frees
--   {4, 0}     the domain's rate is booked beyond the horizon, or mail parked before it is
--              waiting: park it (nothing reserved), so nothing overtakes parked mail

if redis.replicate_commands then redis.replicate_commands() end

local domain, id = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[4], domain) == 1 then
  return {2, 0}
end
-- A cap of 0 holds the domain's mail as a pause does (so does a cap that is not a number).
local set_cap = redis.call('HGET', KEYS[1], domain)
if set_cap and not ((tonumber(set_cap) or 0) > 0) then
  return {2, 0}
end
local now = lib.now_us()

local cap = tonumber(redis.call('HGET', KEYS[3], domain) or '0') or 0
local reserved = tonumber(ARGV[5]) or 0
local returning = redis.call('SREM', KEYS[8], id) == 1 or reserved > 0
if not returning and redis.call('LLEN', KEYS[7]) > 0 then
  return {4, 0}
end
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  if redis.call('ZCARD', KEYS[6]) >= cap and not redis.call('ZSCORE', KEYS[6], id) then
    return {3, 0}
  end
end

local rate = tonumber(redis.call('HGET', KEYS[1], domain) or '0') or 0
local effective = tonumber(redis.call('HGET', KEYS[2], domain) or '0') or 0
if effective > 0 and (rate == 0 or effective < rate) then rate = effective end
if reserved > now + 50000 then
  -- Back too early (its time has not come): keep the send time it already has.
  return {1, string.format('%.0f', reserved)}
end
local interval, tau = 0, 0
if rate > 0 then
  interval, tau = lib.gcra(rate, tonumber(ARGV[3]))
end
if rate > 0 and reserved == 0 then
  local tat = lib.tat(redis.call('HGET', KEYS[5], domain), now)
  local slot = tat - tau
  if slot - now > tonumber(ARGV[6]) then
    return {4, 0}
  end
  redis.call('HSET', KEYS[5], domain, string.format('%.0f', tat + interval))
  if slot > now then
    return {1, string.format('%.0f', slot)}
  end
end

if rate > 0 then
  local sent = lib.tat(redis.call('HGET', KEYS[9], domain), now)
  if sent - now > tau then
    -- Sends would bunch (late mail meeting punctual mail): wait for the next free moment.
    return {1, string.format('%.0f', sent - tau)}
  end
  redis.call('HSET', KEYS[9], domain, string.format('%.0f', sent + interval))
end
if cap > 0 then
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[4]) * 1000, id)
end
return {0, 0}
