-- narrow: a message delivered to some of its destination-domain groups keeps only the
-- recipients still to do, its next destination domain first; the backlog shape moves with
-- its domain. Only while the owner still holds it (else nothing changes).
--
-- KEYS[1] in-flight hash   KEYS[2] backlog shape (domain|minute -> queued)   KEYS[3] message hash
-- ARGV[1] id   ARGV[2] owner   ARGV[3] envelope (JSON) still to do   ARGV[4] its domain
-- ARGV[5] '1' when some recipients took it (partly delivered: a later bounce counts it delivered)
--
-- Returns 1 when narrowed, 0 when the owner no longer holds it.

if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
local counted = lib.shape(KEYS[2], KEYS[3], -1)
redis.call('HSET', KEYS[3], 'env', ARGV[3], 'dom', ARGV[4])
-- A send time booked before was for the former first domain.
redis.call('HDEL', KEYS[3], 'slot')
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[3], 'pd', '1')
end
if counted then
  lib.shape(KEYS[2], KEYS[3], 1)
end
return 1
