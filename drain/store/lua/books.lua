-- books: every state's count in one atomic read. Used when MULTI is refused: a Redis over
-- its maxmemory refuses to queue any command in a transaction, reads included, while a
-- script that only reads still runs (it fails only at a write, and this one has none).
--
-- KEYS[1] books hash   KEYS[2] ready lane   KEYS[3] fresh lane   KEYS[4] suspect list
-- KEYS[5] swept set    KEYS[6] deferred set KEYS[7] in-flight hash   KEYS[8] quarantine set
-- ARGV: the books hash's fields to read (accepted delivered bounced deleted parked)
--
-- Returns {counters (HMGET reply), ready, fresh, suspect, swept, deferred, in flight,
-- quarantined}; a key of the wrong type reads as 0 (the caller logs it by not balancing).

local function count(command, key)
  local reply = redis.pcall(command, key)
  if type(reply) ~= 'number' then return 0 end
  return reply
end

local counters = redis.pcall('HMGET', KEYS[1], unpack(ARGV))
if type(counters) ~= 'table' or counters.err then counters = {} end
return {counters, count('LLEN', KEYS[2]), count('LLEN', KEYS[3]), count('LLEN', KEYS[4]),
        count('SCARD', KEYS[5]), count('ZCARD', KEYS[6]), count('HLEN', KEYS[7]), count('ZCARD', KEYS[8])}
