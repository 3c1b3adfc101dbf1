// load.js - the notification benchmark's load driver (both targets).
//
// Run by tests/bench/notify/notify.sh once per target and run, against a
// Redis and a consumer already started there:
//
//   switchboard  entries XADDed to the stream <prefix>notify (the ERP
//                door); a notification is done when notify_result.lua has
//                recorded its sent attempt (counter stats:ntf:sent:webhook).
//   bullmq       jobs added with Queue.addBulk to the BullMQ queue that
//                baseline/worker.js consumes; a job is done when BullMQ has
//                moved it to "completed".
//
// Steps: (1) warm-up - WARMUP notifications to recipients named by e-mail
// (for switchboard these create the customers the measured runs address by
// id; the baseline gets the same count of jobs); (2) the burst - N
// notifications enqueued as fast as one pipelined connection goes (chunks
// of 1,000, each awaited), then drained; (3) the paced run - PACED
// notifications at RATE/s, open loop. After each run the times are read
// back from Redis (pipelined, 1,000 ids at a time):
//
//   switchboard  enq = the "enq" field of ntf:<id> (the entry id's time,
//                Redis' clock at XADD), sent = "at" of the last attempt in
//                ntf:<id> field att (the daemon's clock when the result was
//                recorded), for the ids the run created (seq:ntf before and
//                after);
//   bullmq       enq = the job's "timestamp" (the producer's clock at
//                add), done = "finishedOn" (the worker's clock when the job
//                was moved to completed).
//
// latency = done - enq (p50, p99, max); notifications/s = done / (last done
// - first enq). In the burst, latency includes the wait behind the whole
// backlog. CPU: utime + stime from /proc/PID/stat of the processes named by
// --pid NAME=PID (and their children), over the same interval, as % of one
// core (cpu_NAME) and as microseconds per notification (us_NAME).
//
// Output: one line per run, "RESULT target=T kind=burst|paced k=v ...", and
// before the burst's a line "REDIS ..." with the commands and scripts Redis
// spent its time on during the burst (INFO commandstats; SLOWLOG, threshold
// 100 us, for per-script figures; switchboard's scripts are named by the
// SHA-1 of lib + script as scripts/embed-lua.sh builds them, BullMQ's by
// their SHA-1). Exit 1 when a run does not finish within --timeout seconds
// (its RESULT line then says done < n).
//
// Usage: node load.js --target switchboard|bullmq --redis SOCK [--n 100000]
//   [--warmup 1000] [--paced 10000] [--rate 1000] [--timeout 120]
//   [--queue notify] [--prefix sb:] [--lua DIR] [--pid NAME=PID ...]
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const req = createRequire(path.join(__dirname, 'baseline', 'package.json'));
const Redis = req('ioredis');

