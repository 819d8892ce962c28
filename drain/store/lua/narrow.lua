-- narrow: a message delivered to some of its destination-domain groups keeps only the
-- recipients still to do, its next destination domain first; the backlog shape moves with
-- its domain. Only while the owner still holds it (else nothing changes). The groups done
-- are recorded as events now (their relays' replies would be lost otherwise): 'b' for the
-- recipients refused for good, then 'd' for those that took it. Each group done was a delivery
-- attempt: the message's attempts ('n') count it, as settle.lua counts a deferral.
--
-- KEYS[1] in-flight hash   KEYS[2] backlog shape (domain|minute -> queued)   KEYS[3] message hash
-- KEYS[4] events stream
-- ARGV[1] id   ARGV[2] owner   ARGV[3] envelope (JSON) still to do   ARGV[4] its domain
-- ARGV[5] '1' when some recipients took it (partly delivered: a later bounce counts it delivered)
-- ARGV[6] the accepting relays' replies ('' none)   ARGV[7] refused recipients (JSON, '' none)
-- ARGV[8], ARGV[9] events: retention (0 = off), most kept
--
-- Returns {1 when narrowed (0 when the owner no longer holds it), first event's id, last's}.

if redis.replicate_commands then redis.replicate_commands() end

if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return {0, '', ''}
end
-- The destination domains of an envelope's recipients (as Envelope.by_domain names them).
local function domains(envelope)
  local seen = {}
  local ok, env = pcall(cjson.decode, envelope or '')
  if ok and type(env) == 'table' and type(env[2]) == 'table' then
    for _, rcpt in ipairs(env[2]) do
      if type(rcpt) == 'string' then seen[string.lower(string.match(rcpt, '([^@]*)$'))] = true end
    end
  end
  return seen
end

-- A repeat (its reply was lost to a Redis outage) records no second event.
local before = redis.call('HGET', KEYS[3], 'env')
local again = before == ARGV[3]
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
local tr = not again and lib.tracer(KEYS[4], ARGV[8], ARGV[9]) or nil
local attempt = tonumber(redis.call('HGET', KEYS[3], 'n') or '0') or 0
if not again then
  -- The groups done: the domains the message had that the rest no longer has (one at least).
  local done, left = 0, domains(ARGV[3])
  for domain in pairs(domains(before)) do
    if not left[domain] then done = done + 1 end
  end
  attempt = attempt + math.max(done, 1)
  if attempt < 2147483648 then redis.call('HSET', KEYS[3], 'n', attempt) end
end
if ARGV[7] ~= '' then lib.event(tr, 'b', ARGV[1], {string.sub(ARGV[7], 1, 300)}) end
if ARGV[5] == '1' then lib.event(tr, 'd', ARGV[1], {string.sub(ARGV[6], 1, 300), attempt}) end
local span = lib.recorded(tr)
return {1, span[1], span[2]}
