// dashboard.js - the operator dashboard (/dashboard/): log in as an
// operator (or admin), open /console/ws (subprotocol switchboard.agent.v1,
// docs/console-protocol.md), authenticate, send "watch" and render every
// "dashboard" frame: the queues (waiting, longest wait, agents online and
// busy, SLA breaches) and the agents (presence, load, offers). The server
// sends a frame within a second of any change; between frames the waits
// and "updated N s ago" tick locally. The notification queues (stream
// backlog, pending, retry schedule, dead letters, rejects, per-channel
// queues) come from GET /api/v1/notify/queues every NOTIFY_MS. Every value
// from the network is inserted with textContent.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const PROTOCOL = 'switchboard.agent.v1';
  const PING_MS = 20000;
  const BACKOFF_MIN = 1000;
  const BACKOFF_MAX = 30000;
  const NOTIFY_MS = 3000;
  const OPERATORS_ONLY = 'The dashboard is for operators only: log in ' +
    'with an operator account.';

  let token = sessionStorage.getItem('sb_token');
  let ws = null;
  let authed = false;
  let backoff = BACKOFF_MIN;
  let reconnectTimer = null;
  let pingTimer = null;
  let last = null;       // the last dashboard frame
  let lastAt = 0;        // when it arrived (Date.now())
  let notifyTimer = null;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function fmtDur(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + String(s % 60).padStart(2, '0') + ' s';
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') +
      ' min';
  }

  async function api(method, path, body, tok) {
    const headers = { 'Content-Type': 'application/json' };
    const t = tok === undefined ? token : tok;
    if (t) headers.Authorization = 'Bearer ' + t;
    let res;
    try {
      res = await fetch(path, {
        method, headers, body: body ? JSON.stringify(body) : undefined,
      });
    } catch (e) {
      return { status: 0, data: null };
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { status: res.status, data };
  }

  function isOperator(role) {
    return role === 'operator' || role === 'admin';
  }

  function showLogin(msg) {
    $('login-view').hidden = false;
    $('board').hidden = true;
    $('logout').hidden = true;
    $('who').textContent = '';
    $('conn').textContent = '';
    $('updated').textContent = '';
    $('login-error').textContent = msg || '';
  }

  function showBoard(who) {
    $('login-view').hidden = true;
    $('board').hidden = false;
    $('logout').hidden = false;
    $('who').textContent = who || '';
  }

  async function login(ev) {
    ev.preventDefault();
    $('login-error').textContent = '';
    const r = await api('POST', '/api/v1/login', {
      username: $('username').value, password: $('password').value,
    }, null);
    if (r.status !== 200 || !r.data || !r.data.token) {
      $('login-error').textContent = (r.data && r.data.error) ||
        (r.status ? 'login failed' : 'server unreachable');
      return;
    }
    $('password').value = '';
    if (!isOperator(r.data.role)) {
      // Not ours to keep: end the session we just made.
      api('POST', '/api/v1/logout', null, r.data.token);
      $('login-error').textContent = OPERATORS_ONLY;
      return;
    }
    token = r.data.token;
    sessionStorage.setItem('sb_token', token);
    showBoard(r.data.user + ' (' + r.data.role + ')');
    connect();
  }

  function logout(msg) {
    if (token && !msg) api('POST', '/api/v1/logout');
    token = null;
    sessionStorage.removeItem('sb_token');
    disconnect();
    last = null;
    $('queues').tBodies[0].replaceChildren();
    $('agents').tBodies[0].replaceChildren();
    clearInterval(notifyTimer);
    notifyTimer = null;
    $('notify').tBodies[0].replaceChildren();
    $('notify-channels').tBodies[0].replaceChildren();
    showLogin(msg);
  }

  // ---- the WebSocket ----------------------------------------------------

  function setConn(text, cls) {
    $('conn').textContent = text;
    $('conn').className = 'conn ' + (cls || '');
  }

  function connect() {
    if (ws || !token) return;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    setConn('connecting…', 'wait');
    let sock;
    try {
      sock = new WebSocket((location.protocol === 'https:' ? 'wss://'
        : 'ws://') + location.host + '/console/ws', PROTOCOL);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = () => {
      // presence false: watching is not working the queues, so this
      // socket neither sets the operator online nor gets offers.
      if (sock === ws) {
        sock.send(JSON.stringify({ type: 'auth', token, presence: false }));
      }
    };
    sock.onmessage = (ev) => {
      if (sock !== ws) return;
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m && typeof m.type === 'string') onFrame(m);
    };
    sock.onclose = (ev) => {
      if (sock !== ws) return;
      ws = null;
      authed = false;
      clearInterval(pingTimer);
      if (ev.code === 1008 && /session|auth/.test(ev.reason || '')) {
        logout('Your session has ended: please log in again.');
        return;
      }
      setConn('disconnected — reconnecting', 'bad');
      scheduleReconnect();
    };
    sock.onerror = () => { /* a close follows */ };
  }

  function scheduleReconnect() {
    if (reconnectTimer || !token) return;
    const delay = backoff / 2 + Math.random() * backoff / 2;
    backoff = Math.min(BACKOFF_MAX, backoff * 2);
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, delay);
  }

  function disconnect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    clearInterval(pingTimer);
    authed = false;
    if (ws) {
      const s = ws;
      ws = null;
      try { s.close(1000, 'bye'); } catch (e) { /* closed */ }
    }
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function onFrame(m) {
    switch (m.type) {
    case 'hello':
      if (!isOperator(m.role)) {
        disconnect();
        token = null;
        sessionStorage.removeItem('sb_token');
        showLogin(OPERATORS_ONLY);
        return;
      }
      authed = true;
      backoff = BACKOFF_MIN;
      showBoard((m.name || m.user) + ' (' + m.role + ')');
      setConn('live', 'ok');
      $('board-error').textContent = '';
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send({ type: 'ping' }), PING_MS);
      send({ type: 'watch' });
      startNotify();
      break;
    case 'dashboard':
      last = m;
      lastAt = Date.now();
      render();
      break;
    case 'error':
      if (m.code === 'forbidden') {
        disconnect();
        showLogin(OPERATORS_ONLY);
        return;
      }
      $('board-error').textContent = m.message || m.code || 'error';
      break;
    default:
      break;
    }
  }

  // ---- rendering --------------------------------------------------------

  function num(v) {
    return el('td', 'num', v === undefined || v === null ? '' : v);
  }

  function render() {
    const qb = $('queues').tBodies[0];
    qb.replaceChildren();
    for (const q of last.queues || []) {
      const tr = el('tr');
      tr.dataset.queue = q.name;
      const longest = el('td', 'num longest');
      longest.dataset.base = String(q.waiting > 0 ? q.longest_wait || 0 : -1);
      const breaches = num(q.sla_breaches);
      if (q.sla_breaches > 0) breaches.classList.add('alert');
      const waiting = num(q.waiting);
      waiting.classList.add('waiting');
      if (q.waiting > 0) tr.classList.add('has-waiting');
      tr.append(el('td', 'name', q.name), el('td', null, q.strategy),
        waiting, longest, num(q.online), num(q.busy), num(q.available),
        breaches);
      qb.append(tr);
    }
    const ab = $('agents').tBodies[0];
    ab.replaceChildren();
    for (const a of last.agents || []) {
      const tr = el('tr');
      tr.dataset.agent = a.name;
      const pr = el('td', 'presence');
      pr.append(el('span', 'pr pr-' + String(a.presence).replace(/\W/g, ''),
        a.presence));
      const load = num((a.active || 0) + ' / ' + (a.capacity || 0));
      if (a.capacity && a.active >= a.capacity) load.classList.add('full');
      const since = el('td', 'since');
      since.dataset.since = String(a.since || 0);
      tr.append(el('td', 'name', a.name), pr, load,
        num((a.offers || []).length), el('td', null,
          (a.queues || []).join(', ')), since);
      ab.append(tr);
    }
    tick();
  }

  async function pollNotify() {
    if (!token || $('board').hidden) return;
    const r = await api('GET', '/api/v1/notify/queues');
    const nb = $('notify').tBodies[0];
    const cb = $('notify-channels').tBodies[0];
    if (r.status !== 200 || !r.data) {
      $('notify-error').textContent = r.status === 503 ?
        'notification figures unavailable (Redis)' :
        r.status ? 'notification figures: HTTP ' + r.status : '';
      return;
    }
    $('notify-error').textContent = '';
    const d = r.data;
    const tr = el('tr');
    const dead = num(d.dead);
    if (d.dead > 0) dead.classList.add('alert');
    tr.append(num(d.backlog < 0 ? '?' : d.backlog), num(d.pending),
      num(d.inflight), num(d.scheduled), dead, num(d.rejects),
      el('td', null, (d.consumers || []).map((c) => c.name + ' (' +
        c.pending + ')').join(', ')));
    nb.replaceChildren(tr);
    cb.replaceChildren();
    for (const [name, c] of Object.entries(d.channels || {})) {
      const row = el('tr');
      row.dataset.channel = name;
      row.append(el('td', 'name', name),
        el('td', null, c.driver ? 'yes' : 'no'), num(c.queued),
        num(c.inflight));
      cb.append(row);
    }
  }

  function startNotify() {
    if (notifyTimer) return;
    pollNotify();
    notifyTimer = setInterval(pollNotify, NOTIFY_MS);
  }

  function tick() {
    if (!last) return;
    const elapsed = Date.now() - lastAt;
    $('updated').textContent = 'updated ' + Math.floor(elapsed / 1000) +
      ' s ago';
    for (const td of $('queues').querySelectorAll('td.longest')) {
      const base = Number(td.dataset.base);
      td.textContent = base < 0 ? '—' : fmtDur(base + elapsed);
    }
    for (const td of $('agents').querySelectorAll('td.since')) {
      const since = Number(td.dataset.since);
      td.textContent = since > 0 && last.at ?
        fmtDur(last.at - since + elapsed) : '';
    }
  }

  document.addEventListener('DOMContentLoaded', async () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout());
    setInterval(tick, 1000);
    if (!token) { showLogin(); return; }
    const r = await api('GET', '/api/v1/me');
    if (r.status === 401 || r.status === 403) {
      token = null;
      sessionStorage.removeItem('sb_token');
      showLogin();
      return;
    }
    if (r.status === 200 && r.data && !isOperator(r.data.role)) {
      // An agent's session from the console in this tab: leave it alone.
      token = null;
      showLogin(OPERATORS_ONLY);
      return;
    }
    showBoard(r.data ? r.data.user + ' (' + r.data.role + ')' : '');
    connect();
  });
})();
