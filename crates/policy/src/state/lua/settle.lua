-- Settling a reservation. KEYS: budget counters.
-- ARGV[1]: reserved nano-USD to release (as a negative number); ARGV[2]: spent nano-USD to
-- add; then per counter: expiry (Unix ms), number n of thresholds, n thresholds (nano-USD).
-- A threshold fires once per counter (so once per period): HSETNX marks it.
-- Returns three strings per threshold crossed now: counter index, threshold, spent.
local out = {}
local at = 3
for i = 1, #KEYS do
  local key = KEYS[i]
  if redis.call('HINCRBY', key, 'reserved', ARGV[1]) < 0 then
    redis.call('HSET', key, 'reserved', '0')
  end
  redis.call('HINCRBY', key, 'spent', ARGV[2])
  redis.call('PEXPIREAT', key, ARGV[at])
  local spent = redis.call('HGET', key, 'spent')
  local n = tonumber(ARGV[at + 1])
  for q = 1, n do
    local threshold = ARGV[at + 1 + q]
    if tonumber(spent) >= tonumber(threshold)
        and redis.call('HSETNX', key, 'alert:' .. threshold, '1') == 1 then
      table.insert(out, tostring(i - 1))
      table.insert(out, threshold)
      table.insert(out, spent)
    end
  end
  at = at + 2 + n
end
return out
