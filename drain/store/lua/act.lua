-- act: an operator's action (or the lifetime limit) on queued mail, each message's move one
-- atomic step with the books, the backlog shape and, for a page of moves, one audit record.
--
-- Where a message is, is checked here again (the caller found it a moment ago): its place
-- as the caller saw it must still hold, else the message is skipped.
--   'd' the deferred set (deferred by the relay, or held for its rate or by a breaker)
--   'l' a list: a ready lane, the suspect list or its domain's parked list. A list entry
--       cannot be taken out in O(1), so the id joins the swept set, as sweep.lua does: the
--       claim script drops it when it comes up (the books count ready = lists + parked -
--       swept, so the books move at once). Such a message is one that exists, is in no
--       set and in flight nowhere; one already in the swept set is skipped (a second
--       tombstone cannot be written: it went back to ready after a sweep and is waiting).
--   'lf', 'lb' as 'l', on its tenant's fresh or backlog lane: the swept-lanes hash notes
--       which (id -> "lane|tenant"), so the tenant's ready figures leave it out at once
--   'q' quarantine
-- Mail in flight is never touched: its worker settles it (see drain/ops/actions.py).
--
-- KEYS[1] in-flight hash   KEYS[2] deferred zset   KEYS[3] held for rate   KEYS[4] held by a breaker
-- KEYS[5] quarantine zset  KEYS[6] swept set       KEYS[7] ready counts    KEYS[8] books hash
-- KEYS[9] backlog shape    KEYS[10] findings by code   KEYS[11] bounces stream   KEYS[12] audit stream
-- KEYS[13] events stream   KEYS[14] swept lanes hash   KEYS[14 + i] message hash of the i-th id
-- ARGV[1] action: flush | hold | delete | bounce | expire | warn
-- ARGV[2] actor   ARGV[3] reason   ARGV[4] now (unix seconds)
-- ARGV[5] accepted at or before this (unix seconds) or the message is skipped; '' = any
-- ARGV[6] audit (1: one audit record for the ids moved by this call)   ARGV[7] audit entries kept
-- ARGV[8] bounce records kept   ARGV[9], ARGV[10] events: retention (0 = off), most kept
-- then two per message: id, place ('d', 'l', 'lf', 'lb' or 'q')
--
--   flush:  'd' only: due now, at the head of the backlog lane (as promote.lua does); the
--           limits still apply when it is claimed (a booked send time, an open breaker)
--   hold:   'd' or 'l' to quarantine, findings operator.hold with the reason
--   delete: dropped, counted as deleted
--   bounce: dropped, counted as bounced (as delivered when some recipients already took it,
--           as settle.lua counts), logged to the bounces stream with the actor and reason
--   expire: as bounce; the lifetime limit's doing (not audited); the reason is the reply
--   warn:   nothing moves; the message is marked as warned of its delay ('dw'), once
-- Each move records its event (drain/store/events.py): flushed, held (why 'operator'),
-- deleted, bounced (with actor and reason), expired; a warning records none.
--
-- Returns {first event's stream id, last event's, id acted on...}.

if redis.replicate_commands then redis.replicate_commands() end

local action, actor, reason, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cutoff = tonumber(ARGV[5])
local done = {}
local tr = lib.tracer(KEYS[13], ARGV[9], ARGV[10])

-- Is the message still where the caller saw it?
local function still(msg, id, place)
  if redis.call('HEXISTS', KEYS[1], id) == 1 then return false end
  if place == 'd' then return redis.call('ZSCORE', KEYS[2], id) ~= false end
  if place == 'q' then return redis.call('ZSCORE', KEYS[5], id) ~= false end
  return redis.call('EXISTS', msg) == 1
    and not redis.call('ZSCORE', KEYS[2], id)
    and not redis.call('ZSCORE', KEYS[5], id)
    and redis.call('SISMEMBER', KEYS[6], id) == 0
end

-- Take the message out of its place (a queued one also leaves the backlog shape).
local function take(msg, id, place)
  if place == 'q' then
    redis.call('ZREM', KEYS[5], id)
    return
  end
  if place == 'd' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
  else
    redis.call('SADD', KEYS[6], id)
    local lane = place == 'lf' and 'fresh' or place == 'lb' and 'backlog' or nil
    if lane then redis.call('HSET', KEYS[14], id, lane .. '|' .. lib.tenant_of(msg)) end
  end
  lib.shape(KEYS[9], msg, -1)
end

-- Once the claim has passed every swept id, every note of the swept lanes is stale.
if redis.call('SCARD', KEYS[6]) == 0 then redis.call('DEL', KEYS[14]) end

local hold_why = cjson.encode({{code = 'operator.hold', detail = reason}})

for i = 11, #ARGV, 2 do
  local id, place = ARGV[i], ARGV[i + 1]
  local msg = KEYS[14 + (i - 9) / 2]
  local ok = still(msg, id, place)
  if ok and cutoff then
    local t = tonumber(redis.call('HGET', msg, 't') or '')
    ok = t ~= nil and t <= cutoff
  end
  if ok and (action == 'flush' and place ~= 'd' or action == 'hold' and place == 'q') then ok = false end
  if ok and action == 'warn' then
    ok = redis.call('HSETNX', msg, 'dw', now) == 1
  elseif ok then
    if action == 'flush' then
      redis.call('ZREM', KEYS[2], id)
      redis.call('ZREM', KEYS[3], id)
      redis.call('ZREM', KEYS[4], id)
      lib.ready_push('backlog', msg, id, true)
      lib.event(tr, 'F', id, {actor, reason})
    elseif action == 'hold' then
      take(msg, id, place)
      lib.hold(KEYS[5], KEYS[10], msg, id, hold_why, now)
      lib.event(tr, 'h', id, {redis.call('HGET', msg, 'dom') or '', 'operator', actor, reason})
    else
      local counted = 'deleted'
      if action ~= 'delete' then
        counted = redis.call('HGET', msg, 'pd') == '1' and 'delivered' or 'bounced'
        local env = redis.call('HGET', msg, 'env') or ''
        local reply = reason
        if action == 'bounce' then
          reply = 'administrative bounce by ' .. actor .. (reason ~= '' and (': ' .. reason) or '')
        end
        redis.call('XADD', KEYS[11], 'MAXLEN', '~', ARGV[8], '*', 'id', id, 'env', env, 'reply', reply, 'at', now)
      end
      if action == 'delete' then
        lib.event(tr, 'D', id, {actor, reason})
      elseif action == 'bounce' then
        lib.event(tr, 'b', id, {'administrative bounce', '', actor, reason})
      else
        lib.event(tr, 'x', id, {reason, tonumber(redis.call('HGET', msg, 'n') or '0') or 0})
      end
      take(msg, id, place)
      redis.call('DEL', msg)
      redis.call('HINCRBY', KEYS[8], counted, 1)
    end
  end
  if ok then table.insert(done, id) end
end
if ARGV[6] == '1' and #done > 0 then
  redis.call('XADD', KEYS[12], 'MAXLEN', '~', ARGV[7], '*', 'action', action, 'actor', actor, 'reason', reason,
    'at', now, 'count', tostring(#done), 'ids', table.concat(done, ','))
end
local span = lib.recorded(tr)
table.insert(done, 1, span[2])
table.insert(done, 1, span[1])
return done
