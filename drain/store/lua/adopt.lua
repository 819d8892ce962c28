-- adopt: ready mail left on the single ready lists of a drain from before tenants (the
-- backlog lane 'drain:ready' and the fresh lane 'drain:ready:fresh') moves, in order, to
-- its tenant's list of the same lane (a message without a tenant gets its sender's domain).
--
-- KEYS[1] old backlog lane   KEYS[2] old fresh lane
-- ARGV[1] most to move in one call
--
-- Returns how many moved.

local moved = 0
for i, lane in ipairs({'backlog', 'fresh'}) do
  local ids = redis.call('LPOP', KEYS[i], tonumber(ARGV[1]) - moved)
  if ids then
    for _, id in ipairs(ids) do
      lib.ready_push(lane, 'drain:msg:' .. id, id, false)
    end
    moved = moved + #ids
  end
end
return moved
