// console.js - the agent console (/console/): log in, then one WebSocket
// (/console/ws, subprotocol switchboard.agent.v1, docs/console-protocol.md)
// carries everything: presence, offers with a countdown, my conversations
// and queues, a conversation's whole cross-channel timeline, replies, notes,
// transfers and resolution, live entries and typing. E-mail entries show
// their header, fold the quoted history, open the original HTML in a
// sandboxed frame and download attachments.
//
// The session token lives in sessionStorage ("sb_token", shared with the
// start page) and is reused while valid. The socket authenticates first,
// pings every 20 s and reconnects with a growing, jittered delay. Presence
// goes to "away" after 5 minutes without input (?away_after=SECONDS
// changes that, for tests) and back to "online" on the next input when it
// was this page that set it away. Every text from the network is inserted
// with textContent, never as HTML.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const PROTOCOL = 'switchboard.agent.v1';
  const PING_MS = 20000;
  const BACKOFF_MIN = 1000;
  const BACKOFF_MAX = 30000;
  const TYPING_EVERY_MS = 3000;
  const CUSTOMER_TYPING_MS = 6000;
  const STATE_EVERY_MS = 30000;
  const FLASH_MS = 8000;
  const awayParam = Number(new URLSearchParams(location.search)
    .get('away_after'));
  const AWAY_MS = (awayParam > 0 ? awayParam : 300) * 1000;
  const CHANNELS = {
    chat: 'chat', email: 'e-mail', sms: 'SMS', phone: 'phone', note: 'note',
    visit: 'visit', event: 'event', api: 'api',
  };

  let token = sessionStorage.getItem('sb_token');
  let me = null;                 // {user, role, name} from hello
  let ws = null;
  let authed = false;
  let backoff = BACKOFF_MIN;
  let reconnectTimer = null;
  let pingTimer = null;
  let stateTimer = null;
  let reqSeq = 0;
  const pending = new Map();     // request id -> callback(frame)
  const offers = new Map();      // conversation -> offer record
  const convs = new Map();       // conversation -> list record
  let queues = [];               // rows of the last queues frame
  let queuesAt = 0;              // when it arrived (Date.now())
  let myQueues = [];             // names from state.me.queues
  let presence = 'offline';
  let autoAway = false;
  let lastInput = Date.now();
  let current = null;            // the conversation shown
  let typingSentAt = 0;
  let typingTimer = null;
  let flashTimer = null;

  // ---- helpers -----------------------------------------------------------

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function badge(channel) {
    const b = el('span', 'badge ch-' + String(channel || 'other')
      .replace(/[^a-z]/g, ''), CHANNELS[channel] || channel || '?');
    return b;
  }

  function fmtTime(ms) {
    if (!ms) return '';
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function fmtDur(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + String(s % 60).padStart(2, '0') + ' s';
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') +
      ' min';
  }

  function customerLabel(c) {
    if (!c) return '';
    const ids = c.identities || {};
    if (c.name) return c.name;
    if (ids.email && ids.email.length) return ids.email[0];
    if (ids.phone && ids.phone.length) return ids.phone[0];
    if (ids.chat && ids.chat.length) {
      return 'visitor ' + String(ids.chat[0]).slice(0, 6);
    }
    return c.id || '';
  }

  function flash(msg) {
    $('flash').textContent = msg || '';
    clearTimeout(flashTimer);
    if (msg) flashTimer = setTimeout(() => { $('flash').textContent = ''; },
      FLASH_MS);
  }

  function errText(m) {
    return (m && (m.message || m.code)) || 'error';
  }

  // ---- HTTP: login ------------------------------------------------------

  async function api(method, path, body) {
    const headers = { 'Content-Type': 'application/json' };
    if (token) headers.Authorization = 'Bearer ' + token;
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

  function showLogin(msg) {
    $('login-view').hidden = false;
    $('app').hidden = true;
    $('logout').hidden = true;
    $('presence-box').hidden = true;
    $('who').textContent = '';
    $('conn').textContent = '';
    $('login-error').textContent = msg || '';
  }

  function showApp() {
    $('login-view').hidden = true;
    $('app').hidden = false;
    $('logout').hidden = false;
    $('presence-box').hidden = false;
  }

  async function login(ev) {
    ev.preventDefault();
    $('login-error').textContent = '';
    const r = await api('POST', '/api/v1/login', {
      username: $('username').value, password: $('password').value,
    });
    if (r.status !== 200 || !r.data || !r.data.token) {
      $('login-error').textContent = (r.data && r.data.error) ||
        (r.status ? 'login failed' : 'server unreachable');
      return;
    }
    token = r.data.token;
    sessionStorage.setItem('sb_token', token);
    $('password').value = '';
    start();
  }

  function resetState() {
    for (const o of offers.values()) o.el.remove();
    offers.clear();
    for (const c of convs.values()) c.el.remove();
    convs.clear();
    queues = [];
    myQueues = [];
    me = null;
    closeConv();
    renderLists();
    renderQueues();
  }

  function logout(msg) {
    if (token && !msg) api('POST', '/api/v1/logout');
    token = null;
    sessionStorage.removeItem('sb_token');
    disconnect();
    resetState();
    showLogin(msg);
  }

  function start() {
    showApp();
    connect();
  }

  // ---- the WebSocket ----------------------------------------------------

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') +
      location.host + '/console/ws';
  }

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
      sock = new WebSocket(wsUrl(), PROTOCOL);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = () => {
      if (sock === ws) sock.send(JSON.stringify({ type: 'auth', token }));
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
      clearInterval(stateTimer);
      failPending();
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
    clearInterval(stateTimer);
    authed = false;
    if (ws) {
      const s = ws;
      ws = null;
      try { s.close(1000, 'bye'); } catch (e) { /* closed */ }
    }
    failPending();
  }

  function send(obj) {
    if (!ws || ws.readyState !== WebSocket.OPEN || !authed) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  // Send a request with an id; cb(frame) gets its result or error.
  function request(obj, cb) {
    const id = 'r' + (++reqSeq);
    obj.id = id;
    pending.set(id, cb);
    if (!send(obj)) {
      pending.delete(id);
      cb({ type: 'error', code: 'offline', message: 'not connected' });
    }
  }

  function failPending() {
    const cbs = [...pending.values()];
    pending.clear();
    for (const cb of cbs) {
      cb({ type: 'error', code: 'offline', message: 'connection lost' });
    }
  }

  function onFrame(m) {
    if ((m.type === 'result' || m.type === 'error' ||
         m.type === 'timeline') && typeof m.id === 'string' &&
        pending.has(m.id)) {
      const cb = pending.get(m.id);
      pending.delete(m.id);
      cb(m);
      return;
    }
    switch (m.type) {
    case 'hello': onHello(m); break;
    case 'state': applyState(m.me); break;
    case 'queues':
      queues = Array.isArray(m.queues) ? m.queues : [];
      queuesAt = Date.now();
      renderQueues();
      break;
    case 'result':
      if (m.action === 'presence' && m.result) setPresence(m.result.presence);
      break;
    case 'error': flash(errText(m)); break;
    case 'offer': if (me && m.agent === me.user) addOffer(m); break;
    case 'withdrawn': removeOffer(m.conversation); break;
    case 'assigned':
      if (me && m.agent === me.user) {
        removeOffer(m.conversation);
        addConv(m.conversation);
      }
      break;
    case 'resolved': onResolved(m); break;
    case 'presence':
      if (me && m.agent === me.user) setPresence(m.presence);
      break;
    case 'entry': onEntry(m); break;
    case 'typing': onTyping(m); break;
    default: break;
    }
  }

  function onHello(m) {
    authed = true;
    backoff = BACKOFF_MIN;
    me = { user: m.user, role: m.role, name: m.name || m.user };
    $('who').textContent = me.name + ' (' + me.role + ')';
    setConn('connected', 'ok');
    clearInterval(pingTimer);
    pingTimer = setInterval(() => send({ type: 'ping' }), PING_MS);
    clearInterval(stateTimer);
    stateTimer = setInterval(() => send({ type: 'state' }), STATE_EVERY_MS);
    if (current) loadConv(current.id, null);
  }

  // ---- presence -----------------------------------------------------------

  function setPresence(p) {
    if (p !== 'online' && p !== 'away' && p !== 'offline') return;
    presence = p;
    $('presence').value = p;
    $('presence').className = 'pr-' + p;
  }

  function askPresence(p) {
    request({ type: 'presence', state: p }, (r) => {
      if (r.type === 'result' && r.result) setPresence(r.result.presence);
      else flash('presence: ' + errText(r));
    });
  }

  function onUserInput() {
    lastInput = Date.now();
    if (autoAway && presence === 'away' && authed) {
      autoAway = false;
      askPresence('online');
    }
  }

  function checkIdle() {
    if (authed && !autoAway && presence === 'online' &&
        Date.now() - lastInput >= AWAY_MS) {
      autoAway = true;
      askPresence('away');
    }
  }

  // ---- state: conversations, offers, queues -------------------------------

  function applyState(s) {
    if (!s) return;
    setPresence(s.presence);
    myQueues = Array.isArray(s.queues) ? s.queues : [];
    const mine = new Set(s.conversations || []);
    for (const id of mine) addConv(id);
    // A conversation added in the last seconds may be newer than this
    // snapshot (accepted while it was on its way): keep it until the next.
    for (const [id, c] of [...convs]) {
      if (!mine.has(id) && Date.now() - c.added > 5000) removeConv(id);
    }
    const offered = new Set(s.offers || []);
    for (const id of offered) if (!offers.has(id)) {
      addOffer({ conversation: id, expires: null });
    }
    for (const [id, o] of [...offers]) {
      if (o.expires === null && !offered.has(id)) removeOffer(id);
    }
    renderQueues();
  }

  // Conversation and customer of a conversation, for the lists.
  function peek(id, cb) {
    request({ type: 'open', conversation: id }, (r) => {
      if (r.type === 'timeline') cb(r);
    });
  }

  function newestInbound(tl, id) {
    for (const e of tl.entries || []) {
      if (e.conversation === id && e.direction === 'in' &&
          (e.text || e.subject)) return e;
    }
    return null;
  }

  function addOffer(m) {
    const id = m.conversation;
    if (!id) return;
    const skew = m.at ? m.at - Date.now() : 0;
    const old = offers.get(id);
    if (old) {
      if (m.expires) { old.expires = m.expires; old.skew = skew; }
      return;
    }
    const li = el('li', 'offer');
    li.dataset.conversation = id;
    const title = el('div', 'title', id);
    const meta = el('div', 'meta');
    const info = [m.queue ? 'queue ' + m.queue : null,
                  m.hop ? 'via ' + m.hop : null].filter(Boolean).join(', ');
    meta.append(el('span', 'ch'), el('span', null, info));
    const preview = el('p', 'preview');
    const count = el('span', 'countdown');
    const accept = el('button', 'accept', 'Accept');
    accept.type = 'button';
    const decline = el('button', 'decline', 'Decline');
    decline.type = 'button';
    const buttons = el('div', 'buttons');
    buttons.append(accept, decline, count);
    li.append(title, meta, preview, buttons);
    $('offers').append(li);
    const o = { id, el: li, expires: m.expires || null, skew, count, accept,
                decline, title, meta, preview };
    offers.set(id, o);
    accept.addEventListener('click', () => doAccept(o));
    decline.addEventListener('click', () => doDecline(o));
    tickOffer(o);
    renderLists();
    peek(id, (tl) => {
      if (!offers.has(id)) return;
      title.textContent = customerLabel(tl.customer) || id;
      meta.firstChild.replaceWith(badge(tl.conversation &&
        tl.conversation.channel));
      const e = newestInbound(tl, id);
      if (e) preview.textContent = [e.subject, e.text].filter(Boolean)
        .join(' — ');
    });
  }

  function removeOffer(id) {
    const o = offers.get(id);
    if (!o) return;
    o.el.remove();
    offers.delete(id);
    renderLists();
  }

  function tickOffer(o) {
    if (!o.expires) { o.count.textContent = ''; return; }
    const left = o.expires - (Date.now() + o.skew);
    if (left <= -5000) { removeOffer(o.id); return; }
    if (left <= 0) {
      o.count.textContent = 'expired';
      o.accept.disabled = true;
      return;
    }
    o.count.textContent = Math.ceil(left / 1000) + ' s';
  }

  function doAccept(o) {
    o.accept.disabled = o.decline.disabled = true;
    request({ type: 'accept', conversation: o.id }, (r) => {
      if (r.type !== 'result') {
        flash('accept: ' + errText(r));
        if (r.code === 'conflict' || r.code === 'not_found') removeOffer(o.id);
        else o.accept.disabled = o.decline.disabled = false;
        return;
      }
      removeOffer(o.id);
      addConv(o.id);
      openConv(o.id);
    });
  }

  function doDecline(o) {
    o.accept.disabled = o.decline.disabled = true;
    request({ type: 'decline', conversation: o.id }, (r) => {
      if (r.type !== 'result') flash('decline: ' + errText(r));
      removeOffer(o.id);
    });
  }

  function addConv(id) {
    if (!id || convs.has(id)) return;
    const li = el('li', 'conv-item');
    li.dataset.conversation = id;
    const btn = el('button', 'open');
    btn.type = 'button';
    const name = el('span', 'name', id);
    const unread = el('span', 'unread');
    unread.hidden = true;
    const ch = el('span', 'ch');
    btn.append(ch, name, unread);
    li.append(btn);
    $('convs').append(li);
    const c = { id, el: li, name, unread, ch, count: 0, added: Date.now() };
    convs.set(id, c);
    btn.addEventListener('click', () => openConv(id));
    if (current && current.id === id) li.classList.add('active');
    renderLists();
    peek(id, (tl) => {
      if (!convs.has(id)) return;
      name.textContent = customerLabel(tl.customer) || id;
      ch.replaceWith(badge(tl.conversation && tl.conversation.channel));
    });
  }

  function removeConv(id) {
    const c = convs.get(id);
    if (!c) return;
    c.el.remove();
    convs.delete(id);
    renderLists();
    renderTitle();
  }

  function bumpUnread(id) {
    if (!convs.has(id)) addConv(id);
    const c = convs.get(id);
    c.count++;
    c.unread.textContent = String(c.count);
    c.unread.hidden = false;
    c.el.classList.add('has-unread');
    renderTitle();
  }

  function clearUnread(id) {
    const c = convs.get(id);
    if (!c) return;
    c.count = 0;
    c.unread.textContent = '';
    c.unread.hidden = true;
    c.el.classList.remove('has-unread');
    renderTitle();
  }

  function renderTitle() {
    let n = 0;
    for (const c of convs.values()) n += c.count;
    document.title = (n ? '(' + n + ') ' : '') + 'switchboard console';
  }

  function renderLists() {
    $('no-offers').hidden = offers.size > 0;
    $('offer-count').textContent = offers.size ? String(offers.size) : '';
    $('no-convs').hidden = convs.size > 0;
    for (const c of convs.values()) {
      c.el.classList.toggle('active', !!current && current.id === c.id);
    }
  }

  function renderQueues() {
    const tb = $('queues').tBodies[0];
    tb.replaceChildren();
    const mine = queues.filter((q) => myQueues.includes(q.name));
    for (const q of mine) {
      const tr = el('tr');
      tr.dataset.queue = q.name;
      const wait = el('td', 'num waiting', q.waiting);
      const longest = el('td', 'num longest');
      longest.dataset.base = String(q.waiting > 0 ? q.longest_wait || 0 : -1);
      tr.append(el('td', null, q.name), wait, longest);
      if (q.waiting > 0) tr.classList.add('busy');
      tb.append(tr);
    }
    tickQueues();
    $('no-queues').hidden = mine.length > 0;
    $('queues').hidden = mine.length === 0;
    // Transfer targets: every queue.
    const sel = $('transfer-queue');
    const keep = sel.value;
    sel.replaceChildren(el('option', null, '—'));
    sel.firstChild.value = '';
    for (const q of queues) {
      const o = el('option', null, q.name);
      o.value = q.name;
      sel.append(o);
    }
    sel.value = queues.some((q) => q.name === keep) ? keep : '';
  }

  function tickQueues() {
    for (const td of $('queues').querySelectorAll('td.longest')) {
      const base = Number(td.dataset.base);
      td.textContent = base < 0 ? '—' : fmtDur(base + Date.now() - queuesAt);
    }
  }

  // ---- e-mail entries ----------------------------------------------------
  //
  // An inbound mail's fields (docs/email.md, "Inbound"): a header block
  // (from, to, cc), automatic mail (kind auto or bounce) muted with a
  // label, the quoted history folded at fields.quote_offset, the original
  // HTML on demand in a sandboxed frame, and the attachments. The HTML and
  // the attachments are fetched with the session token (an iframe src or a
  // plain link could not carry it): the HTML goes into the frame's srcdoc,
  // the attachment into a Blob behind an <a download>.

  const utf8 = new TextEncoder();
  const fromUtf8 = new TextDecoder('utf-8');

  // text cut at a byte offset of its UTF-8 form: [before, rest], or null
  // when there is nothing to fold. An offset inside a character moves back
  // to the character's start.
  function splitAtByte(text, off) {
    if (typeof text !== 'string' || !Number.isInteger(off) || off < 0) {
      return null;
    }
    const b = utf8.encode(text);
    if (off >= b.length) return null;
    let k = off;
    while (k > 0 && (b[k] & 0xc0) === 0x80) k--;
    const rest = fromUtf8.decode(b.subarray(k));
    if (!rest.trim()) return null;
    return [fromUtf8.decode(b.subarray(0, k)), rest];
  }

  function fmtAddr(a) {
    if (!a) return '';
    if (typeof a === 'string') return a;
    const addr = typeof a.addr === 'string' ? a.addr : '';
    const name = typeof a.name === 'string' ? a.name.trim() : '';
    if (name && addr) return name + ' <' + addr + '>';
    return name || addr;
  }

  function fmtAddrs(list) {
    if (!Array.isArray(list)) return fmtAddr(list);
    return list.map(fmtAddr).filter(Boolean).join(', ');
  }

  function humanSize(n) {
    n = Number(n);
    if (!Number.isFinite(n) || n < 0) return '? B';
    if (n < 1024) return Math.round(n) + ' B';
    const units = ['KB', 'MB', 'GB', 'TB'];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (v < 10 ? v.toFixed(1) : String(Math.round(v))) + ' ' + units[i];
  }

  function contactUrl(id, tail) {
    return '/api/v1/contacts/' + encodeURIComponent(id) + tail;
  }

  // GET with the session token; resolves to the Response (2xx), rejects
  // with an Error whose message is the server's error text.
  async function fetchAuthed(path) {
    const headers = {};
    if (token) headers.Authorization = 'Bearer ' + token;
    let res;
    try {
      res = await fetch(path, { headers, cache: 'no-store',
                                credentials: 'omit' });
    } catch (e) {
      throw new Error('server unreachable');
    }
    if (res.ok) return res;
    let msg = '';
    try {
      const d = await res.json();
      msg = (d && d.error) || '';
    } catch (e) { msg = ''; }
    throw new Error(msg || 'HTTP ' + res.status);
  }

  function mailKind(e) {
    const k = e.fields.kind || e.type;
    return k === 'auto' || k === 'bounce' ? k : 'message';
  }

  function mailHeader(e, f) {
    const box = el('div', 'mailhead');
    const row = (cls, label, value) => {
      if (!value) return;
      const r = el('div', 'mh ' + cls);
      r.append(el('span', 'k', label), el('span', 'v', value));
      box.append(r);
    };
    row('mh-from', 'From', fmtAddr(f.from));
    row('mh-to', 'To', fmtAddrs(f.to));
    row('mh-cc', 'Cc', fmtAddrs(f.cc));
    row('mh-subject', 'Subject', e.subject || '');
    return box.childElementCount ? box : null;
  }

  // The body: folded at quote_offset when that leaves something to fold.
  function mailText(e, f, li) {
    if (!e.text) return;
    const parts = splitAtByte(e.text, f.quote_offset);
    if (!parts) {
      li.append(el('div', 'text', e.text));
      return;
    }
    const head = parts[0].replace(/\s+$/, '');
    if (head) li.append(el('div', 'text', head));
    const quoted = el('div', 'quoted', parts[1].replace(/^\n+/, ''));
    quoted.hidden = true;
    const toggle = el('button', 'quote-toggle', 'show quoted text');
    toggle.type = 'button';
    toggle.setAttribute('aria-expanded', 'false');
    toggle.addEventListener('click', () => {
      quoted.hidden = !quoted.hidden;
      toggle.textContent = quoted.hidden ? 'show quoted text'
        : 'hide quoted text';
      toggle.setAttribute('aria-expanded', String(!quoted.hidden));
    });
    li.append(toggle, quoted);
  }

  // What the frame is given: the message's HTML behind a policy of its
  // own (it only narrows what the frame inherits from this page: no
  // loads but data: images, no scripts). The frame has an empty sandbox:
  // no scripts, a unique origin, no forms, no popups, no navigation of
  // this page.
  const FRAME_CSP = '<meta http-equiv="Content-Security-Policy" ' +
    'content="default-src \'none\'; style-src \'unsafe-inline\'; ' +
    'img-src data:">';

  // The policy goes first in the head; after a doctype, so that one still
  // picks the rendering mode.
  function withPolicy(html) {
    const m = /^\s*<!doctype[^>]*>/i.exec(html);
    if (!m) return FRAME_CSP + html;
    return m[0] + FRAME_CSP + html.slice(m[0].length);
  }

  function mailHtml(e, f, tools) {
    const h = f.html;
    if (!h || typeof h !== 'object' || typeof h.sha256 !== 'string') return;
    const btn = el('button', 'html-toggle', 'view original (HTML)');
    btn.type = 'button';
    const size = el('span', 'meta', humanSize(h.size));
    const status = el('span', 'mail-status');
    const holder = el('div', 'mail-html');
    holder.hidden = true;
    let frame = null;
    btn.addEventListener('click', async () => {
      if (frame) {
        holder.hidden = !holder.hidden;
        btn.textContent = holder.hidden ? 'view original (HTML)'
          : 'hide original (HTML)';
        return;
      }
      btn.disabled = true;
      status.textContent = 'loading…';
      try {
        const res = await fetchAuthed(contactUrl(e.id, '/html'));
        const html = await res.text();
        frame = document.createElement('iframe');
        frame.className = 'mail-frame';
        frame.setAttribute('sandbox', '');
        frame.setAttribute('referrerpolicy', 'no-referrer');
        frame.title = 'original message (HTML)';
        frame.srcdoc = withPolicy(html);
        holder.append(frame);
        holder.hidden = false;
        btn.textContent = 'hide original (HTML)';
        status.textContent = '';
      } catch (err) {
        status.textContent = 'HTML: ' + err.message;
      } finally {
        btn.disabled = false;
      }
    });
    tools.append(btn, size, status);
    return holder;
  }

  // Download attachment n: fetch it, hand it over as a Blob under its
  // name (always octet-stream: the browser saves it, never shows it).
  async function download(e, n, a, status) {
    status.textContent = 'downloading…';
    try {
      const res = await fetchAuthed(contactUrl(e.id, '/attachments/' + n));
      const blob = new Blob([await res.arrayBuffer()],
        { type: 'application/octet-stream' });
      const url = URL.createObjectURL(blob);
      const link = document.createElement('a');
      link.href = url;
      link.download = a.filename || 'attachment';
      link.hidden = true;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      status.textContent = '';
    } catch (err) {
      status.textContent = err.message;
    }
  }

  function mailAttachments(e, f) {
    const atts = Array.isArray(f.attachments) ? f.attachments : [];
    if (!atts.length) return null;
    const ul = el('ul', 'attachments');
    atts.forEach((a, n) => {
      if (!a || typeof a !== 'object') return;
      const li = el('li', 'att');
      li.dataset.n = String(n);
      const name = a.filename || 'attachment ' + (n + 1);
      const info = [a.content_type || 'unknown type', humanSize(a.size)];
      if (a.inline) info.push('inline');
      const status = el('span', 'mail-status');
      if (a.stored) {
        const link = el('a', 'att-name', name);
        link.href = '#';
        link.setAttribute('role', 'button');
        link.title = 'download';
        link.addEventListener('click', (ev) => {
          ev.preventDefault();
          download(e, n, a, status);
        });
        li.append(link);
      } else {
        li.append(el('span', 'att-name', name));
        li.classList.add('att-lost');
      }
      li.append(el('span', 'meta', info.join(', ')));
      if (!a.stored) {
        li.append(el('span', 'not-kept', 'not kept (over the size cap)'));
      }
      li.append(status);
      ul.append(li);
    });
    return ul;
  }

  function mailEntry(e, li, head) {
    const f = e.fields;
    li.classList.add('mail');
    const kind = mailKind(e);
    if (kind !== 'message') {
      li.classList.add('mail-' + kind);
      let label = 'auto-reply';
      if (kind === 'bounce') {
        const st = f.dsn && typeof f.dsn.status === 'string' ? f.dsn.status
          : '';
        label = 'bounce' + (st ? ': ' + st : '');
      }
      head.append(el('span', 'kind', label));
    }
    const hdr = mailHeader(e, f);
    if (hdr) li.append(hdr);
    else if (e.subject) li.append(el('div', 'subject', e.subject));
    mailText(e, f, li);
    const tools = el('div', 'mail-tools');
    if (f.text_from_html) {
      tools.append(el('span', 'meta', 'text taken from the HTML'));
    }
    const holder = mailHtml(e, f, tools);
    if (tools.childElementCount) li.append(tools);
    if (holder) li.append(holder);
    const atts = mailAttachments(e, f);
    if (atts) li.append(atts);
  }

  // ---- the conversation view ---------------------------------------------

  function closeConv() {
    current = null;
    $('conv').hidden = true;
    $('placeholder').hidden = false;
    $('timeline').replaceChildren();
    $('typing').textContent = '';
    $('send-status').textContent = '';
    renderLists();
  }

  function openConv(id) {
    if (current && current.id === id) { clearUnread(id); return; }
    current = { id, conv: null, customer: null, nextBefore: null,
                ids: new Set(), gen: 0 };
    $('placeholder').hidden = true;
    $('conv').hidden = false;
    $('conv-title').textContent = id;
    $('conv-meta').replaceChildren();
    $('cust-facts').replaceChildren();
    $('timeline').replaceChildren();
    $('typing').textContent = '';
    $('send-status').textContent = '';
    $('reply-text').value = '';
    $('older').hidden = true;
    clearUnread(id);
    renderLists();
    loadConv(id, null);
  }

  // Load the newest page (before null: replaces what is shown) or an
  // older one (prepended).
  function loadConv(id, before) {
    const cur = current;
    const gen = ++cur.gen;
    const msg = { type: 'open', conversation: id };
    if (before) msg.before = before;
    $('older').disabled = true;
    request(msg, (r) => {
      if (current !== cur || cur.gen !== gen) return;
      $('older').disabled = false;
      if (r.type !== 'timeline') { flash('open: ' + errText(r)); return; }
      cur.conv = r.conversation;
      cur.customer = r.customer;
      renderHead();
      const list = (r.entries || []).slice().reverse(); // oldest first
      const box = $('timeline-box');
      if (!before) {
        cur.ids.clear();
        $('timeline').replaceChildren();
        for (const e of list) appendEntry(e);
        box.scrollTop = box.scrollHeight;
      } else {
        const h = box.scrollHeight;
        const first = $('timeline').firstChild;
        for (const e of list) {
          if (cur.ids.has(e.id)) continue;
          cur.ids.add(e.id);
          $('timeline').insertBefore(entryEl(e), first);
        }
        box.scrollTop += box.scrollHeight - h;
      }
      cur.nextBefore = r.next_before || null;
      $('older').hidden = !cur.nextBefore;
    });
  }

  function fact(dl, name, value) {
    if (value === null || value === undefined || value === '' ||
        (Array.isArray(value) && value.length === 0)) return;
    dl.append(el('dt', null, name),
      el('dd', null, Array.isArray(value) ? value.join(', ') : value));
  }

  function renderHead() {
    const c = current.conv || {};
    const cu = current.customer || {};
    $('conv-title').textContent = (customerLabel(cu) || '?') + ' — ' + c.id;
    const meta = $('conv-meta');
    meta.replaceChildren(badge(c.channel),
      el('span', 'state st-' + (c.state || ''), c.state || ''),
      el('span', null, [c.queue ? 'queue ' + c.queue : null,
                        c.agent ? 'agent ' + c.agent : null,
                        c.subject ? '«' + c.subject + '»' : null]
        .filter(Boolean).join(' · ')));
    const dl = $('cust-facts');
    dl.replaceChildren();
    const ids = cu.identities || {};
    fact(dl, 'Customer', cu.id);
    fact(dl, 'E-mail', ids.email);
    fact(dl, 'Phone', ids.phone);
    fact(dl, 'Locale', cu.locale);
    fact(dl, 'Tier', cu.tier);
    fact(dl, 'Tags', cu.tags);
    fact(dl, 'Curator', cu.curator);
    const closed = c.state === 'resolved';
    $('resolve').disabled = closed;
    $('conv').classList.toggle('resolved', closed);
  }

  function who(e) {
    if (e.direction === 'in') return customerLabel(current && current.customer)
      || 'customer';
    if (e.type === 'note') return 'note · ' + (e.agent || '');
    if (e.type === 'assignment' || e.type === 'status') return 'routing';
    if (e.direction === 'out') {
      if (me && e.agent === me.user) return me.name;
      return (e.fields && e.fields.agent_name) || e.agent || 'system';
    }
    return e.agent || e.direction || '';
  }

  function entryEl(e) {
    const li = el('li', 'entry');
    li.dataset.id = e.id;
    li.classList.add('dir-' + String(e.direction || '').replace(/\W/g, ''));
    li.classList.add('type-' + String(e.type || '').replace(/\W/g, ''));
    if (current && e.conversation !== current.id) li.classList.add('other');
    const head = el('div', 'ehead');
    head.append(badge(e.channel), el('span', 'who', who(e)),
      el('time', null, fmtTime(e.at)));
    if (current && e.conversation && e.conversation !== current.id) {
      head.append(el('span', 'conv-id', e.conversation));
    }
    if (e.fields && e.fields.via && e.direction === 'out' &&
        current && current.conv && e.fields.via !== current.conv.channel) {
      head.append(el('span', 'via', 'fallback'));
    }
    li.append(head);
    if (e.channel === 'email' && e.fields && typeof e.fields === 'object') {
      mailEntry(e, li, head);
      return li;
    }
    if (e.subject) li.append(el('div', 'subject', e.subject));
    if (e.text) li.append(el('div', 'text', e.text));
    return li;
  }

  function appendEntry(e) {
    if (!current || current.ids.has(e.id)) return;
    current.ids.add(e.id);
    $('timeline').append(entryEl(e));
  }

  function onEntry(m) {
    const e = m.entry;
    if (!e || typeof e !== 'object') return;
    const shown = current && (m.conversation === current.id ||
      (current.customer && e.customer === current.customer.id));
    if (shown) {
      const box = $('timeline-box');
      const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      appendEntry(e);
      if (atEnd || e.direction !== 'in') box.scrollTop = box.scrollHeight;
      if (e.direction === 'in') $('typing').textContent = '';
    }
    if ((!current || m.conversation !== current.id) && e.direction === 'in') {
      bumpUnread(m.conversation);
    }
  }

  function onTyping(m) {
    if (m.from !== 'customer' || !current ||
        m.conversation !== current.id) return;
    $('typing').textContent = customerLabel(current.customer) +
      ' is typing…';
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { $('typing').textContent = ''; },
      CUSTOMER_TYPING_MS);
  }

  function onResolved(m) {
    removeOffer(m.conversation);
    removeConv(m.conversation);
    if (current && current.id === m.conversation && current.conv) {
      current.conv.state = 'resolved';
      renderHead();
    }
  }

  function sendStatus(text) {
    $('send-status').textContent = text;
  }

  // After a reply or note, its entry comes back as an `entry` frame; if it
  // does not (a supervisor writing in someone else's conversation), reload.
  function expectEntry(cur, contact) {
    setTimeout(() => {
      if (current === cur && contact && !cur.ids.has(contact)) {
        loadConv(cur.id, null);
      }
    }, 1500);
  }

  function describeReply(res) {
    const used = res.channel;
    let s = 'Sent via ' + (CHANNELS[used] || used);
    const failed = (res.tried || []).filter((t) => t.result !== 'ok');
    const convCh = current && current.conv && current.conv.channel;
    if (failed.length || (convCh && used !== convCh)) {
      s += ' (fallback; ' + failed.map((t) => (CHANNELS[t.channel] ||
        t.channel) + ': ' + (t.reason || t.result)).join(', ') + ')';
    }
    return s;
  }

  function submit(kind) {
    if (!current) return;
    const text = $('reply-text').value;
    if (!text.trim()) return;
    const cur = current;
    $('send').disabled = $('note').disabled = true;
    sendStatus(kind === 'reply' ? 'Sending…' : 'Saving note…');
    request({ type: kind, conversation: cur.id, text }, (r) => {
      $('send').disabled = $('note').disabled = false;
      if (current !== cur) return;
      if (r.type !== 'result') {
        sendStatus('');
        flash(kind + ': ' + errText(r));
        return;
      }
      $('reply-text').value = '';
      const res = r.result || {};
      sendStatus(kind === 'reply' ? describeReply(res) : 'Note added');
      expectEntry(cur, res.contact);
    });
  }

  function onTypingInput() {
    const now = Date.now();
    if (current && now - typingSentAt > TYPING_EVERY_MS) {
      typingSentAt = now;
      send({ type: 'typing', conversation: current.id });
    }
  }

  function transfer(ev) {
    ev.preventDefault();
    if (!current) return;
    const q = $('transfer-queue').value;
    const a = $('transfer-agent').value.trim();
    if ((q && a) || (!q && !a)) {
      flash('Transfer: choose a queue or name an agent (one of them).');
      return;
    }
    const cur = current;
    const msg = { type: 'transfer', conversation: cur.id };
    if (q) msg.queue = q; else msg.agent = a;
    request(msg, (r) => {
      if (r.type !== 'result') { flash('transfer: ' + errText(r)); return; }
      $('transfer-agent').value = '';
      $('transfer-queue').value = '';
      const res = r.result || {};
      if (!me || res.agent !== me.user) removeConv(cur.id);
      if (current === cur) {
        sendStatus('Transferred to ' + (q ? 'queue ' + q : a));
        if (cur.conv) {
          cur.conv.state = res.state || cur.conv.state;
          cur.conv.agent = res.agent || null;
          cur.conv.queue = res.queue || cur.conv.queue;
          renderHead();
        }
      }
    });
  }

  function resolve() {
    if (!current) return;
    const cur = current;
    request({ type: 'resolve', conversation: cur.id }, (r) => {
      if (r.type !== 'result') { flash('resolve: ' + errText(r)); return; }
      removeConv(cur.id);
      if (current === cur && cur.conv) {
        cur.conv.state = 'resolved';
        renderHead();
        sendStatus('Resolved');
      }
    });
  }

  // ---- start -----------------------------------------------------------

  function everySecond() {
    for (const o of [...offers.values()]) tickOffer(o);
    tickQueues();
    checkIdle();
  }

  document.addEventListener('DOMContentLoaded', async () => {
    $('login-form').addEventListener('submit', login);
    $('logout').addEventListener('click', () => logout());
    $('presence').addEventListener('change', () => {
      autoAway = false;
      askPresence($('presence').value);
    });
    $('reply-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submit('reply');
    });
    $('note').addEventListener('click', () => submit('note'));
    $('reply-text').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        submit('reply');
      }
    });
    $('reply-text').addEventListener('input', onTypingInput);
    $('transfer-form').addEventListener('submit', transfer);
    $('resolve').addEventListener('click', resolve);
    $('older').addEventListener('click', () => {
      if (current && current.nextBefore) {
        loadConv(current.id, current.nextBefore);
      }
    });
    for (const t of ['keydown', 'mousedown', 'mousemove', 'wheel',
                     'touchstart']) {
      document.addEventListener(t, onUserInput, { passive: true });
    }
    setInterval(everySecond, 1000);
    renderLists();
    renderQueues();
    if (!token) { showLogin(); return; }
    const r = await api('GET', '/api/v1/me');
    // A server that is away is not a bad token: the socket will retry.
    if (r.status !== 401 && r.status !== 403) {
      start();
    } else {
      token = null;
      sessionStorage.removeItem('sb_token');
      showLogin();
    }
  });
})();
