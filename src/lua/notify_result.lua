-- notify_result.lua - record what the sends of a batch did, then XACK.
--
-- ARGV: 1 prefix, 2 group, 3 now (ms), 4 retention (s), 5 item count n,
--   then n items of 15 values: entry id, ntf id, attempt n, outcome
--   ("sent", "temp", "perm", "hold"), channel, address, reason, provider
--   id, parts, latency (ms), next (ms: temp - when to retry, 0 = this
--   channel is exhausted; hold - when the quiet hours end), subject, text,
--   report deadline (ms, 0 when the channel sends no delivery reports),
--   attempt id.
-- A temp with a retry time waits on P..'ntf:due'; perm (and an exhausted
-- temp) marks the channel tried and queues the notification again, so the
-- next pass picks the next channel or dead-letters it. Returns the count.

local P = ARGV[1]
local S = P .. 'notify'
local G = ARGV[2]
local now = tonumber(ARGV[3])
local retention = tonumber(ARGV[4])
local SLOTS = 15

-- Outcomes per "result:channel", added to stats:ntf:* once per batch.
local counts = {}

local function one(a)
    local eid, id, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    local outcome, ch, to = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
    local reason, pid = ARGV[a + 6], ARGV[a + 7]
    local nxt = tonumber(ARGV[a + 10])
    local k = P .. 'ntf:' .. id
    local h = ntf_fields(k, 'state', 'customer', 'event', 'ref',
        'tried', 'att')
    if h[1] ~= 'sending' then return end -- dropped or finished meanwhile
    if outcome == 'hold' then
        redis.call('HSET', k, 'state', 'held', 'cur', '', 'updated', now)
        redis.call('ZADD', P .. 'ntf:due', nxt, id)
        return
    end
    local result = ({ sent = 'sent', temp = 'tempfail',
                      perm = 'permfail' })[outcome] or 'permfail'
    local att = { n = n, id = ARGV[a + 14], channel = ch, to = to, at = now,
                  result = result, ms = tonumber(ARGV[a + 9]) or 0 }
    if reason ~= '' then att.reason = reason end
    if pid ~= '' then att.provider_id = pid end
    local parts = tonumber(ARGV[a + 8]) or 0
    if parts > 0 then att.parts = parts end
    if outcome == 'temp' and nxt > 0 then att.retry_at = nxt end
    -- A report that came before this result (a fast provider) applies
    -- now; only channels that report (a deadline is set) can have one.
    local early
    if (tonumber(ARGV[a + 13]) or 0) > 0 then
        early = redis.call('HGET', k .. ':early', tostring(n))
    end
    if early then
        att.report = early
        att.report_at = now
        redis.call('DEL', k .. ':early')
    end
    local atts = ntf_atts(h[6])
    atts[#atts + 1] = att
    local attj = cjson.encode(atts)
    local ck = result .. ':' .. ch
    counts[ck] = (counts[ck] or 0) + 1
    if outcome == 'sent' then
        local fields = { notification = id, event = h[3], ref = h[4],
                         attempt = n, state = 'sent' }
        ntf_log(P, h[2], now, 'notification', 'out', ch, ARGV[a + 12],
            fields, { subject = ARGV[a + 11], source_id = ARGV[a + 14],
                      provider_id = pid })
        -- What a customer's answer by SMS or e-mail links to (ingest.lua).
        if ch == 'sms' or ch == 'email' then
            redis.call('HSET', P .. 'cust:' .. h[2], 'ntf_last', sb_enc({
                ntf = id, ref = h[4], channel = ch, at = now }))
        end
        if h[4] ~= '' then
            local rk = P .. 'ntf:ref:' .. redis.sha1hex(h[2] .. '\n' .. h[4])
            if redis.call('GET', rk) == id then redis.call('DEL', rk) end
        end
        -- the early report gets its timeline entry and count now, as a
        -- report after the result would (notify_report.lua)
        if early then
            ntf_log(P, h[2], now, 'status', 'internal', ch, early,
                { notification = id, event = h[3], ref = h[4], attempt = n,
                  report = early })
            redis.call('INCR', P .. 'stats:ntf:report:' .. early)
        end
        local deadline = tonumber(ARGV[a + 13]) or 0
        if early == 'delivered' then
            redis.call('HSET', k, 'state', 'delivered', 'sent_at', now,
                'delivered_at', now, 'reason', '', 'attempts', n,
                'att', attj, 'updated', now)
            ntf_expire(P, id, retention)
        elseif early then -- undelivered / failed before we knew
            local t = ntf_json_array(h[5])
            t[#t + 1] = ch
            redis.call('HSET', k, 'state', 'failed', 'sent_at', now,
                'reason', 'report: ' .. early, 'tried', sb_enc(sb_arr(t)),
                'attempts', n, 'att', attj, 'updated', now)
            redis.call('XADD', S, '*', 'ntf', id)
        elseif deadline > 0 then
            redis.call('HSET', k, 'state', 'sent', 'sent_at', now,
                'awaiting', n, 'reason', '', 'attempts', n, 'att', attj,
                'updated', now)
            redis.call('ZADD', P .. 'ntf:due', deadline, id)
        else
            redis.call('HSET', k, 'state', 'sent', 'sent_at', now,
                'reason', '', 'attempts', n, 'att', attj, 'updated', now)
            ntf_expire(P, id, retention)
        end
    elseif outcome == 'temp' and nxt > 0 then
        redis.call('HSET', k, 'state', 'failed', 'reason', reason,
            'attempts', n, 'att', attj, 'updated', now)
        redis.call('ZADD', P .. 'ntf:due', nxt, id)
    else
        local t = ntf_json_array(h[5])
        t[#t + 1] = ch
        redis.call('HSET', k, 'state', 'failed', 'reason', ch .. ': ' ..
            reason, 'tried', sb_enc(sb_arr(t)), 'attempts', n,
            'att', attj, 'updated', now)
        redis.call('XADD', S, '*', 'ntf', id)
    end
end

local n = tonumber(ARGV[5])
local acks = {}
for i = 1, n do
    local a = 6 + (i - 1) * SLOTS
    local ok, err = pcall(one, a)
    if not ok then
        redis.log(redis.LOG_WARNING, 'notify_result: ' .. tostring(
            type(err) == 'table' and err.sb or err))
    end
    acks[#acks + 1] = ARGV[a]
end
-- One XACK for the batch: every write a script makes is copied to the AOF
-- and replicas, so fewer commands is most of the cost.
if #acks > 0 then redis.call('XACK', S, G, unpack(acks)) end
for ck, c in pairs(counts) do
    redis.call('INCRBY', P .. 'stats:ntf:' .. ck, c)
end
return n
