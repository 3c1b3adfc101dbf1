-- customer_merge.lua - merge customer `from` into customer `into`.
--
-- ARGV: 1 prefix, 2 into, 3 from. Both must exist and be live (not merged
-- away themselves), and differ: else CONFLICT. What moves:
--   identities (the identity hash re-pointed, the ids sets unioned);
--   conversations (their customer field, the convs zset; an open
--     conversation per channel is kept only where `into` has none);
--   the timeline (ZUNIONSTORE; scores are exact, so order interleaves);
--   merge proposals (those between the two are dropped, others re-pointed);
--   customers formerly merged into `from` (re-pointed, so chains stay one
--     hop long: cust:<id>:absorbed remembers them);
--   profile: empty fields of `into` are filled from `from`, tags unioned,
--     opt-outs of `from` kept where `into` has none.
-- Entries already in the log keep the customer id they were written with.
-- `from` keeps its hash with merged_into = into. Returns what
-- customer_get.lua returns, for `into`.

local P = ARGV[1]
local fail = sb_fail -- common.lua


local function enc_array(t)
    if #t == 0 then return '[]' end
    return cjson.encode(t)
end

local function decode(s, default)
    if not s then return default end
    local ok, v = pcall(cjson.decode, s)
    if not ok or type(v) ~= 'table' then return default end
    return v
end

local function proposal_json(a, b, ident, at)
    return '{"a":' .. cjson.encode(a) .. ',"b":' .. cjson.encode(b) ..
        ',"identity":' .. cjson.encode(ident) .. ',"at":' .. at .. '}'
end

