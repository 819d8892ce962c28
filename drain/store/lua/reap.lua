-- reap: give back the messages of a worker whose lease lapsed (it died, or hung without
-- renewing). Each gets a strike: at the limit it is quarantined as poison.crash, below it
-- it goes to the suspect list, to be worked alone. Does nothing while the lease lives.
--
-- KEYS[1] in-flight hash (id -> owner)   KEYS[2] suspect list   KEYS[3] lease key of the owner
-- KEYS[4] quarantine zset                KEYS[5] backlog shape   KEYS[6] findings by code
-- KEYS[6 + i] message hash of the i-th id
-- ARGV[1] owner   ARGV[2] strikes that make poison   ARGV[3] now (unix seconds)
-- ARGV[4] evidence (JSON findings) for poison   ARGV[4 + i] the i-th id
--
-- Returns {given back, quarantined}.

if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, 0}
end

local back, poisoned = 0, 0
for i = 5, #ARGV do
  local id, msg = ARGV[i], KEYS[i + 2]
  if redis.call('HGET', KEYS[1], id) == ARGV[1] then
    redis.call('HDEL', KEYS[1], id)
    lib.tenant_free(msg, id)
    -- A strikes field that is not a number (damaged) counts as the first strike; the
    -- worker that claims it next finds the damage and quarantines it (store.load).
    local strikes = redis.pcall('HINCRBY', msg, 'strikes', 1)
    if type(strikes) ~= 'number' then strikes = 1 end
    if strikes >= tonumber(ARGV[2]) then
      lib.to_quarantine(KEYS[5], KEYS[4], KEYS[6], msg, id, ARGV[4], ARGV[3])
      poisoned = poisoned + 1
    else
      redis.call('RPUSH', KEYS[2], id)
      back = back + 1
    end
  end
end
return {back, poisoned}
