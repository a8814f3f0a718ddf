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
all keys must share one slot: put a hash tag in the prefix (``{runs-fleet}``).
"""

from __future__ import annotations

PUT_JOB = """
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
redis.call('HSET', key, 'version', ARGV[4], 'status', ARGV[5], 'data', ARGV[7])
redis.call('SADD', p .. ':jobs-all', id)
redis.call('SADD', p .. ':jobs-by-status:' .. ARGV[5], id)
if ARGV[6] ~= '' then
  redis.call('HSET', key, 'pool', ARGV[6])
  redis.call('SADD', p .. ':jobs-by-pool:' .. ARGV[6], id)
end
return {1, tonumber(ARGV[4])}
"""

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
