-- settle: record what happened to messages a worker held, each move atomic with the books.
-- An outcome for a message the owner no longer holds (its lease lapsed and the message
-- was given back) is skipped.
--
-- KEYS[1] in-flight hash   KEYS[2] books hash       KEYS[3] ready count per lane
-- KEYS[4] deferred zset    KEYS[5] quarantine zset  KEYS[6] bounces stream
-- KEYS[7] suspect list     KEYS[8] domains with parked mail (set)
-- KEYS[9] global rate      KEYS[10] global GCRA state
-- KEYS[11] backlog shape (domain|minute -> queued)   KEYS[12] quarantine findings by code
-- KEYS[13] delivery latency histogram (bucket -> count, and sum)
-- KEYS[14] held for rate (zset)   KEYS[15] held by a breaker (zset)
-- KEYS[16] per domain, the fresh message parked last (hash)   KEYS[17] events stream
-- KEYS[16 + 2i] message hash of the i-th outcome, KEYS[17 + 2i] its parked list
-- KEYS[18 + 2n] the owner's delivery journal (drain/store/journal.py; its process's), then
-- the message hashes of the journal's ids known (ARGV[8])
-- ARGV[1] owner   ARGV[2] now (unix seconds)   ARGV[3] bounces kept
-- ARGV[4] strikes that make poison   ARGV[5], ARGV[6] events: retention (0 = off), most kept
-- ARGV[7] events: the oldest stream id kept (milliseconds; the stream is trimmed now and then)
-- ARGV[8] how many journal entries the worker knows it wrote (0: none, or read them all),
-- ARGV[9] their pieces of the event text, ARGV[10] G and ARGV[11] B, how many groups and
-- buckets, then G pairs (group, count), B pairs (index bucket, tags), the ids known, in the
-- order written, the list elements they fill, and 0 (none of them outside the journal here:
-- lib.commit_known; drain/store/journal.py's known_args)
-- then six per outcome: id, kind, score, info, envelope, event
--   delivered:   drop the message, count it; info, if any, lists refused recipients (logged);
--                envelope = the relay's reply; event = the delivered event's data as JSON
--                (reply, attempt, delay_s), '' to have it made here from the reply
--   bounced:     drop the message, count it (as delivered if some recipients already took
--                it), log info (the reply) to the bounces stream
--   deferred:    score = due time; attempts + 1; info = last reply, also kept in a short
--                history; a non-empty envelope replaces the stored one (the recipients still
--                to do after a partial delivery) and marks the message partly delivered
--   held:        back to the deferred set at score without counting an attempt (a circuit
--                breaker is open, or the domain's rate reserved it a later send time);
--                info = why; envelope = 'rate' or 'breaker', which held set it joins too;
--                the global rate is given back the permit it was claimed with
--   parked:      to its domain's parked list (the domain is paused, at its concurrency
--                cap, or its rate is booked ahead), counted as ready; info = the domain;
--                score 1 (fresh mail) puts it behind the fresh mail parked before it, ahead
--                of the parked backlog mail; else at the tail; the permit is given back too
--   quarantined: info = findings (JSON); scored now in the quarantine set
--   timeout:     the message outlived the job's time limit: a strike; at the limit it is
--                quarantined with info as findings, below it it goes to the suspect list
--   requeue:     back to the head of the ready list, untouched
--   vanished:    its data was gone from Redis (what is left of its key is deleted); counted as deleted
--   corrupt:     a stored field could not be read back: info = findings (JSON); with an
--                envelope (its raw bytes were intact) the hash is rewritten to just the raw
--                bytes, that envelope and a readable time, and quarantined; without one the
--                key (of whatever type) is deleted and the message counted as deleted
--
-- The owner's journalled deliveries are settled first, as delivered (lib.commit_known, else
-- lib.commit_journal): an outcome given for one of them is then skipped.
--
-- Each move records its event (held and parked only the first time for a message; a bounce
-- whose info starts with "expired: " is recorded as expired).
-- Returns {settled, skipped, first event's stream id, last event's stream id}.

if redis.replicate_commands then redis.replicate_commands() end

