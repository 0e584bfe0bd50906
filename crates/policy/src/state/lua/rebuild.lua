-- Start-up rebuild of one budget counter from the ledger: spent becomes at least ARGV[1]
-- (nano-USD; a counter that already knows more keeps it), expiry ARGV[2] (Unix ms), and
-- thresholds ARGV[3..] (nano-USD) already passed are marked fired so they do not repeat.
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if tonumber(ARGV[1]) > spent then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1])
  spent = tonumber(ARGV[1])
end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
for q = 3, #ARGV do
  if spent >= tonumber(ARGV[q]) then redis.call('HSETNX', KEYS[1], 'alert:' .. ARGV[q], '1') end
end
return 1
