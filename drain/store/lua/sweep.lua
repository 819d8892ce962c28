-- sweep: move queued messages that match an operator rule into quarantine at once.
-- A message is swept only if it is still waiting: deferred (removed from the deferred set)
-- or on the ready or suspect list (its id is added to the swept set, and the claim script
-- drops it when it comes up). Messages a worker holds are left to the worker, which checks
-- the rules itself.
--
-- KEYS[1] deferred zset   KEYS[2] quarantine zset   KEYS[3] swept set   KEYS[4] in-flight hash
-- KEYS[5] backlog shape   KEYS[6] findings by code   KEYS[7] events stream
-- KEYS[7 + i] message hash of the i-th id
-- ARGV[1] now (unix seconds)   ARGV[2] findings (JSON)
-- ARGV[3], ARGV[4] events: retention (0 = off), most kept   ARGV[4 + i] the i-th id
--
-- Returns {how many were swept, first event's stream id, last event's}.

local now, why = ARGV[1], ARGV[2]
local tr = lib.tracer(KEYS[7], ARGV[3], ARGV[4])
local codes = lib.codes(why)

local swept = 0
for i = 5, #ARGV do
  local id, msg = ARGV[i], KEYS[i + 3]
  if redis.call('EXISTS', msg) == 1
      and redis.call('HEXISTS', KEYS[4], id) == 0
      and not redis.call('ZSCORE', KEYS[2], id)
      and redis.call('SISMEMBER', KEYS[3], id) == 0 then
    if redis.call('ZREM', KEYS[1], id) == 0 then
      redis.call('SADD', KEYS[3], id)
    end
    lib.to_quarantine(KEYS[5], KEYS[2], KEYS[6], msg, id, why, now)
    lib.event(tr, 'q', id, {codes})
    swept = swept + 1
  end
end
local span = lib.recorded(tr)
return {swept, span[1], span[2]}
