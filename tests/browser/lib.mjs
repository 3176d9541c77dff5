// Shared by the browser tests: the real tracemap binary on loopback port 0,
// Debian's Chromium driven by playwright-core, and the numbers the page shows.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, 'target');
/** Test artefacts: screenshots and the page-load figures. */
export const ARTEFACTS = join(TARGET, 'browser');
export const BINARY = process.env.TRACEMAP_BIN || join(TARGET, 'debug', 'tracemap');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Flags that work as root on a machine with no outside network (TESTING.md).
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/**
 * Why the browser tests cannot run here, or null. Under CI a missing
 * Chromium or binary is a failure, never a skip.
 */
export function missingPeer() {
  const missing = [];
  if (!existsSync(CHROMIUM)) missing.push(`Chromium (${CHROMIUM}; apt-get install chromium)`);
  if (!existsSync(BINARY)) missing.push(`the tracemap binary (${BINARY}; cargo build)`);
  if (!missing.length) return null;
  const reason = `missing ${missing.join(' and ')}`;
  if (process.env.CI) throw new Error(`browser tests cannot run under CI: ${reason}`);
  console.error(`\n*** SKIPPED browser tests: ${reason} ***\n`);
  return reason;
}

export async function launchBrowser() {
  mkdirSync(ARTEFACTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/**
 * A page that records every console error and warning and every uncaught
 * exception, so a test can assert there were none.
 */
export async function newPage(browser, viewport = { width: 1440, height: 900 }) {
  const page = await browser.newPage({ viewport, deviceScaleFactor: 1 });
  const problems = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      problems.push(`console.${msg.type()}: ${msg.text()} (${msg.location().url})`);
    }
  });
  page.on('pageerror', (err) => problems.push(`uncaught: ${err.stack || err}`));
  return { page, problems };
}

/**
 * Starts `tracemap <command...>` on loopback port 0 with `yaml` as its
 * config and JSON logs; resolves once `ready(line, stream)` returns a value
 * for some output line, or rejects after `timeoutMs`.
 */
export function startTracemap(command, yaml, ready, timeoutMs = 30000) {
  const dir = mkdtempSync(join(tmpdir(), 'tracemap-browser-'));
  const config = join(dir, 'tracemap.yaml');
  writeFileSync(config, yaml);
  const child = spawn(
    BINARY,
    [
      ...command,
      '--config', config,
      '--grpc-listen', '127.0.0.1:0',
      '--http-listen', '127.0.0.1:0',
      '--api-listen', '127.0.0.1:0',
      '--data-dir', join(dir, 'data'),
      '--log-format', 'json',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output = [];
  const exited = new Promise((done) => child.on('exit', (code, signal) => done({ code, signal })));
  const started = new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`tracemap did not start within ${timeoutMs} ms:\n${output.join('\n')}`));
    }, timeoutMs);
    let found = {};
    for (const [name, stream] of [['stdout', child.stdout], ['stderr', child.stderr]]) {
      createInterface({ input: stream }).on('line', (line) => {
        output.push(line);
        const value = ready(line, name, found);
        if (value) {
          clearTimeout(timer);
          resolvePromise(value);
        }
      });
    }
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`tracemap exited (${code ?? signal}) before it was ready:\n${output.join('\n')}`));
    });
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      const timeout = new Promise((done) => setTimeout(() => done(null), 20000));
      const result = await Promise.race([exited, timeout]);
      if (!result) child.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { child, started, stop, output };
}

/** A `listening` log line's component and address, or null. */
export function listening(line) {
  try {
    const value = JSON.parse(line);
    if (value.message === 'listening') return [value.component, value.addr];
  } catch (_) {
    // not a JSON log line
  }
  return null;
}

