// worker.js - the notification benchmark's baseline: a BullMQ worker.
//
// What a small team would write instead of switchboard's dispatcher for the
// same job: jobs {event, customer | email, channels, data} on a BullMQ
// queue; for each, render the event's webhook text and POST a signed JSON
// body to one webhook URL over kept-alive connections; a 2xx completes the
// job, anything else throws (BullMQ retries with the job's attempts and
// backoff, set by the producer: 5, exponential from 2 s, as switchboard's
// defaults).
//
// Rendering is a plain string template: the same file switchboard uses
// (config/templates/<event>/webhook.<locale>, locale en), with each
// "{{ data.NAME }}" replaced by that field of the job's data - no filters,
// no escaping, no locale or time zone handling, no customer lookup. The
// body has the fields switchboard's webhook driver sends (id, to, customer,
// text, notification {notification, event, ref, locale, data}, sent_at) and
// the same signature headers (HMAC-SHA256 of "<ts>.<body>").
//
// Unlike switchboard there is no per-attempt record, no timeline entry, no
// idempotency and no channel fallback: BullMQ keeps the job hash with its
// return value, and that is all.
//
// Usage: node worker.js --redis SOCK --url URL --secret S
//        [--queue notify] [--concurrency 50] [--templates DIR]
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const { Worker } = require('bullmq');

function arg(name, dflt) {
    const i = process.argv.indexOf('--' + name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const SOCK = arg('redis', '');
const URL_ = arg('url', '');
const SECRET = arg('secret', '');
const QUEUE = arg('queue', 'notify');
const CONCURRENCY = Number(arg('concurrency', '50'));
const TEMPLATES = arg('templates',
    path.join(__dirname, '..', '..', '..', '..', 'config', 'templates'));

if (!SOCK || !URL_ || SECRET.length < 16) {
    console.error('usage: node worker.js --redis SOCK --url URL ' +
                  '--secret S (16+ bytes)');
    process.exit(1);
}

const target = new URL(URL_);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const templates = new Map();

function template(event) {
    let t = templates.get(event);
    if (t === undefined) {
        const f = path.join(TEMPLATES, event, 'webhook.en');
        t = fs.readFileSync(f, 'utf8').replace(/\n+$/, '');
        templates.set(event, t);
    }
    return t;
}

function render(t, data) {
    return t.replace(/\{\{\s*data\.([A-Za-z0-9_]+)\s*\}\}/g, (_, k) =>
        data[k] === undefined || data[k] === null ? '' : String(data[k]));
}

function post(body, headers) {
    return new Promise((resolve, reject) => {
        const rq = http.request({
            agent, method: 'POST', host: target.hostname,
            port: target.port, path: target.pathname + target.search,
            headers, timeout: 10000,
        }, (res) => {
            const parts = [];
            res.on('data', (c) => parts.push(c));
            res.on('end', () => resolve({ status: res.statusCode,
                                          body: Buffer.concat(parts) }));
            res.on('error', reject);
        });
        rq.on('timeout', () => rq.destroy(new Error('timeout')));
        rq.on('error', reject);
        rq.end(body);
    });
}

async function handle(job) {
    const d = job.data;
    const to = d.customer || d.email;
    const id = job.id + '.' + (job.attemptsMade + 1);
    const text = render(template(d.event), d.data || {});
    const body = JSON.stringify({
        id, to, customer: to, text,
        notification: { notification: job.id, event: d.event, ref: '',
                        locale: 'en', data: d.data || {} },
        sent_at: new Date().toISOString(),
    });
    const ts = String(Math.floor(Date.now() / 1000));
    const sig = crypto.createHmac('sha256', SECRET).update(ts + '.' + body)
        .digest('hex');
    const res = await post(body, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        'User-Agent': 'bullmq-baseline',
        'X-Switchboard-Id': id,
        'X-Switchboard-Timestamp': ts,
        'X-Switchboard-Signature': 'v1=' + sig,
    });
    if (res.status < 200 || res.status > 299)
        throw new Error('http ' + res.status);
    let pid = '';
    try {
        const j = JSON.parse(res.body.toString('utf8'));
        if (j && typeof j.id === 'string') pid = j.id;
    } catch (e) { /* no provider id */ }
    return { provider_id: pid };
}

const worker = new Worker(QUEUE, handle, {
    connection: { path: SOCK, maxRetriesPerRequest: null },
    concurrency: CONCURRENCY,
});
worker.on('error', (e) => console.error('worker:', e.message));
worker.on('ready', () => console.error('worker: ready'));

// SIGTERM: finish the jobs in hand (at most 2 s: with Redis gone, close()
// would wait for ever), then exit.
async function stop() {
    setTimeout(() => process.exit(0), 2000).unref();
    await worker.close();
    agent.destroy();
    process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
