-- Admission: checks every counter and charges all of them only if all pass.
-- KEYS[1]: this node's liveness key; KEYS[2..]: one counter per check.
-- ARGV[1]: this node's id; ARGV[2]: liveness TTL (ms); ARGV[3]: prefix of liveness keys;
-- then three per check: kind ('r' rate, 'c' concurrency, 'n' lifetime count), limit, cost.
-- Returns {admitted (0/1), then four per check: allowed, remaining, reset_ms, retry_ms}
-- where retry_ms is -1 when waiting cannot help or is unknown.
-- Rate counters are GCRA (see gcra.rs): the stored value is the theoretical arrival time
-- in milliseconds of the server clock, so every node shares one clock.
local period = 60000
local eps = 1e-6
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
local out = {1}
local writes = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local at = 4 + (i - 2) * 3
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
    local used = 0
    if kind == 'c' then
      -- One field per node; a node whose liveness key expired no longer holds slots.
      local fields = redis.call('HGETALL', key)
      for j = 1, #fields, 2 do
        if fields[j] == ARGV[1] or redis.call('EXISTS', ARGV[3] .. fields[j]) == 1 then
          used = used + tonumber(fields[j + 1])
        else
          redis.call('HDEL', key, fields[j])
        end
      end
    else
      used = tonumber(redis.call('GET', key) or '0')
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
if out[1] == 1 then
  for i = 2, #KEYS do
    local kind = ARGV[4 + (i - 2) * 3]
    if kind == 'r' then
      local ttl = math.ceil(writes[i] - now) + 1000
      redis.call('SET', KEYS[i], string.format('%.3f', writes[i]), 'PX', tostring(ttl))
    elseif kind == 'c' then
      redis.call('HINCRBY', KEYS[i], ARGV[1], 1)
    else
      redis.call('INCR', KEYS[i])
    end
  end
end
return out
