-- auth_session.lua - look a session up and renew its idle expiry.
-- KEYS[1] session hash key; ARGV[1] now (ms); ARGV[2] idle (ms).
-- Returns {user, absolute expiry} or nil when absent or past its absolute
-- expiry (then it is deleted).
local h = redis.call('HMGET', KEYS[1], 'user', 'abs')
if not h[1] then
    return nil
end
if tonumber(h[2]) <= tonumber(ARGV[1]) then
    redis.call('DEL', KEYS[1])
    return nil
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {h[1], h[2]}
