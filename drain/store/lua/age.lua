-- age: fresh mail that has waited too long joins the backlog lane, so the fresh lane only
-- ever holds recent mail. Ids grow with acceptance time, so "too old" is "id at most the
-- boundary id"; the fresh lane is in id order, oldest at the head.
--
-- KEYS[1] fresh lane   KEYS[2] backlog lane
-- ARGV[1] boundary id (hexadecimal)   ARGV[2] most to move in one call
--
-- Returns how many moved.

local boundary = tonumber(ARGV[1], 16)
local most = tonumber(ARGV[2])
local moved = 0
while moved < most do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(head, 16) == nil or tonumber(head, 16) > boundary then break end
  redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  moved = moved + 1
end
return moved
