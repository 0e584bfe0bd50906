-- Batched give-backs. ARGV[1]: this node's id; then four per key of KEYS: kind, a, b, c.
-- 'r' rate counter: a = limit per minute, b = units to add (negative gives back)
-- 'c' concurrency: a = change of this node's in-flight count (negative releases)
-- 'h' concurrency: a = this node's exact in-flight count (after reconnecting)
-- 'b' budget: a = reserved nano-USD to release (as a negative number), b = spent nano-USD
--     to add, c = expiry (Unix ms; 0 keeps the key's own)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local key = KEYS[i]
  local at = 2 + (i - 1) * 4
  local kind, a, b, c = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  if kind == 'r' then
    local interval = 60000 / tonumber(a)
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    tat = tat + tonumber(b) * interval
    if tat > now then
      redis.call('SET', key, string.format('%.3f', tat), 'PX', tostring(math.ceil(tat - now) + 1000))
    else
      redis.call('DEL', key)
    end
  elseif kind == 'c' then
    if redis.call('HINCRBY', key, ARGV[1], a) <= 0 then redis.call('HDEL', key, ARGV[1]) end
  elseif kind == 'h' then
    if tonumber(a) <= 0 then
      redis.call('HDEL', key, ARGV[1])
    else
      redis.call('HSET', key, ARGV[1], a)
    end
  elseif kind == 'b' then
    if tonumber(a) ~= 0 and redis.call('HINCRBY', key, 'reserved', a) < 0 then
      redis.call('HSET', key, 'reserved', '0')
    end
    if tonumber(b) ~= 0 then redis.call('HINCRBY', key, 'spent', b) end
    if tonumber(c) > 0 then redis.call('PEXPIREAT', key, c) end
  end
end
return 1
