-- _lib.lua: the prelude of every script (not a script of its own).
--
-- relay.storage.redis.scripts prepends `local TEMPLATES = {...}` (the key templates of
-- relay/storage/redis/keys.py, the one place key names are defined), `local READ = {...}` (the job
-- fields Python reads, relay.storage.redis.codec.FIELDS) and then this file to each operation's .lua
-- file, so every script is self-contained on the server.
--
-- Conventions shared by every script:
--   KEYS[1]  the key prefix of the store (URL ?prefix=, default "relay"); every key is built from it
--            with key(name, ...). Redis Cluster is not supported: scripts derive job keys at run time.
--   ARGV[1]  the storage time in integer microseconds since the epoch when a test clock is injected
--            into the backend, or '' to use the Redis server's TIME (never a worker's clock).
--   ARGV[2…] the operation's own arguments, documented at the top of each script.
--
-- Times and seqs are integers held in Lua numbers (doubles, exact below 2^53: until the year 2255).
-- They are written with fmt(): Lua's own tostring would print 1.767e+15 and lose digits.
--
-- Scripts never fail after their first write (Redis does not roll a script back): every check that
-- can refuse an operation comes before any write.
--
-- The job hash (P:job:<id>, see relay.storage.redis.codec): `doc` holds what never changes, encoded
-- by Python and only read by Python; the fields the scripts read or change are fields of their own
-- (with copies of the few parts of the doc they need: queue, kind, score (-priority), max_retries,
-- lease_us, idempotency_key). Absent means: `attempt` 0, `errors` [], `checkpoint` null, anything
-- else None. Scripts return a job as its id and read_job(): the READ fields, values only.

local PREFIX = KEYS[1]

local function key(name, ...)
  return PREFIX .. ':' .. string.format(TEMPLATES[name], ...)
end

-- The hottest key name, built by concatenation (string.format costs more, once per job per call).
local JOB_PREFIX = key('job', '')
local function job_key(id)
  return JOB_PREFIX .. id
end

-- key(name, a, b), made once per script call: the index keys of a batch repeat for every job.
local KEY_CACHE = {}
local function key2(name, a, b)
  local by_a = KEY_CACHE[name]
  if not by_a then
    by_a = {}
    KEY_CACHE[name] = by_a
  end
  local by_b = by_a[a]
  if not by_b then
    by_b = {}
    by_a[a] = by_b
  end
  local k = by_b[b]
  if not k then
    k = key(name, a, b)
    by_b[b] = k
  end
  return k
end

local function key1(name, a)
  return key2(name, a, '')
end

local RUNNING_KEY, IDEM_KEY = key('running'), key('idem')

local function fmt(n)
  return string.format('%.0f', n)
end

local function storage_now()
  if ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local NOW = storage_now()
local NOW_S = fmt(NOW)

local STATES = {'pending', 'scheduled', 'running', 'completed', 'failed', 'dead', 'cancelled'}
local KINDS = {'task', 'shell', 'external'}
local WAITING = {scheduled = true, failed = true}
local MAX_MEMBER_TIME = 9999999999999999
-- Members per ZADD / ZREM of a batch: Lua's unpack() is limited by its C stack (8,000 values).
local BATCH_CHUNK = 1000

-- The fields the index helpers and the state machine read, in one HMGET per job (the chained jobs'
-- specs too: reading them here saves a call per finished job).
local function load(id)
  local v = redis.call('HMGET', job_key(id), 'state', 'queue', 'kind', 'score', 'run_at', 'seq',
    'lease_expires_at', 'finished_at', 'lease_token', 'attempt', 'max_retries', 'lease_us',
    'cancel_requested', 'idempotency_key', 'on_success_spec', 'on_failure_spec')
  if not v[1] then
    return nil
  end
  return {
    id = id, state = v[1], queue = v[2], kind = v[3], score = v[4], run_at = tonumber(v[5]),
    seq = tonumber(v[6]), seq_s = v[6], lease_expires_at = v[7] and tonumber(v[7]),
    finished_at = v[8] and tonumber(v[8]),
    lease_token = v[9], attempt = tonumber(v[10] or '0'), max_retries = tonumber(v[11]),
    lease_us = tonumber(v[12]), cancel_requested = v[13] == '1', idempotency_key = v[14],
    on_success_spec = v[15], on_failure_spec = v[16],
  }
