-- books: every state's count in one atomic read. Used when MULTI is refused: a Redis over
-- its maxmemory refuses to queue any command in a transaction, reads included, while a
-- script that only reads still runs (it fails only at a write, and this one has none).
--
-- KEYS[1] books hash   KEYS[2] ready counts by lane (hash)
-- KEYS[3] backlog list of a drain from before tenants   KEYS[4] its fresh list
-- KEYS[5] suspect list   KEYS[6] swept set   KEYS[7] deferred set   KEYS[8] in-flight hash
-- KEYS[9] quarantine set
-- ARGV[1], ARGV[2] the lanes' names (fields of KEYS[2]); then the books hash's fields to
-- read (accepted delivered bounced deleted parked)
--
-- Returns {counters (HMGET reply), lanes (HMGET reply), legacy ready, legacy fresh, suspect,
-- swept, deferred, in flight, quarantined}; a key of the wrong type reads as 0 (the caller
-- logs it by not balancing).

local function count(command, key)
  local reply = redis.pcall(command, key)
  if type(reply) ~= 'number' then return 0 end
  return reply
end

local function fields(key, names)
  local reply = redis.pcall('HMGET', key, unpack(names))
  if type(reply) ~= 'table' or reply.err then return {} end
  return reply
end

local wanted = {}
for i = 3, #ARGV do wanted[#wanted + 1] = ARGV[i] end
return {fields(KEYS[1], wanted), fields(KEYS[2], {ARGV[1], ARGV[2]}), count('LLEN', KEYS[3]),
        count('LLEN', KEYS[4]), count('LLEN', KEYS[5]), count('SCARD', KEYS[6]), count('ZCARD', KEYS[7]),
        count('HLEN', KEYS[8]), count('ZCARD', KEYS[9])}
