-- notify_take.lua - the dispatcher's first step for a batch of entries.
--
-- notify.c reads entries of the work stream P..'notify' with XREADGROUP
-- and hands them here, validated: a raw entry from a business system
-- (kind "raw") is accepted (idempotent on its idempotency key, else on
-- its stream id); a work entry (kind "ntf") names a notification; an
-- invalid one (kind "reject") goes to P..'notify:rejects' with its reason.
-- For each notification that should go out now the channel is chosen
-- (the notification's own list, else the customer's preferred order, then
-- the default order; a channel needs a running driver, an address and no
-- opt-out, and is tried once per round) and its state becomes "sending";
-- the caller renders, sends and reports through notify_result.lua, which
-- acknowledges the entry. Everything else is acknowledged here.
--
-- ARGV: 1 prefix, 2 group, 3 now (ms), 4 idempotency TTL (s),
--   5 supersession window (ms), 6 default channels (comma list),
--   7 available channels (comma list), 8 max deliveries of one entry,
--   9 retention (s), 10 item count n, then n items of 16 values:
--   entry id, kind, claimed (0/1), ntf id (kind ntf) or reason (reject),
--   event, customer, email, phone, name, data (for reject: the raw fields
--   as JSON), channels, locale, priority, not_before, ref, idempotency key.
-- Returns one array per item: {entry id, "skip"} or {entry id, "send",
--   ntf id, attempt n, channel, address, event, locale, timezone,
--   quiet hours (JSON or ""), priority, data, ref, customer, customer name,
--   tries on this channel before, first try on this channel (ms), created
--   (ms)} or {entry id, "error", reason} (acknowledged, rejected).

local P = ARGV[1]
local S = P .. 'notify'
local G = ARGV[2]
local now = tonumber(ARGV[3])
local idem_ttl = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local max_del = tonumber(ARGV[8])
local retention = tonumber(ARGV[9])
local SLOTS = 16

