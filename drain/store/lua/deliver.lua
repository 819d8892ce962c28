-- deliver: settle.lua for the usual call, where every outcome is a delivery whose event
-- data the worker made: the same moves, books, figures and events, with fewer keys and
-- arguments (each one costs Redis work at every call, and a worker settles every few
-- messages). A delivery of a message the owner no longer holds (its lease lapsed and the
-- message was given back) is skipped.
--
-- KEYS[1] in-flight hash   KEYS[2] books hash   KEYS[3] backlog shape (domain|minute -> queued)
-- KEYS[4] delivery latency histogram   KEYS[5] bounces stream   KEYS[6] events stream
-- KEYS[7] the owner's delivery journal (drain/store/journal.py; its process's, which its lanes share)
-- KEYS[7 + i] message hash of the i-th delivery, then those of the journal's ids known (ARGV[7])
-- ARGV[1] owner   ARGV[2] now (unix seconds)   ARGV[3] bounces kept
-- ARGV[4], ARGV[5] events: retention (0 = off), most kept
-- ARGV[6] events: the oldest stream id kept (milliseconds; the stream is trimmed now and then)
-- ARGV[7] how many journal entries the worker knows it wrote (0: none, or read them all),
-- ARGV[8] their pieces of the event text, ARGV[9] G and ARGV[10] B, how many groups and
-- buckets, then G pairs (group, count), B pairs (index bucket, tags), the ids known, in the
-- order written, the list elements the journal's fill, how many of the ids are in no
-- journal (deliveries settled now, grouped as the journal's: lib.commit_known;
-- drain/store/journal.py's known_args)
-- then four per delivery: id, info (recipients refused for good, JSON, or ''), the
-- delivered event's data (JSON: reply, attempt, delay_s), the index record of its id
-- (events.delivered_record: bucket then 3-byte tag)
--
-- The owner's journalled deliveries are settled first, the same way: as the worker says it
-- wrote them when the journal holds just those (lib.commit_known), else read entry by entry
-- (lib.commit_journal); a call may carry no delivery of its own, only the journal's.
--
-- The delivered events of a call are one stream entry naming every message settled
-- (lib.event_batch), each message indexed by its id: one XADD per call, not per message.
--
-- No type checks are needed before the first write: the first commands read the journal
-- and the in-flight hash and the first write counts the deliveries in the books, so a key
-- of the wrong type there fails the call before anything moved.
-- Returns {settled, skipped, first event's stream id, last event's stream id}, or {-1, 0, '', ''}
-- when deliveries given as known in no journal were not as the worker thought (nothing moved).

if redis.replicate_commands then redis.replicate_commands() end

local HEAD, EACH = 12 + 2 * tonumber(ARGV[9]) + 2 * tonumber(ARGV[10]) + tonumber(ARGV[7]), 4
local n = (#ARGV - HEAD) / EACH
local tr = lib.untrimmed(KEYS[6], ARGV[4])
local deliveries = lib.deliveries(tr, ARGV[2], KEYS[5], ARGV[3])
deliveries.batch = lib.batch()  -- the delivered events: one stream entry for the call (lib.event_batch)
local settled, skipped = lib.commit_known(deliveries, KEYS[7], KEYS[1], KEYS[2], ARGV[1], ARGV, 6, KEYS, 7 + n)
if not settled then
  -- Deliveries given as known and in no journal: nothing written yet, the worker sends them
  -- again as plain deliveries (and the journal is read entry by entry then).
  if tonumber(ARGV[HEAD]) > 0 then return {-1, 0, '', ''} end
  settled, skipped = lib.commit_journal(deliveries, KEYS[7], KEYS[1], KEYS[2], ARGV[1])
end
local ids = {}
for i = 1, n do ids[i] = ARGV[HEAD + (i - 1) * EACH + 1] end
local mine, first = lib.held(KEYS[1], ARGV[1], ids)
if #mine + settled == 0 then return {0, n + skipped, '', ''} end
if #mine > 0 then
  redis.call('HINCRBY', KEYS[2], 'delivered', deliveries.up[#mine] or #mine)
  redis.call('HDEL', KEYS[1], unpack(mine))
end

for i = 1, n do
  if first[ids[i]] == i then
    local base = HEAD + (i - 1) * EACH
    lib.delivered(deliveries, KEYS[7 + i], ids[i], ARGV[base + 2], ARGV[base + 3], '', ARGV[base + 4])
  end
end
lib.event_batch(tr, 'd', deliveries.batch)
lib.deliveries_done(deliveries, KEYS[3], KEYS[4])
local span = lib.recorded(tr)
lib.trim(tr, ARGV[6], ARGV[5])
return {#mine + settled, n - #mine + skipped, span[1], span[2]}
