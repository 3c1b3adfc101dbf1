// server.js - a private redis-server and switchboard daemon for browser tests.
//
// new Server(opts).start() makes a temp dir, starts redis-server on a unix
// socket in it, writes a config (listener on a free 127.0.0.1 port, pages
// from src/www, users whose argon2id hashes come from `SB_BIN
// --hash-password`, an API key from `SB_BIN --new-apikey`) and starts the
// daemon (SB_BIN, default build/asan/switchboard, with the sanitizer options
// of the integration suite), then waits for /readyz. stop() stops both by
// PID and returns the problems found in the daemon's log and exit status:
// any sanitizer report, any error-level line ("<3>" or worse) not declared
// in opts.expectErrors, a non-zero exit after SIGTERM.
//
// Tests talk to it with api() (fetch with a time limit) and, for checks on
// the stored data, redis() (a minimal RESP client on the socket).
//
// contactCenterConfig(extra) gives the overrides a test of the contact
// center needs (routing with one queue, the web chat, reply channels, the
// console): `config: contactCenterConfig({...})` in a test file.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const procs = require('./procs');

const ROOT = path.resolve(__dirname, '..', '..', '..');

const SAN_ENV = {
  ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
  LSAN_OPTIONS: '',
};
const SANITIZER_RE = new RegExp(
  'ERROR: AddressSanitizer|runtime error:|LeakSanitizer|' +
  'ERROR: UndefinedBehaviorSanitizer');
const ERRLINE_RE = /^<[0-3]>/;

// Who may log in, and the API keys; passwords are made per run.
const USERS = {
  olga: { role: 'operator', display: 'Ольга', pw: 'olga-Пароль-' },
  alice: { role: 'agent', display: 'Alice', pw: 'alice-password-' },
  root: { role: 'admin', display: 'Root', pw: 'root-password-' },
};
const API_KEYS = { test: 'contacts,customers', boss: 'admin' };

function sbBin() {
  const b = process.env.SB_BIN || 'build/asan/switchboard';
  return path.isAbsolute(b) ? b : path.join(ROOT, b);
}

function runBin(args, input) {
  return execFileSync(sbBin(), args, {
    input: input === undefined ? '' : input,
    env: { ...process.env, ...SAN_ENV },
    timeout: 60000,
    stdio: ['pipe', 'pipe', 'pipe'],
  }).toString('utf8');
}

// Secrets for the whole run (hashing is slow under ASan): made once.
let secretsCache = null;
function secrets() {
  if (secretsCache) return secretsCache;
  const s = { apikeys: {}, users: {} };
  for (const [id, scopes] of Object.entries(API_KEYS)) {
    const kv = {};
    for (const line of runBin(['--new-apikey', id]).split('\n')) {
      const m = /^\s*(\w+)\s*=\s*(\S+)\s*$/.exec(line);
      if (m) kv[m[1]] = m[2];
    }
    if (!kv.key || !kv.key.startsWith(`sb_${id}_`) || !kv.hash)
      throw new Error(`--new-apikey ${id}: unexpected output`);
    s.apikeys[id] = { key: kv.key, hash: kv.hash, scopes };
  }
  for (const [name, u] of Object.entries(USERS)) {
    const pw = u.pw + crypto.randomBytes(6).toString('hex');
    const hash = runBin(['--hash-password'], pw + '\n').trim();
    if (!hash.startsWith('$argon2id$'))
      throw new Error(`--hash-password: unexpected output for ${name}`);
    s.users[name] = { role: u.role, display: u.display, password: pw, hash };
  }
  secretsCache = s;
  return s;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = srv.address().port;
      srv.close(() => resolve(port));
    });
  });
}

// --------------------------------------------------------------------------
// Minimal RESP client: one command per connection, bounded in time.

function respEncode(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const b = Buffer.from(String(a), 'utf8');
    parts.push(`$${b.length}\r\n`, b, '\r\n');
  }
  return Buffer.concat(parts.map((p) => Buffer.isBuffer(p) ? p : Buffer.from(p)));
}

// Parse one reply at buf[pos]; returns [value, next] or null if incomplete.
function respParse(buf, pos) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return null;
  const t = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  if (t === '+') return [line, next];
  if (t === '-') return [new Error(line), next];
  if (t === ':') return [Number(line), next];
  if (t === '$') {
    const n = Number(line);
    if (n < 0) return [null, next];
    if (buf.length < next + n + 2) return null;
    return [buf.toString('utf8', next, next + n), next + n + 2];
  }
  if (t === '*') {
    const n = Number(line);
    if (n < 0) return [null, next];
    const out = [];
    let p = next;
    for (let i = 0; i < n; i++) {
      const r = respParse(buf, p);
      if (!r) return null;
      out.push(r[0]);
      p = r[1];
    }
    return [out, p];
  }
  throw new Error(`redis: bad reply type ${t}`);
}

