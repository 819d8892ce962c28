-- adapt: the adaptive (AIMD) rate of one destination domain, read and written in one step
-- so that workers hearing "slow down" and "ok" at the same moment cannot undo each other.
--   down: halve the effective rate (from the cap, the global rate or the ceiling when the
--         domain is not adapting yet), not below the floor, at most once a second.
--   up:   raise an adapting domain's effective rate by 5 % of its ceiling (at least 1/s),
--         at most once a second; at the ceiling (cap, global rate or CEILING) the adaptive
--         rate is dropped and the domain goes at its cap again.
--
-- KEYS[1] adaptive effective rates hash   KEYS[2] time of the last change hash
-- KEYS[3] domain rate caps hash           KEYS[4] global rate (string)
-- ARGV[1] domain   ARGV[2] 'down' or 'up'   ARGV[3] now (seconds, the caller's clock)
-- ARGV[4] floor (msgs/s)   ARGV[5] ceiling when neither a cap nor a global rate is set
--
-- Returns the effective rate now in force (text), or nil when the domain is not adapting.

local domain, now = ARGV[1], tonumber(ARGV[3])
-- A stored positive, finite number, or nil (absent, unreadable, 0, negative, inf, nan).
local function positive(value)
  local n = tonumber(value)
  if n and n == n and n > 0 and n < math.huge then return n end
  return nil
end
local function text(n) return string.format('%.17g', n) end

local effective = positive(redis.call('HGET', KEYS[1], domain))
local changed = positive(redis.call('HGET', KEYS[2], domain))
local cap = positive(redis.call('HGET', KEYS[3], domain))
local global = positive(redis.call('GET', KEYS[4]))
local recent = changed ~= nil and now - changed < 1.0

if ARGV[2] == 'down' then
  if effective and recent then return text(effective) end
  local new = math.max(tonumber(ARGV[4]), (effective or cap or global or tonumber(ARGV[5])) / 2)
  redis.call('HSET', KEYS[1], domain, text(new))
  redis.call('HSET', KEYS[2], domain, ARGV[3])
  return text(new)
end

if not effective then return nil end
if recent then return text(effective) end
local ceiling = cap or global or tonumber(ARGV[5])
local new = effective + math.max(1.0, ceiling * 0.05)
if new >= ceiling then
  redis.call('HDEL', KEYS[1], domain)
  redis.call('HDEL', KEYS[2], domain)
  return nil
end
redis.call('HSET', KEYS[1], domain, text(new))
redis.call('HSET', KEYS[2], domain, ARGV[3])
return text(new)
