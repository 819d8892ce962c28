-- promote: move deferred messages whose time has come to the head of the backlog lane, in
-- due order: their turn came when their time did (a retry after its backoff, or mail held
-- for its rate slot, which must not wait behind the whole backlog).
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
for i = #ids, 1, -1 do
  redis.call('LPUSH', KEYS[2], ids[i])
end
return #ids
