-- reap: give a dead worker's messages back. Does nothing while the owner's lease lives.
--
-- KEYS[1] in-flight hash (id -> owner)   KEYS[2] ready list   KEYS[3] lease key of the owner
-- ARGV[1] owner
--
-- Returns how many messages went back to the head of the ready list.

if redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
local held = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #held, 2 do
  if held[i + 1] == ARGV[1] then
    redis.call('HDEL', KEYS[1], held[i])
    redis.call('LPUSH', KEYS[2], held[i])
    n = n + 1
  end
end
return n