end

-- What Python reads of job `id` (READ, the list relay.storage.redis.codec.FIELDS), for a reply.
local function read_job(id)
  return redis.call('HMGET', job_key(id), unpack(READ))
end

-- The position of each READ field in read_job()'s reply.
local AT = {}
for n, name in ipairs(READ) do
  AT[name] = n
end

-- Sorted-set writes, batched. A script that changes many jobs calls begin_batch() first: zadd() and
-- zrem() then only note the change, and flush_batch() sends the notes of each key as one ZADD or
-- ZREM with many members. A command costs Redis far more than a member does (one call, one AOF
-- entry, one conversion of the arguments), so a claim of 200 jobs sends 4 sorted-set commands
-- instead of 800. Changes keep their order: a ZREM noted after ZADDs on the same key sends those
-- ZADDs first. Until the flush, the script must not read a sorted set it changed (the job hashes
-- are written at once).
local batch_runs, batch_keys = nil, nil

local function begin_batch()
  batch_runs, batch_keys = {}, {}
end

-- A run: the arguments of one pending ZADD (score, member, ...) or ZREM (member, ...) of key k.
local function send_run(k, run)
  local command, step = run.add and 'ZADD' or 'ZREM', BATCH_CHUNK * (run.add and 2 or 1)
  for x = 1, run.n, step do
    redis.call(command, k, unpack(run, x, math.min(x + step - 1, run.n)))
  end
  run.n = 0
end

