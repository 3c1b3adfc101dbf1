#!/usr/bin/env node
// run.js - run every tests/browser/*.test.js in headless Chromium against a
// private switchboard.
//
//   node tests/browser/run.js [FILTER...]
//
// A FILTER keeps the files and tests whose "file: name" contains it. For each
// test file the runner starts its own redis-server and daemon (lib/server.js,
// with the file's config overrides), runs the file's setup once, then its
// tests in order, each with a time limit; then it stops both servers by PID
// and fails the file if the daemon's log shows a sanitizer report or an
// undeclared error line. One browser serves the whole run (lib/browser.js);
// each test opens isolated contexts with t.newContext() / t.newPage(), which
// are closed after the test, and a test fails if any of its pages had an
// uncaught exception or a Content-Security-Policy violation.
//
// A test file exports:
//   { config: { section: { key: value } },   // optional overrides
//     expectErrors: [/regex/],               // optional daemon error lines
//     async setup(t) { ... },                // optional, once (t.state)
//     tests: [{ name, timeout (ms, default 60000), async fn(t) }] }
// t: server (url, api(), contact(), login(), password(), redis()), state,
//    newContext(opts), newPage(opts), screenshot(page, label), log(msg).
//
// Screenshots go to build/test-artifacts/browser/ (t.screenshot, and every
// open page of a failed test). Output: one line per test, then
// "N passed, N failed" alone on a line; exit 1 if anything failed. Every
// wait is bounded: per test, per setup, and the whole run
// (SB_BROWSER_TIMEOUT seconds, default 900). Environment: SB_BIN (default
// build/asan/switchboard), CHROMIUM (default /usr/bin/chromium),
// SB_KEEP_TMP=1 keeps the temp dirs.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const procs = require('./lib/procs');
const { Server, ROOT, sbBin } = require('./lib/server');
const { BrowserPool, EXECUTABLE } = require('./lib/browser');

const HERE = __dirname;
const ARTIFACTS = path.join(ROOT, 'build', 'test-artifacts', 'browser');
const RUN_LIMIT_MS = 1000 * Number(process.env.SB_BROWSER_TIMEOUT || 900);
const SERVER_START_MS = 90000;
const SETUP_MS = 120000;
const CLOSE_MS = 10000;

let passed = 0;
let failed = 0;
let finished = false;
const servers = new Set();
let pool = null;
let runTmp = null;

function say(line) { process.stdout.write(line + '\n'); }

function report(ok, label, ms, err) {
  const secs = (ms / 1000).toFixed(1);
  say(`${ok ? 'ok  ' : 'FAIL'} ${label} (${secs}s)`);
  if (ok) { passed++; return; }
  failed++;
  const text = err && err.stack ? err.stack : String(err);
  for (const l of text.split('\n').slice(0, 25)) say('     ' + l);
}

function closing(extraFailed) {
  say(`${passed} passed, ${failed + (extraFailed || 0)} failed`);
}

function safeName(s) {
  return s.replace(/[^A-Za-z0-9_.-]+/g, '_').replace(/^_+|_+$/g, '')
    .slice(0, 80);
}

// Stop everything synchronously and leave: the overall limit or a signal.
function abort(why) {
  if (finished) return;
  finished = true;
  say(`FAIL run: ${why}`);
  procs.killAllSync();
  for (const s of servers) say(`     kept ${s.tmp}`);
  closing(1);
  if (runTmp) {
    try { fs.rmSync(runTmp, { recursive: true, force: true }); } catch (e) {
      /* chromium may still be writing: left in TMPDIR */
    }
  }
  process.exit(1);
}

class TestContext {
  constructor(file, server, state, label) {
    this.file = file;
    this.server = server;
    this.state = state;
    this.label = label;
    this.contexts = [];
    this.shots = 0;
  }

  async newContext(opts) {
    const ctx = await pool.newContext(opts);
    this.contexts.push(ctx);
    return ctx;
  }

  async newPage(opts) {
    const ctx = await this.newContext(opts);
    return ctx.newPage();
  }

  async screenshot(page, label) {
    const p = path.join(ARTIFACTS,
      `${safeName(this.file)}-${safeName(label)}.png`);
    await page.screenshot({ path: p, fullPage: true, timeout: 10000 });
    this.shots++;
    return p;
  }

  log(msg) { say('     ' + msg); }

  problems() {
    return this.contexts.flatMap((c) => c.problems);
  }

  async failureShots() {
    let i = 0;
    for (const ctx of this.contexts) {
      for (const page of ctx.pages()) {
        i++;
        const p = path.join(ARTIFACTS, `${safeName(this.file)}-` +
          `${safeName(this.label)}-failure-${i}.png`);
        try {
          await page.screenshot({ path: p, fullPage: true, timeout: 5000 });
          say(`     screenshot: ${path.relative(ROOT, p)}`);
        } catch (e) { /* the page may be gone */ }
      }
    }
  }

  async close() {
    for (const ctx of this.contexts) {
      try {
        await procs.withTimeout(ctx.close(), CLOSE_MS, 'context close');
      } catch (e) { /* the browser is closed at the end anyway */ }
    }
    this.contexts = [];
  }
}

