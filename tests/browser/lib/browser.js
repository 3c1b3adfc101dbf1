// browser.js - Debian's headless Chromium through playwright-core.
//
// One browser per run (launched on first use), a fresh profile directory for
// it (Playwright makes one under TMPDIR, which we point into the run's temp
// dir, and removes it), and an isolated context per newContext() - so one
// test can be an operator and a customer at once. playwright-core downloads
// no browser: the executable is /usr/bin/chromium (CHROMIUM overrides).
//
// Every page opened through a context made here records its uncaught
// exceptions and Content-Security-Policy violations in ctx.problems; the
// runner fails a test that leaves any.
'use strict';

const fs = require('fs');
const path = require('path');
const procs = require('./procs');

const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';

// What works on this machine as root in a container with no network but
// loopback: no sandbox (root), no GPU, none of Chromium's own background
// traffic (component updates, sync, safe browsing lists...), which would only
// be refused here and slow the start.
const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
  '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-quic', '--no-first-run',
  '--no-default-browser-check', '--disable-extensions',
];

class BrowserPool {
  constructor(tmpDir) {
    this.tmpDir = tmpDir;
    this.browser = null;
    this.pid = null;
    this.launching = null;
  }

  async get() {
    if (this.browser) return this.browser;
    if (!this.launching) this.launching = this.launch();
    return this.launching;
  }

  async launch() {
    // Loaded here so a runner started without node_modules can still say
    // what is missing.
    const { chromium } = require('playwright-core');
    const profiles = path.join(this.tmpDir, 'chromium');
    fs.mkdirSync(profiles, { recursive: true });
    // Chromium's crash-report database and caches follow HOME and XDG_*:
    // keep them in the run's temp dir too, not in the user's home.
    const home = path.join(this.tmpDir, 'home');
    fs.mkdirSync(home, { recursive: true });
    const env = { ...process.env, HOME: home,
                  XDG_CONFIG_HOME: path.join(home, '.config'),
                  XDG_CACHE_HOME: path.join(home, '.cache') };
    const oldTmp = process.env.TMPDIR;
    process.env.TMPDIR = profiles; // the profile dir Playwright creates
    try {
      this.browser = await chromium.launch({
        executablePath: EXECUTABLE,
        headless: true,
        args: FLAGS,
        env,
        timeout: 60000,
        handleSIGINT: false, handleSIGTERM: false, handleSIGHUP: false,
        logger: {
          isEnabled: (name) => name === 'browser',
          log: (name, sev, msg) => {
            const m = /^\[pid=(\d+)\]/.exec(String(msg));
            if (m && !this.pid) {
              this.pid = Number(m[1]);
              procs.adoptGroup(this.pid);
            }
          },
        },
      });
    } finally {
      if (oldTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = oldTmp;
    }
    return this.browser;
  }

  // A new isolated context; its pages record problems (see above).
  // opts: Playwright context options (viewport, locale...).
  async newContext(opts = {}) {
    const browser = await this.get();
    const ctx = await browser.newContext({
      viewport: { width: 1280, height: 800 }, locale: 'ru-RU', ...opts,
    });
    ctx.setDefaultTimeout(10000);
    ctx.setDefaultNavigationTimeout(15000);
    ctx.problems = [];
    ctx.consoleLines = [];
    ctx.on('page', (page) => watchPage(ctx, page));
    return ctx;
  }

  async close() {
    if (!this.browser) return;
    const b = this.browser;
    this.browser = null;
    let closed = false;
    try {
      await procs.withTimeout(b.close(), 15000, 'browser close');
      closed = true;
    } catch (e) { /* killed below */ }
    if (this.pid) {
      // Only when close failed: the group is gone otherwise.
      if (!closed) {
        try { process.kill(-this.pid, 'SIGKILL'); } catch (e) { /* gone */ }
      }
      procs.forgetGroup(this.pid);
      this.pid = null;
    }
  }
}

function watchPage(ctx, page) {
  page.on('pageerror', (e) => ctx.problems.push('page error: ' + e.message));
  page.on('console', (m) => {
    const text = m.text();
    ctx.consoleLines.push(`${m.type()}: ${text}`);
    if (/Content Security Policy/i.test(text))
      ctx.problems.push('CSP violation: ' + text);
  });
}

module.exports = { BrowserPool, FLAGS, EXECUTABLE };