export async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Polls `probe` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor(probe, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await probe();
    if (last) return last;
    await new Promise((done) => setTimeout(done, 250));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

export const edgeKey = (e) => `${e.source} -> ${e.target} [${e.connection_type}]`;

/** The nodes and edges the page drew, by name. */
export function drawn(page) {
  return page.evaluate(() => {
    const { cy } = window.tracemap;
    return {
      nodes: cy.nodes().map((n) => n.data('name')).sort(),
      edges: cy
        .edges()
        .map((e) => `${e.source().data('name')} -> ${e.target().data('name')} [${e.data('connection')}]`)
        .sort(),
    };
  });
}

/**
 * A number as the page displays it (`1,234`, `2.50%`, `12.3 ms`, `1.20 s`,
 * `0.35/s`) back in the API's unit, and how far rounding may move it.
 */
export function parseDisplayed(text) {
  const t = text.trim();
  let m;
  if ((m = /^([\d.]+)%$/.exec(t))) return { value: Number(m[1]) / 100, slack: 0.5 * 10 ** -decimals(m[1]) / 100 };
  if ((m = /^([\d.]+) ms$/.exec(t))) return { value: Number(m[1]), slack: 0.5 * 10 ** -decimals(m[1]) };
  if ((m = /^([\d.]+) s$/.exec(t))) return { value: Number(m[1]) * 1000, slack: 500 * 10 ** -decimals(m[1]) };
  if ((m = /^([\d.]+)\/s$/.exec(t))) return { value: Number(m[1]), slack: 0.5 * 10 ** -decimals(m[1]) };
  if ((m = /^[\d,]+$/.exec(t))) return { value: Number(t.replace(/,/g, '')), slack: 0 };
  throw new Error(`unexpected number format ${JSON.stringify(text)}`);
}
const decimals = (digits) => (digits.split('.')[1] || '').length;

/** Every `[data-field]` of the details panel: field -> {value, text}. */
export function detailFields(page) {
  return page.$$eval('#details [data-field]', (els) =>
    Object.fromEntries(els.map((el) => [el.dataset.field, { value: el.dataset.value, text: el.textContent }])),
  );
}

/** Reads `path` (such as `client_latency_ms.p99`) out of an API object. */
export const pick = (object, path) => path.split('.').reduce((o, key) => o[key], object);

/** Clicks, with the real mouse, the middle of a drawn edge or node. */
export async function clickElement(page, id) {
  const point = await page.evaluate((elementId) => {
    const { cy } = window.tracemap;
    const ele = cy.getElementById(elementId);
    if (ele.empty()) return null;
    cy.center(ele); // away from the legend and panels
    const p = ele.isEdge() ? ele.renderedMidpoint() : ele.renderedPosition();
    const box = cy.container().getBoundingClientRect();
    return { x: box.left + p.x, y: box.top + p.y };
  }, id);
  if (!point) throw new Error(`${id} is not drawn`);
  await page.mouse.click(point.x, point.y);
}

const hex = (bytes) => [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, '0')).join('');

/**
 * Sends `calls` real client/server span pairs `client` → `server` over
 * OTLP/HTTP JSON to `httpAddr`, the first `errors` of them failed on the
 * server side, each taking `ms` milliseconds.
 */
export async function sendCalls(httpAddr, { client, server, calls, errors = 0, ms = 5 }) {
  const resource = (name) => ({ attributes: [{ key: 'service.name', value: { stringValue: name } }] });
  const now = BigInt(Date.now()) * 1000000n;
  const clients = [];
  const servers = [];
  for (let i = 0; i < calls; i++) {
    const traceId = hex(16);
    const clientId = hex(8);
    const start = String(now - BigInt(ms) * 1000000n);
    clients.push({ traceId, spanId: clientId, name: `call ${server}`, kind: 'SPAN_KIND_CLIENT', startTimeUnixNano: start, endTimeUnixNano: String(now) });
    servers.push({
      traceId,
      spanId: hex(8),
      parentSpanId: clientId,
      name: 'handle',
      kind: 'SPAN_KIND_SERVER',
      startTimeUnixNano: start,
      endTimeUnixNano: String(now),
      status: { code: i < errors ? 2 : 0 },
    });
  }
  const body = {
    resourceSpans: [
      { resource: resource(client), scopeSpans: [{ spans: clients }] },
      { resource: resource(server), scopeSpans: [{ spans: servers }] },
    ],
  };
  const response = await fetch(`http://${httpAddr}/v1/traces`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`POST /v1/traces: ${response.status} ${await response.text()}`);
}

/** Sleeps until the wall clock reaches `ms` (epoch milliseconds). */
export async function sleepUntil(ms) {
  const wait = ms - Date.now();
  if (wait > 0) await new Promise((done) => setTimeout(done, wait));
}
