-- settle: record what happened to messages a worker held, each move atomic with the books.
-- An outcome for a message the owner no longer holds (its lease lapsed and the message
-- went back to ready) is skipped.
--
-- KEYS[1] in-flight hash   KEYS[2] books hash     KEYS[3] ready list
-- KEYS[4] deferred zset    KEYS[5] quarantine zset KEYS[6] bounces stream
-- KEYS[6 + i] message hash of the i-th outcome
-- ARGV[1] owner   ARGV[2] now (unix seconds)   ARGV[3] bounces kept
-- then four per outcome: id, kind, score, info
--   kind delivered:   drop the message, count it; info, if any, lists refused recipients (logged)
--   kind bounced:     drop the message, count it, log info (the reply) to the bounces stream
--   kind deferred:    score = due time; attempts + 1; info = last reply
--   kind quarantined: info = reasons (JSON); scored now in the quarantine set
--   kind requeue:     back to the head of the ready list, untouched
--   kind vanished:    its data was gone from Redis; counted as deleted
--
-- Returns {settled, skipped}.

local owner, now, keep = ARGV[1], ARGV[2], ARGV[3]
local settled, skipped = 0, 0
local n = (#ARGV - 3) / 4
for i = 1, n do
  local base = 3 + (i - 1) * 4
  local id, kind, score, info = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local msg = KEYS[6 + i]
  if redis.call('HGET', KEYS[1], id) ~= owner then
    skipped = skipped + 1
  else
    redis.call('HDEL', KEYS[1], id)
    settled = settled + 1
    if kind == 'delivered' then
      if info ~= '' then
        local env = redis.call('HGET', msg, 'env') or ''
        redis.call('XADD', KEYS[6], 'MAXLEN', '~', keep, '*', 'id', id, 'env', env, 'reply', info, 'at', now)
      end
      redis.call('DEL', msg)
      redis.call('HINCRBY', KEYS[2], 'delivered', 1)
    elseif kind == 'bounced' then
      local env = redis.call('HGET', msg, 'env') or ''
      redis.call('XADD', KEYS[6], 'MAXLEN', '~', keep, '*', 'id', id, 'env', env, 'reply', info, 'at', now)
      redis.call('DEL', msg)
      redis.call('HINCRBY', KEYS[2], 'bounced', 1)
    elseif kind == 'deferred' then
      redis.call('HINCRBY', msg, 'n', 1)
      redis.call('HSET', msg, 'last', info)
      redis.call('ZADD', KEYS[4], score, id)
    elseif kind == 'quarantined' then
      redis.call('HSET', msg, 'why', info, 'qt', now)
      redis.call('ZADD', KEYS[5], now, id)
    elseif kind == 'vanished' then
      redis.call('HINCRBY', KEYS[2], 'deleted', 1)
    else
      redis.call('LPUSH', KEYS[3], id)
    end
  end
end
return {settled, skipped}