function redisCommand(sockPath, args, limitMs = 5000) {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const c = net.createConnection(sockPath);
    const finish = (err, v) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      c.destroy();
      if (err) reject(err); else resolve(v);
    };
    const timer = setTimeout(
      () => finish(new Error(`redis ${args[0]}: timed out`)), limitMs);
    c.on('connect', () => c.write(respEncode(args)));
    c.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      let r;
      try { r = respParse(buf, 0); } catch (e) { finish(e); return; }
      if (!r) return;
      if (r[0] instanceof Error) finish(r[0]); else finish(null, r[0]);
    });
    c.on('error', (e) => finish(e));
    c.on('close', () => finish(new Error('redis: connection closed')));
  });
}

// --------------------------------------------------------------------------

function renderConfig(conf) {
  const lines = ['# written by tests/browser/lib/server.js'];
  for (const [sec, keys] of Object.entries(conf)) {
    if (!keys) continue;
    lines.push('', `[${sec}]`);
    for (const [k, v] of Object.entries(keys))
      if (v !== null && v !== undefined) lines.push(`${k} = ${v}`);
  }
  return lines.join('\n') + '\n';
}

// overrides: { section: { key: value|null } | null }; null deletes.
function mergeConfig(conf, overrides) {
  for (const [sec, keys] of Object.entries(overrides || {})) {
    if (keys === null) { delete conf[sec]; continue; }
    conf[sec] = conf[sec] || {};
    for (const [k, v] of Object.entries(keys)) {
      if (v === null) delete conf[sec][k]; else conf[sec][k] = v;
    }
  }
  return conf;
}

// [routing], one [queue general] of alice, [chat] with the widget's pages,
// [channels] (chat replies through the chat driver, e-mail and SMS to the
// file outbox) and [console]; extra is merged over them (null deletes).
function contactCenterConfig(extra) {
  return mergeConfig({
    routing: { default_queue: 'general', offer_timeout: '60s',
               tick: '200ms', capacity: '5' },
    'queue general': { members: 'alice', strategy: 'round_robin',
                       sla: '2m' },
    chat: { www_dir: path.join(ROOT, 'channels', 'webchat', 'www') },
    channels: { chat: 'chat', email: 'file', sms: 'file' },
    console: { offline_grace: '60s' },
    notify: { templates: path.join(ROOT, 'config', 'templates'),
              supersede_window: '0', stats_interval: '200ms' },
  }, extra);
}

class Server {
  // opts: { config: overrides, expectErrors: [RegExp|string],
  //         readyMs: 30000, stopMs: 15000 }
  constructor(opts = {}) {
    this.opts = opts;
    this.expect = (opts.expectErrors || []).map(
      (p) => p instanceof RegExp ? p : new RegExp(p));
    this.redisProc = null;
    this.daemon = null;
    this.exits = [];
  }

  get url() { return `http://127.0.0.1:${this.port}`; }
  get apikey() { return secrets().apikeys.test.key; }
  key(id) { return secrets().apikeys[id].key; }
  password(user) { return secrets().users[user].password; }
  user(name) { return secrets().users[name]; }

  async start() {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-browser-'));
    this.redisSock = path.join(this.tmp, 'redis.sock');
    this.logPath = path.join(this.tmp, 'daemon.log');
    const s = secrets();
    await this.startRedis();
    this.port = await freePort();
    const conf = {
      core: { log_level: 'info', drain_timeout: '5s',
              default_country: 'RU', worker_queue: '64' },
      http: { max_body: '1M', public_url: this.url,
              www_dir: process.env.SB_WWW_DIR ||
                path.join(ROOT, 'src', 'www') },
      'listener main': { address: '127.0.0.1', port: String(this.port) },
      redis: { socket: this.redisSock, prefix: 'sb:',
               connect_timeout: '2s', command_timeout: '5s' },
      auth: { session_idle: '30m', session_max: '12h',
              login_fail_max: '5', login_fail_window: '15m',
              login_ip_fail_max: '20' },
      file: { dir: path.join(this.tmp, 'outbox'), fail_to: 'dead@example.com' },
    };
    for (const [id, k] of Object.entries(s.apikeys))
      conf[`apikey ${id}`] = { hash: k.hash, scopes: k.scopes };
    for (const [name, u] of Object.entries(s.users))
      conf[`user ${name}`] = { role: u.role, password: u.hash,
                               display_name: u.display };
    mergeConfig(conf, this.opts.config);
    this.confPath = path.join(this.tmp, 'switchboard.conf');
    fs.writeFileSync(this.confPath, renderConfig(conf), { mode: 0o600 });
    await this.startDaemon();
    return this;
  }