local owner, now, keep, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local HEAD, EACH = 13 + 2 * tonumber(ARGV[10]) + 2 * tonumber(ARGV[11]) + tonumber(ARGV[8]), 6
local n = (#ARGV - HEAD) / EACH

-- Type checks before the first write, of the keys the moves write. A call of deliveries
-- only (the usual one) needs none: its first command reads the in-flight hash and its
-- first write counts them in the books, so a key of the wrong type there fails the call
-- before anything moved. Any other kind checks every key the moves may write.
local plain = true
for i = 1, n do
  if ARGV[HEAD + (i - 1) * EACH + 2] ~= 'delivered' then plain = false; break end
end
if not plain then
  local wrong = lib.wrong_types({KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'zset',
                                 KEYS[5], 'zset', KEYS[7], 'list', KEYS[8], 'set', KEYS[14], 'zset',
                                 KEYS[15], 'zset'})
  if wrong then return wrong end
end

local settled, skipped = 0, 0
local tr = lib.untrimmed(KEYS[17], ARGV[5])
local TEXT = 300
local HISTORY = 10
local refunds = 0

-- The message stops being queued: take it off the backlog shape; returns when it was accepted.
local function leave(msg)
  return lib.shape(KEYS[11], msg, -1)
end

-- A message whose stored data cannot be read: quarantine its raw bytes, or drop it.
local function corrupt(msg, id, findings, env)
  local raw, accepted, dom = nil, nil, ''
  if redis.call('TYPE', msg)['ok'] == 'hash' then
    accepted = leave(msg)
    raw = redis.call('HGET', msg, 'raw')
    dom = redis.call('HGET', msg, 'dom') or ''
  end
  redis.call('DEL', msg)
  if raw and env ~= '' then
    redis.call('HSET', msg, 'raw', raw, 'env', env, 't', accepted or now, 'dom', dom)
    lib.hold(KEYS[5], KEYS[12], msg, id, findings, now)
    lib.event(tr, 'q', id, {lib.codes(findings)})
  else
    redis.call('HINCRBY', KEYS[2], 'deleted', 1)
    lib.event(tr, 'D', id, {'drain', 'stored data unreadable'})
  end
  redis.call('HINCRBY', KEYS[2], 'corrupt', 1)
end

local function quarantine(msg, id, findings)
  lib.to_quarantine(KEYS[11], KEYS[5], KEYS[12], msg, id, findings, now)
  lib.event(tr, 'q', id, {lib.codes(findings)})
end

-- Attempts so far, this one included.
local function attempt(msg)
  return (tonumber(redis.call('HGET', msg, 'n') or '0') or 0) + 1
end

-- Held or parked: the event is recorded the first time only (flag in the message hash).
local function first_time(msg, flag)
  return redis.call('HSETNX', msg, flag, '1') == 1
end

-- Parked fresh mail sits at the head of its domain's list, in order: a fresh message goes in
-- right behind the fresh message parked last, or at the head when that one has left the list
-- (unparking takes from the head, so the fresh part is empty then). Only fresh mail is
-- passed over to find its place: at the tail when the list holds no backlog mail.
local function park_fresh(list, id, domain)
  local last = redis.call('HGET', KEYS[16], domain)
  if redis.call('LLEN', list) == 0 then
    redis.call('RPUSH', list, id)
  elseif last and redis.call('LINDEX', list, -1) == last then
    redis.call('RPUSH', list, id)
  elseif not last or redis.call('LINSERT', list, 'AFTER', last, id) < 0 then
    redis.call('LPUSH', list, id)
  end
  redis.call('HSET', KEYS[16], domain, id)
end

local function log_bounce(msg, id, reply)
  local env = redis.call('HGET', msg, 'env') or ''
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', keep, '*', 'id', id, 'env', env, 'reply', reply, 'at', now)
end

-- Who holds each id, read in one go; an id given twice is settled once.
local ids = {}
for i = 1, n do ids[i] = ARGV[HEAD + (i - 1) * EACH + 1] end
local deliveries = lib.deliveries(tr, now, KEYS[6], keep)
deliveries.batch = lib.batch()  -- the journal's delivered events: one stream entry (lib.event_batch)
local journalled, stale = lib.commit_known(deliveries, KEYS[18 + 2 * n], KEYS[1], KEYS[2], owner, ARGV, 7, KEYS,
                                          18 + 2 * n)
if not journalled then
  journalled, stale = lib.commit_journal(deliveries, KEYS[18 + 2 * n], KEYS[1], KEYS[2], owner)
end
lib.event_batch(tr, 'd', deliveries.batch)
deliveries.batch = nil
settled, skipped = journalled, stale
local mine, first = lib.held(KEYS[1], owner, ids)
if #mine + journalled == 0 then return {0, n + stale, '', ''} end
if #mine > 0 then
  if plain then redis.call('HINCRBY', KEYS[2], 'delivered', deliveries.up[#mine] or #mine) end  -- the first write
  redis.call('HDEL', KEYS[1], unpack(mine))
end

for i = 1, n do
  local base = HEAD + (i - 1) * EACH
  local id, kind, score, info, env = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local msg, aux = KEYS[16 + 2 * i], KEYS[17 + 2 * i]
  if first[id] ~= i then
    skipped = skipped + 1
  elseif kind == 'delivered' then
    settled = settled + 1
    lib.delivered(deliveries, msg, id, info, ARGV[base + 6], env)
  else
    lib.tenant_free(msg, id)
    settled = settled + 1
    if kind == 'bounced' then
      log_bounce(msg, id, info)
      local partly = redis.call('HGET', msg, 'pd') == '1'
      if string.sub(info, 1, 9) == 'expired: ' then
        lib.event(tr, 'x', id, {string.sub(info, 10, 9 + TEXT), attempt(msg)})
      else
        lib.event(tr, 'b', id, {string.sub(info, 1, TEXT)})
      end
      leave(msg)
      redis.call('DEL', msg)
      redis.call('HINCRBY', KEYS[2], partly and 'delivered' or 'bounced', 1)
    elseif kind == 'held' then
      if tr and first_time(msg, 'evh') then
        lib.event(tr, 'h', id, {redis.call('HGET', msg, 'dom') or '', env})
      end
      redis.call('HSET', msg, 'last', info, 'slot', score)
      redis.call('ZADD', KEYS[4], score, id)
      if env == 'breaker' then
        redis.call('ZADD', KEYS[15], score, id)
      else
        redis.call('ZADD', KEYS[14], score, id)
      end
      redis.call('HINCRBY', KEYS[2], 'held_total', 1)
      refunds = refunds + 1
    elseif kind == 'parked' then
      if score == '1' then
        park_fresh(aux, id, info)
        redis.call('HSET', msg, 'fr', '1')
      else
        redis.call('RPUSH', aux, id)
      end
      redis.call('SADD', KEYS[8], info)
      if tr and first_time(msg, 'evp') then lib.event(tr, 'p', id, {info}) end
      redis.call('HINCRBY', KEYS[2], 'parked', 1)
      redis.call('HINCRBY', KEYS[2], 'parked_total', 1)
      refunds = refunds + 1
    elseif kind == 'deferred' then
      if env ~= '' then
        redis.call('HSET', msg, 'env', env, 'pd', '1')
      end
      local attempts = redis.call('HINCRBY', msg, 'n', 1)
      local ok, hist = pcall(cjson.decode, redis.call('HGET', msg, 'hist') or '[]')
      if not ok or type(hist) ~= 'table' then hist = {} end
      table.insert(hist, {at = tonumber(now), n = attempts, reply = info})
      while #hist > HISTORY do table.remove(hist, 1) end
      redis.call('HSET', msg, 'last', info, 'hist', cjson.encode(hist))
      redis.call('ZADD', KEYS[4], score, id)
      lib.event(tr, 'f', id, {string.sub(info, 1, TEXT), attempts, tonumber(score)})
    elseif kind == 'quarantined' then
      quarantine(msg, id, info)
    elseif kind == 'timeout' then
      if redis.call('HINCRBY', msg, 'strikes', 1) >= limit then
        quarantine(msg, id, info)
      else
        redis.call('RPUSH', KEYS[7], id)
      end
    elseif kind == 'corrupt' then
      corrupt(msg, id, info, env)
    elseif kind == 'vanished' then
      redis.call('DEL', msg)
      redis.call('HINCRBY', KEYS[2], 'deleted', 1)
      lib.event(tr, 'D', id, {'drain', 'stored data gone'})
    else
      lib.ready_push('backlog', msg, id, true)
    end
  end
end

lib.deliveries_done(deliveries, KEYS[11], KEYS[13])
local counted = deliveries.count - journalled  -- the journal's are in the books already
if not plain and counted > 0 then
  redis.call('HINCRBY', KEYS[2], 'delivered', deliveries.up[counted] or counted)
end

-- Mail held back or parked did not use the permit it was claimed with: give it back.
if refunds > 0 then
  local rate = tonumber(redis.call('GET', KEYS[9]) or '0') or 0
  local tat = tonumber(redis.call('GET', KEYS[10]) or '0') or 0
  if rate > 0 and tat > 0 then
    local now_us = lib.now_us()
    lib.keep_tat(KEYS[10], math.max(now_us, tat - refunds * 1000000 / rate), now_us)
  end
end
local span = lib.recorded(tr)
lib.trim(tr, ARGV[7], ARGV[6])
return {settled, skipped, span[1], span[2]}
