// console_email.test.js - e-mail entries in the agent console. Mail
// contacts go in through POST /api/v1/contacts with the fields the IMAP
// ingest writes (docs/email.md, "Inbound"): from, to, cc, kind,
// quote_offset, html {sha256,size}, attachments; their HTML and attachment
// contents are put in Redis as <prefix>blob:<sha256> (with redis-cli, so
// binary bytes stay exact), where the ingest would have stored them. The
// agent (alice) accepts the mail's offer and checks: the header block, the
// quoted history folded at the UTF-8 byte offset and unfolded on demand,
// automatic mail muted with its label, the original HTML in an empty
// sandbox frame (its text shows, its script does not run), attachments
// listed with type and size, a stored one downloaded byte for byte, an
// expired one reported, one over the cap marked as not kept.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('crypto');
const fs = require('fs');
const { execFileSync } = require('child_process');
const { contactCenterConfig } = require('./lib/server');

const CUSTOMER = 'anna.mail@example.com';
const SUPPORT = { name: 'Example Support', addr: 'support@example.com' };
const HOSTILE_NAME = '<img src=x onerror="window.__xss=1">';

// The body: Cyrillic before the quote, so its UTF-8 byte offset is far
// from its JS string index (a fold at the string index would cut inside
// the quote).
const HEAD = 'Добрый день!\nПришлите, пожалуйста, счёт за заказ №5 — ' +
  '«ёлка», 2 шт.\n\nАнна\n\n';
const QUOTE = 'Пн, 1 дек. 2025 г. Example Support <support@example.com>:\n' +
  '> Здравствуйте, Анна!\n> Ваш заказ №5 собран и ждёт оплаты.\n';

// The original HTML: its script would rewrite #p and mark both windows.
const HTML = '<!doctype html><html><head><meta charset="utf-8">' +
  '<title>Письмо</title></head><body>' +
  '<h1 id="h">Счёт за заказ №5</h1>' +
  '<p id="p">HTML-версия письма: <b>ёлка</b></p>' +
  '<script>document.getElementById("p").textContent = "SCRIPT RAN";' +
  'window.__mailScript = 1; try { parent.__mailScript = 1; } ' +
  'catch (e) { }</script></body></html>';

function sha256(buf) {
  return crypto.createHash('sha256').update(buf).digest('hex');
}

// SET <prefix>blob:<sha> to exactly these bytes (redis-cli -x sends its
// stdin unchanged as the last argument).
async function putBlob(server, bytes) {
  const sha = sha256(bytes);
  const key = 'sb:blob:' + sha;
  execFileSync('redis-cli', ['-s', server.redisSock, '-x', 'SET', key],
               { input: bytes, timeout: 10000, stdio: ['pipe', 'pipe',
                                                       'pipe'] });
  assert.equal(await server.redis('STRLEN', key), bytes.length,
               'blob length in Redis');
  return sha;
}

async function consoleLogin(t) {
  const page = await t.newPage();
  await page.goto(t.server.url + '/console/');
  await page.waitForSelector('#login-form', { state: 'visible' });
  await page.fill('#username', 'alice');
  await page.fill('#password', t.server.password('alice'));
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#app', { state: 'visible' });
  await page.waitForFunction(
    () => document.getElementById('conn').textContent === 'connected',
    null, { timeout: 10000 });
  return page;
}

async function acceptOffer(agent, text) {
  const offer = agent.locator('#offers li.offer', { hasText: text });
  await offer.waitFor({ timeout: 15000 });
  await offer.locator('button.accept').click();
  await offer.waitFor({ state: 'detached', timeout: 10000 });
}

