// start_page.test.js - the start page (src/www): log in, find a customer,
// read the cross-channel timeline, page back, log out.
//
// Seeded through POST /api/v1/contacts with the API key: one customer with
// 60 older notes, then a phone call in Russian, an e-mail and an e-mail whose
// subject and text are HTML meant to run script; plus an unrelated customer.
'use strict';

const assert = require('node:assert/strict');

const PHONE_SEED = '+7 916 123 45 67';
const PHONE_E164 = '+79161234567';
const PHONE_NATIONAL = '8 (916) 123-45-67';
const EMAIL_SEED = 'Ivan.Petrov@Example.com';
const EMAIL = 'ivan.petrov@example.com';
const NAME = 'Иван Петров';
const RU_TEXT = 'Здравствуйте, где мой заказ?';
const MAIL_SUBJECT = 'Заказ №12345';
const MAIL_TEXT = 'Добрый день! Когда доставка? «Ёлка» — ёжик';
const HOSTILE_TEXT = '<img src=x onerror="window.__xss=1">';
const HOSTILE_SUBJECT = '<script>window.__xss=2</script>';
const NOTES = 60;
const PAGE = 50;

// Timeline columns (index.html): When, Channel, Dir, Type, Conversation,
// Subject / text.
const COL = { when: 0, channel: 1, dir: 2, type: 3, conv: 4, text: 5 };

async function rows(page) {
  return page.$$eval('#timeline tbody tr',
    (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));
}

async function waitRows(page, n) {
  await page.waitForFunction(
    (k) => document.querySelectorAll('#timeline tbody tr').length >= k,
    n, { timeout: 10000 });
  // Let a second, unexpected batch show up if the page were to add one.
  await page.waitForLoadState('networkidle', { timeout: 5000 });
}

async function visible(page, sel) {
  return page.$eval(sel, (el) => !el.closest('[hidden]') &&
    getComputedStyle(el).display !== 'none');
}

async function submitLogin(page, user, password) {
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('#login-form button[type=submit]');
}

// A new context on / with `user` logged in through the form.
async function loggedIn(t, user = 'olga') {
  const page = await t.newPage();
  await page.goto(t.server.url + '/');
  await submitLogin(page, user, t.server.password(user));
  await page.waitForSelector('#customer-view', { state: 'visible' });
  return page;
}

async function find(page, value) {
  await page.fill('#ident', value);
  await page.click('#find-form button[type=submit]');
}