local function pending_run(k, add)
  local run = batch_runs[k]
  if not run then
    run = {add = add, n = 0}
    batch_runs[k] = run
    batch_keys[#batch_keys + 1] = k
  elseif run.add ~= add then
    send_run(k, run)
    run.add = add
  end
  return run
end

local function zadd(k, score, member)
  if not batch_runs then
    redis.call('ZADD', k, score, member)
    return
  end
  local run = pending_run(k, true)
  local n = run.n
  run[n + 1], run[n + 2], run.n = score, member, n + 2
end

local function zrem(k, member)
  if not batch_runs then
    redis.call('ZREM', k, member)
    return
  end
  local run = pending_run(k, false)
  local n = run.n + 1
  run[n], run.n = member, n
end

local function flush_batch()
  for _, k in ipairs(batch_keys) do
    send_run(k, batch_runs[k])
  end
  batch_runs, batch_keys = nil, nil
end

-- Seqs are stored as 16 digits with leading zeros: the form the ready members need, and a valid
-- sorted-set score all the same.
local function seq_text(seq)
  return string.format('%016.0f', seq)
end

-- The run_at part of a ready member.
local function member_time(run_at)
  return string.format('%016.0f', math.min(math.max(run_at, 0), MAX_MEMBER_TIME))
end
local NOW_MEMBER = member_time(NOW)

-- "<run_at %016d><seq %016d><id>": within one priority (the score), Redis orders members by bytes.
local function ready_member(j)
  return (j.run_at == NOW and NOW_MEMBER or member_time(j.run_at)) .. (j.seq_s or seq_text(j.seq)) .. j.id
end

-- The state-specific structure of a job: where the claim, the scheduler, the reaper and the pruner
-- look for it. Returns key, score, member.
local function placement(j)
  if j.state == 'pending' then
    return key2('ready', j.kind, j.queue), j.score, ready_member(j)
  elseif WAITING[j.state] then
    return key2('waiting', j.kind, j.queue), fmt(j.run_at), j.id
  elseif j.state == 'running' then
    return RUNNING_KEY, fmt(j.lease_expires_at), j.id
  end
  return key1('finished', j.state), fmt(j.finished_at), j.id
end

-- j.seq_s: the seq as stored, when the caller has it already.
local function index(j)
  zadd(key2('idx', j.state, j.queue), j.seq_s or seq_text(j.seq), j.id)
  local k, score, member = placement(j)
  zadd(k, score, member)
end

-- Call before changing any field placement() reads (state, run_at, lease, finished_at).
local function unindex(j)
  zrem(key2('idx', j.state, j.queue), j.id)
  local k, _, member = placement(j)
  zrem(k, member)
end

-- Writes j's state (with updated_at = now) and the fields placement() reads, plus `extra` (a flat
-- list of field, value), then indexes j under its new state. Pair with unindex() before the change.
local function store(j, extra)
  local args = {job_key(j.id), 'state', j.state, 'updated_at', NOW_S, 'run_at', fmt(j.run_at)}
  if j.lease_expires_at then
    args[#args + 1] = 'lease_expires_at'
    args[#args + 1] = fmt(j.lease_expires_at)
  end
  if j.finished_at then
    args[#args + 1] = 'finished_at'
    args[#args + 1] = fmt(j.finished_at)
  end
  for _, v in ipairs(extra or {}) do
    args[#args + 1] = v
  end
  redis.call('HSET', unpack(args))
  index(j)
end

local function clear_lease(j)
  redis.call('HDEL', job_key(j.id), 'lease_token', 'lease_expires_at')
  j.lease_token = nil
  j.lease_expires_at = nil
end

-- Appends one error (JSON object text, see relay.storage.redis.codec) to the job's JSON array.
local function add_error(id, err)
  if err == nil or err == '' then
    return
  end
  local k = job_key(id)
  local errors = redis.call('HGET', k, 'errors')
  if not errors or errors == '[]' then
    errors = '[' .. err .. ']'
  else
    errors = string.sub(errors, 1, -2) .. ',' .. err .. ']'
  end
  redis.call('HSET', k, 'errors', errors)
end

-- A fresh UUIDv7-shaped id for a chained job without a client id: the time in ms, then the job's
-- seq (unique in this store) where UUIDv7 has random bits.
local function new_id(seq)
  local t = string.format('%012x', math.floor(NOW / 1000))
  local s = string.format('%018x', seq)
  return string.sub(t, 1, 8) .. '-' .. string.sub(t, 9, 12) .. '-7' .. string.sub(s, 1, 3) .. '-8' ..
    string.sub(s, 4, 6) .. '-' .. string.sub(s, 7, 18)
end

-- A packed job (relay.storage.redis.codec.pack_new_job): an array of strings, by position. P_SCORE is
-- the ready set's score, -priority, formatted by the caller.
local P_ID, P_IDEM, P_RUN_AT, P_DELAY, P_QUEUE, P_KIND, P_SCORE = 1, 2, 3, 4, 5, 6, 7
local P_MAX_RETRIES, P_LEASE_US, P_DOC, P_CHECKPOINT, P_ON_SUCCESS, P_ON_FAILURE = 8, 9, 10, 11, 12, 13
-- Stored only when not '' (absent means None, or null for the checkpoint).
local OPTIONAL_FIELDS = {{'idempotency_key', P_IDEM}, {'checkpoint', P_CHECKPOINT},
  {'on_success_spec', P_ON_SUCCESS}, {'on_failure_spec', P_ON_FAILURE}}

-- Writes the packed job `p` as job `id` (hash key `k`) with `seq` (its id free and its idempotency
-- key unused: the caller checked), in one HSET, and indexes it (batched or not, as the script chose).
-- `origin_field` is 'batch' (an insert: the call's token) or 'parent_id' (a chained job). The
-- caller adds the idempotency key to P:idem and the queue to P:queues. Returns the job's state.
-- The hot path of every insert: no table and as few formatted numbers as can be.
local function write_job(p, k, id, seq, origin_field, origin)
  local run_at, run_at_s = nil, p[P_RUN_AT]
  if run_at_s == '' then
    local delay = tonumber(p[P_DELAY])
    run_at = NOW + delay
    run_at_s = delay == 0 and NOW_S or fmt(run_at)
  else
    run_at = tonumber(run_at_s)
  end
  local state = run_at > NOW and 'scheduled' or 'pending'
  local seq_s, queue, kind = seq_text(seq), p[P_QUEUE], p[P_KIND]
  redis.call('HSET', k, 'doc', p[P_DOC], 'state', state, 'queue', queue, 'kind', kind,
    'score', p[P_SCORE], 'run_at', run_at_s, 'seq', seq_s, 'created_at', NOW_S, 'updated_at', NOW_S,
    'max_retries', p[P_MAX_RETRIES], 'lease_us', p[P_LEASE_US], origin_field, origin)
  -- The optional fields, in a second HSET only for the jobs that have any.
  if p[P_IDEM] ~= '' or p[P_CHECKPOINT] ~= '' or p[P_ON_SUCCESS] ~= '' or p[P_ON_FAILURE] ~= '' then
    local extra, n = {}, 0
    for _, f in ipairs(OPTIONAL_FIELDS) do
      local value = p[f[2]]
      if value ~= '' then
        extra[n + 1], extra[n + 2], n = f[1], value, n + 2
      end
    end
    redis.call('HSET', k, unpack(extra))
  end
  zadd(key2('idx', state, queue), seq_s, id)
  if state == 'pending' then
    local run_at_member = run_at == NOW and NOW_MEMBER or member_time(run_at)
    zadd(key2('ready', kind, queue), p[P_SCORE], run_at_member .. seq_s .. id)
  else
    zadd(key2('waiting', kind, queue), run_at_s, id)
  end
  return state
end

-- Inserts a parent's on_success / on_failure job (spec_json: the packed job as a JSON array). A
-- chain whose idempotency key or id is taken counts as enqueued already, as on every backend.
local function insert_chain(spec_json, parent_id, woken)
  if not spec_json then
    return
  end
  local p = cjson.decode(spec_json)
  local idem = p[P_IDEM]
  if idem ~= '' and redis.call('HEXISTS', IDEM_KEY, idem) == 1 then
    return
  end
  if p[P_ID] ~= '' and redis.call('EXISTS', job_key(p[P_ID])) == 1 then
    return
  end
  local seq = redis.call('INCR', key('seq'))
  local id = p[P_ID] ~= '' and p[P_ID] or new_id(seq)
  if idem ~= '' then
    redis.call('HSET', IDEM_KEY, idem, id)
  end
  redis.call('HSETNX', key('queues'), p[P_QUEUE], '0')
  if write_job(p, job_key(id), id, seq, 'parent_id', parent_id) == 'pending' then
    woken[p[P_QUEUE]] = true
  end
end

-- Ends a running (or waiting) job in a final state at now, writing `extra` (as store() does) and
-- enqueueing the job of `chain_field` ('on_success_spec' / 'on_failure_spec'), if any.
local function finish_final(j, state, chain_field, woken, extra)
  j.state = state
  j.finished_at = NOW
  store(j, extra)
  if chain_field then
    insert_chain(j[chain_field], j.id, woken)
  end
end

-- Moves the due scheduled / failed jobs of one (kind, queue) to pending; returns how many.
local function promote_due(kind, queue)
  local ids = redis.call('ZRANGEBYSCORE', key2('waiting', kind, queue), '-inf', NOW_S)
  for _, id in ipairs(ids) do
    local j = load(id)
    unindex(j)
    j.state = 'pending'
    store(j, nil)
  end
  return #ids
end

local function delete_job(j)
  unindex(j)
  redis.call('DEL', job_key(j.id), key('logs', j.id))
  if j.idempotency_key and redis.call('HGET', IDEM_KEY, j.idempotency_key) == j.id then
    redis.call('HDEL', IDEM_KEY, j.idempotency_key)
  end
end

-- Wakes workers of `woken` (a set of queue names) in every process: a JSON array [origin, queues...].
local function publish(woken, origin)
  local message = {origin or ''}
  for queue in pairs(woken) do
    message[#message + 1] = queue
  end
  if #message > 1 then
    redis.call('PUBLISH', key('wake'), cjson.encode(message))
  end
end

-- Reads a count-prefixed list from ARGV at i: returns the list and the next i.
local function argv_list(i)
  local n = tonumber(ARGV[i])
  local out = {}
  for x = i + 1, i + n do
    out[#out + 1] = ARGV[x]
  end
  return out, i + n + 1
end
