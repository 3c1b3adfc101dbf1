-- ingest.lua - record one contact: customer, conversation, log, timelines.
--
-- The one write path of the contact log (see store.h, sb_contact_ingest).
-- Everything is validated and read before the first write, so an error
-- leaves Redis untouched, and the script as a whole is atomic. Keys are
-- computed from the prefix (ARGV[1]): standalone Redis only, not Cluster.
--
-- ARGV: 1 prefix, 2 dedupe window (s), 3 channel, 4 direction, 5 type,
--   6 customer id, 7 name hint, 8 locale hint, 9 conversation
--   ("" continue-or-open, "none", "new", "cv_<n>"), 10 subject, 11 text,
--   12 source id, 13 provider id, 14 agent, 15 fields (JSON object or ""),
--   16 ts (ms, "0" = now), 17 identity count n, then n pairs type, value.
-- Publishes {"type":"contact",...} on P..'events' (see docs/routing.md).
-- "" means absent throughout.
-- Returns {contact id, customer id, conversation id or "", duplicate,
--   new customer, new conversation, merge proposed, needs routing}.
-- Errors: "INVALID ...", "NOTFOUND ...", "CONFLICT ...".

local P = ARGV[1]
local function resolve(id) return sb_resolve(P, id) end -- common.lua
local fail = sb_fail
local REOPEN_MS = 7 * 24 * 3600 * 1000 -- resolved this recently: reopen
local MSGID_TTL = 400 * 24 * 3600 -- a mail answered within ~a year threads


local function check_str(name, v, maxlen, required)
    if required and v == '' then fail('INVALID', name .. ' is required') end
    if #v > maxlen then fail('INVALID', name .. ' too long') end
    return v
end

local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local IDENT_TYPES = { email = true, phone = true, chat = true }
local ROUTED_CHANNELS = { chat = true, email = true, sms = true }
local DIRECTIONS = { ['in'] = true, out = true, internal = true }

