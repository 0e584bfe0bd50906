-- Admission and budget reservation in one step: checks every rate and concurrency counter,
-- then (when every one passes and a reservation is asked for) the kill switch and every
-- budget counter, and charges all of them only if all pass. A reservation that fails thus
-- leaves the admission undone: nothing at all is written.
-- KEYS[1]: this node's liveness key; KEYS[2]: the kill-switch set; KEYS[3..2+n]: one
-- counter per check; KEYS[3+n..]: budget counters (hashes with fields spent and reserved,
-- in nano-USD).
-- ARGV[1]: this node's id; ARGV[2]: liveness TTL (ms); ARGV[3]: prefix of liveness keys;
-- ARGV[4]: n, the number of checks; then three per check: kind ('r' rate, 'c'
-- concurrency), limit, cost; then the reservation: asked (1/0), amount (nano-USD), number
-- k of kill-switch entries, the k entries, then three per budget counter: limit, enforce
-- (1/0), expiry (Unix ms).
-- Returns {admitted (0/1), reservation (-1 not tried, 0 granted, 1 a budget is spent,
-- 2 a kill-switch entry is set), index of that budget or entry (-1), then four per check:
-- allowed, remaining, reset_ms, retry_ms (-1 when waiting cannot help or is unknown), then
-- when granted the spend of every budget counter before this reservation}.
-- Rate counters are GCRA (see gcra.rs): the stored value is the theoretical arrival time
-- in milliseconds of the server clock, so every node shares one clock. A budget counter
-- refuses once spent + reserved reaches its limit, so all reservations together overshoot
-- the limit by less than one reservation.
local period = 60000
local eps = 1e-6
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local n = tonumber(ARGV[4])
local out = {1, -1, -1}
local writes = {}
for i = 1, n do
  local key = KEYS[2 + i]
  local at = 5 + (i - 1) * 3
  local kind, limit, cost = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local allowed, remaining, reset, retry = 0, 0, 0, -1
  if kind == 'r' then
    local interval = period / limit
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local inc = cost * interval
    local new_tat = tat + inc
    if inc <= period + eps and new_tat - period <= now + eps then
      allowed = 1
      remaining = math.floor((period - (new_tat - now)) / interval + eps)
      reset = math.ceil(new_tat - now)
      retry = 0
      writes[i] = new_tat
    else
      remaining = math.floor((period - (tat - now)) / interval + eps)
      reset = math.ceil(tat - now)
      if inc <= period + eps then retry = math.ceil(new_tat - period - now) end
    end
    if remaining < 0 then remaining = 0 end
  else
    -- One field per node; a node whose liveness key expired no longer holds slots.
    local used = 0
    local fields = redis.call('HGETALL', key)
    for j = 1, #fields, 2 do
      if fields[j] == ARGV[1] or redis.call('EXISTS', ARGV[3] .. fields[j]) == 1 then
        used = used + tonumber(fields[j + 1])
      else
        redis.call('HDEL', key, fields[j])
      end
    end
    if used < limit then
      allowed = 1
      remaining = limit - used - 1
    else
      remaining = math.max(limit - used, 0)
    end
  end
  if allowed == 0 then out[1] = 0 end
  table.insert(out, allowed)
  table.insert(out, remaining)
  table.insert(out, reset)
  table.insert(out, retry)
end
if out[1] == 0 then return out end

local r = 5 + n * 3
local spent = {}
if ARGV[r] == '1' then
  local amount = ARGV[r + 1]
  local k = tonumber(ARGV[r + 2])
  for j = 1, k do
    if redis.call('SISMEMBER', KEYS[2], ARGV[r + 2 + j]) == 1 then
      out[1], out[2], out[3] = 0, 2, j - 1
      return out
    end
  end
  local lines = r + 3 + k
  for i = 3 + n, #KEYS do
    local at = lines + (i - 3 - n) * 3
    local s = tonumber(redis.call('HGET', KEYS[i], 'spent') or '0')
    local held = tonumber(redis.call('HGET', KEYS[i], 'reserved') or '0')
    if ARGV[at + 1] == '1' and s + held >= tonumber(ARGV[at]) then
      out[1], out[2], out[3] = 0, 1, i - 3 - n
      return out
    end
    table.insert(spent, s)
  end
  out[2] = 0
  for i = 3 + n, #KEYS do
    local at = lines + (i - 3 - n) * 3
    redis.call('HINCRBY', KEYS[i], 'reserved', amount)
    redis.call('PEXPIREAT', KEYS[i], ARGV[at + 2])
  end
end

for i = 1, n do
  local key = KEYS[2 + i]
  if ARGV[5 + (i - 1) * 3] == 'r' then
    local ttl = math.ceil(writes[i] - now) + 1000
    redis.call('SET', key, string.format('%.3f', writes[i]), 'PX', tostring(ttl))
  else
    redis.call('HINCRBY', key, ARGV[1], 1)
  end
end
for _, s in ipairs(spent) do table.insert(out, s) end
return out