function arg(name, dflt) {
    const i = process.argv.indexOf('--' + name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

function args(name) {
    const out = [];
    for (let i = 2; i + 1 < process.argv.length; i++)
        if (process.argv[i] === '--' + name) out.push(process.argv[i + 1]);
    return out;
}

const TARGET = arg('target', '');
const SOCK = arg('redis', '');
const N = Number(arg('n', '100000'));
const WARMUP = Number(arg('warmup', '1000'));
const PACED = Number(arg('paced', '10000'));
const RATE = Number(arg('rate', '1000'));
const TIMEOUT_MS = Number(arg('timeout', '120')) * 1000;
const QUEUE = arg('queue', 'notify');
const P = arg('prefix', 'sb:');
const LUA = arg('lua', '');
const CHUNK = 1000;
const RUN = process.pid.toString(36);

if ((TARGET !== 'switchboard' && TARGET !== 'bullmq') || !SOCK || !(N > 0)) {
    console.error('usage: node load.js --target switchboard|bullmq ' +
                  '--redis SOCK [--n N] ...');
    process.exit(2);
}

const pids = {};
for (const s of args('pid')) {
    const [k, v] = s.split('=');
    if (k && Number(v) > 0) pids[k] = Number(v);
}

const redis = new Redis({ path: SOCK, maxRetriesPerRequest: 3 });
redis.on('error', (e) => console.error('load: redis:', e.message));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- CPU of the processes under test -------------------------------------

const TICK = 100; // USER_HZ on Linux

// utime + stime of pid and its children (nginx' workers), in ticks.
function cpuTicks(pid, depth = 0) {
    let t;
    try {
        const s = fs.readFileSync('/proc/' + pid + '/stat', 'utf8');
        const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
        t = Number(f[11]) + Number(f[12]);
    } catch (e) {
        return NaN;
    }
    if (depth > 0) return t;
    try {
        const kids = fs.readFileSync('/proc/' + pid + '/task/' + pid +
                                     '/children', 'utf8').trim();
        for (const k of kids ? kids.split(/\s+/) : [])
            t += cpuTicks(Number(k), depth + 1) || 0;
    } catch (e) { /* no children file: the process alone */ }
    return t;
}

function cpuSample() {
    const t = { at: process.hrtime.bigint(), self: process.cpuUsage() };
    for (const k of Object.keys(pids)) t[k] = cpuTicks(pids[k]);
    return t;
}

// "cpu_NAME=pct ... us_NAME=u ..." over [a, b]: % of one core, and CPU
// microseconds per notification (n).
function cpuLine(a, b, n) {
    const secs = Number(b.at - a.at) / 1e9;
    const pctl = [], usl = [];
    const put = (k, cpuSecs) => {
        pctl.push('cpu_' + k + '=' + (cpuSecs / secs * 100).toFixed(0));
        usl.push('us_' + k + '=' + (cpuSecs * 1e6 / n).toFixed(0));
    };
    for (const k of Object.keys(pids)) put(k, (b[k] - a[k]) / TICK);
    put('driver', (b.self.user - a.self.user + b.self.system -
                   a.self.system) / 1e6);
    return pctl.concat(usl).join(' ');
}

// ---- the payload ----------------------------------------------------------

function payload(i) {
    return {
        order: 'SO-' + RUN + '-' + i,
        carrier: 'DHL',
        tracking_url: 'https://track.example.com/' + RUN + '/' + i,
    };
}

function pct(sorted, p) {
    if (!sorted.length) return -1;
    const k = Math.max(0, Math.ceil(p * sorted.length) - 1);
    return sorted[Math.min(k, sorted.length - 1)];
}

// ---- switchboard ------------------------------------------------------------

const SB = {
    customers: [],

    async counter() {
        const v = await redis.mget(P + 'stats:ntf:sent:webhook',
                                   P + 'stats:ntf:dead',
                                   P + 'stats:ntf:rejected');
        return { done: Number(v[0] || 0),
                 bad: Number(v[1] || 0) + Number(v[2] || 0) };
    },

    async seq() {
        return Number((await redis.get(P + 'seq:ntf')) || 0);
    },

    // XADD count entries from index first; who(i) gives the recipient.
    async enqueue(first, count, who) {
        const p = redis.pipeline();
        for (let i = first; i < first + count; i++)
            p.xadd(P + 'notify', '*', 'event', 'order.shipped', ...who(i),
                   'channels', 'webhook', 'data',
                   JSON.stringify(payload(i)));
        const r = await p.exec();
        for (const [err] of r) if (err) throw err;
    },

    // [enq, sent] of each notification in (s0, s1].
    async times(s0, s1) {
        const out = [];
        for (let a = s0 + 1; a <= s1; a += CHUNK) {
            const p = redis.pipeline();
            const b = Math.min(s1, a + CHUNK - 1);
            for (let i = a; i <= b; i++) {
                p.hmget(P + 'ntf:nt_' + i, 'enq', 'state', 'customer', 'att');
            }
            const r = await p.exec();
            for (let k = 0; k < r.length; k += 1) {
                const [enq, state, cust, atts] = r[k][1] || [];
                let at = NaN;
                try {
                    const all = JSON.parse(atts || '[]');
                    const att = all.length ? all[all.length - 1] : null;
                    if (att && att.result === 'sent') at = Number(att.at);
                } catch (e) { /* counted as not sent */ }
                out.push({ enq: Number(enq), done: at, state, cust });
            }
        }
        return out;
    },
};

// ---- bullmq -----------------------------------------------------------------

const BQ = {
    queue: null,
    ids: [],

    async init() {
        const { Queue } = req('bullmq');
        this.queue = new Queue(QUEUE, {
            connection: { path: SOCK, maxRetriesPerRequest: null },
        });
        await this.queue.waitUntilReady();
    },

    async counter() {
        const v = await redis.pipeline()
            .zcard('bull:' + QUEUE + ':completed')
            .zcard('bull:' + QUEUE + ':failed').exec();
        return { done: Number(v[0][1]), bad: Number(v[1][1]) };
    },

    async enqueue(first, count, who) {
        const jobs = [];
        for (let i = first; i < first + count; i++) {
            const w = who(i);
            const d = { event: 'order.shipped', channels: ['webhook'],
                        data: payload(i) };
            d[w[0]] = w[1];
            jobs.push({ name: 'order.shipped', data: d, opts: {
                attempts: 5, backoff: { type: 'exponential', delay: 2000 },
            } });
        }
        const added = await this.queue.addBulk(jobs);
        for (const j of added) this.ids.push(j.id);
    },

    async times(ids) {
        const out = [];
        for (let a = 0; a < ids.length; a += CHUNK) {
            const p = redis.pipeline();
            for (const id of ids.slice(a, a + CHUNK))
                p.hmget('bull:' + QUEUE + ':' + id, 'timestamp', 'finishedOn',
                        'failedReason');
            for (const [err, v] of await p.exec()) {
                const [ts, fin] = err ? [] : v;
                out.push({ enq: Number(ts), done: Number(fin) });
            }
        }
        return out;
    },
};

// ---- one run ----------------------------------------------------------------

// Wait until the done counter reaches goal: true; false when the time is
// up or every one left has failed for good (dead letter, failed job).
async function drain(T, goal, bad0, deadline) {
    for (;;) {
        const c = await T.counter();
        if (c.done >= goal) return true;
        if (c.done + (c.bad - bad0) >= goal || Date.now() > deadline)
            return false;
        await sleep(20);
    }
}

// Enqueue count notifications at rate/s (0: as fast as possible).
async function produce(T, count, rate, who) {
    const t0 = Date.now();
    let sent = 0, lagMax = 0;
    while (sent < count) {
        let k = CHUNK;
        if (rate > 0) {
            const due = Math.min(count,
                Math.floor((Date.now() - t0) * rate / 1000) + 1);
            if (due <= sent) {
                await sleep(2);
                continue;
            }
            lagMax = Math.max(lagMax, due - sent);
            k = due - sent;
        }
        k = Math.min(k, count - sent, CHUNK);
        await T.enqueue(sent, k, who);
        sent += k;
    }
    return { secs: (Date.now() - t0) / 1000,
             lagMs: rate > 0 ? lagMax * 1000 / rate : 0 };
}

function summarise(kind, n, rows, prod, cpu) {
    const lat = [];
    let first = Infinity, last = -Infinity, done = 0;
    for (const r of rows) {
        if (r.enq < first) first = r.enq;
        if (!(r.done > 0)) continue;
        done++;
        if (r.done > last) last = r.done;
        lat.push(r.done - r.enq);
    }
    lat.sort((a, b) => a - b);
    const secs = done ? (last - first) / 1000 : 0;
    return 'RESULT target=' + TARGET + ' kind=' + kind + ' n=' + n +
        ' done=' + done + ' secs=' + secs.toFixed(3) +
        ' rate=' + (secs > 0 ? (done / secs).toFixed(0) : '0') +
        ' p50_ms=' + pct(lat, 0.5) + ' p99_ms=' + pct(lat, 0.99) +
        ' max_ms=' + (lat.length ? lat[lat.length - 1] : -1) +
        ' enqueue_secs=' + prod.secs.toFixed(3) +
        ' gen_lag_max_ms=' + prod.lagMs.toFixed(0) + ' ' + cpu;
}

// One run; after (if given) runs once the drain is over, before the
// times are read back.
async function run(T, kind, count, rate, who, after) {
    const s0 = TARGET === 'switchboard' ? await SB.seq() : 0;
    const c0 = await T.counter();
    if (TARGET === 'bullmq') BQ.ids = [];
    const a = cpuSample();
    const prod = await produce(T, count, rate, who);
    const ok = await drain(T, c0.done + count, c0.bad,
                           Date.now() + TIMEOUT_MS);
    const b = cpuSample();
    if (after) await after(Number(b.at - a.at) / 1e9);
    const rows = TARGET === 'switchboard'
        ? await SB.times(s0, await SB.seq())
        : await BQ.times(BQ.ids);
    console.log(summarise(kind, count, rows, prod, cpuLine(a, b, count)));
    if (!ok) console.error('load: ' + TARGET + ' ' + kind + ': not done in ' +
                           TIMEOUT_MS / 1000 + ' s');
    return { ok, rows };
}

// ---- Redis' view -----------------------------------------------------------

function scriptNames() {
    const names = {};
    if (!LUA) return names;
    try {
        const libdir = path.join(LUA, 'lib');
        const lib = fs.readdirSync(libdir).filter((f) => f.endsWith('.lua'))
            .sort().map((f) => fs.readFileSync(path.join(libdir, f)));
        for (const f of fs.readdirSync(LUA)) {
            if (!f.endsWith('.lua')) continue;
            const h = crypto.createHash('sha1');
            for (const b of lib) h.update(b);
            h.update(fs.readFileSync(path.join(LUA, f)));
            names[h.digest('hex')] = f.replace(/\.lua$/, '');
        }
    } catch (e) {
        console.error('load: cannot read the scripts:', e.message);
    }
    return names;
}

async function redisReset() {
    await redis.config('SET', 'slowlog-log-slower-than', '100');
    await redis.config('SET', 'slowlog-max-len', '100000');
    await redis.slowlog('RESET');
    await redis.config('RESETSTAT');
}

// "REDIS secs=S cmds=name:calls_per_n:us_per_call,...
// scripts=name:calls:us_per_call:us_per_n,... script_busy_pct=P": the
// commands with the most time (those run inside scripts included), the
// scripts from SLOWLOG (calls over 100 us), and the share of the interval
// Redis spent in those script calls.
async function redisReport(secs, n) {
    const info = await redis.info('commandstats');
    const cmds = [];
    for (const line of info.split('\n')) {
        const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim());
        if (m) cmds.push({ name: m[1], calls: +m[2], usec: +m[3] });
    }
    cmds.sort((a, b) => b.usec - a.usec);
    const names = scriptNames();
    const log = await redis.slowlog('GET', '100000');
    const by = {};
    for (const e of log) {
        const argv = e[3] || [];
        if (String(argv[0]).toLowerCase() !== 'evalsha') continue;
        const sha = String(argv[1]);
        const k = names[sha] || 'sha:' + sha.slice(0, 8);
        const s = by[k] || (by[k] = { calls: 0, usec: 0 });
        s.calls++;
        s.usec += Number(e[2]);
    }
    const scripts = Object.entries(by).sort((a, b) => b[1].usec - a[1].usec);
    const busy = scripts.reduce((t, [, s]) => t + s.usec, 0);
    console.log('REDIS target=' + TARGET + ' secs=' + secs.toFixed(3) +
        ' cmds=' +
        cmds.slice(0, 10).map((c) => c.name + ':' +
            (c.calls / n).toFixed(2) + ':' + (c.usec / c.calls).toFixed(1))
            .join(',') +
        ' scripts=' + scripts.map(([k, s]) => k + ':' + s.calls + ':' +
            (s.usec / s.calls).toFixed(0) + ':' + (s.usec / n).toFixed(0))
            .join(',') +
        ' script_busy_pct=' + (secs > 0 ? (busy / 1e4 / secs).toFixed(0)
                                         : '0'));
}

// ---- main -------------------------------------------------------------------

async function main() {
    const T = TARGET === 'switchboard' ? SB : BQ;
    let fail = false;
    if (TARGET === 'bullmq') await BQ.init();

    // Warm-up: recipients by e-mail; for switchboard this makes the
    // customers the measured runs address by id.
    const w0 = TARGET === 'switchboard' ? await SB.seq() : 0;
    const wc = await T.counter();
    await produce(T, WARMUP, 0,
                  (i) => ['email', 'b' + i + '@bench.example.com']);
    if (!await drain(T, wc.done + WARMUP, wc.bad, Date.now() + 30000)) {
        console.error('load: the warm-up did not finish in 30 s');
        process.exit(1);
    }
    let customers = [];
    if (TARGET === 'switchboard') {
        const rows = await SB.times(w0, await SB.seq());
        customers = [...new Set(rows.map((r) => r.cust).filter(Boolean))];
    } else {
        for (let i = 0; i < WARMUP; i++) customers.push('cu_' + (i + 1));
    }
    if (customers.length !== WARMUP) {
        console.error('load: expected ' + WARMUP + ' customers, got ' +
                      customers.length);
        process.exit(1);
    }
    const who = (i) => ['customer', customers[i % customers.length]];

    await redisReset();
    const burst = await run(T, 'burst', N, 0, who,
                            (secs) => redisReport(secs, N));
    if (!burst.ok) fail = true;
    if (PACED > 0 && burst.ok) {
        await sleep(500);
        const paced = await run(T, 'paced', PACED, RATE, who);
        if (!paced.ok) fail = true;
    }
    if (BQ.queue) await BQ.queue.close();
    redis.disconnect();
    process.exit(fail ? 1 : 0);
}

main().catch((e) => {
    console.error('load:', e && e.stack ? e.stack : e);
    process.exit(1);
});
