-- enqueue: store a chunk of new messages, put the ready ones on their tenants' lists of a
-- lane, count them, and record their events: one script call per chunk (Store.enqueue_many).
--
-- KEYS[1] books hash          KEYS[2] ready count per lane (hash)   KEYS[3] the lane's ring ':join' set
-- KEYS[4] tenants set         KEYS[5] ready per tenant (hash)       KEYS[6] backlog shape (hash)
-- KEYS[7] acceptance times (zset)   KEYS[8] quarantine zset          KEYS[9] findings by code (hash)
-- KEYS[10] events stream      KEYS[11] (optional) the chunks of a producer's call stored (see below)
-- ARGV[1] accepted at (unix seconds)   ARGV[2] lane   ARGV[3] message key prefix (id follows)
-- ARGV[4] the lane's list key prefix (tenant follows)   ARGV[5], ARGV[6] events: retention
-- seconds (0 = off), most kept   ARGV[7] m, how many messages   ARGV[8] the first message's
-- id as a decimal number: the m ids are that number and the m - 1 after it, in lowercase
-- hex (as drain:seq gives them)   ARGV[9] t, how many tenants, then those t tenants;
-- then d, how many destination domains, then d pairs: a domain and how many of the chunk's
-- ready messages (not quarantined) go there (the producer counts them: the backlog shape)
-- then the message table: m records of 5 bytes or more, one string, per message
-- (struct '>HHBc0'): the index (from 1) of its domain, of its tenant, then its own size
-- as decimal text when its body is stored compressed (else empty: 0 bytes of text)
-- then 2 per message: its body as stored (body.py), its envelope JSON
-- then q, how many messages go straight to quarantine, and 3 per such message: its place
-- in the chunk (from 1), its findings JSON, its quarantined event's data
-- then the received events' stream
-- entries as the producer groups them, PER_ENTRY messages an entry (events.py's
-- RECEIVED_PER_ENTRY): n, how many, then per entry its id and data for a lone event, or ''
-- and the JSON array of [id, data] pairs (no events: n = 0); then the ms the producer
-- proposes for the events' place (its clock's; '' = none); then the events' lookup index
-- records grouped by bucket: g, how many buckets, then
-- per bucket: its 2 hex digits and its records as one string, 8 bytes each: the 3-byte tag of
-- a value (events.py's index_record says how values hash to bucket and tag) and the 5 bytes
-- of the proposed place (lib.event's form). Every event of the call is written to one place of
-- the stream (below), so every record names that place, and the producer sends a value
-- repeated in the call once.
-- With KEYS[11], one more ARGV after the buckets: how many chunks of this producer's call
-- KEYS[11] must count as stored ('' = no check). A producer that sends a chunk before the
-- one ahead of it has answered (two in flight on one connection, enqueue_wire.py) orders
-- them so: a chunk stores only if KEYS[11] counts every chunk before it, and counts itself
-- (INCR, expiring 10 minutes on) only once it has stored all of it; one that failed stops
-- those behind it, all or nothing.
--
-- Nothing is written when a key it moves mail through has the wrong type, or a new id's
-- message key exists already: an error reply, and the producer is told nothing was queued
-- (the same when Redis refuses the first write for memory). Writes that only feed figures
-- (shape, acceptance times, findings count, the lookup index) may fail alone.
-- Returns {first, last, failures...}: the stream ids of the first and last events ('' when
-- none) and the error of each write that only feeds figures and failed.
--
-- Per message Redis does the least it can: two ARGV of its own (the rest of its fields in
-- the one message table), its id made here, one HSET, and the counters once per chunk.

local argv = ARGV
local now, lane, msg_prefix, lane_prefix = argv[1], argv[2], argv[3], argv[4]
local count, first_id = tonumber(argv[7]), tonumber(argv[8])
local tenants, domains, domain_ready = {}, {}, {}
local at = 9
for k = 1, tonumber(argv[at]) do tenants[k] = argv[at + k] end
at = at + #tenants + 1
for k = 1, tonumber(argv[at]) do
  domains[k], domain_ready[k] = argv[at + 2 * k - 1], tonumber(argv[at + 2 * k])
end
at = at + 2 * #domains + 1
local table_of = argv[at]  -- the message table
local base = at            -- message k's body is argv[base + 2 * k - 1], its envelope argv[base + 2 * k]
at = base + 2 * count + 1
local held, held_count = {}, tonumber(argv[at])  -- place in the chunk -> argv index of its findings
for j = 1, held_count do held[tonumber(argv[at + 3 * j - 2])] = at + 3 * j - 1 end
local entries_at = at + 3 * held_count + 1

local checks = {KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'set', KEYS[4], 'set'}
if (tonumber(argv[5]) or 0) > 0 then
  checks[#checks + 1], checks[#checks + 2] = KEYS[10], 'stream'
end
for _, tenant in ipairs(tenants) do
  checks[#checks + 1], checks[#checks + 2] = lane_prefix .. tenant, 'list'
end
if held_count > 0 then
  checks[#checks + 1], checks[#checks + 2] = KEYS[8], 'zset'
end
local wrong = lib.wrong_types(checks)
if wrong then return wrong end
local mark_at
if KEYS[11] then
  mark_at = entries_at  -- past the received entries and the proposed ms, then past the buckets
  mark_at = mark_at + 2 + 2 * tonumber(argv[mark_at])
  mark_at = mark_at + 1 + 2 * tonumber(argv[mark_at])
  if argv[mark_at] ~= '' and (redis.call('GET', KEYS[11]) or '0') ~= argv[mark_at] then
    return redis.error_reply('enqueue stored nothing: the chunk before it was not stored')
  end
end
-- The ids and their keys. New ids have no key yet (unless drain:seq went back): nothing may
-- be written over one.
-- Made without a string.format per id (sprintf is most of an id's cost): the hex of n // 16
-- once per 16 ids, then its last digit.
local ids, names = {}, {}
do
  local digits = {[0] = '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'}
  local n = first_id
  local high, head = nil, nil
  for k = 1, count do
    local low = n % 16
    if high == nil or low == 0 then
      local h = (n - low) / 16
      high = h > 0 and string.format('%x', h) or ''
      head = msg_prefix .. high
    end
    ids[k], names[k] = high .. digits[low], head .. digits[low]
    n = n + 1
  end
end
if redis.call('EXISTS', unpack(names)) > 0 then
  return redis.error_reply('enqueue stored nothing: a new message id already has a key (was drain:seq set back?)')
end

-- The message hashes first: the first write is where Redis refuses a script for memory.
-- Each ready one goes on its tenant's list (gathered here, pushed below).
local ready, byte, sub, pcall_redis = {}, string.byte, string.sub, redis.pcall
for k = 1, #tenants do ready[k] = {} end
local pos = 1
for k = 1, count do
  -- its record: 2 bytes domain, 2 bytes tenant, 1 byte n, n bytes size (read with one
  -- string.byte: struct.unpack parses its format each time)
  local d1, d2, t1, t2, n = byte(table_of, pos, pos + 4)
  local tenant = t1 * 256 + t2
  local body, name = base + 2 * k - 1, names[k]
  local reply
  if n == 0 then
    reply = pcall_redis('HSET', name, 'raw', argv[body], 'env', argv[body + 1], 't', now,
                        'dom', domains[d1 * 256 + d2], 'tn', tenants[tenant])
  else
    reply = pcall_redis('HSET', name, 'raw', argv[body], 'env', argv[body + 1], 't', now,
                        'dom', domains[d1 * 256 + d2], 'tn', tenants[tenant], 'sz', sub(table_of, pos + 5, pos + 4 + n))
  end
  pos = pos + 5 + n
  local why = held[k]
  if why then
    if type(reply) == 'number' then reply = pcall_redis('HSET', name, 'why', argv[why], 'qt', now) end
  else
    local list = ready[tenant]
    list[#list + 1] = ids[k]
  end
  if type(reply) ~= 'number' then  -- HSET answers a number; a failure is a table {err = ...}
    if string.find(reply.err, 'OOM', 1, true) then
      return redis.error_reply("OOM command not allowed when used memory > 'maxmemory'.")
    end
    return redis.error_reply('enqueue queued nothing: message ' .. ids[k] .. ': ' .. reply.err)
  end
end

-- This chunk counted as stored, for the next of its producer's call (KEYS[11]).
local function counted()
  redis.call('INCR', KEYS[11])
  redis.call('EXPIREAT', KEYS[11], math.floor(tonumber(now)) + 600)
end

-- The ready lists, the books and the figures, once per chunk.
local failures = {'', ''}
local function figure(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then failures[#failures + 1] = reply.err end
  return reply
end
for k = 1, count do
  if held[k] then redis.call('ZADD', KEYS[8], now, ids[k]) end
end
local ready_count = 0
for k, tenant in ipairs(tenants) do
  local list = ready[k]
  if #list > 0 then
    for from = 1, #list, 4000 do
      redis.call('RPUSH', lane_prefix .. tenant, unpack(list, from, math.min(from + 3999, #list)))
    end
    redis.call('SADD', KEYS[3], tenant)
    figure('HINCRBY', KEYS[5], tenant, #list)
    ready_count = ready_count + #list
  end
end
if ready_count > 0 then redis.call('HINCRBY', KEYS[2], lane, ready_count) end
redis.call('SADD', KEYS[4], unpack(tenants))
local minute = math.floor(tonumber(now) / 60)
for k, domain in ipairs(domains) do
  if domain_ready[k] > 0 then figure('HINCRBY', KEYS[6], domain .. '|' .. minute, domain_ready[k]) end
end
if held_count > 0 then figure('HINCRBY', KEYS[9], 'rule.match', held_count) end
figure('ZADD', KEYS[7], now, ids[count])
redis.call('HINCRBY', KEYS[1], 'accepted', count)

-- The events, then their lookup index: each record is its value's tag and the 5 bytes of
-- where its event is (as lib.event writes them), appended to its day's bucket.
local tr = lib.tracer(KEYS[10], argv[5], argv[6])
if not tr then
  if mark_at then counted() end
  return failures
end
redis.call('XTRIM', KEYS[10], 'MINID', '~', tr.minid)
-- Every entry of this call goes to one place, so that every index record of the call is the
-- same 5 bytes and no record needs work of its own here: the entries take the stream ids
-- ms-S, ms-(S+1), ... with S at least 8191 (lookup.py reads a record whose sequence is 8191
-- as "that or more": every entry of that ms from S on, and checks the events it finds).
-- ms is now and S 8191; when the stream's last id is at or past that (a clock set back, or
-- this ms already used past 8191), the first XADD is refused and they go after the last id.
-- The producer proposes ms (its clock's, in its records already): taken when it is within a
-- second of Redis's.
local t = redis.call('TIME')
local ms, seq = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 8191
local proposed = tonumber(argv[entries_at + 1 + 2 * tonumber(argv[entries_at])])
if proposed and math.abs(proposed - ms) <= 1000 then ms = proposed end
local function after_last()
  local info = redis.call('XINFO', 'STREAM', KEYS[10])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local last_ms, last_seq = string.match(info[i + 1], '^(%d+)%-(%d+)$')
      last_ms, last_seq = tonumber(last_ms), tonumber(last_seq)
      if last_ms >= ms then ms, seq = last_ms, math.max(seq, last_seq + 1) end
      return
    end
  end
end
local function xadd(...)
  local sid = string.format('%.0f-%.0f', ms, seq)
  if failures[1] == '' then  -- the call's first entry
    local reply = redis.pcall('XADD', KEYS[10], sid, ...)
    if type(reply) == 'table' and reply.err then
      if not string.find(reply.err, 'smaller', 1, true) then error(reply) end
      after_last()
      sid = string.format('%.0f-%.0f', ms, seq)
      redis.call('XADD', KEYS[10], sid, ...)
    end
    failures[1] = sid
  else
    redis.call('XADD', KEYS[10], sid, ...)
  end
  seq = seq + 1
  failures[2] = sid
end
-- The received events, PER_ENTRY to a stream entry as the producer wrote them (lib.event_batch's
-- form: `m`, a JSON array of [id, data] pairs; a lone one keeps the usual form): one XADD per
-- entry. Then the quarantined events, one entry each (a message's received comes first).
at = entries_at
for _ = 1, tonumber(argv[at]) do
  if argv[at + 1] == '' then
    xadd('e', 'r', 'm', argv[at + 2])
  else
    xadd('e', 'r', 'i', argv[at + 1], 'd', argv[at + 2])
  end
  at = at + 2
end
for k = 1, count do
  local why = held[k]
  if why and argv[why + 1] ~= '' then xadd('e', 'q', 'i', ids[k], 'd', argv[why + 1]) end
end
-- Each bucket's records: a tag and the place the producer proposed, each. Where the events
-- went elsewhere (the proposal not taken, or the stream's last id at or past it), each
-- record's place is written over with theirs (a % in it doubled for gsub).
local day = math.floor(ms / 86400000)
local after_tag
if ms ~= proposed then
  local where = struct.pack('>I5', (ms - day * 86400000) * 8192 + 8191)
  after_tag = '%1' .. string.gsub(where, '%%', '%%%%')
end
at = at + 2
for _ = 1, tonumber(argv[at] or '0') do
  local key = tr.stream .. ':ix:' .. day .. ':' .. argv[at + 1]
  local text = argv[at + 2]
  if after_tag then text = string.gsub(text, '(...).....', after_tag) end
  if figure('APPEND', key, text) == #text then figure('EXPIREAT', key, (day + 1) * 86400 + tr.keep) end
  at = at + 2
end
if mark_at then counted() end
return failures
