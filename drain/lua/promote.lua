-- promote: move deferred messages whose time has come back to the ready list.
--
-- KEYS[1] deferred zset (id scored by due time)   KEYS[2] ready list
-- ARGV[1] now (unix seconds)   ARGV[2] most ids moved in one call
--
-- Returns how many moved.

local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('RPUSH', KEYS[2], unpack(ids))
return #ids
