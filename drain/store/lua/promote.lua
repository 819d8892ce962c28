-- promote: move deferred messages whose time has come to the head of the backlog lane, in
-- due order: their turn came when their time did (a retry after its backoff, or mail held
-- for its rate slot, which must not wait behind the whole backlog).
--
-- KEYS[1] deferred zset (id scored by due time)   KEYS[2] ready count per lane (the backlog lists are by tenant)
-- KEYS[3] held for rate (zset)   KEYS[4] held by a breaker (zset): the moved ids leave them
-- ARGV[1] now (unix seconds)   ARGV[2] most ids moved in one call
--
-- Returns how many moved.

local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #ids == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], unpack(ids))
redis.call('ZREM', KEYS[3], unpack(ids))
redis.call('ZREM', KEYS[4], unpack(ids))
for i = #ids, 1, -1 do
  lib.ready_push('backlog', 'drain:msg:' .. ids[i], ids[i], true)
end
return #ids