// The mail's contact, its blobs, and two automatic mails before it.
async function setup(t) {
  const s = t.server;
  const st = t.state;
  st.pdf = Buffer.concat([
    Buffer.from('%PDF-1.4\n%\xe2\xe3\xcf\xd3\n', 'latin1'),
    Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
    crypto.randomBytes(4000),
  ]);
  st.pdfSha = await putBlob(s, st.pdf);
  st.htmlSha = await putBlob(s, Buffer.from(HTML, 'utf8'));

  const common = { channel: 'email', email: CUSTOMER, name: 'Анна Петрова',
                   conversation: 'none' };
  const auto = await s.contact({
    ...common, type: 'auto', source_id: 'msgid:auto-1@mx.example.com',
    subject: 'Автоответ: я в отпуске',
    text: 'Я в отпуске до 10 декабря, отвечу позже.',
    fields: { kind: 'auto', from: { name: 'Анна Петрова', addr: CUSTOMER },
              to: [SUPPORT], auto_reason: 'Auto-Submitted: auto-replied',
              attachments: [] },
  });
  const bounce = await s.contact({
    ...common, type: 'bounce', source_id: 'msgid:bounce-1@mx.example.com',
    subject: 'Undelivered Mail Returned to Sender',
    text: 'The mail system could not deliver your message.',
    fields: { kind: 'bounce',
              from: { name: 'Mail Delivery System',
                      addr: 'MAILER-DAEMON@mx.example.com' },
              to: [SUPPORT],
              dsn: { status: '5.1.1', action: 'failed',
                     recipient: 'anna.old@example.com' },
              attachments: [] },
  });
  assert.equal(auto.conversation, null);
  assert.equal(bounce.conversation, null);
  assert.equal(auto.customer, bounce.customer);
  st.customer = auto.customer;
}

function mailBody() {
  return {
    channel: 'email', type: 'message', email: CUSTOMER, name: 'Анна Петрова',
    subject: 'Счёт за заказ №5', text: HEAD + QUOTE,
    source_id: 'msgid:order5-' + crypto.randomBytes(4).toString('hex') +
      '@mail.example.com',
    fields: {
      kind: 'message',
      from: { name: 'Анна Петрова', addr: CUSTOMER },
      to: [SUPPORT],
      cc: [{ name: 'Бухгалтерия', addr: 'buh@example.com' },
           { name: HOSTILE_NAME, addr: 'x@example.com' }],
      quote_offset: Buffer.byteLength(HEAD, 'utf8'),
      html: null, // set below
      attachments: null,
    },
  };
}

