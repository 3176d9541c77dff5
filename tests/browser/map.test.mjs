// The web map in Debian's Chromium against a running `tracemap demo`: the
// page loads cleanly, draws what /api/v1/graph says, shows an edge's and a
// node's numbers on click, and its controls change the queries it sends.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  ARTEFACTS,
  clickElement,
  detailFields,
  drawn,
  edgeKey,
  getJson,
  launchBrowser,
  missingPeer,
  newPage,
  parseDisplayed,
  listening,
  pick,
  sendCalls,
  sleepUntil,
  startTracemap,
  waitFor,
} from './lib.mjs';

// Edges the demo's shop always draws (as in tests/demo.rs).
const EXPECTED_EDGES = [
  { source: 'user', target: 'frontend', connection_type: 'virtual_node' },
  { source: 'frontend', target: 'cart', connection_type: '' },
  { source: 'frontend', target: 'checkout', connection_type: '' },
  { source: 'checkout', target: 'payment', connection_type: '' },
  { source: 'cart', target: 'redis', connection_type: 'database' },
  { source: 'checkout', target: 'email', connection_type: 'messaging_system' },
  { source: 'shipping', target: 'carrier-api', connection_type: 'virtual_node' },
];
const edgeId = (e) => 'e:' + JSON.stringify([e.source, e.target, e.connection_type]);
const isGraphRequest = (url) => new URL(url).pathname === '/api/v1/graph';

const skip = missingPeer();

