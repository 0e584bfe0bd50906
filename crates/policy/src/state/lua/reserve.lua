-- Budget reservation. KEYS[1]: the kill-switch set; KEYS[2..]: budget counters (hashes
-- with fields spent and reserved, in nano-USD).
-- ARGV[1]: the amount (nano-USD); ARGV[2]: number k of kill-switch entries to test;
-- ARGV[3..2+k]: the entries; then three per counter: limit, enforce (1/0), expiry (Unix ms).
-- A counter refuses once spent + reserved reaches its limit, so all reservations together
-- overshoot the limit by less than one reservation.
-- Returns {'0', spent...} when reserved on every counter, {'1', i} when counter i is spent,
-- {'2', j} when kill-switch entry j is set.
local k = tonumber(ARGV[2])
for j = 1, k do
  if redis.call('SISMEMBER', KEYS[1], ARGV[2 + j]) == 1 then return {'2', tostring(j - 1)} end
end
local out = {'0'}
for i = 2, #KEYS do
  local at = 3 + k + (i - 2) * 3
  local spent = redis.call('HGET', KEYS[i], 'spent') or '0'
  local reserved = redis.call('HGET', KEYS[i], 'reserved') or '0'
  if ARGV[at + 1] == '1' and tonumber(spent) + tonumber(reserved) >= tonumber(ARGV[at]) then
    return {'1', tostring(i - 2)}
  end
  table.insert(out, spent)
end
for i = 2, #KEYS do
  local at = 3 + k + (i - 2) * 3
  redis.call('HINCRBY', KEYS[i], 'reserved', ARGV[1])
  redis.call('PEXPIREAT', KEYS[i], ARGV[at + 2])
end
return out