module.exports = {
  config: contactCenterConfig(),
  setup,

  tests: [
    {
      name: 'the content routes want a token and serve with a sandbox CSP',
      async fn(t) {
        const s = t.server;
        const b = mailBody();
        b.conversation = 'none';
        b.fields.html = { sha256: t.state.htmlSha,
                          size: Buffer.byteLength(HTML) };
        b.fields.attachments = [{
          filename: 'a.pdf', content_type: 'application/pdf',
          size: t.state.pdf.length, sha256: t.state.pdfSha, stored: true,
          inline: false }];
        const c = await s.contact(b);
        const base = '/api/v1/contacts/' + encodeURIComponent(c.id);
        let r = await s.api('GET', base + '/html', undefined,
                            { token: null });
        assert.equal(r.status, 401);
        r = await s.api('GET', base + '/html');
        assert.equal(r.status, 200);
        assert.equal(r.text, HTML);
        assert.match(r.headers.get('content-security-policy') || '',
                     /^sandbox/);
        r = await s.api('GET', base + '/attachments/0', undefined,
                        { token: null });
        assert.equal(r.status, 401);
        r = await s.api('GET', base + '/attachments/0');
        assert.equal(r.status, 200);
        assert.match(r.headers.get('content-disposition') || '',
                     /^attachment/);
      },
    },
    {
      name: 'a mail: header, folded quote, HTML in a sandbox, attachments',
      timeout: 90000,
      async fn(t) {
        const s = t.server;
        const st = t.state;
        const agent = await consoleLogin(t);

        const b = mailBody();
        b.fields.html = { sha256: st.htmlSha, size: Buffer.byteLength(HTML) };
        b.fields.attachments = [
          { filename: 'счёт №5.pdf', content_type: 'application/pdf',
            size: st.pdf.length, sha256: st.pdfSha, stored: true,
            inline: false },
          { filename: 'фото склада.zip', content_type: 'application/zip',
            size: 31457280, sha256: sha256('not kept'), stored: false,
            inline: false },
          { filename: 'logo.png', content_type: 'image/png', size: 2048,
            sha256: sha256('expired'), stored: true, inline: true },
        ];
        const c = await s.contact(b);
        assert.equal(c.customer, st.customer);
        assert.ok(c.conversation, 'the mail opened no conversation');
        await acceptOffer(agent, 'Счёт за заказ №5');

        const entry = agent.locator(`#timeline li.entry[data-id="${c.id}"]`);
        await entry.waitFor({ timeout: 10000 });
        assert.ok(await entry.evaluate((li) => li.classList.contains('mail')));

        // The header block.
        assert.equal(await entry.locator('.mh-from .v').textContent(),
                     `Анна Петрова <${CUSTOMER}>`);
        assert.equal(await entry.locator('.mh-to .v').textContent(),
                     'Example Support <support@example.com>');
        assert.equal(await entry.locator('.mh-cc .v').textContent(),
                     `Бухгалтерия <buh@example.com>, ${HOSTILE_NAME} ` +
                     '<x@example.com>');
        assert.equal(await entry.locator('.mh-subject .v').textContent(),
                     'Счёт за заказ №5');

        // The quote is folded at the byte offset; the whole text is kept.
        const quoted = entry.locator('.quoted');
        const toggle = entry.locator('button.quote-toggle');
        assert.equal(await entry.locator('.text').textContent(),
                     HEAD.trimEnd());
        assert.equal(await quoted.isVisible(), false);
        assert.equal(await quoted.textContent(), QUOTE);
        assert.equal(await toggle.textContent(), 'show quoted text');
        assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
        assert.ok(!(await entry.innerText()).includes('собран'),
                  'the quote shows while folded');
        await t.screenshot(agent, 'mail-folded');
        await toggle.click();
        await quoted.waitFor({ state: 'visible', timeout: 5000 });
        assert.equal(await toggle.textContent(), 'hide quoted text');
        assert.ok((await entry.innerText()).includes(
          'Ваш заказ №5 собран и ждёт оплаты.'));
        await toggle.click();
        await quoted.waitFor({ state: 'hidden', timeout: 5000 });
        await toggle.click();
        await quoted.waitFor({ state: 'visible', timeout: 5000 });

        // The original HTML: an empty sandbox, its text, no script.
        assert.equal(await entry.locator('iframe').count(), 0);
        await entry.locator('button.html-toggle').click();
        const frameEl = entry.locator('iframe.mail-frame');
        await frameEl.waitFor({ timeout: 10000 });
        assert.equal(await frameEl.getAttribute('sandbox'), '');
        assert.equal(await frameEl.evaluate((f) => f.sandbox.length), 0);
        assert.equal(await frameEl.getAttribute('src'), null);
        const frame = await (await frameEl.elementHandle()).contentFrame();
        assert.ok(frame, 'no frame');
        await frame.waitForLoadState('load', { timeout: 10000 });
        const fl = entry.frameLocator('iframe.mail-frame');
        assert.equal(await fl.locator('#h').textContent(),
                     'Счёт за заказ №5');
        assert.equal(await fl.locator('#p').textContent(),
                     'HTML-версия письма: ёлка');
        assert.equal(await agent.evaluate(() => typeof window.__mailScript),
                     'undefined');
        assert.deepEqual(await frame.evaluate(() => ({
          ran: typeof window.__mailScript,
          mode: document.compatMode,
          policy: document.head.firstElementChild.getAttribute('content'),
        })), { ran: 'undefined', mode: 'CSS1Compat',
               policy: "default-src 'none'; style-src 'unsafe-inline'; " +
                 'img-src data:' });
        assert.equal(await entry.locator('button.html-toggle').textContent(),
                     'hide original (HTML)');
        await t.screenshot(agent, 'mail-unfolded-html');

        // Attachments: names, types, sizes; what is not kept says so.
        const atts = entry.locator('ul.attachments li.att');
        assert.equal(await atts.count(), 3);
        assert.equal(await atts.nth(0).locator('.att-name').textContent(),
                     'счёт №5.pdf');
        assert.equal(await atts.nth(0).locator('.meta').textContent(),
                     'application/pdf, ' +
                     `${(st.pdf.length / 1024).toFixed(1)} KB`);
        assert.equal(await atts.nth(1).locator('a').count(), 0);
        assert.equal(await atts.nth(1).locator('.meta').textContent(),
                     'application/zip, 30 MB');
        assert.equal(await atts.nth(1).locator('.not-kept').textContent(),
                     'not kept (over the size cap)');
        assert.equal(await atts.nth(2).locator('.meta').textContent(),
                     'image/png, 2.0 KB, inline');

        // The stored one downloads with the token, byte for byte.
        const [dl] = await Promise.all([
          agent.waitForEvent('download', { timeout: 15000 }),
          atts.nth(0).locator('a.att-name').click(),
        ]);
        assert.equal(dl.suggestedFilename(), 'счёт №5.pdf');
        const got = fs.readFileSync(await dl.path());
        assert.equal(got.length, st.pdf.length);
        assert.ok(got.equals(st.pdf), 'downloaded bytes differ');

        // One whose blob is gone: the server's answer, no download.
        await atts.nth(2).locator('a.att-name').click();
        await atts.nth(2).locator('.mail-status', { hasText: 'not kept' })
          .waitFor({ timeout: 10000 });

        // Customer text in the header stayed text.
        const probe = await agent.evaluate(() => ({
          imgs: document.querySelectorAll('img').length,
          xss: typeof window.__xss,
        }));
        assert.deepEqual(probe, { imgs: 0, xss: 'undefined' });
        await entry.scrollIntoViewIfNeeded();
        await t.screenshot(agent, 'mail-attachments');
      },
    },
    {
      name: 'automatic mail shows muted with its label',
      async fn(t) {
        const agent = await consoleLogin(t);
        const conv = agent.locator('#convs li.conv-item button.open');
        await conv.first().waitFor({ timeout: 10000 });
        await conv.first().click();
        const auto = agent.locator('#timeline li.entry.mail-auto');
        const bounce = agent.locator('#timeline li.entry.mail-bounce');
        await auto.waitFor({ timeout: 10000 });
        await bounce.waitFor({ timeout: 10000 });
        assert.equal(await auto.locator('.ehead .kind').textContent(),
                     'auto-reply');
        assert.equal(await bounce.locator('.ehead .kind').textContent(),
                     'bounce: 5.1.1');
        assert.equal(await bounce.locator('.mh-from .v').textContent(),
                     'Mail Delivery System <MAILER-DAEMON@mx.example.com>');
        // Muted: fainter than a customer's mail outside this conversation
        // (the first test's, which is already faded as "other").
        const opacity = (loc) => loc.evaluate(
          (li) => Number(getComputedStyle(li).opacity));
        const plain = agent.locator('#timeline li.entry.mail.other',
                                    { hasText: 'a.pdf' });
        const base = await opacity(plain);
        for (const e of [auto, bounce]) {
          const op = await opacity(e);
          assert.ok(op < base, `automatic mail not muted (${op} >= ${base})`);
          assert.equal(await e.locator('button.quote-toggle').count(), 0);
          assert.equal(await e.locator('button.html-toggle').count(), 0);
        }
        const normal = agent.locator('#timeline li.entry.mail:not(.mail-auto)' +
                                     ':not(.mail-bounce) .ehead .kind');
        assert.equal(await normal.count(), 0);
        await bounce.scrollIntoViewIfNeeded();
        await t.screenshot(agent, 'mail-automatic');
      },
    },
  ],
};
