-- event: record events for moves done in a Python MULTI/EXEC (events.record): queued in the same
-- transaction as the move, so it is just as atomic. Other scripts call lib.event directly.
--
-- KEYS[1] events stream
-- ARGV[1] retention seconds (0: events off)   ARGV[2] most events kept
-- then per event: kind, message id, data (JSON array), n, and n values to index it by
--
-- Returns {first, last}: the stream ids of the events recorded ('' when none).

local tr = lib.tracer(KEYS[1], ARGV[1], ARGV[2], true)
local i = 3
while i <= #ARGV do
  local kind, id, data, n = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local values = {}
  for j = 1, n do values[j] = ARGV[i + 3 + j] end
  lib.event(tr, kind, id, data, values)
  i = i + 4 + n
end
return lib.recorded(tr)
