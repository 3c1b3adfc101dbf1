// baseline.js - the chat benchmark's baseline: a relay on Node's ws package.
//
// What a small team would write instead of switchboard's chat path, so that
// chatload.c can measure both with the same code. It serves the subset of
// the two protocols the benchmark uses, on one loopback port:
//
//   /chat/ws (switchboard.chat.v1): hello -> welcome (a random token);
//     message {id, text} -> XADD to the stream, then ack {id, contact} to
//     the customer and entry {conversation, entry} to the agent holding the
//     customer's conversation. The first message opens a conversation and
//     assigns it to the connected agent with the fewest ("assigned" frame).
//   /console/ws (switchboard.agent.v1): auth {token} (any token) -> hello
//     {user}; reply {conversation, text, id} -> XADD, then result to the
//     agent and message {from: "agent"} to the customer; ping -> pong.
//   GET /healthz -> 200 (readiness).
//
// Like switchboard, a message is acknowledged and forwarded only once Redis
// has it (the XADD reply). Unlike switchboard there is no customer record,
// no idempotency, no routing engine and no limits beyond ws' maxPayload.
//
// Usage: node baseline.js --port P --redis /path/redis.sock [--stream KEY]
'use strict';

const crypto = require('crypto');
const http = require('http');
const { WebSocketServer } = require('ws');
const { createClient } = require('redis');

function arg(name, dflt) {
    const i = process.argv.indexOf('--' + name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const PORT = Number(arg('port', '0'));
const SOCK = arg('redis', '');
const STREAM = arg('stream', 'bench:relay');
const CHAT = 'switchboard.chat.v1';
const AGENT = 'switchboard.agent.v1';
const ID_RE = /^[A-Za-z0-9._:-]{1,64}$/;
const MAX_TEXT = 3000;

if (!PORT || !SOCK) {
    console.error('usage: node baseline.js --port P --redis SOCKET');
    process.exit(1);
}

const redis = createClient({ socket: { path: SOCK } });
redis.on('error', (e) => console.error('baseline: redis:', e.message));

const agents = [];          // {ws, name, load}
const convs = new Map();    // conversation id -> customer state
let convSeq = 0;
let agentSeq = 0;

function send(ws, obj) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(obj));
}

function pickAgent() {
    let best = null;
    for (const a of agents) if (!best || a.load < best.load) best = a;
    return best;
}

function onCustomer(ws) {
    const c = { ws, hello: false, token: '', conv: '', agent: null };
    ws.on('message', (data, binary) => {
        let m;
        if (binary) return ws.close(1003, 'text only');
        try {
            m = JSON.parse(data.toString('utf8'));
        } catch (e) {
            return send(ws, { type: 'error', code: 'bad_json',
                              message: 'not JSON' });
        }
        if (!m || typeof m.type !== 'string')
            return send(ws, { type: 'error', code: 'bad_json',
                              message: 'no type' });
        if (m.type === 'ping') return send(ws, { type: 'pong' });
        if (m.type === 'hello') {
            if (c.hello) return send(ws, { type: 'error', code: 'bad_state',
                                           message: 'hello twice' });
            c.hello = true;
            c.token = typeof m.token === 'string' && m.token
                ? m.token : crypto.randomBytes(32).toString('base64url');
            return send(ws, { type: 'welcome', token: c.token,
                              conversation: c.conv || null, history: [],
                              max_text: MAX_TEXT });
        }
        if (m.type !== 'message')
            return send(ws, { type: 'error', code: 'unknown_type',
                              message: 'unknown type' });
        if (!c.hello)
            return send(ws, { type: 'error', code: 'no_hello',
                              message: 'hello first' });
        if (typeof m.id !== 'string' || !ID_RE.test(m.id) ||
            typeof m.text !== 'string' || !m.text.trim() ||
            Buffer.byteLength(m.text) > MAX_TEXT)
            return send(ws, { type: 'error', code: 'invalid',
                              message: 'id or text', id: m.id });
        if (!c.conv) {
            c.conv = 'cv_' + ++convSeq;
            convs.set(c.conv, c);
            c.agent = pickAgent();
            if (c.agent) {
                c.agent.load++;
                send(c.agent.ws, { type: 'assigned', conversation: c.conv,
                                   agent: c.agent.name, reason: 'auto',
                                   at: Date.now() });
            }
        }
        const at = Date.now();
        redis.xAdd(STREAM, '*', {
            channel: 'chat', direction: 'in', conversation: c.conv,
            source_id: m.id, text: m.text, ts: String(at),
        }).then((id) => {
            send(ws, { type: 'ack', id: m.id, contact: id });
            if (c.agent)
                send(c.agent.ws, { type: 'entry', conversation: c.conv,
                                   entry: { id, channel: 'chat',
                                            direction: 'in', text: m.text,
                                            at } });
        }, () => {
            send(ws, { type: 'error', code: 'unavailable',
                       message: 'not stored', id: m.id });
        });
    });
}

