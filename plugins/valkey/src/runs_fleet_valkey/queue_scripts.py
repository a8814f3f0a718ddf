"""The Lua scripts of :class:`~runs_fleet_valkey.queue.ValkeyQueue`.

Every decision that reads and then writes (is this receipt still the live delivery?
has this message run out of attempts? is this id a duplicate?) runs inside one script,
so it is atomic on the server and two consumers can never both win it.

Keys: ``KEYS[1]`` the stream, ``KEYS[2]`` the delayed-retry sorted set, ``KEYS[3]`` the
dead-letter stream. Dedup keys are ``<dedup prefix><dedup id>``; scripts that only find
the dedup id in an entry build that key themselves, so a Valkey Cluster deployment must
keep every key of one queue in one slot (put a hash tag in the queue name,
e.g. ``{runs-fleet}:jobs``).

Stream entries carry ``payload`` (the message as JSON), ``dedup`` (its dedup id) and
``attempts`` (deliveries before this entry: a retry re-adds the message as a new entry
that remembers them). An entry written by anyone else may lack any of them or hold
nonsense: the scripts read it with defaults (empty payload and dedup id, no attempts),
so it is handed out once and dead-lettered as unreadable instead of failing every
receive of every consumer. A delivery's attempt is ``attempts`` plus the entry's delivery
counter in the consumer group's pending list; a receipt is ``<entry id>/<counter>``.
Times (retry due times) come from the server's clock, as idle times do.
"""

from __future__ import annotations

_HELPERS = """
local function fields(flat)
  local t = {payload = '', dedup = ''}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  t.attempts = tonumber(t.attempts) or 0
  return t
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function bury(stream, dead, group, id, f, attempts, reason, prefix)
  redis.call('XADD', dead, '*', 'payload', f.payload, 'dedup', f.dedup,
             'reason', reason, 'attempts', attempts)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  redis.call('DEL', prefix .. f.dedup)
end

-- The entry's fields if (id, counter) is its live delivery, else nil.
local function live(stream, group, id, counter)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if #p == 0 or tonumber(p[1][4]) ~= counter then return nil end
  local e = redis.call('XRANGE', stream, id, id)
  if #e == 0 then
    redis.call('XACK', stream, group, id)
    return nil
  end
  return fields(e[1][2])
end
"""

SEND_FUNCTION = """
-- Add a message unless its dedup id is live; 1 when added. Also used by the state
-- store's outbox script, which records a job and sends its message in one step.
local function send(stream, dedup_key, payload, dedup, max_length, dedup_ttl_ms)
  if not redis.call('SET', dedup_key, 'live', 'NX', 'PX', dedup_ttl_ms) then return 0 end
  redis.call('XADD', stream, 'MAXLEN', '~', max_length, '*',
             'payload', payload, 'dedup', dedup, 'attempts', 0)
  return 1
end
"""

SEND = (
    SEND_FUNCTION
    + """
-- KEYS: stream, dedup key. ARGV: payload, dedup id, max length, dedup TTL (ms).
return send(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
"""
)

TAKE = (
    _HELPERS
    + """
-- ARGV: group, consumer, visibility (ms), wanted, max attempts, max length,
--       dedup prefix, dead-letter reason.
-- Returns {id, payload, attempt, counter} per delivery.
local stream, delayed, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, idle = ARGV[1], ARGV[2], tonumber(ARGV[3])
local want, max, maxlen = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local prefix, reason = ARGV[7], ARGV[8]
local out = {}

-- 1. retries whose delay has passed go back into the stream
for _, member in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now_ms(),
                                   'LIMIT', 0, 100)) do
  local m = cjson.decode(member)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
             'payload', m.payload, 'dedup', m.dedup, 'attempts', m.attempts)
  redis.call('ZREM', delayed, member)
end

local function offer(id, f, counter)
  local attempt = f.attempts + counter
  if attempt > max then
    bury(stream, dead, group, id, f, attempt - 1, reason, prefix)
  else
    table.insert(out, {id, f.payload, attempt, counter})
  end
end

-- 2. deliveries nobody acked within the visibility timeout are taken over
local cursor = '0-0'
for _ = 1, 10 do
  local r = redis.call('XAUTOCLAIM', stream, group, consumer, idle, cursor,
                      'COUNT', want - #out)
  cursor = r[1]
  for _, e in ipairs(r[2]) do
    if e and e[2] then
      local p = redis.call('XPENDING', stream, group, e[1], e[1], 1)
      offer(e[1], fields(e[2]), tonumber(p[1][4]))
    end
  end
  if cursor == '0-0' or #out >= want then break end
end

-- 3. then new entries
if #out < want then
  local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', want - #out,
                       'STREAMS', stream, '>')
  if r then
    for _, e in ipairs(r[1][2]) do offer(e[1], fields(e[2]), 1) end
  end
end
return out
"""
)

ACK = (
    _HELPERS
    + """
-- ARGV: group, entry id, delivery counter, dedup prefix. Returns 1 if acked.
local f = live(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
if not f then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('DEL', ARGV[4] .. f.dedup)
return 1
"""
)

DEAD_LETTER = (
    _HELPERS
    + """
-- ARGV: group, entry id, delivery counter, dedup prefix, reason.
local f = live(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]))
if not f then return 0 end
local attempts = f.attempts + tonumber(ARGV[3])
bury(KEYS[1], KEYS[3], ARGV[1], ARGV[2], f, attempts, ARGV[5], ARGV[4])
return 1
"""
)

RETRY = (
    _HELPERS
    + """
-- ARGV: group, entry id, delivery counter, dedup prefix, delay (ms), max attempts,
--       dead-letter reason.
-- Returns 0 for a stale receipt, 1 when scheduled, 2 when out of attempts (buried).
local stream, delayed = KEYS[1], KEYS[2]
local group, id, counter = ARGV[1], ARGV[2], tonumber(ARGV[3])
local f = live(stream, group, id, counter)
if not f then return 0 end
local attempts = f.attempts + counter
if attempts >= tonumber(ARGV[6]) then
  bury(stream, KEYS[3], group, id, f, attempts, ARGV[7], ARGV[4])
  return 2
end
local member = cjson.encode({payload = f.payload, dedup = f.dedup,
                             attempts = attempts, id = id})
redis.call('ZADD', delayed, now_ms() + tonumber(ARGV[5]), member)
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
return 1
"""
)

FORGET_CONSUMER = """
-- KEYS: stream. ARGV: group, consumer. Removes the consumer if it holds no delivery
-- (removing one that does would orphan its pending entries).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok or #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

REDRIVE = (
    _HELPERS
    + SEND_FUNCTION
    + """
-- KEYS: stream, dead-letter stream. ARGV: dedup prefix, max length, dedup TTL (ms),
--       then (dead-letter entry id, dedup id) pairs. Each dead letter still there is
-- sent again as a new message (dropped as a duplicate if its dedup id is live: the
-- queue holds it already) and removed, in one step. Returns the ids moved.
local stream, dead = KEYS[1], KEYS[2]
local prefix, maxlen, ttl = ARGV[1], ARGV[2], ARGV[3]
local moved = {}
for i = 4, #ARGV - 1, 2 do
  local id, dedup = ARGV[i], ARGV[i + 1]
  local e = redis.call('XRANGE', dead, id, id)
  if #e > 0 then
    send(stream, prefix .. dedup, fields(e[1][2]).payload, dedup, maxlen, ttl)
    redis.call('XDEL', dead, id)
    table.insert(moved, id)
  end
end
return moved
"""
)
