// console.test.js - the agent console (/console/) with real customers on
// the web chat (/chat/): a customer writes in Russian in one browser
// context, the agent (alice) logged in to the console in another gets the
// offer with a countdown, accepts, reads the timeline, sees the customer
// typing (and the customer sees the agent typing) and replies; the
// customer sees the reply in the widget. A second customer makes the first
// conversation's unread badge count. Hostile customer text is shown as
// text. Presence goes away when the agent is idle and back on input.
'use strict';

const assert = require('node:assert/strict');
const { contactCenterConfig } = require('./lib/server');

const RU1 = 'Здравствуйте! Где мой заказ №42? «Ёлка» — ёжик';
const RU2 = 'Добрый вечер, нужна консультация по доставке';
const RU3 = 'И ещё вопрос: можно оплатить картой?';
const REPLY = 'Добрый день! Заказ №42 уже в пути, привезём завтра.';
const HOSTILE = '<img src=x onerror="window.__xss=1">';

async function consoleLogin(t, user = 'alice', query = '') {
  const page = await t.newPage();
  await page.goto(t.server.url + '/console/' + query);
  await page.waitForSelector('#login-form', { state: 'visible' });
  await page.fill('#username', user);
  await page.fill('#password', t.server.password(user));
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#app', { state: 'visible' });
  await connected(page);
  return page;
}

async function connected(page) {
  await page.waitForFunction(
    () => document.getElementById('conn').textContent === 'connected',
    null, { timeout: 10000 });
}

// A customer on the demo shop page with the chat panel open.
async function customer(t) {
  const page = await t.newPage();
  await page.goto(t.server.url + '/chat/');
  await page.click('.launcher');
  await page.waitForSelector('#sbchat-input', { state: 'visible' });
  return page;
}

// Write in the widget and wait until the server acknowledged it.
async function say(page, text) {
  await page.fill('#sbchat-input', text);
  await page.press('#sbchat-input', 'Enter');
  await page.locator('li.msg.customer:not(.pending)', { hasText: text })
    .first().waitFor({ timeout: 10000 });
}

// The agent's offer whose preview shows text; accept it and wait for the
// conversation view.
async function acceptOffer(agent, text) {
  const offer = agent.locator('#offers li.offer', { hasText: text });
  await offer.waitFor({ timeout: 15000 });
  const count = await offer.locator('.countdown').textContent();
  assert.match(count, /^\d+ s$/, `countdown "${count}"`);
  const secs = Number(count.split(' ')[0]);
  assert.ok(secs > 0 && secs <= 60, `countdown ${secs}`);
  const id = await offer.getAttribute('data-conversation');
  assert.match(id, /^cv_\d+$/);
  await offer.locator('button.accept').click();
  await offer.waitFor({ state: 'detached', timeout: 10000 });
  await agent.locator('#timeline li.entry.dir-in .text', { hasText: text })
    .first().waitFor({ timeout: 10000 });
  await agent.locator(`#convs li[data-conversation="${id}"]`)
    .waitFor({ timeout: 10000 });
  return id;
}

async function presenceOf(t, name) {
  const r = await t.server.api('GET', '/api/v1/agents');
  assert.equal(r.status, 200);
  return r.json.agents.find((a) => a.name === name).presence;
}

