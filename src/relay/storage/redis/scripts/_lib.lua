-- _lib.lua: the prelude of every script (not a script of its own).
--
-- relay.storage.redis.scripts prepends `local TEMPLATES = {...}` (the key templates of
-- relay/storage/redis/keys.py, the one place key names are defined) and then this file to each
-- operation's .lua file, so every script is self-contained on the server.
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

local PREFIX = KEYS[1]

local function key(name, ...)
  return PREFIX .. ':' .. string.format(TEMPLATES[name], ...)
end

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

-- The fields the index helpers and the state machine read, in one HMGET per job (the chained jobs'
-- specs too: reading them here saves a call per finished job).
local function load(id)
  local v = redis.call('HMGET', key('job', id), 'state', 'queue', 'kind', 'priority', 'run_at', 'seq',
    'lease_expires_at', 'finished_at', 'lease_token', 'attempt', 'max_retries', 'lease_us',
    'cancel_requested', 'idempotency_key', 'on_success_spec', 'on_failure_spec')
  if not v[1] then
    return nil
  end
  return {
    id = id, state = v[1], queue = v[2], kind = v[3], priority = tonumber(v[4]), run_at = tonumber(v[5]),
    seq = tonumber(v[6]), lease_expires_at = v[7] and tonumber(v[7]), finished_at = v[8] and tonumber(v[8]),
    lease_token = v[9], attempt = tonumber(v[10]), max_retries = tonumber(v[11]),
    lease_us = tonumber(v[12]), cancel_requested = v[13] == '1', idempotency_key = v[14],
    on_success_spec = v[15], on_failure_spec = v[16],
  }
end

-- "<run_at %016d><seq %016d><id>": within one priority (the score), Redis orders members by bytes.
local function ready_member(j)
  local run_at = math.min(math.max(j.run_at, 0), MAX_MEMBER_TIME)
  return string.format('%016.0f%016.0f', run_at, j.seq) .. j.id
end

-- The state-specific structure of a job: where the claim, the scheduler, the reaper and the pruner
-- look for it. Returns key, score, member.
local function placement(j)
  if j.state == 'pending' then
    return key('ready', j.kind, j.queue), fmt(-j.priority), ready_member(j)
  elseif WAITING[j.state] then
    return key('waiting', j.kind, j.queue), fmt(j.run_at), j.id
  elseif j.state == 'running' then
    return key('running'), fmt(j.lease_expires_at), j.id
  end
  return key('finished', j.state), fmt(j.finished_at), j.id
end

local function index(j)
  redis.call('ZADD', key('idx', j.state, j.queue), fmt(j.seq), j.id)
  local k, score, member = placement(j)
  redis.call('ZADD', k, score, member)
end

-- Call before changing any field placement() reads (state, run_at, lease, finished_at).
local function unindex(j)
  redis.call('ZREM', key('idx', j.state, j.queue), j.id)
  local k, _, member = placement(j)
  redis.call('ZREM', k, member)
end

-- Writes j's state (with updated_at = now) and the fields placement() reads, plus `extra` (a flat
-- list of field, value), then indexes j under its new state. Pair with unindex() before the change.
local function store(j, extra)
  local args = {key('job', j.id), 'state', j.state, 'updated_at', NOW_S, 'run_at', fmt(j.run_at)}
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
  redis.call('HDEL', key('job', j.id), 'lease_token', 'lease_expires_at')
  j.lease_token = nil
  j.lease_expires_at = nil
end

-- Appends one error (JSON object text, see relay.storage.redis.codec) to the job's JSON array.
local function add_error(id, err)
  if err == nil or err == '' then
    return
  end
  local k = key('job', id)
  local errors = redis.call('HGET', k, 'errors')
  if errors == '[]' then
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

-- A job to insert, packed by relay.storage.redis.codec.pack_new_job starting at a[i]:
--   id ('' = make one), idempotency key ('' = none), run_at ('' = now + delay), delay (µs), queue,
--   kind, priority, n, then n field/value pairs stored as they are. Returns the spec and the next i.
local function parse_spec(a, i)
  local s = {id = a[i], idem = a[i + 1], run_at = a[i + 2], delay = a[i + 3], queue = a[i + 4],
    kind = a[i + 5], priority = a[i + 6], fields = {}}
  local n = tonumber(a[i + 7])
  for x = i + 8, i + 7 + 2 * n do
    s.fields[#s.fields + 1] = a[x]
  end
  return s, i + 8 + 2 * n
end

-- Writes a new job (its id free and its idempotency key unused: the caller checked) in one HSET.
-- Returns the job as indexed.
local function write_job(s, parent_id, batch)
  local seq = redis.call('INCR', key('seq'))
  local id = s.id ~= '' and s.id or new_id(seq)
  local run_at = s.run_at ~= '' and tonumber(s.run_at) or NOW + tonumber(s.delay)
  local state = run_at > NOW and 'scheduled' or 'pending'
  local args = {key('job', id), 'id', id, 'seq', fmt(seq), 'state', state, 'queue', s.queue, 'kind', s.kind,
    'priority', s.priority, 'run_at', fmt(run_at), 'created_at', NOW_S, 'updated_at', NOW_S, 'attempt', '0',
    'errors', '[]'}
  for _, v in ipairs(s.fields) do
    args[#args + 1] = v
  end
  if parent_id then
    args[#args + 1] = 'parent_id'
    args[#args + 1] = parent_id
  end
  if batch then
    args[#args + 1] = 'batch'
    args[#args + 1] = batch
  end
  if s.idem ~= '' then
    args[#args + 1] = 'idempotency_key'
    args[#args + 1] = s.idem
    redis.call('HSET', key('idem'), s.idem, id)
  end
  redis.call('HSET', unpack(args))
  redis.call('ZADD', key('jobs'), fmt(seq), id)
  redis.call('HSETNX', key('queues'), s.queue, '0')
  local j = {id = id, state = state, queue = s.queue, kind = s.kind, priority = tonumber(s.priority),
    run_at = run_at, seq = seq}
  index(j)
  return j
end

-- Inserts a parent's on_success / on_failure job (spec_json: the packed spec as a JSON array). A
-- chain whose idempotency key or id is taken counts as enqueued already, as on every backend.
local function insert_chain(spec_json, parent_id, woken)
  if not spec_json then
    return
  end
  local s = parse_spec(cjson.decode(spec_json), 1)
  if s.idem ~= '' and redis.call('HEXISTS', key('idem'), s.idem) == 1 then
    return
  end
  if s.id ~= '' and redis.call('EXISTS', key('job', s.id)) == 1 then
    return
  end
  local j = write_job(s, parent_id, nil)
  if j.state == 'pending' then
    woken[j.queue] = true
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
  local ids = redis.call('ZRANGEBYSCORE', key('waiting', kind, queue), '-inf', NOW_S)
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
  redis.call('DEL', key('job', j.id), key('logs', j.id))
  redis.call('ZREM', key('jobs'), j.id)
  if j.idempotency_key and redis.call('HGET', key('idem'), j.idempotency_key) == j.id then
    redis.call('HDEL', key('idem'), j.idempotency_key)
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
