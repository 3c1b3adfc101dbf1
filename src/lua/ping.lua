-- ping.lua - liveness probe through the scripting engine.
-- KEYS: none needed. ARGV[1] (optional): a message PING echoes back.
-- Returns PONG, or ARGV[1] when given. Used by the unit tests of redis.c
-- to exercise EVALSHA and the EVAL fallback on NOSCRIPT.
if #ARGV > 0 then
    return redis.call('PING', ARGV[1])
end
return redis.call('PING')