describe('web map against tracemap demo', { skip: skip || false, timeout: 300000 }, () => {
  let demo;
  let history; // a second collector, whose history the diff test compares
  let base;
  let browser;
  let page;
  let problems;
  let graph; // what the page received from /api/v1/graph

  before(async () => {
    // A short pairing TTL shows the uninstrumented carrier API within seconds.
    demo = startTracemap(['demo'], 'graph:\n  pairing_ttl: 1s\n', (line, stream) => {
      const m = stream === 'stdout' && /^\s+web map\s+(http:\/\/\S+\/)$/.exec(line);
      return m ? m[1] : null;
    });
    base = await demo.started;
    assert.match(base, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'the banner prints the page address');
    await waitFor(
      async () => {
        const g = await getJson(`${base}api/v1/graph?window=5m`);
        const have = new Set(g.edges.map(edgeKey));
        return EXPECTED_EDGES.every((e) => have.has(edgeKey(e)));
      },
      45000,
      "the demo's edges in /api/v1/graph",
    );
    // The diff test's baseline minute, sent now so the wait for the next
    // minute overlaps the other tests; never in a minute's last 15 s.
    const run = startTracemap(['run'], '', (line, _stream, found) => {
      const addr = listening(line);
      if (addr) found[addr[0]] = addr[1];
      return found.api && found.otlp_http ? { ...found } : null;
    });
    const addrs = await run.started;
    if (Date.now() % 60000 > 45000) await sleepUntil((Math.floor(Date.now() / 60000) + 1) * 60000 + 500);
    const minute = Math.floor(Date.now() / 60000);
    for (const server of ['probe-slow', 'probe-steady', 'probe-gone']) {
      await sendCalls(addrs.otlp_http, { client: 'probe-web', server, calls: 20, ms: 5 });
    }
    history = { run, addrs, minute };
    browser = await launchBrowser();
    ({ page, problems } = await newPage(browser));
  });

  after(async () => {
    await browser?.close();
    await demo?.stop();
    await history?.run.stop();
  });

  test('loads with no console errors and draws exactly the nodes and edges /api/v1/graph returns', async () => {
    // Polling off, so the drawing and the answer it came from stay together.
    const answer = page.waitForResponse((r) => isGraphRequest(r.url()));
    const started = Date.now();
    await page.goto(`${base}?window=5m&refresh=off`);
    const response = await answer;
    assert.equal(response.status(), 200);
    assert.equal(new URL(response.url()).searchParams.get('window'), '5m');
    graph = await response.json();
    await page.waitForSelector('body[data-ready="true"]', { timeout: 20000 });
    const firstMap = await page.evaluate(() => performance.getEntriesByName('tracemap:first-map')[0].startTime);
    console.log(`demo map: first frame ${firstMap.toFixed(0)} ms after navigation (${Date.now() - started} ms wall)`);

    const shown = await drawn(page);
    assert.deepEqual(shown.nodes, graph.nodes.map((n) => n.id).sort());
    assert.deepEqual(shown.edges, graph.edges.map(edgeKey).sort());
    for (const e of EXPECTED_EDGES) assert.ok(shown.edges.includes(edgeKey(e)), `${edgeKey(e)} drawn`);

    // Drawn means on screen: every node inside the map's visible area.
    const outside = await page.evaluate(() => {
      const { cy } = window.tracemap;
      const w = cy.width();
      const h = cy.height();
      return cy
        .nodes()
        .filter((n) => {
          const p = n.renderedPosition();
          return p.x < 0 || p.y < 0 || p.x > w || p.y > h;
        })
        .map((n) => n.data('name'));
    });
    assert.deepEqual(outside, [], 'nodes laid out off screen');
    // Kinds get their own shapes; every kind the demo has is drawn so.
    const shapes = await page.evaluate(() =>
      Object.fromEntries(window.tracemap.cy.nodes().map((n) => [n.data('name'), n.style('shape')])),
    );
    assert.equal(shapes.frontend, 'round-rectangle');
    assert.equal(shapes.redis, 'barrel');
    assert.equal(shapes['carrier-api'], 'hexagon');
    assert.equal(shapes.user, 'ellipse');
    const status = await page.textContent('#status');
    assert.match(status, new RegExp(`${graph.nodes.length} nodes, ${graph.edges.length} edges`));
    assert.deepEqual(problems, []);
  });

  test('clicking an edge shows its numbers, equal to /api/v1/graph', async () => {
    const want = graph.edges.find((e) => e.source === 'frontend' && e.target === 'checkout');
    const series = page.waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/series');
    await clickElement(page, edgeId(want));
    await page.waitForSelector('#details[data-selected="edge"]');
    assert.equal(await page.textContent('#details h2'), 'frontend → checkout');
    const fields = await detailFields(page);
    const expected = ['rate_per_s', 'requests', 'errors', 'error_rate'];
    for (const side of ['client_latency_ms', 'server_latency_ms']) {
      for (const q of ['p50', 'p90', 'p99', 'avg', 'max']) expected.push(`${side}.${q}`);
    }
    assert.deepEqual(Object.keys(fields).sort(), [...expected].sort());
    for (const field of expected) {
      const api = pick(want, field);
      assert.equal(Number(fields[field].value), api, `${field}: value`);
      const shown = parseDisplayed(fields[field].text);
      assert.ok(
        Math.abs(shown.value - api) <= shown.slack + 1e-9,
        `${field}: shows ${fields[field].text} for ${api}`,
      );
    }
    // The request and error series of that edge, from the history API.
    const seriesUrl = new URL((await series).url());
    assert.equal(seriesUrl.searchParams.get('client'), 'frontend');
    assert.equal(seriesUrl.searchParams.get('server'), 'checkout');
    assert.equal(seriesUrl.searchParams.get('window'), '5m');
    await page.waitForSelector('#series svg, #series p:not(:empty)');
    // The whole map beside the open panel: the README's screenshot.
    await page.evaluate(() => window.tracemap.cy.fit(undefined, 30));
    await page.screenshot({ path: join(ARTEFACTS, 'map.png') });
    assert.deepEqual(problems, []);
  });

  test('clicking a node shows what it served', async () => {
    const want = graph.nodes.find((n) => n.id === 'checkout');
    await clickElement(page, 'n:checkout');
    await page.waitForSelector('#details[data-selected="node"]');
    assert.equal(await page.textContent('#details h2'), 'checkout');
    const fields = await detailFields(page);
    for (const field of ['requests', 'errors', 'error_rate', 'latency_ms.p50', 'latency_ms.p99', 'latency_ms.avg']) {
      assert.equal(Number(fields[field].value), pick(want, field), field);
    }
    // Its neighbourhood stays bright, the rest dims.
    const dimmed = await page.evaluate(() =>
      window.tracemap.cy.nodes('.dimmed').map((n) => n.data('name')),
    );
    assert.ok(dimmed.includes('user') && !dimmed.includes('frontend') && !dimmed.includes('payment'), `${dimmed}`);
    // A click on the background closes the panel.
    await page.evaluate(() => window.tracemap.cy.fit(undefined, 30));
    const box = await page.locator('#map').boundingBox();
    await page.mouse.click(box.x + box.width / 2, box.y + 8);
    await page.waitForSelector('#details', { state: 'hidden' });
  });

  test('search dims every service that does not match', async () => {
    await page.fill('#search', 'pay');
    const state = await page.evaluate(() => ({
      match: window.tracemap.cy.nodes('.match').map((n) => n.data('name')),
      bright: window.tracemap.cy.nodes().filter((n) => !n.hasClass('dimmed')).map((n) => n.data('name')).sort(),
    }));
    assert.deepEqual(state.match, ['payment']);
    // payment and its neighbours: checkout calls it, it has its own database calls.
    assert.ok(state.bright.includes('checkout') && !state.bright.includes('cart'), `${state.bright}`);
    assert.match(await page.textContent('#matches'), /^1 of \d+ match$/);
    assert.match(page.url(), /[?&]q=pay(&|$)/);
    await page.fill('#search', '');
    assert.equal(await page.evaluate(() => window.tracemap.cy.elements('.dimmed').length), 0);
  });

  test('the window picker and the end time change the query', async () => {
    let request = page.waitForRequest((r) => isGraphRequest(r.url()));
    await page.click('#windows button[data-window="1h"]');
    let url = new URL((await request).url());
    assert.equal(url.searchParams.get('window'), '1h');
    assert.equal(url.searchParams.get('end'), null);
    assert.equal(await page.getAttribute('#windows button[data-window="1h"]', 'aria-checked'), 'true');
    assert.match(page.url(), /[?&]window=1h(&|$)/);

    // A past window: the end time goes out in UTC, to the minute.
    const end = new Date(Date.now() - 2 * 60000);
    end.setSeconds(0, 0);
    const pad = (n) => String(n).padStart(2, '0');
    const local = `${end.getFullYear()}-${pad(end.getMonth() + 1)}-${pad(end.getDate())}T${pad(end.getHours())}:${pad(end.getMinutes())}`;
    request = page.waitForRequest((r) => isGraphRequest(r.url()));
    await page.fill('#end', local);
    url = new URL((await request).url());
    assert.equal(url.searchParams.get('end'), end.toISOString().replace('.000Z', 'Z'));
    assert.equal(url.searchParams.get('window'), '1h');
    await page.waitForFunction(() => document.querySelector('#status').textContent.includes('past window'));

    request = page.waitForRequest((r) => isGraphRequest(r.url()));
    await page.click('#now');
    url = new URL((await request).url());
    assert.equal(url.searchParams.get('end'), null);
    assert.deepEqual(problems, []);
  });

  test('"what changed" asks /api/v1/diff for the window against the chosen baseline', async () => {
    const request = page.waitForRequest((r) => new URL(r.url()).pathname === '/api/v1/diff');
    await page.check('#diff');
    const url = new URL((await request).url());
    assert.equal(url.searchParams.get('window'), '1h');
    assert.equal(url.searchParams.get('baseline_offset'), '1d');
    await page.waitForSelector('#changes:not([hidden])');
    const again = page.waitForRequest((r) => new URL(r.url()).pathname === '/api/v1/diff');
    await page.selectOption('#baseline', '1h');
    assert.equal(new URL((await again).url()).searchParams.get('baseline_offset'), '1h');
    assert.match(page.url(), /[?&]baseline=1h(&|$)/);

    await page.uncheck('#diff');
    await page.waitForSelector('#changes', { state: 'hidden' });
    assert.deepEqual(problems, []);
  });

  test('"what changed" highlights the new, vanished and regressed edges of a real history', async () => {
    // Minute M (sent in before()) is the baseline, minute M+1 the current
    // window: probe-slow got slow and failing, probe-gone stopped, probe-new began.
    const { addrs, minute } = history;
    await sleepUntil((minute + 1) * 60000 + 1000);
    await sendCalls(addrs.otlp_http, { client: 'probe-web', server: 'probe-slow', calls: 20, errors: 10, ms: 500 });
    await sendCalls(addrs.otlp_http, { client: 'probe-web', server: 'probe-steady', calls: 20, ms: 5 });
    await sendCalls(addrs.otlp_http, { client: 'probe-web', server: 'probe-new', calls: 20, ms: 5 });
    const iso = (m) => new Date(m * 60000).toISOString().replace('.000Z', 'Z');
    const end = iso(minute + 2);
    const baselineStart = iso(minute);
    const api = `http://${addrs.api}/`;
    const wanted = {
      'probe-web -> probe-slow []': 'regressed',
      'probe-web -> probe-new []': 'new',
      'probe-web -> probe-gone []': 'vanished',
      'probe-web -> probe-steady []': 'unchanged',
    };
    const diff = await waitFor(
      async () => {
        const d = await getJson(`${api}api/v1/diff?window=1m&end=${end}&baseline_start=${baselineStart}`);
        const got = Object.fromEntries(d.edges.map((e) => [edgeKey(e), e.change]));
        return JSON.stringify(got) === JSON.stringify({ ...got, ...wanted }) && Object.keys(got).length === 4 ? d : null;
      },
      15000,
      'the diff API to see the changes',
    );
    const byChange = Object.fromEntries(diff.edges.map((e) => [e.change, e]));
    assert.deepEqual(byChange.regressed.reasons, ['error_rate', 'p99']);

    const { page: diffPage, problems: diffProblems } = await newPage(browser);
    const asked = diffPage.waitForRequest((r) => new URL(r.url()).pathname === '/api/v1/diff');
    await diffPage.goto(`${api}?window=1m&end=${end}&diff&baseline=custom&baseline_start=${baselineStart}&refresh=off`);
    const url = new URL((await asked).url());
    assert.equal(url.searchParams.get('baseline_start'), baselineStart);
    assert.equal(url.searchParams.get('end'), end);
    await diffPage.waitForSelector('#changes li[data-change="vanished"]', { timeout: 20000 });
    const ids = Object.fromEntries(diff.edges.map((e) => [e.change, edgeId(e)]));
    const classes = await diffPage.evaluate(
      (list) => Object.fromEntries(list.map((id) => [id, window.tracemap.cy.getElementById(id).classes()])),
      Object.values(ids),
    );
    for (const change of ['regressed', 'new', 'vanished']) {
      assert.ok(classes[ids[change]].includes(`diff-${change}`), `${change}: ${JSON.stringify(classes)}`);
    }
    const looks = await diffPage.evaluate(
      ([r, v]) => {
        const { cy } = window.tracemap;
        return {
          regressed: [cy.getElementById(r).style('line-color'), parseFloat(cy.getElementById(r).style('width'))],
          vanished: cy.getElementById(v).style('line-style'),
          ghost: cy.getElementById('n:probe-gone').classes(),
        };
      },
      [ids.regressed, ids.vanished],
    );
    assert.equal(looks.regressed[0], 'rgb(214,40,40)');
    assert.ok(looks.regressed[1] >= 5, `regressed width ${looks.regressed[1]}`);
    assert.equal(looks.vanished, 'dashed');
    assert.ok(looks.ghost.includes('ghost'), `${looks.ghost}`);
    const list = await diffPage.$$eval('#changes li', (items) => items.map((li) => li.dataset.change));
    assert.deepEqual(list, ['regressed', 'new', 'vanished']);
    assert.match(await diffPage.textContent('#changes li[data-change="regressed"]'), /errors 0% → 50\.0%, p99 /);

    // The regressed edge's panel shows both windows, as the diff API says,
    // and its minute of the series: 20 calls, 10 failed, 500 ms.
    const hover = async () => {
      await diffPage.waitForSelector('#series svg');
      const box = await diffPage.locator('#series svg').boundingBox();
      await diffPage.mouse.move(box.x + box.width * 0.6, box.y + box.height / 2);
      return diffPage.textContent('#series .readout');
    };
    let series = diffPage.waitForRequest((r) => new URL(r.url()).pathname === '/api/v1/series');
    await clickElement(diffPage, ids.regressed);
    await diffPage.waitForSelector('#details[data-selected="edge"]');
    const fields = await detailFields(diffPage);
    for (const field of ['requests', 'errors', 'error_rate', 'p99_ms']) {
      assert.equal(Number(fields[`baseline.${field}`].value), byChange.regressed.baseline[field], `baseline.${field}`);
    }
    let params = new URL((await series).url()).searchParams;
    assert.deepEqual([params.get('client'), params.get('server'), params.get('end')], ['probe-web', 'probe-slow', end]);
    const readout = await hover();
    const p99 = /: 20 requests, 10 errors, p99 ([\d.]+) ms$/.exec(readout);
    assert.ok(p99 && Math.abs(Number(p99[1]) - 500) <= 5, readout);
    // A node's panel charts the spans it served.
    series = diffPage.waitForRequest((r) => new URL(r.url()).pathname === '/api/v1/series');
    await clickElement(diffPage, 'n:probe-slow');
    await diffPage.waitForSelector('#details[data-selected="node"]');
    params = new URL((await series).url()).searchParams;
    assert.equal(params.get('node'), 'probe-slow');
    assert.match(await hover(), /: 20 requests, 10 errors, p99 [\d.]+ ms$/);
    await clickElement(diffPage, ids.regressed);
    await diffPage.waitForSelector('#details[data-selected="edge"]');
    await diffPage.screenshot({ path: join(ARTEFACTS, 'map-diff.png') });
    assert.deepEqual(diffProblems, []);
    await diffPage.close();
  });

  test('auto-refresh polls the graph again within its 10 s period', async () => {
    const polled = page.waitForRequest((r) => isGraphRequest(r.url()), { timeout: 15000 });
    await page.check('#refresh');
    await polled; // the immediate refresh on switching it on
    const next = page.waitForRequest((r) => isGraphRequest(r.url()), { timeout: 15000 });
    const t0 = Date.now();
    await next;
    const waited = Date.now() - t0;
    assert.ok(waited > 5000, `polled after only ${waited} ms`);
    assert.deepEqual(problems, []);
  });
});