// Run fn(t) within limitMs; on time out close t's contexts so the test's
// pending browser calls fail, and wait a little for it to unwind.
async function bounded(t, fn, limitMs, what) {
  let timer;
  const run = Promise.resolve().then(() => fn(t));
  const late = new Error(`${what}: timed out after ${limitMs} ms`);
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(late), limitMs);
  });
  try {
    await Promise.race([run, timeout]);
  } catch (e) {
    if (e === late) {
      await t.failureShots();
      await t.close();
      await Promise.race([run.catch(() => {}), procs.sleep(5000)]);
    }
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

function matches(filters, s) {
  return filters.length === 0 || filters.some((f) => s.includes(f));
}

async function runFile(file, filters) {
  const base = file.replace(/\.test\.js$/, '');
  let mod;
  try {
    mod = require(path.join(HERE, file));
  } catch (e) {
    report(false, `${base}: load`, 0, e);
    return;
  }
  const tests = (mod.tests || []).filter(
    (x) => matches(filters, `${base}: ${x.name}`));
  if (tests.length === 0) return;

  const server = new Server({ config: mod.config,
                              expectErrors: mod.expectErrors });
  servers.add(server);
  const state = {};
  let keep = false;
  const t0 = Date.now();
  try {
    await procs.withTimeout(server.start(), SERVER_START_MS, 'server start');
    if (mod.setup) {
      const t = new TestContext(base, server, state, 'setup');
      try {
        await bounded(t, mod.setup, mod.setupTimeout || SETUP_MS, 'setup');
      } finally {
        await t.close();
      }
    }
  } catch (e) {
    keep = true;
    report(false, `${base}: setup`, Date.now() - t0, e);
    for (const x of tests) report(false, `${base}: ${x.name}`, 0,
                                  'not run: setup failed');
    await stopServer(server, base, keep);
    return;
  }

  for (const x of tests) {
    const label = `${base}: ${x.name}`;
    const t = new TestContext(base, server, state, x.name);
    const start = Date.now();
    let err = null;
    try {
      await bounded(t, x.fn, x.timeout || 60000, 'test');
      const probs = t.problems();
      if (probs.length)
        err = new Error('problems in the page:\n' + probs.join('\n'));
    } catch (e) {
      err = e;
    }
    if (err) {
      keep = true;
      await t.failureShots();
      const cons = t.contexts.flatMap((c) => c.consoleLines).slice(-10);
      if (cons.length && err.stack !== undefined)
        err.stack += '\nlast console lines:\n' + cons.join('\n');
    }
    await t.close();
    report(!err, label, Date.now() - start, err);
  }
  await stopServer(server, base, keep);
}

async function stopServer(server, base, keep) {
  const t0 = Date.now();
  let problems;
  try {
    problems = await procs.withTimeout(server.stop(), 60000, 'server stop');
  } catch (e) {
    problems = [e.message];
  }
  servers.delete(server);
  if (problems.length) {
    keep = true;
    report(false, `${base}: daemon log and exit`, Date.now() - t0,
           problems.slice(0, 20).join('\n'));
  }
  const kept = server.cleanup(keep);
  if (kept) say(`     kept ${kept}`);
}

async function main() {
  const filters = process.argv.slice(2);
  const watchdog = setTimeout(
    () => abort(`overall time limit of ${RUN_LIMIT_MS / 1000} s`),
    RUN_LIMIT_MS);
  watchdog.unref();
  process.on('SIGTERM', () => abort('SIGTERM'));
  process.on('SIGINT', () => abort('SIGINT'));

  const major = Number(process.versions.node.split('.')[0]);
  const missing = [];
  if (major < 20) missing.push(`node >= 20 (this is ${process.version})`);
  if (!fs.existsSync(EXECUTABLE)) missing.push(EXECUTABLE);
  if (!fs.existsSync(sbBin())) missing.push(sbBin());
  try { require.resolve('playwright-core'); } catch (e) {
    missing.push('playwright-core (npm ci in tests/browser)');
  }
  if (missing.length) {
    say('FAIL run: missing ' + missing.join(', '));
    closing(1);
    process.exit(1);
  }

  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS))
    if (f.endsWith('.png')) fs.rmSync(path.join(ARTIFACTS, f), { force: true });
  runTmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-browser-run-'));
  pool = new BrowserPool(runTmp);

  const files = fs.readdirSync(HERE).filter((f) => f.endsWith('.test.js'))
    .sort();
  try {
    for (const f of files) await runFile(f, filters);
  } finally {
    await pool.close();
    for (const s of servers) await s.stop().catch(() => {});
    fs.rmSync(runTmp, { recursive: true, force: true });
  }
  if (passed + failed === 0) {
    say('FAIL run: no test matched');
    failed++;
  }
  finished = true;
  closing(0);
  process.exitCode = failed ? 1 : 0;
}

process.on('unhandledRejection', (e) => {
  abort('unhandled rejection: ' + (e && e.stack || e));
});

main().catch((e) => abort('runner error: ' + (e && e.stack || e)));
