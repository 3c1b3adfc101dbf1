// switchboard start page: log in, find a customer by any identity, read the
// cross-channel timeline. Every value from the server is inserted with
// textContent, never as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('sb_token');
let current = null;      // customer id shown
let nextBefore = null;   // paging cursor
let loads = 0;           // bumped when the customer shown changes

async function api(method, path, body) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (res.status === 401 && token) { logout(); }
  return { status: res.status, data };
}

function show(loggedIn, who) {
  $('login-view').hidden = loggedIn;
  $('customer-view').hidden = !loggedIn;
  $('logout').hidden = !loggedIn;
  $('who').textContent = who || '';
}

// Forget the customer shown: nothing of it stays in the page.
function clearCustomer() {
  current = null;
  nextBefore = null;
  loads++;
  $('customer').hidden = true;
  $('c-name').textContent = '';
  $('c-facts').replaceChildren();
  $('timeline').tBodies[0].replaceChildren();
  $('older').hidden = true;
  $('find-error').textContent = '';
  $('ident').value = '';
  $('cust-id').value = '';
  $('ident').required = true;
}

function logout() {
  if (token) api('POST', '/api/v1/logout');
  token = null;
  sessionStorage.removeItem('sb_token');
  clearCustomer();
  show(false);
}

function fmt(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

function fact(dl, name, value) {
  if (value === null || value === undefined || value === '' ||
      (Array.isArray(value) && value.length === 0)) return;
  const dt = document.createElement('dt');
  const dd = document.createElement('dd');
  dt.textContent = name;
  dd.textContent = Array.isArray(value) ? value.join(', ') : String(value);
  dl.append(dt, dd);
}

function renderCustomer(c) {
  current = c.id;
  $('customer').hidden = false;
  $('c-name').textContent = (c.name || '(no name)') + ' — ' + c.id;
  const dl = $('c-facts');
  dl.replaceChildren();
  fact(dl, 'E-mail', c.identities.email);
  fact(dl, 'Phone', c.identities.phone);
  fact(dl, 'Chat', c.identities.chat);
  fact(dl, 'Locale', c.locale);
  fact(dl, 'Time zone', c.timezone);
  fact(dl, 'Tier', c.tier);
  fact(dl, 'Tags', c.tags);
  fact(dl, 'Curator', c.curator);
  fact(dl, 'Since', fmt(c.created));
  $('timeline').tBodies[0].replaceChildren();
  nextBefore = null;
  loads++;
  loadTimeline();
}

// Append the next page. "Older" is disabled while a page is on its way (a
// double click would show it twice), and a page that arrives after another
// customer was chosen is dropped.
async function loadTimeline() {
  const gen = loads;
  const q = '?limit=50' + (nextBefore ? '&before=' + encodeURIComponent(nextBefore) : '');
  $('older').disabled = true;
  let r;
  try {
    r = await api('GET', '/api/v1/customers/' + encodeURIComponent(current) + '/timeline' + q);
  } finally {
    if (gen === loads) $('older').disabled = false;
  }
  if (gen !== loads) return;
  if (r.status !== 200) { $('find-error').textContent = (r.data && r.data.error) || 'error'; return; }
  const tb = $('timeline').tBodies[0];
  for (const e of r.data.entries) {
    const tr = document.createElement('tr');
    const cells = [fmt(e.at), e.channel, e.direction, e.type, e.conversation || '',
                   [e.subject, e.text].filter(Boolean).join('\n')];
    cells.forEach((v, i) => {
      const td = document.createElement('td');
      td.textContent = v || '';
      if (i === 5) td.className = 'text';
      tr.append(td);
    });
    tb.append(tr);
  }
  nextBefore = r.data.next_before;
  $('older').hidden = !nextBefore;
}

async function find(ev) {
  ev.preventDefault();
  $('find-error').textContent = '';
  const id = $('cust-id').value.trim();
  const v = $('ident').value.trim();
  let r;
  if (id) r = await api('GET', '/api/v1/customers/' + encodeURIComponent(id));
  else r = await api('GET', '/api/v1/customers?' + (v.includes('@') ? 'email=' : 'phone=') + encodeURIComponent(v));
  if (r.status === 401) return; // api() logged out
  if (r.status !== 200) {
    clearCustomer();
    $('ident').value = v;
    $('cust-id').value = id;
    $('ident').required = !id;
    $('find-error').textContent = r.status === 404 ? 'No such customer' : ((r.data && r.data.error) || 'error');
    return;
  }
  renderCustomer(r.data);
}

async function login(ev) {
  ev.preventDefault();
  $('login-error').textContent = '';
  const r = await api('POST', '/api/v1/login', { username: $('username').value, password: $('password').value });
  if (r.status !== 200) {
    $('login-error').textContent = (r.data && r.data.error) || 'login failed';
    return;
  }
  token = r.data.token;
  sessionStorage.setItem('sb_token', token);
  $('password').value = '';
  show(true, r.data.user + ' (' + r.data.role + ')');
}

document.addEventListener('DOMContentLoaded', async () => {
  $('login-form').addEventListener('submit', login);
  $('find-form').addEventListener('submit', find);
  $('cust-id').addEventListener('input', () => { $('ident').required = !$('cust-id').value; });
  $('older').addEventListener('click', loadTimeline);
  $('logout').addEventListener('click', logout);
  if (token) {
    const r = await api('GET', '/api/v1/me');
    if (r.status === 200) show(true, r.data.user + ' (' + r.data.role + ')');
    else show(false);
  } else {
    show(false);
  }
});
