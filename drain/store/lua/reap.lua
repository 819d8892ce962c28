-- reap: give back the messages of a worker whose lease lapsed (it died, or hung without
-- renewing). Each gets a strike: at the limit it is quarantined as poison.crash, below it
-- it goes to the suspect list, to be worked alone. Does nothing while the lease lives.
--
-- KEYS[1] in-flight hash (id -> owner)   KEYS[2] suspect list   KEYS[3] lease key of the owner
-- KEYS[4] quarantine zset                KEYS[5] backlog shape   KEYS[6] findings by code
-- KEYS[7] events stream                   KEYS[8] the owner's delivery journal (its process's)
-- KEYS[9] books hash   KEYS[10] delivery latency histogram   KEYS[11] bounces stream
-- KEYS[12] the journal named after the owner itself, as a lane's was before its process's
-- lanes shared one (keys.lane_journal; the same key as KEYS[8] for a process owner)
-- KEYS[12 + i] message hash of the i-th id
-- ARGV[1] owner   ARGV[2] strikes that make poison   ARGV[3] now (unix seconds)
-- ARGV[4] evidence (JSON findings) for poison
-- ARGV[5], ARGV[6] events: retention (0 = off), most kept   ARGV[7] bounces kept
-- ARGV[7 + i] the i-th id
--
-- The deliveries in the owner's journal (drain/store/journal.py) were made: they are settled
-- as delivered first (lib.commit_journal), those of a lane's own journal too (a worker of
-- before session 8, dead across an upgrade), and only the rest is given back.
--
-- Returns {given back, quarantined, first event's stream id, last event's}.

if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, 0, '', ''}
end
local tr = lib.tracer(KEYS[7], ARGV[5], ARGV[6])

local deliveries = lib.deliveries(tr, ARGV[3], KEYS[11], ARGV[7])
lib.commit_journal(deliveries, KEYS[8], KEYS[1], KEYS[9], ARGV[1])
if KEYS[12] ~= KEYS[8] then lib.commit_journal(deliveries, KEYS[12], KEYS[1], KEYS[9], ARGV[1]) end
lib.deliveries_done(deliveries, KEYS[5], KEYS[10])

local back, poisoned = 0, 0
for i = 8, #ARGV do
  local id, msg = ARGV[i], KEYS[i + 5]
  if redis.call('HGET', KEYS[1], id) == ARGV[1] then
    redis.call('HDEL', KEYS[1], id)
    lib.tenant_free(msg, id)
    -- A strikes field that is not a number (damaged) counts as the first strike; the
    -- worker that claims it next finds the damage and quarantines it (store.load).
    local strikes = redis.pcall('HINCRBY', msg, 'strikes', 1)
    if type(strikes) ~= 'number' then strikes = 1 end
    if strikes >= tonumber(ARGV[2]) then
      lib.to_quarantine(KEYS[5], KEYS[4], KEYS[6], msg, id, ARGV[4], ARGV[3])
      lib.event(tr, 'q', id, {lib.codes(ARGV[4])})
      poisoned = poisoned + 1
    else
      redis.call('RPUSH', KEYS[2], id)
      back = back + 1
    end
  end
end
local span = lib.recorded(tr)
return {back, poisoned, span[1], span[2]}
