-- age: fresh mail that has waited too long joins the backlog lane, so the fresh lane only
-- ever holds recent mail. Ids grow with acceptance time, so "too old" is "id at most the
-- boundary id"; each tenant's fresh list is in id order, oldest at the head. Every tenant
-- in the fresh ring is looked at (this runs in housekeeping, not in a claim).
--
-- KEYS[1] fresh ring (tenants with fresh mail)   KEYS[2] ready count per lane
-- ARGV[1] boundary id (hexadecimal)   ARGV[2] most to move in one call
--
-- Returns how many moved.

local boundary = tonumber(ARGV[1], 16)
local most = tonumber(ARGV[2])
local moved = 0
lib.absorb('fresh', 100000)
for _, tenant in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local fresh, backlog = lib.lane_key('fresh', tenant), lib.lane_key('backlog', tenant)
  local before = moved
  while moved < most do
    local head = redis.call('LINDEX', fresh, 0)
    if not head or tonumber(head, 16) == nil or tonumber(head, 16) > boundary then break end
    redis.call('LMOVE', fresh, backlog, 'LEFT', 'RIGHT')
    moved = moved + 1
  end
  if moved > before then lib.ring_join('backlog', tenant) end
  if moved >= most then break end
end
redis.call('HINCRBY', KEYS[2], 'fresh', 0 - moved)
redis.call('HINCRBY', KEYS[2], 'backlog', moved)
return moved
