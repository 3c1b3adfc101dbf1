// dashboard.test.js - the operator dashboard (/dashboard/): an agent is
// turned away; an operator sees the queue with the waiting conversation
// (longest wait ticking between frames), the agents, and live changes: a
// second customer, then an agent coming online and getting the offer.
'use strict';

const assert = require('node:assert/strict');
const { contactCenterConfig } = require('./lib/server');

async function login(t, user) {
  const page = await t.newPage();
  await page.goto(t.server.url + '/dashboard/');
  await page.waitForSelector('#login-form', { state: 'visible' });
  await page.fill('#username', user);
  await page.fill('#password', t.server.password(user));
  await page.click('#login-form button[type=submit]');
  return page;
}

function cell(page, table, key, col) {
  return page.locator(`#${table} tbody tr[data-${table === 'queues' ?
    'queue' : 'agent'}="${key}"] td`).nth(col);
}

module.exports = {
  config: contactCenterConfig(),

  async setup(t) {
    // Nobody is online: the chat waits in the queue.
    const r = await t.server.contact({
      channel: 'chat', email: 'ivan@example.com', name: 'Иван',
      text: 'Здравствуйте, есть кто-нибудь?' });
    assert.ok(r.conversation);
    t.state.cv1 = r.conversation;
  },

  tests: [
    {
      name: 'an agent is told the dashboard is for operators',
      async fn(t) {
        const page = await login(t, 'alice');
        await page.locator('#login-error', { hasText: 'operators only' })
          .waitFor({ timeout: 10000 });
        assert.equal(await page.isVisible('#board'), false);
        assert.equal(await page.evaluate(
          () => sessionStorage.getItem('sb_token')), null);
      },
    },
    {
      name: 'the operator sees the queue, the waiting conversation and ' +
        'the agents, live',
      timeout: 90000,
      async fn(t) {
        const page = await login(t, 'olga');
        await page.waitForSelector('#board', { state: 'visible' });
        const row = page.locator('#queues tbody tr[data-queue="general"]');
        await row.waitFor({ timeout: 10000 });
        // Columns: Queue, Strategy, Waiting, Longest wait, Online, Busy,
        // Available, SLA breaches.
        await page.waitForFunction(() => {
          const tr = document.querySelector(
            '#queues tr[data-queue="general"]');
          return tr && tr.cells[2].textContent === '1';
        }, null, { timeout: 10000 });
        assert.equal(await cell(page, 'queues', 'general', 1).textContent(),
                     'round_robin');
        const w1 = await cell(page, 'queues', 'general', 3).textContent();
        assert.match(w1, /^\d+ (s|min)/);
        await page.waitForTimeout(2200);
        const w2 = await cell(page, 'queues', 'general', 3).textContent();
        assert.notEqual(w1, w2, 'longest wait does not tick');
        assert.match(await page.textContent('#updated'),
                     /^updated \d+ s ago$/);
        for (const a of ['alice', 'olga', 'root']) {
          await page.locator(`#agents tbody tr[data-agent="${a}"]`).waitFor();
        }
        assert.equal(await cell(page, 'agents', 'alice', 1).textContent(),
                     'offline');
        assert.equal(await cell(page, 'agents', 'alice', 2).textContent(),
                     '0 / 5');
        await t.screenshot(page, 'dashboard-waiting');

        // Another customer: two waiting, shown live.
        await t.server.contact({
          channel: 'chat', email: 'anna@example.com', text: 'Добрый день' });
        await page.waitForFunction(() => document.querySelector(
          '#queues tr[data-queue="general"]').cells[2].textContent === '2',
          null, { timeout: 5000 });

        // alice comes online: she gets an offer, one waits less.
        const tok = await t.server.login('alice');
        const r = await t.server.api('PUT', '/api/v1/agents/alice/presence',
                                     { state: 'online' }, { token: tok });
        assert.equal(r.status, 200);
        await page.waitForFunction(() => {
          const tr = document.querySelector(
            '#agents tr[data-agent="alice"]');
          return tr && tr.cells[1].textContent === 'online' &&
            Number(tr.cells[3].textContent) >= 1;
        }, null, { timeout: 5000 });
        assert.equal(await cell(page, 'queues', 'general', 4).textContent(),
                     '1');
        // Watching does not make the operator routable.
        assert.equal(await cell(page, 'agents', 'olga', 1).textContent(),
                     'offline');
        await t.screenshot(page, 'dashboard-agent-online');
      },
    },
    {
      name: 'the operator sees the notification queues and a dead letter',
      async fn(t) {
        const page = await login(t, 'olga');
        await page.waitForSelector('#board', { state: 'visible' });
        await page.locator('#notify-channels tbody tr[data-channel="email"]')
          .waitFor({ timeout: 10000 });
        // Nobody can take this one: e-mail only, to the outbox driver's
        // always-failing address, so it becomes a dead letter.
        const r = await t.server.api('POST', '/api/v1/notifications', {
          event: 'order.paid', email: 'dead@example.com',
          channels: ['email'],
          data: { order: 'A-1', amount: '10', currency: 'RUB' },
        }, { token: t.server.key('boss') });
        assert.equal(r.status, 202, r.text);
        // Columns: Backlog, Pending, In flight, Scheduled, Dead, Rejects.
        await page.waitForFunction(() => {
          const tr = document.querySelector('#notify tbody tr');
          return tr && tr.cells[4].textContent === '1' &&
            tr.cells[4].classList.contains('alert');
        }, null, { timeout: 15000 });
        const drv = page.locator(
          '#notify-channels tbody tr[data-channel="email"] td').nth(1);
        assert.equal(await drv.textContent(), 'yes');
        await t.screenshot(page, 'dashboard-notifications');
      },
    },
  ],
};