function onAgent(ws) {
    let me = null;
    ws.on('message', (data) => {
        let m;
        try {
            m = JSON.parse(data.toString('utf8'));
        } catch (e) {
            return send(ws, { type: 'error', code: 'bad_json',
                              message: 'not JSON' });
        }
        if (!m || typeof m.type !== 'string')
            return send(ws, { type: 'error', code: 'invalid',
                              message: 'no type' });
        if (m.type === 'ping') return send(ws, { type: 'pong' });
        if (!me) {
            if (m.type !== 'auth' || typeof m.token !== 'string' || !m.token)
                return ws.close(1008, 'auth first');
            me = { ws, name: 'agent' + ++agentSeq, load: 0 };
            agents.push(me);
            return send(ws, { type: 'hello', user: me.name, role: 'agent',
                              name: me.name });
        }
        if (m.type !== 'reply')
            return send(ws, { type: 'error', code: 'invalid',
                              message: 'unknown message type', id: m.id });
        const c = convs.get(m.conversation);
        if (!c || c.agent !== me)
            return send(ws, { type: 'error', code: 'forbidden',
                              message: 'not yours', id: m.id });
        if (typeof m.text !== 'string' || !m.text)
            return send(ws, { type: 'error', code: 'invalid',
                              message: 'text', id: m.id });
        const at = Date.now();
        redis.xAdd(STREAM, '*', {
            channel: 'chat', direction: 'out', conversation: c.conv,
            agent: me.name, text: m.text, ts: String(at),
        }).then((id) => {
            send(ws, { type: 'result', action: 'reply',
                       conversation: c.conv, ok: true,
                       result: { contact: id }, id: m.id });
            send(c.ws, { type: 'message', id, from: 'agent', name: me.name,
                         text: m.text, at });
        }, () => {
            send(ws, { type: 'error', code: 'unavailable',
                       message: 'not stored', id: m.id });
        });
    });
    ws.on('close', () => {
        const i = agents.indexOf(me);
        if (i >= 0) agents.splice(i, 1);
    });
}

function wss(proto, onConn) {
    const s = new WebSocketServer({
        noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false,
        handleProtocols: (set) => (set.has(proto) ? proto : false),
    });
    s.on('connection', onConn);
    return s;
}

async function main() {
    await redis.connect();
    const chat = wss(CHAT, onCustomer);
    const agent = wss(AGENT, onAgent);
    const server = http.createServer((req, res) => {
        const ok = req.url === '/healthz';
        res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json' });
        res.end(ok ? '{"status":"ok"}' : '{"error":"not found"}');
    });
    server.on('upgrade', (req, sock, head) => {
        const path = req.url.split('?')[0];
        const s = path === '/chat/ws' ? chat
            : path === '/console/ws' ? agent : null;
        if (!s) return sock.destroy();
        s.handleUpgrade(req, sock, head, (ws) => s.emit('connection', ws));
    });
    server.listen(PORT, '127.0.0.1', 4096);
    const stop = () => {
        server.close();
        for (const s of [chat, agent])
            for (const ws of s.clients) ws.terminate();
        redis.quit().finally(() => process.exit(0));
        setTimeout(() => process.exit(0), 2000).unref();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
}

main().catch((e) => {
    console.error('baseline:', e.message);
    process.exit(1);
});
