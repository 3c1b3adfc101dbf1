-- route_read.lua - read-only views of the routing state (see router.h).
--
-- Queues with their waiting counts, longest wait and SLA breaches; agents
-- with presence, load and capacity; conversations by state, queue and
-- agent; one conversation's place in its queue. Writes nothing. Keys are
-- those of route_engine.lua (docs/routing.md).
--
-- ARGV: 1 prefix, 2 op, 3 now (ms), 4 routing config (JSON), then per op:
--   queues | agents | conversations state queue agent limit |
--   position conv
-- Returns one JSON string. Errors: "INVALID ...", "NOTFOUND ...".

local P = ARGV[1]
local OP = ARGV[2]
local NOWS = ARGV[3]
local NOW
local CFG
local NULL, ARR = SB_NULL, SB_ARR -- common.lua
local fail, arr, enc = sb_fail, sb_arr, sb_enc
local SCAN_MAX = 5000 -- index entries looked at per state for a listing




local function nz(s)
    if s == nil or s == false or s == '' then return NULL end
    return s
end

local function ms(s)
    return tonumber(s) or NULL
end

-- Stored text (a subject) as valid UTF-8: bad bytes become U+FFFD, so the
-- reply is always JSON that jansson accepts.
local function clean(s)
    if not string.find(s, '[\128-\255]') then return s end
    local out, i, n = {}, 1, #s
    while i <= n do
        local b = string.byte(s, i)
        local len, lo = 0, 0
        if b < 0x80 then len = 1
        elseif b >= 0xc2 and b <= 0xdf then len, lo = 2, 0x80
        elseif b >= 0xe0 and b <= 0xef then len, lo = 3, 0x800
        elseif b >= 0xf0 and b <= 0xf4 then len, lo = 4, 0x10000 end
        local ok = len > 0 and i + len - 1 <= n
        local cp = 0
        if ok and len > 1 then
            cp = b % (2 ^ (7 - len))
            for j = i + 1, i + len - 1 do
                local c = string.byte(s, j)
                if c < 0x80 or c > 0xbf then ok = false break end
                cp = cp * 64 + (c - 0x80)
            end
            if ok and (cp < lo or cp > 0x10ffff or
                (cp >= 0xd800 and cp <= 0xdfff)) then
                ok = false
            end
        end
        if ok then
            out[#out + 1] = string.sub(s, i, i + len - 1)
            i = i + len
        else
            out[#out + 1] = '\239\191\189'
            i = i + 1
        end
    end
    return table.concat(out)
end

local function akey(name)
    return P .. 'rt:agent:' .. name
end

local function qkey(qn, what)
    return P .. 'rt:q:' .. qn .. ':' .. what
end

local function agent(name)
    local c = CFG.a[name]
    local h = redis.call('HMGET', akey(name), 'presence', 'since',
        'idle_since')
    local pr = h[1]
    if pr ~= 'online' and pr ~= 'away' then pr = 'offline' end
    return {
        name = name, presence = pr, since = tonumber(h[2]) or 0,
        idle = tonumber(h[3]) or 0,
        active = redis.call('SCARD', akey(name) .. ':convs'),
        offers = redis.call('SCARD', akey(name) .. ':offers'),
        cap = c and c.cap or 0,
    }
end

local function op_queues()
    local out = arr()
    for _, qn in ipairs(CFG.qo) do
        local q = CFG.q[qn]
        local e = {
            name = qn, strategy = q.st, auto_assign = q.aa,
            waiting = redis.call('ZCARD', qkey(qn, 'wait')),
            open = redis.call('ZCARD', qkey(qn, 'open')),
            longest_wait = 0, oldest_since = NULL,
            sla = q.sla, sla_breaches = 0, max_wait = q.mw,
            overflow = nz(q.ov), team = q.team, members = #q.m,
            online = 0, away = 0, offline = 0, busy = 0, available = 0,
            active = 0, offers = 0,
        }
        local h = redis.call('ZRANGE', qkey(qn, 'since'), 0, 0, 'WITHSCORES')
        if h[1] then
            e.oldest_since = tonumber(h[2])
            e.longest_wait = math.max(0, NOW - tonumber(h[2]))
        end
        if q.sla > 0 then
            local ids = redis.call('ZRANGEBYSCORE', qkey(qn, 'open'), '-inf',
                string.format('%d', NOW - q.sla), 'LIMIT', 0, 1000)
            for _, id in ipairs(ids) do
                local c = redis.call('HMGET', P .. 'conv:' .. id, 'created',
                    'first_response')
                local cr, fr = tonumber(c[1]), tonumber(c[2])
                if cr and (not fr or fr - cr > q.sla) then
                    e.sla_breaches = e.sla_breaches + 1
                end
            end
        end
        for _, m in ipairs(q.m) do
            local a = agent(m)
            e[a.presence] = e[a.presence] + 1
            e.active = e.active + a.active
            e.offers = e.offers + a.offers
            if a.presence == 'online' then
                if a.active > 0 then e.busy = e.busy + 1 end
                if a.active + a.offers < a.cap then
                    e.available = e.available + 1
                end
            end
        end
        out[#out + 1] = e
    end
    return { queues = out }
end

local function op_agents()
    local out = arr()
    for _, name in ipairs(CFG.ao) do
        local c = CFG.a[name]
        local a = agent(name)
        local convs = redis.call('SMEMBERS', akey(name) .. ':convs')
        local offers = redis.call('SMEMBERS', akey(name) .. ':offers')
        table.sort(convs)
        table.sort(offers)
        out[#out + 1] = {
            name = name, presence = a.presence, since = a.since,
            idle_since = a.idle, active = a.active, capacity = a.cap,
            conversations = arr(convs), offers = arr(offers),
            queues = arr(c.q), team = nz(c.team), skills = arr(c.sk),
        }
    end
    return { agents = out }
end

local CONV_F = { 'id', 'customer', 'channel', 'state', 'queue', 'agent',
    'subject', 'created', 'first_response', 'resolved', 'updated' }
local TIME_F = { created = true, first_response = true, resolved = true,
    updated = true }

local function conv_view(id)
    local h = redis.call('HMGET', P .. 'conv:' .. id, unpack(CONV_F))
    if not h[1] then return nil end
    local o = {}
    for i, f in ipairs(CONV_F) do
        if TIME_F[f] then
            o[f] = ms(h[i])
        else
            o[f] = nz(h[i] and clean(h[i]))
        end
    end
    local r = redis.call('HMGET', P .. 'rt:conv:' .. id, 'hop', 'queued_at')
    o.hop = nz(r[1])
    o.position = NULL
    o.waiting_since = NULL
    if o.state == 'queued' and o.queue ~= NULL then
        local rank = redis.call('ZRANK', qkey(o.queue, 'wait'), id)
        if rank then
            o.position = rank + 1
            o.waiting_since = ms(r[2])
        end
    end
    local offers = redis.call('HKEYS', P .. 'rt:conv:' .. id .. ':offers')
    table.sort(offers)
    o.offers = arr(offers)
    return o
end

local STATES = { new = true, queued = true, assigned = true,
    waiting = true, resolved = true }

local function op_conversations()
    local st, qn, ag = ARGV[5], ARGV[6], ARGV[7]
    local limit = tonumber(ARGV[8])
    if st ~= '' and not STATES[st] then
        fail('INVALID', 'state must be new, queued, assigned, waiting or ' ..
            'resolved')
    end
    if not limit or limit < 1 or limit > 500 or limit ~= math.floor(limit) then
        fail('INVALID', 'limit must be 1..500')
    end
    local states = { st }
    if st == '' then states = { 'new', 'queued', 'assigned', 'waiting' } end
    local found = {}
    for _, s in ipairs(states) do
        local ids = redis.call('ZREVRANGE', P .. 'rt:st:' .. s, 0,
            SCAN_MAX - 1, 'WITHSCORES')
        for i = 1, #ids, 2 do
            local o = conv_view(ids[i])
            if o and o.state == s and (qn == '' or o.queue == qn) and
                (ag == '' or o.agent == ag) then
                found[#found + 1] = { tonumber(ids[i + 1]), ids[i], o }
            end
        end
    end
    table.sort(found, function(x, y)
        if x[1] ~= y[1] then return x[1] > y[1] end
        return x[2] > y[2]
    end)
    local out = arr()
    for i = 1, math.min(limit, #found) do out[i] = found[i][3] end
    return { conversations = out }
end

local function op_position()
    local id = ARGV[5]
    if not string.match(id, '^cv_%d+$') then
        fail('NOTFOUND', 'no such conversation')
    end
    local h = redis.call('HMGET', P .. 'conv:' .. id, 'id', 'state', 'queue')
    if not h[1] then fail('NOTFOUND', 'no such conversation') end
    local o = { id = id, state = h[2] or NULL, queue = nz(h[3]),
        position = NULL, waiting = NULL }
    if h[2] == 'queued' and h[3] and h[3] ~= '' then
        local rank = redis.call('ZRANK', qkey(h[3], 'wait'), id)
        if rank then o.position = rank + 1 end
        o.waiting = redis.call('ZCARD', qkey(h[3], 'wait'))
    end
    return o
end

local OPS = {
    queues = { op_queues, 4 },
    agents = { op_agents, 4 },
    conversations = { op_conversations, 8 },
    position = { op_position, 5 },
}

local function main()
    if P == nil or P == '' then fail('INVALID', 'prefix is required') end
    local op = OPS[OP]
    if not op then fail('INVALID', 'unknown operation') end
    if #ARGV ~= op[2] then fail('INVALID', 'argument count') end
    if not string.match(NOWS, '^%d+$') or #NOWS > 15 then
        fail('INVALID', 'now must be milliseconds')
    end
    NOW = tonumber(NOWS)
    local ok, cfg = pcall(cjson.decode, ARGV[4])
    if not ok or type(cfg) ~= 'table' or type(cfg.q) ~= 'table' or
        type(cfg.a) ~= 'table' or type(cfg.qo) ~= 'table' or
        type(cfg.ao) ~= 'table' then
        fail('INVALID', 'routing config')
    end
    CFG = cfg
    return op[1]()
end

return sb_run(function() return enc(main()) end)