local function main()
    local into, from = ARGV[2], ARGV[3]
    for _, id in ipairs({ into, from }) do
        if not string.match(id, '^cu_%d+$') then
            fail('NOTFOUND', 'no such customer ' .. id)
        end
    end
    if into == from then
        fail('CONFLICT', 'cannot merge a customer into itself')
    end
    local ki, kf = P .. 'cust:' .. into, P .. 'cust:' .. from
    local vi = redis.call('HMGET', ki, 'id', 'merged_into')
    local vf = redis.call('HMGET', kf, 'id', 'merged_into')
    if not vi[1] then fail('NOTFOUND', 'no such customer ' .. into) end
    if not vf[1] then fail('NOTFOUND', 'no such customer ' .. from) end
    if vi[2] and vi[2] ~= '' then
        fail('CONFLICT', into .. ' was merged into ' .. vi[2])
    end
    if vf[2] and vf[2] ~= '' then
        fail('CONFLICT', from .. ' was merged into ' .. vf[2])
    end

    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

    -- Identities.
    for _, ident in ipairs(redis.call('SMEMBERS', kf .. ':ids')) do
        redis.call('HSET', P .. 'identity', ident, into)
        redis.call('SADD', ki .. ':ids', ident)
    end
    redis.call('DEL', kf .. ':ids')

    -- Conversations.
    local open = redis.call('HGETALL', kf .. ':open')
    for i = 1, #open, 2 do
        local mine = redis.call('HGET', ki .. ':open', open[i])
        local st = mine and redis.call('HGET', P .. 'conv:' .. mine, 'state')
        if not st or st == 'resolved' then
            redis.call('HSET', ki .. ':open', open[i], open[i + 1])
        end
    end
    redis.call('DEL', kf .. ':open')
    local convs = redis.call('ZRANGE', kf .. ':convs', 0, -1, 'WITHSCORES')
    for i = 1, #convs, 2 do
        redis.call('HSET', P .. 'conv:' .. convs[i], 'customer', into)
        redis.call('ZADD', ki .. ':convs', convs[i + 1], convs[i])
    end
    redis.call('DEL', kf .. ':convs')

    -- Timeline.
    redis.call('ZUNIONSTORE', ki .. ':tl', 2, ki .. ':tl', kf .. ':tl',
        'AGGREGATE', 'MIN')
    redis.call('DEL', kf .. ':tl')

    -- Merge proposals.
    local zkey = P .. 'merge:proposals'
    for _, m in ipairs(redis.call('SMEMBERS', kf .. ':proposals')) do
        local p = decode(m, {})
        local score = redis.call('ZSCORE', zkey, m)
        redis.call('ZREM', zkey, m)
        for _, side in ipairs({ p.a, p.b }) do
            if type(side) == 'string' and string.match(side, '^cu_%d+$') then
                redis.call('SREM', P .. 'cust:' .. side .. ':proposals', m)
            end
        end
        local a, b = p.a, p.b
        if a == from then a = into end
        if b == from then b = into end
        if type(a) == 'string' and type(b) == 'string' and a ~= b and
            type(p.identity) == 'string' then
            local at = tonumber(p.at) or now
            local nm = proposal_json(a, b, p.identity, string.format('%d', at))
            redis.call('ZADD', zkey, score or at, nm)
            redis.call('SADD', P .. 'cust:' .. a .. ':proposals', nm)
            redis.call('SADD', P .. 'cust:' .. b .. ':proposals', nm)
        end
    end
    redis.call('DEL', kf .. ':proposals')

    -- Customers merged into `from` earlier now point at `into`.
    local absorbed = redis.call('SMEMBERS', kf .. ':absorbed')
    for _, old in ipairs(absorbed) do
        redis.call('HSET', P .. 'cust:' .. old, 'merged_into', into)
        redis.call('SADD', ki .. ':absorbed', old)
    end
    redis.call('DEL', kf .. ':absorbed')
    redis.call('SADD', ki .. ':absorbed', from)

    -- Profile.
    local fi = redis.call('HMGET', ki, 'name', 'locale', 'timezone', 'tier',
        'curator', 'tags', 'prefs')
    local ff = redis.call('HMGET', kf, 'name', 'locale', 'timezone', 'tier',
        'curator', 'tags', 'prefs')
    local names = { 'name', 'locale', 'timezone', 'tier', 'curator' }
    local sets = {}
    for i, f in ipairs(names) do
        if (not fi[i] or fi[i] == '') and ff[i] and ff[i] ~= '' then
            sets[#sets + 1] = f
            sets[#sets + 1] = ff[i]
        end
    end
    local tags, seen = {}, {}
    for _, src in ipairs({ decode(fi[6], {}), decode(ff[6], {}) }) do
        for _, tag in ipairs(src) do
            if type(tag) == 'string' and not seen[tag] then
                seen[tag] = true
                tags[#tags + 1] = tag
            end
        end
    end
    local pi, pf = decode(fi[7], {}), decode(ff[7], {})
    local order = pi.order
    if type(order) ~= 'table' or #order == 0 then order = pf.order end
    if type(order) ~= 'table' then order = {} end
    local opt_out = type(pi.opt_out) == 'table' and pi.opt_out or {}
    if type(pf.opt_out) == 'table' then
        for ch, o in pairs(pf.opt_out) do
            if opt_out[ch] == nil then opt_out[ch] = o end
        end
    end
    local oo = '{}'
    if next(opt_out) ~= nil then oo = cjson.encode(opt_out) end
    local quiet = type(pi.quiet_hours) == 'table' and pi.quiet_hours or
        (type(pf.quiet_hours) == 'table' and pf.quiet_hours or nil)
    local qh = ''
    if quiet then qh = ',"quiet_hours":' .. cjson.encode(quiet) end
    redis.call('HSET', ki, 'tags', enc_array(tags), 'prefs',
        '{"order":' .. enc_array(order) .. ',"opt_out":' .. oo .. qh .. '}',
        'updated', now, unpack(sets))
    redis.call('HSET', kf, 'merged_into', into, 'updated', now)
    return { redis.call('HGETALL', ki), redis.call('SMEMBERS', ki .. ':ids') }
end

return sb_run(main)
