"""The Lua scripts of :class:`~runs_fleet_valkey.state.ValkeyStateStore`.

Each conditional write of the StateStore port (create a job only if absent, replace it
only at the expected version, bind a runner only if free, take a lease only if free or
expired) is one script: the check and the write, and the index updates that go with
them, happen atomically on the server, so two replicas racing for the same record get
exactly one winner and the indexes never disagree with the records.

Key layout under the prefix ``p`` (default ``runs-fleet``):

* ``p:job:<id>`` — hash ``version``, ``status``, ``pool`` (only when the job has one),
  ``data`` (the job as JSON);
* ``p:jobs-all``, ``p:jobs-by-status:<status>``, ``p:jobs-by-pool:<pool>`` — sets of job ids;
  a job without a pool is in no pool set (no empty names in index keys, ever);
* ``p:runner:<id>`` — hash ``job_id``, ``data``; ``p:runners`` — set of bound runner ids;
* ``p:lease:<name>`` — hash ``owner``, ``token``, ``expires_us`` (µs since the epoch, as
  the caller's clock said); ``p:lease-token:<name>`` — the fencing counter, which only
  ever grows (it survives releases);
* ``p:pools`` — hash pool name → config JSON.

The job script derives the old index keys from the stored record, so in a Valkey Cluster
all keys must share one slot: put a hash tag in the prefix (``{runs-fleet}``). The
outbox script (create a job and send its message in one step) also writes the queue's
stream, so with a cluster the queue name must carry the same hash tag.
"""

from __future__ import annotations

from runs_fleet_valkey import queue_scripts

_WRITE_JOB = """
-- Write a job record and add it to the indexes of its status and pool.
local function write_job(key, p, id, version, status, pool, data)
  redis.call('HSET', key, 'version', version, 'status', status, 'data', data)
  redis.call('SADD', p .. ':jobs-all', id)
  redis.call('SADD', p .. ':jobs-by-status:' .. status, id)
  if pool ~= '' then
    redis.call('HSET', key, 'pool', pool)
    redis.call('SADD', p .. ':jobs-by-pool:' .. pool, id)
  end
end
"""

PUT_JOB = (
    _WRITE_JOB
    + """
-- KEYS: job hash. ARGV: prefix, job id, expected version ('' = create), new version,
--       status, pool ('' = none), data.
-- Returns {1, new version} when written, else {0, stored version or -1 when missing}.
local key, p, id = KEYS[1], ARGV[1], ARGV[2]
local stored = redis.call('HGET', key, 'version')
if ARGV[3] == '' then
  if stored then return {0, tonumber(stored)} end
else
  if not stored then return {0, -1} end
  if stored ~= ARGV[3] then return {0, tonumber(stored)} end
  local old = redis.call('HMGET', key, 'status', 'pool')
  if old[1] then redis.call('SREM', p .. ':jobs-by-status:' .. old[1], id) end
  if old[2] then redis.call('SREM', p .. ':jobs-by-pool:' .. old[2], id) end
  redis.call('HDEL', key, 'pool')
end
write_job(key, p, id, ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return {1, tonumber(ARGV[4])}
"""
)

CREATE_JOB_AND_SEND = (
    _WRITE_JOB
    + queue_scripts.SEND_FUNCTION
    + """
-- KEYS: job hash, stream, dedup key. ARGV: prefix, job id, status, pool ('' = none),
--       data, then send's payload, dedup id, max length, dedup TTL (ms).
-- Returns 1 when the job was created (and its message sent), 0 when it existed.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
write_job(KEYS[1], ARGV[1], ARGV[2], 1, ARGV[3], ARGV[4], ARGV[5])
send(KEYS[2], KEYS[3], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
return 1
"""
)

ASSIGN_RUNNER = """
-- KEYS: runner hash, runner index. ARGV: runner id, job id, data. 1 when bound.
if redis.call('HSETNX', KEYS[1], 'job_id', ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

RELEASE_RUNNER = """
-- KEYS: runner hash, runner index. ARGV: runner id, job id. 1 when released.
if redis.call('HGET', KEYS[1], 'job_id') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

ACQUIRE_LEASE = """
-- KEYS: lease hash, fencing counter. ARGV: owner, now (us), expires (us).
-- Returns the token of the holding, or nil when another owner holds a valid lease.
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token', 'expires_us')
if cur[1] and tonumber(ARGV[2]) < tonumber(cur[3]) then
  if cur[1] ~= ARGV[1] then return nil end
  redis.call('HSET', KEYS[1], 'expires_us', ARGV[3])
  return tonumber(cur[2])
end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'expires_us', ARGV[3])
return token
"""

RENEW_LEASE = """
-- KEYS: lease hash. ARGV: owner, token, expires (us). 1 when still held and extended.
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'expires_us', ARGV[3])
return 1
"""

RELEASE_LEASE = """
-- KEYS: lease hash. ARGV: owner, token. 1 when released.
local cur = redis.call('HMGET', KEYS[1], 'owner', 'token')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
