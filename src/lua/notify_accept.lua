-- notify_accept.lua - POST /api/v1/notifications: record, then queue.
--
-- The fields were validated by the caller (notify.c); this makes the
-- notification durable and puts a work entry {ntf=<id>} on the stream
-- P..'notify' (or, when it must wait - not_before, the supersession
-- window - on the schedule P..'ntf:due'), in one atomic step.
--
-- ARGV: 1 prefix, 2 now (ms), 3 idempotency TTL (s), 4 supersession window
--   (ms), 5 retention (s), then 6 event, 7 customer, 8 email, 9 phone,
--   10 name, 11 data (JSON), 12 channels (JSON array or ""), 13 locale,
--   14 priority, 15 not_before (ms or ""), 16 ref, 17 idempotency key.
-- Returns {id, duplicate 0/1, customer, state}.
-- Errors: "NOTFOUND no such customer", "INVALID ...".

local P = ARGV[1]

local function main()
    local now = tonumber(ARGV[2])
    local f = { event = ARGV[6], customer = ARGV[7], email = ARGV[8],
                phone = ARGV[9], name = ARGV[10], data = ARGV[11],
                channels = ARGV[12], locale = ARGV[13], priority = ARGV[14],
                not_before = ARGV[15], ref = ARGV[16], idem = ARGV[17],
                src = 'api', enq = ARGV[2] }
    local id, dup, cust, due = ntf_accept(P, f, now, tonumber(ARGV[3]),
        tonumber(ARGV[4]), tonumber(ARGV[5]))
    if dup == 0 and due == 0 then
        redis.call('XADD', P .. 'notify', '*', 'ntf', id)
    end
    local st = redis.call('HGET', P .. 'ntf:' .. id, 'state') or 'accepted'
    return { id, dup, cust, st }
end

return sb_run(main)