local function list(s)
    local t = {}
    for w in string.gmatch(s, '[^,]+') do t[#t + 1] = w end
    return t
end
local default_order = list(ARGV[6])
-- "sms!": the channel has a driver and urgent notifications ignore an
-- opt-out of it ([notify] urgent_ignores_opt_out)
local available, urgent_ok = {}, {}
for _, c in ipairs(list(ARGV[7])) do
    local name, bang = string.match(c, '^([^!]+)(!?)$')
    if name then
        available[name] = true
        urgent_ok[name] = bang == '!'
    end
end

-- Acknowledged at the end in one XACK (each write a script makes is
-- copied to the AOF: fewer commands is most of the cost).
local acks = {}
local function ack(eid)
    acks[#acks + 1] = eid
end

local function reject(eid, reason, raw)
    redis.call('XADD', P .. 'notify:rejects', '*', 'source', eid,
        'reason', reason, 'fields', raw, 'at', now)
    redis.call('INCR', P .. 'stats:ntf:rejected')
    ack(eid)
end

-- The address of channel ch for this notification, or nil.
-- ids() gives the customer's identities (read only when needed).
local function address(ch, h, ids)
    if ch == 'webhook' then return h.customer end
    if ch == 'email' and h.to_email ~= '' then return h.to_email end
    if ch == 'sms' and h.to_phone ~= '' then return h.to_phone end
    local want = ({ email = 'email:', sms = 'phone:', chat = 'chat:' })[ch]
    if not want then return nil end
    local best
    for _, i in ipairs(ids()) do
        if string.sub(i, 1, #want) == want then
            local v = string.sub(i, #want + 1)
            if not best or v < best then best = v end
        end
    end
    return best
end

-- The first untried reachable channel: ch, address; or nil, why.
local function choose(h, cust)
    local ch = redis.call('HMGET', P .. 'cust:' .. cust, 'prefs', 'name',
        'locale', 'timezone')
    local ok, prefs = pcall(cjson.decode, ch[1] or '{}')
    if not ok or type(prefs) ~= 'table' then prefs = {} end
    local opt_out = type(prefs.opt_out) == 'table' and prefs.opt_out or {}
    local order, seen = {}, {}
    local function add(t)
        for _, c in ipairs(t) do
            if type(c) == 'string' and not seen[c] then
                seen[c] = true
                order[#order + 1] = c
            end
        end
    end
    local own = ntf_json_array(h.channels)
    if #own > 0 then
        add(own)
    else
        if type(prefs.order) == 'table' then add(prefs.order) end
        add(default_order)
    end
    local tried = {}
    for _, c in ipairs(ntf_json_array(h.tried)) do tried[c] = true end
    local idl
    local function ids()
        if not idl then
            idl = redis.call('SMEMBERS', P .. 'cust:' .. cust .. ':ids')
        end
        return idl
    end
    local skipped = {}
    for _, c in ipairs(order) do
        if not tried[c] then
            local a
            if not available[c] then
                skipped[#skipped + 1] = c .. ': no driver'
            elseif opt_out[c] ~= nil and opt_out[c] ~= cjson.null and
                not (urgent_ok[c] and h.priority == 'urgent') then
                skipped[#skipped + 1] = c .. ': opted out'
            else
                a = address(c, h, ids)
                if not a then skipped[#skipped + 1] = c .. ': no address' end
            end
            if a then
                local q = ''
                if type(prefs.quiet_hours) == 'table' then
                    q = cjson.encode(prefs.quiet_hours)
                end
                return c, a, ch[2] or '', ch[3] or '', ch[4] or '', q
            end
        end
    end
    -- Why nothing is left: the last failure when something was tried,
    -- and every channel passed over.
    local why = 'no reachable channel'
    if #skipped > 0 then
        why = why .. ' (' .. table.concat(skipped, '; ') .. ')'
    end
    if h.reason and h.reason ~= '' and next(tried) then
        why = h.reason .. '; ' .. why
    end
    return nil, why
end

local HFIELDS = { 'state', 'customer', 'event', 'ref', 'locale', 'priority',
    'data', 'channels', 'to_email', 'to_phone', 'tried', 'cur', 'ch_tries',
    'ch_first', 'attempts', 'awaiting', 'not_before', 'created', 'reason' }

local function load(id)
    local v = redis.call('HMGET', P .. 'ntf:' .. id, unpack(HFIELDS))
    if not v[1] then return nil end
    local h = {}
    for i, f in ipairs(HFIELDS) do h[f] = v[i] or '' end
    return h
end

local function tried_add(id, h, ch)
    local t = ntf_json_array(h.tried)
    t[#t + 1] = ch
    h.tried = sb_enc(sb_arr(t))
    redis.call('HSET', P .. 'ntf:' .. id, 'tried', h.tried)
end

local function take_one(a, b)
    local eid, kind = ARGV[a], ARGV[a + 1]
    if kind == 'reject' then
        reject(eid, ARGV[a + 3], ARGV[a + 9])
        return { eid, 'skip' }
    end
    local deliveries = 0
    if ARGV[a + 2] == '1' then
        local pe = redis.call('XPENDING', S, G, eid, eid, 1)
        if pe[1] then deliveries = tonumber(pe[1][4]) end
    end
    local id
    if kind == 'raw' then
        if deliveries > max_del then
            reject(eid, 'delivered ' .. deliveries ..
                ' times without an outcome', '{}')
            return { eid, 'skip' }
        end
        local idem = ARGV[a + 15]
        if idem == '' then idem = 'stream:' .. eid end
        local enq = string.match(eid, '^(%d+)')
        local f = { event = ARGV[a + 4], customer = ARGV[a + 5],
            email = ARGV[a + 6], phone = ARGV[a + 7], name = ARGV[a + 8],
            data = ARGV[a + 9], channels = ARGV[a + 10],
            locale = ARGV[a + 11], priority = ARGV[a + 12],
            not_before = ARGV[a + 13], ref = ARGV[a + 14], idem = idem,
            src = 'stream:' .. eid, enq = enq }
        -- A new one that goes out now is written once, already
        -- "sending" on its channel (decide runs inside ntf_accept).
        local pre, nochan
        local function decide(cust)
            local hf = { customer = cust, channels = f.channels, tried = '',
                         to_email = f.email, to_phone = f.phone,
                         priority = f.priority, reason = '' }
            local c, addr, name, loc, tz, quiet = choose(hf, cust)
            if not c then
                nochan = addr -- why
                return nil
            end
            pre = { c, addr, name, loc, tz, quiet }
            return { 'cur', c, 'to', addr, 'ch_tries', 1, 'ch_first', now }
        end
        local ok, r1, dup, r3, due = pcall(ntf_accept, P, f, now, idem_ttl,
            window, retention, decide)
        if ok and pre and dup == 0 then
            local loc = f.locale
            if loc == '' then loc = pre[4] end
            return { eid, 'send', r1, 1, pre[1], pre[2], f.event, loc,
                pre[5], pre[6], f.priority, f.data, f.ref, r3, pre[3], 0,
                now, tostring(now) }
        end
        if not ok then
            local msg = type(r1) == 'table' and r1.sb or tostring(r1)
            reject(eid, msg, '{}')
            return { eid, 'error', msg }
        end
        id = r1
        if dup == 0 and nochan then
            -- No channel can take it: a dead letter at once.
            ntf_dead(P, id, nochan, now, retention)
            ack(eid)
            return { eid, 'skip' }
        end
        -- Another entry with the same idempotency key: that one (or the
        -- API call) owns the notification; this one is a duplicate.
        if dup == 1 and redis.call('HGET', P .. 'ntf:' .. id, 'src') ~=
            'stream:' .. eid then
            ack(eid)
            return { eid, 'skip' }
        end
        if dup == 0 and due > 0 then
            ack(eid)
            return { eid, 'skip' }
        end
    else
        id = ARGV[a + 3]
        if deliveries > max_del then
            if redis.call('EXISTS', P .. 'ntf:' .. id) == 1 then
                ntf_dead(P, id, 'delivered ' .. deliveries ..
                    ' times without an outcome', now, retention)
            end
            ack(eid)
            return { eid, 'skip' }
        end
    end
    local h = load(id)
    if not h then
        ack(eid)
        return { eid, 'skip' }
    end
    local k = P .. 'ntf:' .. id
    local st = h.state
    if st == 'sent' and h.awaiting ~= '' then
        -- Its report deadline passed (the schedule woke it): the attempt's
        -- outcome is unknown; carry on with the next channel.
        local n = tonumber(h.awaiting)
        local atts = ntf_atts(redis.call('HGET', k, 'att'))
        if type(atts[n]) == 'table' then
            atts[n].report = 'unknown'
            atts[n].report_at = now
        end
        redis.call('HDEL', k, 'awaiting')
        h.reason = 'no delivery report in time'
        redis.call('HSET', k, 'state', 'failed', 'reason', h.reason,
            'att', cjson.encode(atts))
        tried_add(id, h, h.cur)
        st = 'failed'
    end
    if st == 'sent' or st == 'delivered' or st == 'superseded' or
        st == 'dead' then
        ack(eid)
        return { eid, 'skip' }
    end
    local nb = tonumber(h.not_before)
    if st == 'accepted' and nb and nb > now then
        redis.call('HSET', k, 'state', 'scheduled')
        redis.call('ZADD', P .. 'ntf:due', nb, id)
        ack(eid)
        return { eid, 'skip' }
    end
    local ch, addr, name, locale, tz, quiet = choose(h, h.customer)
    if not ch then
        ntf_dead(P, id, addr, now, retention)
        ack(eid)
        return { eid, 'skip' }
    end
    local tries, first = tonumber(h.ch_tries) or 0, tonumber(h.ch_first) or 0
    if ch ~= h.cur then
        tries, first = 0, now
    end
    redis.call('HSET', k, 'state', 'sending', 'cur', ch, 'to', addr,
        'ch_tries', tries + 1, 'ch_first', first, 'updated', now)
    local loc = h.locale
    if loc == '' then loc = locale end
    return { eid, 'send', id, (tonumber(h.attempts) or 0) + 1, ch, addr,
        h.event, loc, tz, quiet, h.priority, h.data, h.ref, h.customer,
        name, tries, first, h.created }
end

local n = tonumber(ARGV[10])
local out = {}
for i = 1, n do
    local a = 11 + (i - 1) * SLOTS
    local ok, r = pcall(take_one, a)
    if ok then
        out[i] = r
    else
        local msg = type(r) == 'table' and r.sb or tostring(r)
        reject(ARGV[a], 'internal: ' .. msg, '{}')
        out[i] = { ARGV[a], 'error', msg }
    end
end
if #acks > 0 then redis.call('XACK', S, G, unpack(acks)) end
return out
