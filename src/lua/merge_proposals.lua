-- merge_proposals.lua - pending merge proposals of one customer.
--
-- ARGV: 1 prefix, 2 customer id (a merged id reads the survivor's).
-- Returns {surviving id, proposal JSON, ...} (each member as stored in
-- P..'merge:proposals', {"a","b","identity","at"}).
-- Errors: "NOTFOUND ...".

local P = ARGV[1]
local function resolve(id) return sb_resolve(P, id) end -- common.lua


local cust = string.match(ARGV[2], '^cu_%d+$') and resolve(ARGV[2])
if not cust then return redis.error_reply('NOTFOUND no such customer') end
local out = { cust }
for _, m in ipairs(redis.call('SMEMBERS', P .. 'cust:' .. cust ..
    ':proposals')) do
    out[#out + 1] = m
end
return out