module.exports = {
  config: contactCenterConfig(),

  tests: [
    {
      name: 'the console and dashboard pages are served with a strict CSP',
      async fn(t) {
        const page = await t.newPage();
        for (const p of ['/console/', '/dashboard/']) {
          const resp = await page.goto(t.server.url + p);
          assert.equal(resp.status(), 200, p);
          assert.match(resp.headers()['content-type'] || '', /^text\/html/);
          const csp = resp.headers()['content-security-policy'] || '';
          assert.match(csp, /default-src 'none'/, p);
          assert.match(csp, /script-src 'self'/, p);
          assert.match(csp, /connect-src 'self'/, p);
          assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, p);
          await page.waitForSelector('#login-form', { state: 'visible' });
        }
        for (const p of ['/console/console.js', '/console/console.css',
                         '/dashboard/dashboard.js',
                         '/dashboard/dashboard.css']) {
          const r = await t.server.api('GET', p, undefined, { token: null });
          assert.equal(r.status, 200, p);
          assert.doesNotMatch(r.text, /innerHTML|insertAdjacentHTML|eval\(/,
                              p);
        }
      },
    },
    {
      name: 'a customer writes in Russian, the agent accepts and replies',
      timeout: 90000,
      async fn(t) {
        const agent = await consoleLogin(t);
        assert.equal(await agent.inputValue('#presence'), 'online');
        assert.match(await agent.textContent('#who'), /Alice \(agent\)/);
        await agent.locator('#queues tr[data-queue="general"]').waitFor();

        const cust = await customer(t);
        await say(cust, RU1);
        const cv1 = await acceptOffer(agent, RU1);
        await agent.locator('#conv-title', { hasText: cv1 }).waitFor();
        assert.match(await agent.textContent('#conv-meta'), /chat/);
        await t.screenshot(agent, 'agent-accepted');

        // Typing, both ways: the customer's shows in the console, the
        // agent's in the widget.
        // Both ends pass typing on at most every 2-3 s: keep typing (a
        // bounded number of keys) until it shows.
        const agentSees = agent.locator('#typing', { hasText: 'is typing' });
        let seen = false;
        for (let i = 0; i < 12 && !seen; i++) {
          await cust.type('#sbchat-input', 'ю');
          seen = await agentSees.waitFor({ timeout: 1000 })
            .then(() => true, () => false);
        }
        assert.ok(seen, 'the customer typing never showed in the console');
        await cust.fill('#sbchat-input', '');
        const custSees = cust.locator('.typing', { hasText: 'печатает' });
        seen = false;
        for (let i = 0; i < 12 && !seen; i++) {
          await agent.type('#reply-text', 'ж');
          seen = await custSees.waitFor({ timeout: 1000 })
            .then(() => true, () => false);
        }
        assert.ok(seen, 'the agent typing never showed in the widget');
        await agent.fill('#reply-text', REPLY);

        // Reply; the console says which channel carried it.
        await agent.click('#send');
        await agent.locator('#send-status', { hasText: 'Sent via chat' })
          .waitFor({ timeout: 10000 });
        await agent.locator('#timeline li.entry.dir-out .text',
                            { hasText: REPLY }).waitFor({ timeout: 10000 });
        assert.equal(await agent.inputValue('#reply-text'), '');

        // The customer sees it, under the agent's display name.
        const got = cust.locator('li.msg.agent', { hasText: REPLY });
        await got.waitFor({ timeout: 10000 });
        assert.match(await got.locator('.meta').textContent(), /^Alice/);
        assert.equal(await got.locator('.text').textContent(), REPLY);
        await t.screenshot(cust, 'customer-got-reply');

        // An internal note shows in the timeline, not to the customer.
        await agent.fill('#reply-text', 'Клиент ждёт курьера');
        await agent.click('#note');
        await agent.locator('#timeline li.entry.type-note',
                            { hasText: 'Клиент ждёт курьера' }).waitFor();

        // A second customer: accepting opens that conversation; the first
        // customer's next message raises an unread badge on the list.
        const cust2 = await customer(t);
        await say(cust2, RU2);
        const cv2 = await acceptOffer(agent, RU2);
        assert.notEqual(cv1, cv2);
        await say(cust, RU3);
        const item1 = agent.locator(`#convs li[data-conversation="${cv1}"]`);
        await item1.locator('.unread', { hasText: '1' })
          .waitFor({ timeout: 10000 });
        assert.match(await agent.title(), /^\(1\) /);
        await t.screenshot(agent, 'agent-unread');
        await item1.locator('button').click();
        await agent.locator('#conv-title', { hasText: cv1 }).waitFor();
        await item1.locator('.unread').waitFor({ state: 'hidden' });
        const ins = agent.locator('#timeline li.entry.dir-in .text');
        await ins.last().waitFor();
        assert.equal(await ins.last().textContent(), RU3);
        assert.equal(await cust.locator('li.msg.agent').count(), 1,
                     'the note reached the customer');
        assert.ok(await agent.evaluate(
          () => !document.querySelector('#timeline img')));
      },
    },
    {
      name: 'hostile customer text shows as text in the console',
      timeout: 90000,
      async fn(t) {
        const agent = await consoleLogin(t);
        const cust = await customer(t);
        await say(cust, HOSTILE);
        const offer = agent.locator('#offers li.offer', { hasText: HOSTILE });
        await offer.waitFor({ timeout: 15000 });
        assert.equal(await offer.locator('.preview').textContent(), HOSTILE);
        await acceptOffer(agent, HOSTILE);
        const e = agent.locator('#timeline li.entry.dir-in .text',
                                { hasText: HOSTILE });
        assert.equal(await e.first().textContent(), HOSTILE);
        await agent.waitForTimeout(500);
        const probe = await agent.evaluate(() => ({
          imgs: document.querySelectorAll('img').length,
          xss: typeof window.__xss,
        }));
        assert.deepEqual(probe, { imgs: 0, xss: 'undefined' });
        // My queues follow live: nothing waits once it is accepted.
        await agent.locator('#queues tr[data-queue="general"] td.waiting',
                            { hasText: /^0$/ }).waitFor({ timeout: 5000 });
        await t.screenshot(agent, 'agent-hostile-text');
      },
    },
    {
      name: 'the timeline shows every channel and pages back with Older',
      timeout: 120000,
      async fn(t) {
        const s = t.server;
        const email = 'petr.history@example.com';
        const first = await s.contact({
          channel: 'api', email, name: 'Пётр', text: 'запись 1',
          conversation: 'none' });
        for (let i = 2; i <= 104; i++) {
          await s.contact({ channel: 'api', customer: first.customer,
                            text: `запись ${i}`, conversation: 'none' });
        }
        await s.contact({ channel: 'email', email, subject: 'Счёт №7',
                          text: 'Пришлите счёт', conversation: 'none' });
        await s.contact({ channel: 'sms', customer: first.customer,
                          phone: '+79035550101', text: 'СМС: жду звонка',
                          conversation: 'none' });
        const agent = await consoleLogin(t);
        const chat = await s.contact({ channel: 'chat', email,
                                       text: 'Вопрос из чата про счёт' });
        assert.equal(chat.customer, first.customer);
        await acceptOffer(agent, 'Вопрос из чата про счёт');
        const items = agent.locator('#timeline li.entry');
        // The newest 100, oldest at the top, the chat message at the
        // bottom (before the routing lines).
        assert.equal(await items.count(), 100);
        for (const ch of ['chat', 'email', 'sms', 'api']) {
          assert.ok(await agent.locator(`#timeline .badge.ch-${ch}`).count()
                    >= 1, `no ${ch} badge`);
        }
        const ins = agent.locator('#timeline li.entry.dir-in .text');
        assert.equal(await ins.last().textContent(),
                     'Вопрос из чата про счёт');
        await agent.click('#older');
        await agent.waitForFunction(() => document.querySelectorAll(
          '#timeline li.entry').length > 100, null, { timeout: 10000 });
        const n = await items.count();
        assert.equal(n, 104 + 2 + 1 + 3, `entries after Older: ${n}`);
        assert.equal(await items.first().locator('.text').textContent(),
                     'запись 1');
        assert.equal(await agent.isVisible('#older'), false);
        const ids = await agent.$$eval('#timeline li.entry',
          (lis) => lis.map((li) => li.dataset.id));
        assert.equal(new Set(ids).size, ids.length, 'an entry shown twice');
        await t.screenshot(agent, 'agent-timeline-older');
      },
    },
    {
      name: 'presence: selector, auto-away when idle, back on input, reload',
      timeout: 90000,
      async fn(t) {
        const page = await t.newPage();
        await page.goto(t.server.url + '/console/?away_after=2');
        await page.fill('#username', 'alice');
        await page.fill('#password', 'wrong password');
        await page.click('#login-form button[type=submit]');
        await page.locator('#login-error', { hasText: /./ }).waitFor();
        await page.fill('#password', t.server.password('alice'));
        await page.click('#login-form button[type=submit]');
        await connected(page);
        assert.equal(await page.inputValue('#presence'), 'online');
        // Idle: away after 2 s (checked every second).
        await page.waitForFunction(
          () => document.getElementById('presence').value === 'away',
          null, { timeout: 8000 });
        assert.equal(await presenceOf(t, 'alice'), 'away');
        await page.mouse.move(200, 200);
        await page.mouse.move(220, 240);
        await page.waitForFunction(
          () => document.getElementById('presence').value === 'online',
          null, { timeout: 5000 });
        assert.equal(await presenceOf(t, 'alice'), 'online');
        // The selector; a state chosen there is kept while idle.
        await page.selectOption('#presence', 'offline');
        for (let i = 0; i < 50 && await presenceOf(t, 'alice') !==
             'offline'; i++) await page.waitForTimeout(100);
        assert.equal(await presenceOf(t, 'alice'), 'offline');
        await page.selectOption('#presence', 'online');
        for (let i = 0; i < 50 && await presenceOf(t, 'alice') !==
             'online'; i++) await page.waitForTimeout(100);
        assert.equal(await presenceOf(t, 'alice'), 'online');
        // A reload keeps the session (sessionStorage) and the socket.
        await page.reload();
        await page.waitForSelector('#app', { state: 'visible' });
        await connected(page);
        assert.equal(await page.isVisible('#login-form'), false);
        // Log out: back to the form, the token is gone.
        await page.click('#logout');
        await page.waitForSelector('#login-form', { state: 'visible' });
        assert.equal(await page.evaluate(
          () => sessionStorage.getItem('sb_token')), null);
      },
    },
  ],
};
