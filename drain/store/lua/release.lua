-- release: operator actions on quarantined messages, each recorded in the message's own
-- audit trail and in the audit stream. Ids not in quarantine (any more) are skipped.
--
-- KEYS[1] quarantine zset   KEYS[2] ready count per lane (the backlog lists are by tenant)
-- KEYS[3] books hash   KEYS[4] audit stream   KEYS[5] backlog shape   KEYS[6] events stream
-- KEYS[7] swept set    KEYS[8] swept lanes hash
-- KEYS[8 + i] message hash of the i-th id
-- ARGV[1] action: release | delete
-- ARGV[2] actor   ARGV[3] now (unix seconds)   ARGV[4] force (1: workers skip validation)
-- ARGV[5] note (e.g. the filter used)   ARGV[6] audit entries kept
-- ARGV[7], ARGV[8] events: retention (0 = off), most kept   ARGV[8 + i] the i-th id
--
-- release: back to the tail of its tenant's backlog list, strikes cleared. A message held
--          from a list (`drain hold`, a rule) is still in that list, swept: it leaves the
--          swept set and waits there, in its old place (a second copy would leave it
--          listed twice and, while the swept id stood, nowhere for `show` and the actions).
-- delete:  message data dropped, counted as deleted.
-- Each move records a released or deleted event (actor, note as the reason).
-- Returns {how many were moved, first event's stream id, last event's}.

local action, actor, now, force, note, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local tr = lib.tracer(KEYS[6], ARGV[7], ARGV[8])
local moved = 0
for i = 9, #ARGV do
  local id, msg = ARGV[i], KEYS[i]
  if redis.call('ZREM', KEYS[1], id) == 1 then
    moved = moved + 1
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', keep, '*',
      'id', id, 'action', action, 'actor', actor, 'at', now, 'force', force, 'note', note)
    lib.event(tr, action == 'delete' and 'D' or 'R', id, {actor, note})
    if action == 'delete' then
      redis.call('DEL', msg)
      redis.call('HINCRBY', KEYS[3], 'deleted', 1)
    else
      local audit = cjson.decode(redis.call('HGET', msg, 'audit') or '[]')
      table.insert(audit, {at = tonumber(now), actor = actor, action = action, force = force == '1', note = note})
      redis.call('HSET', msg, 'audit', cjson.encode(audit))
      redis.call('HDEL', msg, 'strikes')
      if force == '1' then redis.call('HSET', msg, 'force', '1') end
      lib.shape(KEYS[5], msg, 1)
      if redis.call('SREM', KEYS[7], id) == 1 then
        redis.call('HDEL', KEYS[8], id)
      else
        lib.ready_push('backlog', msg, id, false)
      end
    end
  end
end
local span = lib.recorded(tr)
return {moved, span[1], span[2]}
