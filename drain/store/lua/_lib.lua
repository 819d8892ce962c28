-- _lib: helpers shared by every drain script, put in front of each one when the scripts
-- load (drain/store/scripts.py). Everything hangs off the one local table `lib`, so that no
-- script's own names can clash with it (Redis forbids global names in scripts).

local lib = {}

-- The Redis server's clock in microseconds: every machine that asks agrees on it.
function lib.now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A message stops (delta -1) or starts again (delta 1) being queued: move it on the backlog
-- shape (hash of "domain|minute of acceptance" -> count, the format of
-- drain/store/record.py's shape_field). Returns when it was accepted, or nil when its time
-- is not a finite number (x ~= x: NaN): such a message has no place in the shape.
function lib.shape(shape_key, msg, delta)
  local f = redis.call('HMGET', msg, 'dom', 't', 'tn')
  local t = tonumber(f[2] or '')
  if not t or t ~= t or t == math.huge or t == -math.huge then return nil end
  if redis.call('HINCRBY', 'drain:shape:tenant', f[3] or '', delta) <= 0 then
    redis.call('HDEL', 'drain:shape:tenant', f[3] or '')
  end
  local field = (f[1] or '') .. '|' .. math.floor(t / 60)
  local count = lib.figure('HINCRBY', shape_key, field, delta)
  if count and count <= 0 then
    redis.call('HDEL', shape_key, field)
  end
  return t
end

-- A write to a key that only feeds figures (the backlog shape, the latency histogram, the
-- findings count): a key of the wrong type fails this write alone (nil), never the script,
-- which would stop half way with the moves before it made and the books behind it not.
function lib.figure(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then return nil end
  return reply
end

-- Before a script's first write: an error reply when one of the keys it moves ids through
-- has the wrong type (pairs: key, type, key, type...), else nil. A script that fails half
-- way keeps the writes it made: ids popped off a list would be on no list at all.
function lib.wrong_types(pairs)
  for i = 1, #pairs, 2 do
    local found = redis.call('TYPE', pairs[i])['ok']
    if found ~= 'none' and found ~= pairs[i + 1] then
      return redis.error_reply('WRONGTYPE ' .. pairs[i] .. ' is a ' .. found .. ', drain keeps a '
                               .. pairs[i + 1] .. ' there: nothing was moved')
    end
  end
  return nil
end

-- Count each reason code of findings (JSON list of {code, detail}) once.
function lib.count_findings(findings_key, findings)
  local ok, list = pcall(cjson.decode, findings)
  if not ok or type(list) ~= 'table' then return end
  local seen = {}
  for _, f in ipairs(list) do
    if type(f) == 'table' and type(f.code) == 'string' and not seen[f.code] then
      seen[f.code] = true
      lib.figure('HINCRBY', findings_key, f.code, 1)
    end
  end
end

-- Hold a message in quarantine with its findings, scored by now (unix seconds); it must
-- already be off the backlog shape.
function lib.hold(quarantine_key, findings_key, msg, id, findings, now)
  lib.count_findings(findings_key, findings)
  redis.call('HSET', msg, 'why', findings, 'qt', now)
  redis.call('ZADD', quarantine_key, now, id)
end

-- A queued message moves to quarantine: off the backlog shape, then held.
function lib.to_quarantine(shape_key, quarantine_key, findings_key, msg, id, findings, now)
  lib.shape(shape_key, msg, -1)
  lib.hold(quarantine_key, findings_key, msg, id, findings, now)
end

-- GCRA (generic cell rate algorithm), all in microseconds. A rate (per second) with a burst
-- (seconds of rate that may go at once) gives the interval between sends and tau, how far
-- ahead of now the theoretical arrival time (tat) may run.
function lib.gcra(rate, burst_s)
  local interval = 1000000 / rate
  return interval, interval * (math.max(1, math.floor(rate * burst_s)) - 1)
end

-- A stored tat (text, may be absent or damaged), never behind now.
function lib.tat(stored, now)
  local tat = tonumber(stored or '0') or 0
  if tat < now then tat = now end
  return tat
end

-- How many sends the GCRA still allows at once, and within `ahead` microseconds more.
function lib.room(tat, now, interval, tau, ahead)
  return math.floor((ahead + tau - (tat - now)) / interval) + 1
end

-- Keep a tat in a string key for as long as it matters.
function lib.keep_tat(key, tat, now)
  redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end

-- Ready mail is kept per tenant and lane ('fresh' or 'backlog'), with a ring per lane of the
-- tenants that have some (names as in drain/store/keys.py: lane, ring, READY_COUNT). A
-- tenant is in a ring at most once: the ring's ':in' set says whether it is.
function lib.lane_key(lane, tenant)
  return 'drain:lane:' .. lane .. ':' .. tenant
end

function lib.ring_join(lane, tenant)
  local ring = 'drain:ring:' .. lane
  if redis.call('SADD', ring .. ':in', tenant) == 1 then
    redis.call('RPUSH', ring, tenant)
  end
end

-- A message's tenant. One stored before tenants existed gets its sender's domain (as
-- drain/store/tenancy.py's from_sender gives it), kept in the message and the tenants set.
function lib.tenant_of(msg)
  local f = redis.pcall('HMGET', msg, 'tn', 'env')
  if type(f) ~= 'table' then return '' end  -- a damaged message key: the worker finds it
  if f[1] then return f[1] end
  local ok, env = pcall(cjson.decode, f[2] or '')
  local sender = (ok and type(env) == 'table' and type(env[1]) == 'string') and env[1] or ''
  local tenant = string.lower(string.match(sender, '@([^@%s]+)%s*$') or '')
  if tenant == '' or #tenant > 128 then tenant = '-' end
  if f[2] then
    redis.call('HSET', msg, 'tn', tenant)
    redis.call('SADD', 'drain:tenants', tenant)
  end
  return tenant
end

-- A tenant goes back in the ring of each lane it has ready mail in.
function lib.rejoin(tenant)
  for _, lane in ipairs({'fresh', 'backlog'}) do
    if redis.call('LLEN', lib.lane_key(lane, tenant)) > 0 then lib.ring_join(lane, tenant) end
  end
end

-- Put a ready message on its tenant's list of a lane, at the head or the tail, and count it.
function lib.ready_push(lane, msg, id, head)
  local tenant = lib.tenant_of(msg)
  redis.call(head and 'LPUSH' or 'RPUSH', lib.lane_key(lane, tenant), id)
  redis.call('HINCRBY', 'drain:ready:count', lane, 1)
  lib.ring_join(lane, tenant)
end

-- A claimed message of a tenant with a concurrency cap is done: free its slot.
function lib.tenant_free(msg, id)
  local tenant = redis.pcall('HGET', msg, 'tn')  -- pcall: a damaged message key is not a hash
  if type(tenant) ~= 'string' or redis.call('ZREM', 'drain:tenant:busy:' .. tenant, id) == 0 then return end
  -- It may have been waiting for this slot: back in the rings it has mail for.
  if redis.call('ZREM', 'drain:tenant:wake', tenant) == 1 then lib.rejoin(tenant) end
end

-- Tenants that asked to join a lane's ring (enqueue cannot run a script; it lists them in
-- the ring's ':join' set, so a tenant asks once however much mail it sends) join it, at
-- most `most` of them at a time.
function lib.absorb(lane, most)
  local joining = redis.call('SPOP', 'drain:ring:' .. lane .. ':join', most)
  for _, tenant in ipairs(joining) do
    if redis.call('LLEN', lib.lane_key(lane, tenant)) > 0 then lib.ring_join(lane, tenant) end
  end
end

-- Events: every move of a message is recorded in the same script as the move (names and
-- fields in drain/store/events.py, which also says how a script records one). A tracer is
-- made once per script run from the events stream key and two ARGVs (retention seconds,
-- 0 = events off; most events kept): nil when events are off, and lib.event does nothing.
-- With gather true, index records are gathered per key and written by lib.recorded(tr)
-- (one APPEND per key, not per record), which the script must then call before it returns;
-- without it each record is written at once.
function lib.tracer(stream, retention_s, max_events, gather)
  local keep = tonumber(retention_s) or 0
  if keep <= 0 then return nil end
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local most = tonumber(max_events) or 0
  if most > 0 then redis.call('XTRIM', stream, 'MAXLEN', '~', most) end
  return {stream = stream, keep = keep, minid = string.format('%.0f', now_ms - keep * 1000), pending = {},
          order = {}, gather = gather}
end

-- One 8-byte index record: a 3-byte tag of the value (lowercased ASCII; SHA-1 hex digits
-- 1-6), then where the event is: ms within its day * 8192 + stream sequence (8191 meaning
-- "that or more"), 5 bytes; appended to the string of its day and hash bucket (hex digits 7-8).
local function gather(tr, day, bucket, record)
  if tr.prefix_day ~= day then tr.prefix, tr.prefix_day = tr.stream .. ':ix:' .. day .. ':', day end
  local key = tr.prefix .. bucket
  local records = tr.pending[key]
  if not records then
    records = {day = day}
    tr.pending[key] = records
    table.insert(tr.order, key)
  end
  table.insert(records, record)
  if not tr.gather then lib.flush(tr) end
end

local function index(tr, day, value, where)
  local h = redis.sha1hex(string.lower(value))
  gather(tr, day, string.sub(h, 7, 8), struct.pack('>I3', tonumber(string.sub(h, 1, 6), 16)) .. where)
end

-- Where the event of stream id sid is, for its index records: its day, and the 5 bytes of
-- its place in the day. The millisecond part is read once per tracer and millisecond (a
-- script's events mostly share one): number parsing and formatting are a good part of an
-- event's cost.
local function place(tr, sid)
  local dash = string.find(sid, '-', 1, true)
  local ms_text = string.sub(sid, 1, dash - 1)
  if ms_text ~= tr.ms_text then
    local ms = tonumber(ms_text)
    local at_day = math.floor(ms / 86400000)
    tr.ms_text, tr.at_day, tr.in_day = ms_text, at_day, (ms - at_day * 86400000) * 8192
  end
  return tr.at_day, struct.pack('>I5', tr.in_day + math.min(tonumber(string.sub(sid, dash + 1)), 8191))
end

-- Record one event: kind (a code of events.py's KINDS), message id, data (a Lua array, or
-- its JSON text), and the values it can be looked up by besides its id (e.g. 'r:' ..
-- recipient; see events.py's index prefixes). Returns the event's stream id.
function lib.event(tr, kind, id, data, values)
  if not tr then return nil end
  if type(data) ~= 'string' then data = cjson.encode(data) end
  local sid
  if tr.minid then
    sid = redis.call('XADD', tr.stream, 'MINID', '~', tr.minid, '*', 'e', kind, 'i', id, 'd', data)
  else  -- a tracer of lib.untrimmed: its script trims the stream itself (lib.trim)
    sid = redis.call('XADD', tr.stream, '*', 'e', kind, 'i', id, 'd', data)
  end
  local day, where = place(tr, sid)
  index(tr, day, 'i:' .. id, where)
  for _, value in ipairs(values or {}) do index(tr, day, value, where) end
  tr.first = tr.first or sid
  tr.last = sid
  return sid
end

-- The delivered events of a script run, gathered for one stream entry (lib.event_batch):
-- the pieces of its text (each message's [id, data] as JSON, or several of them joined by
-- commas), how many messages, their ids' index records as made by the callers
-- (events.delivered_record: a bucket, then a 3-byte tag) kept as tags by bucket (a string of
-- one or more tags each), `loose`: the ids without one (hashed here), and the last message's
-- id and data (for a lone event).
function lib.batch()
  return {parts = {}, count = 0, tags = {}, buckets = {}, loose = {}}
end

-- The tags of bucket's records in batch b (a list the caller appends to), or nil for no bucket.
local function batch_tags(b, bucket)
  if not bucket or bucket == '' then return nil end
  local of = b.tags[bucket]
  if not of then of = {}; b.tags[bucket] = of; b.buckets[#b.buckets + 1] = bucket end
  return of
end

-- Record events of one kind for several messages as one stream entry (a settle's
-- deliveries, b: lib.batch): instead of `i` and `d` it has `m`, a JSON array of [id, data]
-- pairs. Each message is indexed by its id, as with an entry of its own; events.py's
-- decode_all reads such an entry as one event per message. A lone event keeps the usual
-- form. Returns the entry's stream id.
function lib.event_batch(tr, kind, b)
  if not tr or not b or b.count == 0 then return nil end
  if b.count == 1 then
    local data = b.data
    if not data then  -- a journal entry's piece: ["<id>",data]
      data = string.sub(b.parts[1], #b.id + 5, -2)
    end
    return lib.event(tr, kind, b.id, data)
  end
  local text = '[' .. table.concat(b.parts, ',') .. ']'
  local sid
  if tr.minid then
    sid = redis.call('XADD', tr.stream, 'MINID', '~', tr.minid, '*', 'e', kind, 'm', text)
  else
    sid = redis.call('XADD', tr.stream, '*', 'e', kind, 'm', text)
  end
  local day, where = place(tr, sid)
  -- Every record of the entry ends in the same `where`: a bucket's records are its tags,
  -- each followed by it (one gsub per bucket; a % in `where` is doubled for gsub).
  local after = '%0' .. string.gsub(where, '%%', '%%%%')
  for _, bucket in ipairs(b.buckets) do
    gather(tr, day, bucket, (string.gsub(table.concat(b.tags[bucket]), '...', after)))
  end
  for _, id in ipairs(b.loose) do index(tr, day, 'i:' .. id, where) end
  tr.first = tr.first or sid
  tr.last = sid
  return sid
end

-- A gathering tracer for a script that records many events per run (settle.lua): no read
-- of the server's clock and no trim per run or per event; the script calls lib.trim.
function lib.untrimmed(stream, retention_s)
  local keep = tonumber(retention_s) or 0
  if keep <= 0 then return nil end
  return {stream = stream, keep = keep, pending = {}, order = {}, gather = true}
end

-- Trim the events stream of an untrimmed tracer, by age (stream ids below minid_ms, the
-- oldest kept by the caller's clock) and by size (about max_events), on about one run in
-- ten (those whose first event's millisecond ends in 0): a trim is approximate anyway.
function lib.trim(tr, minid_ms, max_events)
  if not tr or not tr.first then return end
  local dash = string.find(tr.first, '-', 1, true)
  if string.byte(tr.first, dash - 1) ~= 48 then return end
  redis.call('XTRIM', tr.stream, 'MINID', '~', minid_ms)
  if (tonumber(max_events) or 0) > 0 then redis.call('XTRIM', tr.stream, 'MAXLEN', '~', max_events) end
end

-- Write the gathered index records (a new key expires with the retention).
function lib.flush(tr)
  for _, key in ipairs(tr.order) do
    local records = tr.pending[key]
    local text = table.concat(records)
    if redis.call('APPEND', key, text) == #text then
      redis.call('EXPIREAT', key, (records.day + 1) * 86400 + tr.keep)
    end
  end
  tr.pending, tr.order = {}, {}
end

-- Write what is gathered, then return the stream ids of the first and last events this
-- tracer recorded ('' when none): a script's events are contiguous in the stream, so a
-- writer of DRAIN_EVENT_LOG reads them back.
function lib.recorded(tr)
  if not tr or not tr.first then return {'', ''} end
  lib.flush(tr)
  return {tr.first, tr.last}
end

-- The reason codes of quarantine findings (JSON list of {code, detail}), as a Lua array.
function lib.codes(findings)
  local ok, list = pcall(cjson.decode, findings)
  local codes = {}
  if ok and type(list) == 'table' then
    for _, f in ipairs(list) do
      if type(f) == 'table' and type(f.code) == 'string' then table.insert(codes, f.code) end
    end
  end
  return codes
end

-- Which of ids (a Lua array) owner holds in the in-flight hash, read in one command: the
-- held ids in order, each once, and id -> its first position among ids. Many ids of a small
-- hash (a journal's, most of what is in flight) are read with one HGETALL: a small hash is a
-- listpack, where HMGET scans for each field asked for. With `family`, an id held by another
-- lane of owner's process ("<process owner>/<lane>", keys.py's journal) counts as held too.
function lib.held(inflight, owner, ids, family)
  local mine, first = {}, {}
  if #ids == 0 then return mine, first end
  local holders
  if #ids >= 16 and redis.call('HLEN', inflight) <= 2 * #ids then
    local flat, by = redis.call('HGETALL', inflight), {}
    for i = 1, #flat, 2 do by[flat[i]] = flat[i + 1] end
    holders = {}
    for i, id in ipairs(ids) do holders[i] = by[id] end
  else
    holders = redis.call('HMGET', inflight, unpack(ids))
  end
  local process = family and (string.match(owner, '^([^/]*)/') or owner)
  local ours = {[owner] = true}  -- holder -> whether it is owner (or of its process): a few holders, many ids
  for i, id in ipairs(ids) do
    local holder = holders[i]
    if holder then
      local yes = ours[holder]
      if yes == nil then
        yes = (process and (string.match(holder, '^([^/]*)/') or holder) == process) or false
        ours[holder] = yes
      end
      if yes and not first[id] then
        mine[#mine + 1] = id
        first[id] = i
      end
    end
  end
  return mine, first
end

-- Deliveries settled in one script run (settle.lua, deliver.lua). lib.deliveries makes
-- their tally; lib.delivered records one (its events at once; its figures and counts
-- gathered); lib.deliveries_done writes what was gathered, one write per field, not per
-- message: the backlog shape by field and by tenant, the latency histogram, the dropped
-- message keys, the freed concurrency slots of capped tenants. Counts go to redis.call as
-- text (d.up, d.down: a number handed to redis.call is formatted by snprintf each time).
function lib.deliveries(tr, now, bounces, bounces_kept)
  return {tr = tr, now = now, at = tonumber(now), bounces = bounces, kept = bounces_kept, count = 0, sum = 0,
          shape = {}, tenants = {}, buckets = {}, busy = {}, gone = {}, times = {},
          latency = {1, 5, 15, 60, 300, 900, 3600, 14400, 86400},
          buckets_named = {'1', '5', '15', '60', '300', '900', '3600', '14400', '86400'},
          up = {'1', '2', '3', '4', '5', '6', '7', '8'}, down = {'-1', '-2', '-3', '-4', '-5', '-6', '-7', '-8'}}
end

-- What an acceptance time (text) gives a delivery now: {accepted, '|' .. shape minute, latency
-- bucket, latency}, or {false} when it is not a finite number. Worked out once per distinct
-- time and call: a claim's messages mostly share a few.
local function accepted_at(d, text)
  local known = d.times[text]
  if known then return known end
  local t = tonumber(text)
  if not t or t ~= t or t == math.huge or t == -math.huge then
    known = {false}
  else
    local latency = math.max(0, d.at - t)
    local bucket, limits = 'inf', d.latency
    for i = 1, #limits do
      if latency <= limits[i] then bucket = d.buckets_named[i]; break end
    end
    known = {t, '|' .. math.floor(t / 60), bucket, latency}
  end
  d.times[text] = known
  return known
end

-- Count deliveries whose message's dom, t and tn fields are f (false for one it lacks) into
-- d's figures: ids, their ids (a Lua array; or the id of a lone one), c how many. Returns
-- what its acceptance time gives (accepted_at), or nil when it has none.
local function count_in(d, f, ids, c)
  local tenant = f[3]
  if tenant then
    -- Their concurrency slots, if their tenant has any taken (looked up once per tenant and call).
    local freed = d.busy[tenant]
    if freed == nil then
      freed = redis.call('EXISTS', 'drain:tenant:busy:' .. tenant) == 1 and {} or false
      d.busy[tenant] = freed
    end
    if freed then
      if type(ids) == 'table' then
        for i = 1, c do freed[#freed + 1] = ids[i] end
      else
        freed[#freed + 1] = ids
      end
    end
  end
  -- When it was accepted, its backlog-shape minute and its latency: read once per acceptance time.
  local when = f[2] and accepted_at(d, f[2]) or nil
  if when and when[1] then
    local field = (f[1] or '') .. when[2]
    d.shape[field] = (d.shape[field] or 0) + c
    d.tenants[tenant or ''] = (d.tenants[tenant or ''] or 0) + c
    local bucket = when[3]
    d.buckets[bucket] = (d.buckets[bucket] or 0) + c
    d.sum = d.sum + (c == 1 and when[4] or when[4] * c)
    return when
  end
  return nil
end

-- Recipients of a delivered message refused for good (info, JSON): logged to the bounces
-- stream and recorded as a bounce (before its delivered event, so that the last event says
-- delivered, as the books count it).
local function refused(d, msg, id, info)
  local env = redis.call('HGET', msg, 'env') or ''
  redis.call('XADD', d.bounces, 'MAXLEN', '~', d.kept, '*', 'id', id, 'env', env, 'reply', info, 'at', d.now)
  if d.tr then lib.event(d.tr, 'b', id, {string.sub(info, 1, 300)}) end
end

-- One delivery of a held message: info, if any, lists recipients refused for good (JSON,
-- `refused`); data is the delivered event's data as JSON, or '' to make it here from reply;
-- ix (optional) its id's index record (lib.event_batch); known (optional) the message's dom,
-- t and tn fields as the worker read them when it claimed it (a journal entry's: spares
-- reading them here), false for one it lacks.
function lib.delivered(d, msg, id, info, data, reply, ix, known)
  local f = known
  if not f then
    f = redis.pcall('HMGET', msg, 'dom', 't', 'tn', 'n')
    if f.err then f = {} end  -- not a hash: dropped all the same
  end
  if info ~= '' then refused(d, msg, id, info) end
  local when = count_in(d, f, id, 1)
  if d.tr then
    if data == '' then
      local delay = when and math.floor(when[4] * 1000) / 1000 or ''
      data = {string.sub(reply, 1, 300), (tonumber(f[4] or '0') or 0) + 1, delay}
    end
    if d.batch and type(data) == 'string' then
      -- Recorded by the script as one entry (lib.event_batch).
      local b = d.batch
      b.parts[#b.parts + 1] = '[' .. cjson.encode(id) .. ',' .. data .. ']'
      b.id, b.data, b.count = id, data, b.count + 1
      local of = ix and #ix > 3 and batch_tags(b, string.sub(ix, 1, -4))
      if of then of[#of + 1] = string.sub(ix, -3) else b.loose[#b.loose + 1] = id end
    else
      lib.event(d.tr, 'd', id, data)
    end
  end
  d.gone[#d.gone + 1] = msg
  d.count = d.count + 1
end

-- Write the deliveries' gathered figures (shape_key: backlog shape; latency_key: latency
-- histogram) and drop their messages.
function lib.deliveries_done(d, shape_key, latency_key)
  if d.count == 0 then return end
  for tenant, freed in pairs(d.busy) do
    if freed and #freed > 0 and redis.call('ZREM', 'drain:tenant:busy:' .. tenant, unpack(freed)) > 0
        and redis.call('ZREM', 'drain:tenant:wake', tenant) == 1 then
      lib.rejoin(tenant)  -- it may have been waiting for a slot: back in its rings
    end
  end
  for field, count in pairs(d.shape) do
    local left = lib.figure('HINCRBY', shape_key, field, d.down[count] or -count)
    if left and left <= 0 then redis.call('HDEL', shape_key, field) end
  end
  for tenant, count in pairs(d.tenants) do
    local left = lib.figure('HINCRBY', 'drain:shape:tenant', tenant, d.down[count] or -count)
    if left and left <= 0 then redis.call('HDEL', 'drain:shape:tenant', tenant) end
  end
  for bucket, count in pairs(d.buckets) do lib.figure('HINCRBY', latency_key, bucket, d.up[count] or count) end
  if next(d.buckets) then lib.figure('HINCRBYFLOAT', latency_key, 'sum', d.sum) end
  if #d.gone > 0 then redis.call('DEL', unpack(d.gone)) end  -- (lib.commit_known drops its own)
end

-- A journal entry of the first form (drain/store/journal.py, written by workers of before
-- session 8: still read, so that mail in flight across an upgrade is settled): a flags byte,
-- then seven fields, each a 4-byte length and its bytes: the id's index record, the id, info,
-- the message's dom, t and tn as the worker read them, the delivered event's data. Returns
-- id, info, data, index record, whether the worker knew the message's fields, and its dom, t
-- and tn (false for a field the message lacks); nothing when the entry is damaged.
function lib.journalled(entry)
  local ok, flags, ix, id, info, dom, t, tn, data = pcall(struct.unpack, '>BI4c0I4c0I4c0I4c0I4c0I4c0I4c0', entry)
  if not ok or id == '' then return end
  return id, info, data, ix, flags % 2 == 1, flags % 4 >= 2 and dom, flags % 8 >= 4 and t, flags % 16 >= 8 and tn
end

-- Settle the deliveries in owner's journal (a list of entries) into d, a tally of
-- lib.deliveries whose events are batched (d.batch): each message the owner (or another lane
-- of its process: they share the journal) still holds is counted delivered in the books and
-- leaves the in-flight hash; entries of messages no longer held (the lease lapsed and they
-- were given back) are dropped, counted in the second value returned, and so is a damaged
-- entry (its message alone: it stays in flight until given back, as mail its process holds
-- for none of its batches (drain/worker/audit.py), or by the reaper). The journal is
-- deleted. Returns settled, skipped.
--
-- An entry of the usual form (journal.py; first byte 16 to 19) is read with one
-- struct.unpack: the id; its group (the id's index bucket and the message's dom, t and tn
-- fields as the worker read them when it claimed it), the same bytes for the messages of a
-- claim accepted together: read once per group and counted once (count_in), not per
-- message; its index tag; its piece of the event text; with 1, info. With 2, the piece is
-- the event's data alone (an id drain did not make: encoded here).
function lib.commit_journal(d, journal, inflight, books, owner)
  local list = redis.call('LRANGE', journal, 0, -1)
  if #list == 0 then return 0, 0 end
  local ids, groups, tags, pieces, forms, infos, old = {}, {}, {}, {}, {}, {}, nil
  local k, tried = 0, 0
  local function take(entry)
    tried = tried + 1
    local form = string.byte(entry, 1)
    if form and form >= 16 and form <= 19 then
      local ok, _, id, group, tag, piece, info = pcall(struct.unpack, form % 2 == 1 and '>BI4c0I4c0c3I4c0I4c0'
                                                         or '>BI4c0I4c0c3I4c0', entry)
      if ok and id ~= '' then
        k = k + 1
        ids[k], groups[k], tags[k], pieces[k], forms[k] = id, group, tag, piece, form
        if form % 2 == 1 then infos[k] = info end
      end
    elseif form and form < 16 then  -- the first form (lib.journalled)
      local id, info, data, ix, known, dom, t, tn = lib.journalled(entry)
      if id then
        k = k + 1
        old = old or {}
        ids[k], groups[k] = id, false
        old[k] = {info, data, ix, known and {dom, t, tn}}
      end
    end
  end
  for _, element in ipairs(list) do
    if string.byte(element, 1) == 20 then  -- the entries of one write (journal.bundle)
      local at = 2
      while at <= #element do
        local ok, entry, after = pcall(struct.unpack, '>I4c0', element, at)
        if not ok then tried = tried + 1; break end  -- cut short: the rest is lost, its mail sent again
        take(entry)
        at = after
      end
    else
      take(element)
    end
  end
  local mine, first = lib.held(inflight, owner, ids, true)
  if #mine > 0 then
    redis.call('HINCRBY', books, 'delivered', d.up[#mine] or #mine)
    redis.call('HDEL', inflight, unpack(mine))
  end
  redis.call('DEL', journal)
  local by, order, gone = {}, {}, d.gone
  local b = d.tr and d.batch
  local parts = b and b.parts
  local count = 0
  for _, id in ipairs(mine) do
    local k = first[id]
    local group = groups[k]
    if group then
      local g = by[group]
      if not g then
        -- bucket, then the figures: a flags byte (1, 2, 4: dom, t, tn known; 8: none known)
        local ok, bucket, flags, dom, t, tn = pcall(struct.unpack, '>Bc0BI4c0I4c0I4c0', group)
        if not ok then bucket, flags = '', 8 end
        g = {ids = {}, tags = b and batch_tags(b, bucket),
             f = flags < 8 and {flags % 2 == 1 and dom, flags % 4 >= 2 and t, flags % 8 >= 4 and tn}}
        by[group] = g
        order[#order + 1] = g
      end
      local msg = 'drain:msg:' .. id
      if infos[k] then refused(d, msg, id, infos[k]) end
      local n = #g.ids + 1
      g.ids[n] = id
      gone[#gone + 1] = msg
      count = count + 1
      if b then
        local piece = pieces[k]
        if forms[k] >= 18 then
          b.data = piece
          piece = '[' .. cjson.encode(id) .. ',' .. piece .. ']'
        else
          b.data = nil
        end
        parts[#parts + 1] = piece
        b.id, b.count = id, b.count + 1
        local of = g.tags
        if of then of[#of + 1] = tags[k] else b.loose[#b.loose + 1] = id end
      elseif d.tr then
        lib.event(d.tr, 'd', id, forms[k] >= 18 and pieces[k] or string.sub(pieces[k], #id + 5, -2))
      end
    else
      local o = old[k]
      lib.delivered(d, 'drain:msg:' .. id, id, o[1], o[2], '', o[3], o[4])
    end
  end
  d.count = d.count + count
  -- Each group's figures counted once; a group whose figures the worker did not know (or
  -- damaged): each message's own fields read here.
  for _, g in ipairs(order) do
    if g.f then
      count_in(d, g.f, g.ids, #g.ids)
    else
      for _, id in ipairs(g.ids) do
        local f = redis.pcall('HMGET', 'drain:msg:' .. id, 'dom', 't', 'tn')
        count_in(d, f.err and {} or f, id, 1)
      end
    end
  end
  return #mine, tried - #mine
end

-- Settle owner's journal as the worker says it wrote it (deliver.lua; drain/store/journal.py's
-- known_args): argv from at + 1 holds how many entries (known), their pieces of the event
-- text joined, how many groups (G) and buckets (B), then each group and its count, each
-- bucket and its tags, the ids in the order written (each once), how many list elements
-- the journal's fill, and how many of the last ids are in no journal (direct: deliveries
-- the worker settles now); keys from kat + 1 their message keys. That spares reading the
-- entries: the worker knows what it delivered, and the in-flight hash says it still holds
-- each. It applies only when the journal holds as many elements as the worker wrote (none
-- written since by anyone else, none settled since by a reaper), every message still held by the owner's process, each
-- group's figures readable and its tenant's concurrency slots unused; else it returns nil
-- before any write (the caller then reads each entry: lib.commit_journal). The ids and keys
-- go to Redis straight from argv and keys: no Lua string or table of each message's.
-- Returns settled, skipped.
function lib.commit_known(d, journal, inflight, books, owner, argv, at, keys, kat)
  local known, groups, buckets = tonumber(argv[at + 1]), tonumber(argv[at + 3]), tonumber(argv[at + 4])
  if not known or known < 2 or not groups or not buckets then return nil end
  local from = at + 4 + 2 * groups + 2 * buckets
  local elements = tonumber(argv[from + known + 1])
  if not elements or redis.call('LLEN', journal) ~= elements then return nil end
  -- Held by the owner's process, each (a small hash, a listpack, is read whole: see lib.held).
  local process = string.match(owner, '^([^/]*)/') or owner
  local ours = {[owner] = true}
  local holders
  if known >= 16 and redis.call('HLEN', inflight) <= 2 * known then
    local flat, by = redis.call('HGETALL', inflight), {}
    for i = 1, #flat, 2 do by[flat[i]] = flat[i + 1] end
    holders = {}
    for i = 1, known do holders[i] = by[argv[from + i]] end
  else
    holders = redis.call('HMGET', inflight, unpack(argv, from + 1, from + known))
  end
  for i = 1, known do
    local holder = holders[i]
    if not holder then return nil end
    local yes = ours[holder]
    if yes == nil then
      yes = (string.match(holder, '^([^/]*)/') or holder) == process
      ours[holder] = yes
    end
    if not yes then return nil end
  end
  local figures, total = {}, 0
  for g = 1, groups do
    local ok, _, flags, dom, t, tn = pcall(struct.unpack, '>Bc0BI4c0I4c0I4c0', argv[at + 3 + 2 * g])
    local count = tonumber(argv[at + 4 + 2 * g])
    if not ok or flags >= 8 or not count then return nil end
    local f = {flags % 2 == 1 and dom, flags % 4 >= 2 and t, flags % 8 >= 4 and tn}
    if f[3] then
      local freed = d.busy[f[3]]
      if freed == nil then
        freed = redis.call('EXISTS', 'drain:tenant:busy:' .. f[3]) == 1 and {} or false
        d.busy[f[3]] = freed
      end
      if freed then return nil end
    end
    figures[g] = {f, count}
    total = total + count
  end
  if total ~= known then return nil end
  redis.call('HINCRBY', books, 'delivered', d.up[known] or known)
  redis.call('HDEL', inflight, unpack(argv, from + 1, from + known))
  if elements > 0 then redis.call('DEL', journal) end
  redis.call('DEL', unpack(keys, kat + 1, kat + known))
  for g = 1, groups do count_in(d, figures[g][1], nil, figures[g][2]) end
  d.count = d.count + known
  local b = d.tr and d.batch
  if b then
    b.parts[#b.parts + 1] = argv[at + 2]
    b.count, b.id = b.count + known, argv[from + known]
    for i = 1, buckets do
      local of = batch_tags(b, argv[at + 3 + 2 * groups + 2 * i])
      if of then of[#of + 1] = argv[at + 4 + 2 * groups + 2 * i] end
    end
  end
  return known, 0
end
