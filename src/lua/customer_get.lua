-- customer_get.lua - one customer by id or by identity, merges followed.
--
-- ARGV: 1 prefix, 2 "id" or "identity", 3 the id ("cu_<n>") or the
-- identity ("email:<addr>", "phone:<e164>", "chat:<token>").
-- Returns {HGETALL of the surviving customer, SMEMBERS of its identities};
-- store.c turns that into the customer JSON object.
-- Errors: "NOTFOUND ...", "INVALID ...".

local P = ARGV[1]
local function resolve(id) return sb_resolve(P, id) end -- common.lua


local id
if ARGV[2] == 'id' then
    if not string.match(ARGV[3], '^cu_%d+$') then
        return redis.error_reply('NOTFOUND no such customer')
    end
    id = ARGV[3]
elseif ARGV[2] == 'identity' then
    if not string.match(ARGV[3], '^[a-z]+:.') or #ARGV[3] > 600 then
        return redis.error_reply('INVALID identity must be type:value')
    end
    id = redis.call('HGET', P .. 'identity', ARGV[3])
    if not id then return redis.error_reply('NOTFOUND no such identity') end
else
    return redis.error_reply('INVALID lookup mode')
end
local cust = resolve(id)
if not cust then return redis.error_reply('NOTFOUND no such customer') end
return { redis.call('HGETALL', P .. 'cust:' .. cust),
         redis.call('SMEMBERS', P .. 'cust:' .. cust .. ':ids') }
