-- auth_login.lua - failed-login accounting and session creation, atomically.
-- KEYS[1] per-account failure counter; KEYS[2] per-address failure counter;
-- KEYS[3] session key (only for "ok").
-- ARGV[1] mode: "check", "fail" or "ok"; ARGV[2] window (ms);
-- for "ok": ARGV[3] user, ARGV[4] now (ms), ARGV[5] absolute expiry (ms),
-- ARGV[6] idle (ms).
-- check/fail return {account failures, account ttl ms, address failures,
-- address ttl ms}; ok returns 1.
local mode = ARGV[1]
if mode == 'fail' then
    for i = 1, 2 do
        redis.call('INCR', KEYS[i])
        redis.call('PEXPIRE', KEYS[i], ARGV[2], 'NX')
    end
elseif mode == 'ok' then
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[3], 'user', ARGV[3], 'created', ARGV[4],
               'abs', ARGV[5])
    redis.call('PEXPIRE', KEYS[3], ARGV[6])
    return 1
end
local r = {}
for i = 1, 2 do
    local n = tonumber(redis.call('GET', KEYS[i]) or '0')
    r[#r + 1] = n
    r[#r + 1] = redis.call('PTTL', KEYS[i])
end
return r