  async startRedis() {
    const log = path.join(this.tmp, 'redis.log');
    this.redisProc = procs.start('redis-server', [
      '--port', '0', '--unixsocket', this.redisSock,
      '--unixsocketperm', '700', '--save', '', '--appendonly', 'no',
      '--dir', this.tmp, '--daemonize', 'no', '--logfile', log,
    ], { stdio: 'ignore' }, 'redis-server');
    const deadline = Date.now() + 10000;
    for (;;) {
      if (!procs.running(this.redisProc)) {
        const r = await this.redisProc.exited;
        throw new Error(`redis-server did not start (${r.error ||
          'exit ' + r.code}); see ${log}`);
      }
      try {
        if (await this.redis('PING') === 'PONG') return;
      } catch (e) { /* not yet */ }
      if (Date.now() > deadline)
        throw new Error('redis-server not ready in 10 s');
      await procs.sleep(50);
    }
  }

  async startDaemon() {
    const fd = fs.openSync(this.logPath, 'a');
    try {
      this.daemon = procs.start(sbBin(), ['-c', this.confPath], {
        stdio: ['ignore', fd, fd],
        env: { ...process.env, ...SAN_ENV },
      }, 'switchboard');
    } finally {
      fs.closeSync(fd);
    }
    const limit = this.opts.readyMs || 30000;
    const deadline = Date.now() + limit;
    for (;;) {
      if (!procs.running(this.daemon)) {
        const r = await this.daemon.exited;
        this.exits.push({ ...r, how: 'exited' });
        throw new Error(`daemon exited at start (${r.error ||
          'exit ' + r.code}):\n${this.logTail()}`);
      }
      try {
        const r = await fetch(this.url + '/readyz',
                              { signal: AbortSignal.timeout(2000) });
        await r.arrayBuffer();
        if (r.status === 200) return;
      } catch (e) { /* not yet */ }
      if (Date.now() > deadline)
        throw new Error(`daemon not ready in ${limit} ms:\n${this.logTail()}`);
      await procs.sleep(50);
    }
  }

  redis(...args) { return redisCommand(this.redisSock, args); }

  // api(method, path, body, { token, timeoutMs }): token defaults to the
  // test API key; token null sends none. Returns { status, headers, json,
  // text }.
  async api(method, p, body, o = {}) {
    const token = o.token === undefined ? this.apikey : o.token;
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(this.url + p, {
      method, headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(o.timeoutMs || 15000),
    });
    const text = await r.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
    return { status: r.status, headers: r.headers, json, text };
  }

  // contact(body): POST /api/v1/contacts, which must answer 201.
  async contact(body) {
    const r = await this.api('POST', '/api/v1/contacts', body);
    if (r.status !== 201)
      throw new Error(`POST /api/v1/contacts: ${r.status} ${r.text}`);
    return r.json;
  }

  // A session token for a configured user.
  async login(user) {
    const r = await this.api('POST', '/api/v1/login',
      { username: user, password: this.password(user) }, { token: null });
    if (r.status !== 200) throw new Error(`login ${user}: ${r.status}`);
    return r.json.token;
  }

  logText() {
    try { return fs.readFileSync(this.logPath, 'utf8'); } catch (e) {
      return '';
    }
  }

  logTail(n = 30) {
    return this.logText().split('\n').slice(-n - 1).join('\n');
  }

  // Stop the daemon and Redis by PID; returns the list of problems.
  async stop() {
    const problems = [];
    if (this.daemon) {
      const r = await procs.stop(this.daemon, this.opts.stopMs || 15000);
      if (r.killed)
        problems.push('daemon did not exit within the limit after SIGTERM');
      else if (r.code !== 0 && !this.exits.length)
        problems.push(`daemon exit ${r.code} (signal ${r.signal}) ` +
                      'after SIGTERM');
      this.daemon = null;
    }
    if (this.redisProc) {
      await procs.stop(this.redisProc, 10000);
      this.redisProc = null;
    }
    for (const line of this.logText().split('\n')) {
      if (SANITIZER_RE.test(line)) problems.push('sanitizer: ' + line.trim());
      else if (ERRLINE_RE.test(line) && !this.expect.some((p) => p.test(line)))
        problems.push('error line: ' + line.trim());
    }
    return problems;
  }

  // Remove the temp dir (kept when keep is true or SB_KEEP_TMP is set).
  cleanup(keep) {
    if (!this.tmp) return null;
    if (keep || process.env.SB_KEEP_TMP) return this.tmp;
    fs.rmSync(this.tmp, { recursive: true, force: true });
    return null;
  }
}

module.exports = { Server, ROOT, secrets, redisCommand, sbBin,
                   contactCenterConfig };