module.exports = {
  async setup(t) {
    const s = t.server;
    let cust = null;
    for (let i = 1; i <= NOTES; i++) {
      const r = await s.contact({
        channel: 'api', phone: PHONE_SEED, name: NAME, locale: 'ru',
        text: `note ${i}`, source_id: `seed-note-${i}`,
        conversation: 'none',
      });
      if (i === 1) {
        assert.equal(r.new_customer, true);
        cust = r.customer;
      }
      assert.equal(r.customer, cust, `note ${i} went to another customer`);
    }
    const call = await s.contact({
      channel: 'phone', phone: PHONE_SEED, text: RU_TEXT,
      source_id: 'seed-call-1',
    });
    const mail = await s.contact({
      channel: 'email', customer: cust, email: EMAIL_SEED,
      subject: MAIL_SUBJECT, text: MAIL_TEXT, source_id: 'seed-mail-1',
    });
    const evil = await s.contact({
      channel: 'email', email: EMAIL, subject: HOSTILE_SUBJECT,
      text: HOSTILE_TEXT, source_id: 'seed-mail-2',
    });
    for (const r of [call, mail, evil]) assert.equal(r.customer, cust);
    const other = await s.contact({
      channel: 'sms', phone: '+79031112233', text: 'Другой клиент',
    });
    assert.notEqual(other.customer, cust);
    t.state.cust = cust;
    t.state.call = call;
    t.state.mail = mail;
  },

  tests: [
    {
      name: 'GET / is served with a strict Content-Security-Policy',
      async fn(t) {
        const page = await t.newPage();
        const resp = await page.goto(t.server.url + '/');
        assert.equal(resp.status(), 200);
        assert.match(resp.headers()['content-type'] || '', /^text\/html/);
        const csp = resp.headers()['content-security-policy'];
        assert.ok(csp, 'no Content-Security-Policy header on /');
        assert.match(csp, /default-src 'none'/);
        assert.match(csp, /script-src 'self'/);
        assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
        assert.equal(await page.title(), 'switchboard');
        await page.waitForSelector('#login-form', { state: 'visible' });
        assert.equal(await visible(page, '#customer-view'), false);
        assert.equal(await visible(page, '#logout'), false);
      },
    },

    {
      name: 'a wrong password shows an error, the right one logs in',
      async fn(t) {
        const page = await t.newPage();
        await page.goto(t.server.url + '/');
        await submitLogin(page, 'olga', 'not-the-password');
        await page.waitForFunction(
          () => document.getElementById('login-error').textContent !== '');
        assert.equal(await visible(page, '#login-error'), true);
        assert.equal(await visible(page, '#customer-view'), false);
        assert.equal(
          await page.evaluate(() => sessionStorage.getItem('sb_token')), null);

        await submitLogin(page, 'olga', t.server.password('olga'));
        await page.waitForSelector('#customer-view', { state: 'visible' });
        assert.equal(await page.textContent('#login-error'), '');
        assert.equal(await visible(page, '#login-view'), false);
        assert.equal(await visible(page, '#logout'), true);
        assert.equal(await page.textContent('#who'), 'olga (operator)');
        assert.equal(await page.inputValue('#password'), '');
        assert.match(
          await page.evaluate(() => sessionStorage.getItem('sb_token')) || '',
          /\S{20,}/);
        await t.screenshot(page, 'after-login');

        // The session survives a reload (the page asks /api/v1/me).
        await page.reload();
        await page.waitForSelector('#customer-view', { state: 'visible' });
        assert.equal(await page.textContent('#who'), 'olga (operator)');
      },
    },

    {
      name: 'a national phone number finds the customer, newest first, ' +
        'Cyrillic intact',
      async fn(t) {
        const page = await loggedIn(t);
        await find(page, PHONE_NATIONAL);
        await waitRows(page, PAGE);
        await t.screenshot(page, 'after-search');

        assert.equal(await page.textContent('#c-name'),
                     `${NAME} — ${t.state.cust}`);
        const facts = await page.textContent('#c-facts');
        assert.ok(facts.includes(PHONE_E164), facts);
        assert.ok(facts.includes(EMAIL), facts);

        const r = await rows(page);
        assert.equal(r.length, PAGE);
        assert.equal(r[0][COL.text], `${HOSTILE_SUBJECT}\n${HOSTILE_TEXT}`);
        assert.deepEqual(r[1].slice(1),
          ['email', 'in', 'message', t.state.mail.conversation,
           `${MAIL_SUBJECT}\n${MAIL_TEXT}`]);
        assert.deepEqual(r[2].slice(1),
          ['phone', 'in', 'call', t.state.call.conversation, RU_TEXT]);
        for (let i = 3; i < PAGE; i++) {
          assert.equal(r[i][COL.text], `note ${NOTES - (i - 3)}`,
                       `row ${i}`);
          assert.equal(r[i][COL.conv], '', `row ${i}`);
        }
        for (const row of r) assert.notEqual(row[COL.when], '');
        assert.equal(await visible(page, '#older'), true);
        // What a person sees, not only the DOM.
        const seen = await page.innerText('#timeline');
        assert.ok(seen.includes(RU_TEXT), 'Cyrillic text not visible');
        assert.ok(seen.includes(MAIL_TEXT), 'Cyrillic text not visible');

        // The same customer by e-mail, in other case.
        await find(page, 'IVAN.Petrov@EXAMPLE.com');
        await page.waitForFunction(
          (id) => document.getElementById('c-name').textContent.endsWith(id)
            && document.querySelectorAll('#timeline tbody tr').length === 50,
          t.state.cust);
        // An unknown number: an error, and no stale customer left shown.
        await find(page, '8 999 000-00-00');
        await page.waitForFunction(
          () => document.getElementById('find-error').textContent !== '');
        assert.equal(await page.textContent('#find-error'),
                     'No such customer');
        assert.equal(await visible(page, '#customer'), false);
      },
    },

    {
      name: 'hostile subject and text are shown literally, never run',
      async fn(t) {
        const page = await loggedIn(t);
        await find(page, PHONE_NATIONAL);
        await waitRows(page, PAGE);
        const cell = page.locator('#timeline tbody tr').first()
          .locator('td.text');
        assert.equal(await cell.textContent(),
                     `${HOSTILE_SUBJECT}\n${HOSTILE_TEXT}`);
        assert.ok((await cell.innerText()).includes(HOSTILE_TEXT));
        const found = await page.evaluate(() => ({
          inTable: document.querySelectorAll(
            '#timeline img, #timeline script, #timeline [onerror]').length,
          images: document.images.length,
          scripts: [...document.scripts].map((s) => s.src),
          xss: typeof window.__xss,
        }));
        assert.equal(found.inTable, 0);
        assert.equal(found.images, 0);
        assert.deepEqual(found.scripts, [t.server.url + '/static/app.js']);
        assert.equal(found.xss, 'undefined');
      },
    },

    {
      name: '"Older" pages back past 50 entries',
      async fn(t) {
        const page = await loggedIn(t);
        await find(page, PHONE_NATIONAL);
        await waitRows(page, PAGE);
        assert.equal(await visible(page, '#older'), true);
        // A double click asks for the next page once, not twice.
        await page.dblclick('#older');
        const total = NOTES + 3;
        await waitRows(page, total);
        const r = await rows(page);
        assert.equal(r.length, total);
        assert.equal(new Set(r.map((x) => x[COL.text])).size, total,
                     'an entry is shown twice');
        for (let i = PAGE; i < total; i++)
          assert.equal(r[i][COL.text], `note ${total - i}`, `row ${i}`);
        assert.equal(await visible(page, '#older'), false);
      },
    },

    {
      name: 'logging out revokes the token and clears the page',
      async fn(t) {
        const page = await loggedIn(t);
        await find(page, PHONE_NATIONAL);
        await waitRows(page, PAGE);
        const token = await page.evaluate(
          () => sessionStorage.getItem('sb_token'));
        assert.ok(token);
        const me = (tok) => page.evaluate(async (k) => {
          const r = await fetch('/api/v1/me',
                                { headers: { Authorization: 'Bearer ' + k } });
          return r.status;
        }, tok);
        assert.equal(await me(token), 200);

        const [resp] = await Promise.all([
          page.waitForResponse((r) => r.url().endsWith('/api/v1/logout')),
          page.click('#logout'),
        ]);
        assert.equal(resp.status(), 204);
        await page.waitForSelector('#login-view', { state: 'visible' });
        assert.equal(await visible(page, '#customer-view'), false);
        assert.equal(
          await page.evaluate(() => sessionStorage.getItem('sb_token')), null);
        assert.equal(await me(token), 401);
        assert.equal((await t.server.api('GET', '/api/v1/me', undefined,
                                         { token })).status, 401);
        // Nothing of the customer stays in the page for the next person.
        const text = await page.evaluate(() => document.body.textContent);
        for (const s of [NAME, RU_TEXT, PHONE_E164, t.state.cust])
          assert.ok(!text.includes(s), `"${s}" still in the page`);

        await page.reload();
        await page.waitForSelector('#login-view', { state: 'visible' });
        assert.equal(await visible(page, '#customer-view'), false);
      },
    },
  ],
};