local function main()
    if P == nil or P == '' then fail('INVALID', 'prefix is required') end
    local window = tonumber(ARGV[2])
    if not window or window < 1 then fail('INVALID', 'dedupe window') end
    local channel = ARGV[3]
    if not string.match(channel, '^[a-z][a-z0-9_-]*$') or #channel > 32 then
        fail('INVALID', 'channel must match [a-z][a-z0-9_-]{0,31}')
    end
    local direction = ARGV[4]
    if not DIRECTIONS[direction] then
        fail('INVALID', 'direction must be in, out or internal')
    end
    local ctype = ARGV[5]
    if not string.match(ctype, '^[a-z][a-z0-9_]*$') or #ctype > 32 then
        fail('INVALID', 'type must match [a-z][a-z0-9_]{0,31}')
    end
    local cust_arg = ARGV[6]
    if cust_arg ~= '' and not string.match(cust_arg, '^cu_%d+$') then
        fail('NOTFOUND', 'no such customer')
    end
    local name = check_str('name', ARGV[7], 256)
    local locale = check_str('locale', ARGV[8], 16)
    local conv_arg = ARGV[9]
    if conv_arg ~= '' and conv_arg ~= 'none' and conv_arg ~= 'new' and
        conv_arg ~= 'thread' and not string.match(conv_arg, '^cv_%d+$') then
        fail('NOTFOUND', 'no such conversation')
    end
    local subject = check_str('subject', ARGV[10], 8192)
    local text = check_str('text', ARGV[11], 8 * 1024 * 1024)
    local source_id = check_str('source_id', ARGV[12], 1024)
    local provider_id = check_str('provider_id', ARGV[13], 1024)
    local agent = check_str('agent', ARGV[14], 128)
    local fields = ARGV[15]
    -- fields.via (inbound): how to answer in this conversation (a
    -- driver's "provider|number"), kept on the conversation.
    local via, thread, msgid
    if fields == '' then
        fields = '{}'
    else
        check_str('fields', fields, 65536)
        local ok, f = pcall(cjson.decode, fields)
        if not ok or type(f) ~= 'table' or
            not string.match(fields, '^%s*{') then
            fail('INVALID', 'fields must be a JSON object')
        end
        if type(f.via) == 'string' and #f.via <= 4096 then via = f.via end
        -- e-mail: fields.thread {"refs":[msg-ids, newest first],"tag":cv}
        -- picks the conversation (conversation "thread"); message_id is
        -- remembered for the replies that will name it
        if type(f.thread) == 'table' then thread = f.thread end
        if type(f.message_id) == 'string' and #f.message_id <= 998 then
            msgid = f.message_id
        end
    end
    if not string.match(ARGV[16], '^%d+$') or #ARGV[16] > 15 then
        fail('INVALID', 'ts must be milliseconds')
    end
    local nids = tonumber(ARGV[17])
    if not nids or nids < 0 or nids > 8 or #ARGV ~= 17 + 2 * nids then
        fail('INVALID', 'identity count')
    end
    local idents = {}
    for i = 1, nids do
        local t, v = ARGV[16 + 2 * i], ARGV[17 + 2 * i]
        if not IDENT_TYPES[t] then
            fail('INVALID', 'identity type must be email, phone or chat')
        end
        if v == '' or #v > 512 then fail('INVALID', 'identity value') end
        idents[i] = t .. ':' .. v
    end

    -- Idempotency: a known (channel, source id) returns what it made.
    local srckey
    if source_id ~= '' then
        srckey = P .. 'src:' .. redis.sha1hex(channel .. ':' .. source_id)
        local cid = redis.call('GET', srckey)
        if cid then
            local e = redis.call('XRANGE', P .. 'log', cid, cid)
            local cu, cv = '', ''
            if e[1] then
                local f = e[1][2]
                for i = 1, #f, 2 do
                    if f[i] == 'customer' then cu = f[i + 1] end
                    if f[i] == 'conversation' then cv = f[i + 1] end
                end
            end
            local r = resolve(cu)
            if r then cu = r end
            return { cid, cu, cv, 1, 0, 0, 0, 0 }
        end
    end

    -- Who is it? Only reads until every check has passed.
    local cust
    if cust_arg ~= '' then
        cust = resolve(cust_arg)
        if not cust then fail('NOTFOUND', 'no such customer') end
    end
    local owners
    cust, owners = sb_idents_lookup(P, cust, idents) -- identify.lua
    local conv
    if string.match(conv_arg, '^cv_') then
        local c = redis.call('HGET', P .. 'conv:' .. conv_arg, 'customer')
        if not c then fail('NOTFOUND', 'no such conversation') end
        c = resolve(c) or c
        if not cust then cust = c end
        if c ~= cust then
            fail('CONFLICT', 'conversation belongs to another customer')
        end
        conv = conv_arg
    end
    if not cust and nids == 0 then
        fail('INVALID', 'no customer, identity or conversation given')
    end

    -- Writes from here on.
    local now = now_ms()
    local ts = ARGV[16]
    if ts == '0' then ts = string.format('%d', now) end
    local new_customer, new_conv, proposed = 0, 0, 0

    cust, new_customer, proposed = sb_idents_attach(P, cust, idents,
        owners, name, locale, now)

    -- A mail joins the conversation its In-Reply-To/References or its
    -- subject tag names - only this customer's (two people answering one
    -- newsletter are two conversations); else it starts a new one.
    if conv_arg == 'thread' then
        local function mine(c)
            if type(c) ~= 'string' or not string.match(c, '^cv_%d+$') then
                return nil
            end
            local o = redis.call('HGET', P .. 'conv:' .. c, 'customer')
            if o and (resolve(o) or o) == cust then return c end
            return nil
        end
        if thread and type(thread.refs) == 'table' then
            for i = 1, math.min(#thread.refs, 50) do
                local r = thread.refs[i]
                if type(r) == 'string' and #r <= 998 then
                    conv = mine(redis.call('GET', P .. 'msgid:' ..
                        redis.sha1hex(r)))
                    if conv then break end
                end
            end
        end
        if not conv and thread then conv = mine(thread.tag) end
        if conv then
            local st = redis.call('HGET', P .. 'conv:' .. conv, 'state')
            if st == 'resolved' then
                redis.call('HSET', P .. 'cust:' .. cust .. ':open', channel,
                    conv)
            end
        end
    end
    if conv_arg == '' then
        local open = redis.call('HGET', P .. 'cust:' .. cust .. ':open',
            channel)
        if open then
            local st = redis.call('HGET', P .. 'conv:' .. open, 'state')
            if st and st ~= 'resolved' then conv = open end
        end
        -- A customer writing again soon after a resolution continues that
        -- conversation (the router reopens it) instead of starting anew.
        if not conv and direction == 'in' then
            local last = redis.call('ZREVRANGE',
                P .. 'cust:' .. cust .. ':convs', 0, 0)[1]
            if last then
                local c = redis.call('HMGET', P .. 'conv:' .. last,
                    'channel', 'state', 'resolved')
                if c[1] == channel and c[2] == 'resolved' and c[3] and
                    c[3] ~= '' and now - tonumber(c[3]) < REOPEN_MS then
                    conv = last
                    redis.call('HSET', P .. 'cust:' .. cust .. ':open',
                        channel, conv)
                end
            end
        end
    end
    if not conv and conv_arg ~= 'none' then
        conv = 'cv_' .. redis.call('INCR', P .. 'seq:conversation')
        redis.call('HSET', P .. 'conv:' .. conv, 'id', conv, 'customer', cust,
            'channel', channel, 'state', 'new', 'queue', '', 'agent', '',
            'subject', subject, 'created', now, 'first_response', '',
            'resolved', '', 'updated', now)
        redis.call('ZADD', P .. 'cust:' .. cust .. ':convs', now, conv)
        redis.call('HSET', P .. 'cust:' .. cust .. ':open', channel, conv)
        new_conv = 1
        -- A customer answering a notification (an SMS or e-mail reply in
        -- the channel it came by, within a week) opens a conversation
        -- about the same order or ticket: link it to the notification.
        if direction == 'in' and (channel == 'sms' or channel == 'email') then
            local nl = redis.call('HGET', P .. 'cust:' .. cust, 'ntf_last')
            local okn, last = pcall(cjson.decode, nl or '')
            if okn and type(last) == 'table' and last.channel == channel and
                type(last.at) == 'number' and now - last.at < REOPEN_MS then
                redis.call('HSET', P .. 'conv:' .. conv, 'notification',
                    last.ntf or '', 'ref', last.ref or '')
            end
        end
    end

    local cid = redis.call('XADD', P .. 'log', '*', 'type', ctype,
        'channel', channel, 'direction', direction, 'customer', cust,
        'conversation', conv or '', 'subject', subject, 'text', text,
        'source_id', source_id, 'provider_id', provider_id, 'agent', agent,
        'fields', fields, 'ts', ts)
    local score = sb_tl_score(cid)
    redis.call('ZADD', P .. 'cust:' .. cust .. ':tl', score, cid)
    if conv then
        redis.call('ZADD', P .. 'conv:' .. conv .. ':tl', score, cid)
        redis.call('HSET', P .. 'conv:' .. conv, 'updated', now)
        if via and direction == 'in' then
            redis.call('HSET', P .. 'conv:' .. conv, 'via', via)
        end
        if direction == 'out' and ctype == 'message' then
            local fr = redis.call('HGET', P .. 'conv:' .. conv,
                'first_response')
            if not fr or fr == '' then
                redis.call('HSET', P .. 'conv:' .. conv, 'first_response', now)
            end
        end
    end
    if srckey then
        redis.call('SET', srckey, cid, 'EX', window)
    end
    -- Message-IDs of mail in a conversation (received, or sent: an e-mail
    -- driver's provider id is the Message-ID) lead replies back to it.
    if conv and channel == 'email' then
        local id = msgid
        if not id and direction == 'out' and provider_id ~= '' then
            id = provider_id
        end
        if id then
            redis.call('SET', P .. 'msgid:' .. redis.sha1hex(id), conv,
                'EX', MSGID_TTL)
        end
    end
    redis.call('INCR', P .. 'stats:contacts:' .. channel)
    -- Conversations that need an agent are marked until the router has
    -- taken them (router.route clears the mark; its tick routes marks
    -- left behind by a caller that failed to call it).
    local needs_route = 0
    if conv and direction == 'in' and ROUTED_CHANNELS[channel] then
        local st = redis.call('HGET', P .. 'conv:' .. conv, 'state')
        if st == 'new' or st == 'resolved' then
            redis.call('ZADD', P .. 'rt:unrouted', 'NX', now, conv)
            needs_route = 1
        end
    end
    -- Live screens (the agent console on any instance) learn of the
    -- contact; the agent holding the conversation is named so a console
    -- need not look it up.
    -- Only conversation contacts concern a screen (a logged call or visit
    -- without one does not), so the others publish nothing.
    if conv then
        local holder = redis.call('HGET', P .. 'conv:' .. conv, 'agent') or ''
        redis.call('PUBLISH', P .. 'events', cjson.encode({
            type = 'contact', id = cid, customer = cust,
            conversation = conv, channel = channel, direction = direction,
            kind = ctype, agent = holder, at = now }))
    end
    return { cid, cust, conv or '', 0, new_customer, new_conv, proposed,
        needs_route }
end

return sb_run(main)
