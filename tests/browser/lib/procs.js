// procs.js - start child processes, remember them, stop them by PID.
//
// Every server a browser test needs (redis-server, the daemon) is started
// through start(), which records the PID; stop() sends SIGTERM, waits a
// bounded time, then SIGKILLs. Whatever is still recorded when the runner
// exits - normally, on an exception or on a signal - is SIGKILLed by PID
// from a synchronous 'exit' hook, so no test leaves a server behind.
'use strict';

const { spawn } = require('child_process');

const live = new Map(); // pid -> { proc, what }
const extraGroups = new Set(); // process groups started by others (chromium)

// sleep(ms) resolves after ms; the timer never keeps the process alive.
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

// withTimeout(promise, ms, what): the promise's value, or a rejection
// "what: timed out after ms ms" when it takes longer.
function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

// start(cmd, args, opts, what): spawn and record. proc.exited resolves to
// { code, signal, error } once the process is gone (or failed to start).
function start(cmd, args, opts, what) {
  const proc = spawn(cmd, args, opts);
  proc.what = what;
  proc.exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      live.delete(proc.pid);
      resolve({ code, signal, error: null });
    });
    proc.once('error', (error) => {
      live.delete(proc.pid);
      resolve({ code: null, signal: null, error });
    });
  });
  if (proc.pid) live.set(proc.pid, { proc, what });
  return proc;
}

function running(proc) {
  return proc.exitCode === null && proc.signalCode === null &&
    live.has(proc.pid);
}

// stop(proc, limitMs): SIGTERM, wait up to limitMs, then SIGKILL.
// Returns { code, signal, killed } (killed: SIGKILL was needed).
async function stop(proc, limitMs = 10000, sig = 'SIGTERM') {
  let killed = false;
  if (running(proc)) {
    try { process.kill(proc.pid, sig); } catch (e) { /* already gone */ }
    const done = await Promise.race([proc.exited, sleep(limitMs)]);
    if (!done) {
      killed = true;
      try { process.kill(proc.pid, 'SIGKILL'); } catch (e) { /* gone */ }
      await Promise.race([proc.exited, sleep(10000)]);
    }
  }
  const r = await Promise.race([proc.exited, sleep(1000)]);
  live.delete(proc.pid);
  return { code: r ? r.code : null, signal: r ? r.signal : null, killed };
}

// A process group some library started for us (the browser): killed in
// killAllSync if it is still there.
function adoptGroup(pid) { extraGroups.add(pid); }
function forgetGroup(pid) { extraGroups.delete(pid); }

// Last resort, synchronous: SIGKILL everything still recorded.
function killAllSync() {
  for (const [pid] of live) {
    try { process.kill(pid, 'SIGKILL'); } catch (e) { /* gone */ }
  }
  live.clear();
  for (const pid of extraGroups) {
    try { process.kill(-pid, 'SIGKILL'); } catch (e) { /* gone */ }
  }
  extraGroups.clear();
}

process.on('exit', killAllSync);

module.exports = {
  sleep, withTimeout, start, stop, running, killAllSync, adoptGroup,
  forgetGroup,
};
