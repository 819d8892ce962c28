-- claim: hand ready messages to a worker, if delivery is not paused and the global rate
-- allows (GCRA, clocked by the Redis server so every machine agrees). Suspects (messages
-- a dead worker held) go first and one at a time. Then the fresh lane goes before the
-- backlog lane, except on every share-th claim, when the backlog goes first: fresh mail
-- is not stuck behind a backlog, and the backlog still moves. Ids an operator rule swept
-- into quarantine are dropped when met.
--
-- The GCRA is hand-written (its arithmetic is in the prelude, _lib.lua) rather than taken
-- from a library (redis-cell, a Python limiter): it must be one atomic step with the pop, on
-- a stock Redis without modules, clocked by the server; a client-side limiter would race
-- between machines.
--
-- Ready mail is kept per tenant (see _lib.lua): each lane is a ring of tenants served by
-- deficit round robin. The tenant at the head of the ring gets credit of its weight
-- (messages) when it has none, gives up to that many, and goes to the tail when its credit
-- is spent; a tenant whose list runs dry leaves the ring. A paused tenant leaves the ring
-- (`drain resume --tenant` puts it back); a tenant at its rate or concurrency cap leaves it
-- until the time in the wake set, when a later claim puts it back. The work of one claim is
-- bounded by the batch (plus a fixed number of ring visits and joins), not by how many
-- tenants have ready mail.
--
-- KEYS[1] backlog ring        KEYS[2] in-flight hash (id -> owner)
-- KEYS[3] lease key of owner  KEYS[4] paused flag
-- KEYS[5] global rate (msgs/s; absent = unlimited; 0, or anything not a positive
--         number, holds delivery as a pause does)
-- KEYS[6] GCRA state (theoretical arrival time, microseconds)
-- KEYS[7] suspect list        KEYS[8] swept set
-- KEYS[9] fresh ring          KEYS[10] claim counter   KEYS[11] burst (seconds)
-- KEYS[12] tenant weights     KEYS[13] tenant rate caps   KEYS[14] tenant GCRA state
-- KEYS[15] paused tenants     KEYS[16] tenant wake set (scored in microseconds)
-- KEYS[17] ready count per lane   KEYS[18] tenant concurrency caps
-- (and, by name: each tenant's lane lists, the rings' ':in', ':join' and ':deficit' keys,
-- and each capped tenant's busy set)
-- ARGV[1] N, most ids wanted
-- ARGV[2] owner name
-- ARGV[3] lease time to live, milliseconds
-- ARGV[4] default burst, seconds of rate that may go at once
-- ARGV[5] share: every share-th claim serves the backlog lane first
-- ARGV[6] '0': take no suspect (another lane of the process holds mail; absent = take them)
--
-- Returns {wait_ms, isolated, fresh, id...}: wait_ms -1 when paused, > 0 when the rate
-- (global, or the caps of the only tenants with mail) says wait (no ids), 0 with the claimed ids otherwise (none when nothing is ready);
-- isolated is 1 when the id is a suspect to be worked alone, plus 2 when some id took a
-- capped tenant's concurrency slot (its worker settles it at once: drain/store/journal.py);
-- fresh is how many ids came
-- from the fresh lane, counted from the front (> 0) or from the back (< 0).

if redis.replicate_commands then redis.replicate_commands() end

if redis.call('EXISTS', KEYS[4]) == 1 then
  return {-1, 0, 0}
end

local wrong = lib.wrong_types({KEYS[1], 'list', KEYS[2], 'hash', KEYS[7], 'list', KEYS[8], 'set',
                               KEYS[9], 'list'})
if wrong then return wrong end

-- Suspects of a paused tenant (or one held by a rate of 0) go back to the head of their
-- tenant's backlog list, to wait there with the rest of its mail (a few per claim).
if redis.call('LLEN', KEYS[7]) > 0 and (redis.call('SCARD', KEYS[15]) > 0 or redis.call('HLEN', KEYS[13]) > 0) then
  for _ = 1, 64 do
    local id = redis.call('LINDEX', KEYS[7], 0)
    if not id then break end
    local msg = 'drain:msg:' .. id
    local tenant = redis.pcall('HGET', msg, 'tn')
    if type(tenant) ~= 'string' then break end
    local rate = redis.call('HGET', KEYS[13], tenant)
    if redis.call('SISMEMBER', KEYS[15], tenant) == 0 and not (rate and not ((tonumber(rate) or 0) > 0)) then break end
    redis.call('LPOP', KEYS[7])
    lib.ready_push('backlog', msg, id, true)
  end
end

local want = tonumber(ARGV[1])
local isolated = 0
local capped = 0  -- 2 once an id took a capped tenant's concurrency slot
local sources
if ARGV[6] ~= '0' and redis.call('LLEN', KEYS[7]) > 0 then
  sources, isolated, want = {KEYS[7]}, 1, 1
elseif redis.call('INCR', KEYS[10]) % tonumber(ARGV[5]) == 0 then
  sources = {'backlog', 'fresh'}
else
  sources = {'fresh', 'backlog'}
end

local rate = 0
local set_rate = redis.call('GET', KEYS[5])
if set_rate then
  rate = tonumber(set_rate) or 0
  if not (rate > 0) then
    return {-1, 0, 0}
  end
  if rate == math.huge then rate = 0 end
end
local now, tat, interval = 0, 0, 0
if rate > 0 then
  now = lib.now_us()
  local burst_s = tonumber(redis.call('GET', KEYS[11]) or ARGV[4]) or tonumber(ARGV[4])
  local tau
  interval, tau = lib.gcra(rate, burst_s)
  tat = lib.tat(redis.call('GET', KEYS[6]), now)
  local room = lib.room(tat, now, interval, tau, 0)
  if room < 1 then
    return {math.max(1, math.ceil((tat - tau - now) / 1000)), 0, 0}
  end
  if room < want then want = room end
end

local ids = {}
local fresh = 0
local swept = redis.call('SCARD', KEYS[8]) > 0
local burst_s = tonumber(redis.call('GET', KEYS[11]) or ARGV[4]) or tonumber(ARGV[4])
local clock = nil
local function now_us()
  if not clock then clock = lib.now_us() end
  return clock
end

-- Take up to n ids from the head of a list into ids (swept ids are dropped); returns how
-- many it took off the list.
local function take(list, n)
  local popped = redis.call('LPOP', list, n)
  if not popped then return 0 end
  local k = #ids
  for i = 1, #popped do
    local id = popped[i]
    if not (swept and redis.call('SREM', KEYS[8], id) == 1) then
      k = k + 1
      ids[k] = id
    end
  end
  return #popped
end

-- Tenants that woke (their cap's time came) or asked to join rejoin the rings.
local bound = math.max(64, 2 * want)
if redis.call('ZCARD', KEYS[16]) > 0 then
  for _, tenant in ipairs(redis.call('ZRANGEBYSCORE', KEYS[16], '-inf', now_us(), 'LIMIT', 0, bound)) do
    redis.call('ZREM', KEYS[16], tenant)
    lib.rejoin(tenant)
  end
end

-- How many more the tenant may take now (its rate and concurrency caps), or nil with the
-- time (microseconds) to wake it at; false when it is paused.
-- (Looked up only when some tenant is paused or capped at all: `held`, below.)
local function allowance(tenant, need)
  if redis.call('SISMEMBER', KEYS[15], tenant) == 1 then return false end
  local room = need
  local set_rate = redis.call('HGET', KEYS[13], tenant)
  if set_rate then
    local rate = tonumber(set_rate) or 0
    if not (rate > 0) then return false end
    local now = now_us()
    local interval, tau = lib.gcra(rate, burst_s)
    local tat = lib.tat(redis.call('HGET', KEYS[14], tenant), now)
    local left = lib.room(tat, now, interval, tau, 0)
    if left < 1 then return nil, tat - tau end
    if left < room then room = left end
  end
  local cap = tonumber(redis.call('HGET', KEYS[18], tenant) or '0') or 0
  if cap > 0 then
    local busy = 'drain:tenant:busy:' .. tenant
    redis.call('ZREMRANGEBYSCORE', busy, '-inf', now_us())
    local free = cap - redis.call('ZCARD', busy)
    if free < 1 then return nil, now_us() + 50000 end
    if free < room then room = free end
  end
  return room
end

-- The tenant took n messages: book them on its rate and concurrency caps.
local function book(tenant, first, last)
  local n = last - first + 1
  if n <= 0 then return end
  local rate = tonumber(redis.call('HGET', KEYS[13], tenant) or '0') or 0
  if rate > 0 then
    local now = now_us()
    local interval = lib.gcra(rate, burst_s)
    local tat = lib.tat(redis.call('HGET', KEYS[14], tenant), now)
    redis.call('HSET', KEYS[14], tenant, string.format('%.0f', tat + n * interval))
  end
  if (tonumber(redis.call('HGET', KEYS[18], tenant) or '0') or 0) > 0 then
    local lapse = now_us() + tonumber(ARGV[3]) * 1000
    capped = 2
    for i = first, last do
      redis.call('ZADD', 'drain:tenant:busy:' .. tenant, lapse, ids[i])
    end
  end
end

-- Serve one lane's ring by deficit round robin until need ids are taken or the ring is done.
local held = redis.call('SCARD', KEYS[15]) > 0 or redis.call('HLEN', KEYS[13]) > 0
  or redis.call('HLEN', KEYS[18]) > 0
local weighted = redis.call('HLEN', KEYS[12]) > 0

local function serve(lane, need)
  local ring = 'drain:ring:' .. lane
  local members, deficits = ring .. ':in', ring .. ':deficit'
  lib.absorb(lane, bound)
  local goal = #ids + need
  local visits, popped = 0, 0
  local alone = redis.call('LLEN', ring) == 1
  while #ids < goal and visits < need + bound do
    visits = visits + 1
    local tenant = redis.call('LINDEX', ring, 0)
    if not tenant then break end
    local list = lib.lane_key(lane, tenant)
    local room, wake = goal - #ids, nil
    if held then room, wake = allowance(tenant, room) end
    local left = 1
    if room then
      local stored = redis.call('HGET', deficits, tenant)
      local credit = tonumber(stored or '0') or 0
      if credit < 1 then
        local weight = weighted and tonumber(redis.call('HGET', KEYS[12], tenant) or '1') or 1
        credit = credit + math.max(1, math.floor(weight))
      end
      -- Alone in the ring (nobody waits for a turn): as many as the batch wants at once.
      if alone and credit < room then credit = room end
      local first = #ids + 1
      local took = take(list, math.min(credit, room))
      popped = popped + took
      if held then book(tenant, first, #ids) end
      credit = credit - took
      left = redis.call('LLEN', list)
      if left > 0 and credit >= 1 and took > 0 then
        redis.call('HSET', deficits, tenant, credit)  -- the batch is full: it keeps the head
      elseif left > 0 then
        if stored then redis.call('HDEL', deficits, tenant) end
        redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
      end
    end
    if not room or left == 0 then
      redis.call('LPOP', ring)
      redis.call('SREM', members, tenant)
      redis.call('HDEL', deficits, tenant)
      if wake then redis.call('ZADD', KEYS[16], wake, tenant) end
    end
  end
  if popped > 0 then redis.call('HINCRBY', KEYS[17], lane, 0 - popped) end
end

for position, lane in ipairs(sources) do
  local need = want - #ids
  if need <= 0 then break end
  local before = #ids
  if isolated == 1 then
    take(lane, need)
  else
    serve(lane, need)
  end
  if lane == 'fresh' then
    fresh = #ids - before
    if position > 1 then fresh = -fresh end
  end
end
if #ids == 0 then
  -- Only tenants at their caps have mail: say when the first of them may go again.
  local first = redis.call('ZRANGE', KEYS[16], 0, 0, 'WITHSCORES')
  if first[2] then
    return {math.max(1, math.ceil((tonumber(first[2]) - now_us()) / 1000)), isolated, 0}
  end
  return {0, isolated, 0}
end

-- One write for the whole claim: id, owner, id, owner...; the reply made in the same pass.
local owner, pairs_of, reply = ARGV[2], {}, {0, isolated + capped, fresh}
for i = 1, #ids do
  local id = ids[i]
  pairs_of[2 * i - 1], pairs_of[2 * i], reply[i + 3] = id, owner, id
end
-- A compact hash (listpack) finds a field by scanning all of it, so a claim's ids written
-- into one cost the square of their number (more than the rest of the claim: callgrind,
-- benchmarks/redis-rtt-session9-*). Redis turns a hash into a hash table for good once it
-- holds a value longer than hash-max-listpack-value (8192 as drain's README asks; 64 by
-- default): one such placeholder, written before the ids and deleted after, does that
-- (made of 64-byte pieces: string.rep copies one piece at a time).
local compact = #ids >= 32 and redis.call('OBJECT', 'ENCODING', KEYS[2]) ~= 'hashtable'
if compact then redis.call('HSET', KEYS[2], '', string.rep(string.rep('-', 64), 129)) end  -- 8,256 bytes
redis.call('HSET', KEYS[2], unpack(pairs_of))
if compact then redis.call('HDEL', KEYS[2], '') end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])

if rate > 0 then
  lib.keep_tat(KEYS[6], tat + #ids * interval, now)
end

return reply
