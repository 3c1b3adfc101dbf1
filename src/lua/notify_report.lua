-- notify_report.lua - a delivery report (SMS DLR, bounce) for an attempt.
--
-- States only move forward: queued < sent < a final one (delivered,
-- undelivered, failed); a final state is sticky, so duplicate and
-- out-of-order reports change nothing. "delivered" finishes the
-- notification; "undelivered"/"failed" marks the channel tried and queues
-- the notification again for the next channel - if this attempt is still
-- the one awaited (or, for a channel that does not report, the latest
-- attempt of a notification left "sent"). A report for an attempt not
-- recorded yet (the provider
-- was faster than our bookkeeping) is kept and applied when it is.
-- ARGV: 1 prefix, 2 now (ms), 3 attempt id ("nt_<n>.<attempt>"),
--   4 status, 5 reason, 6 retention (s).
-- Returns "applied", "stale", "early". Errors: "NOTFOUND ...",
-- "INVALID ...".

local P = ARGV[1]
local now = tonumber(ARGV[2])
local RANK = { queued = 1, sent = 2, delivered = 3, undelivered = 3,
               failed = 3 }

local function main()
    local id, n = string.match(ARGV[3], '^(nt_%d+)%.(%d+)$')
    if not id then sb_fail('NOTFOUND', 'no such attempt') end
    local status, reason = ARGV[4], ARGV[5]
    if not RANK[status] then sb_fail('INVALID', 'unknown report status') end
    n = tonumber(n)
    local k = P .. 'ntf:' .. id
    local h = ntf_fields(k, 'state', 'customer', 'event', 'ref',
        'awaiting', 'tried', 'cur', 'att')
    if h[1] == '' then sb_fail('NOTFOUND', 'no such attempt') end
    local atts = ntf_atts(h[8])
    local att = atts[n]
    if type(att) ~= 'table' then
        if RANK[status] == 3 then
            redis.call('HSET', k .. ':early', tostring(n), status)
            redis.call('EXPIRE', k .. ':early', 86400)
        end
        return 'early'
    end
    local cur = att.report
    if cur == 'unknown' and RANK[status] == 3 then cur = nil end
    if cur and (RANK[cur] or 3) >= RANK[status] then return 'stale' end
    att.report = status
    att.report_at = now
    if reason ~= '' then att.report_reason = reason end
    redis.call('HSET', k, 'att', cjson.encode(atts))
    local text = status
    if reason ~= '' then text = status .. ': ' .. reason end
    ntf_log(P, h[2], now, 'status', 'internal', att.channel or '', text,
        { notification = id, event = h[3], ref = h[4], attempt = n,
          report = status })
    redis.call('INCR', P .. 'stats:ntf:report:' .. status)
    if RANK[status] < 3 then return 'applied' end
    -- The awaited attempt decides; so does a bounce of the latest attempt
    -- of a channel that does not report (e-mail): it left the
    -- notification "sent", and a failure still moves it on.
    local bounced = status ~= 'delivered' and h[1] == 'sent' and
        n == #atts and (h[5] == nil or h[5] == '')
    if tonumber(h[5]) ~= n and not bounced then return 'applied' end
    redis.call('HDEL', k, 'awaiting')
    redis.call('ZREM', P .. 'ntf:due', id)
    if status == 'delivered' then
        redis.call('HSET', k, 'state', 'delivered', 'delivered_at', now,
            'updated', now)
        ntf_expire(P, id, tonumber(ARGV[6]))
    else
        local t = ntf_json_array(h[6])
        t[#t + 1] = att.channel or h[7]
        redis.call('HSET', k, 'state', 'failed', 'reason', 'report: ' .. text,
            'tried', sb_enc(sb_arr(t)), 'updated', now)
        redis.call('XADD', P .. 'notify', '*', 'ntf', id)
    end
    return 'applied'
end

return sb_run(main)
