// tracemap's service map: reads /api/v1/graph (and /api/v1/series,
// /api/v1/diff), lays the graph out left to right with cytoscape + dagre,
// and polls to stay current. ES modules loaded by the browser, no build
// step; this entry wires the controls and runs the refresh loop.

import { WINDOWS, canDiff, diffQuery, parseDate, windowQuery } from './address.js';
import { getJson } from './api.js';
import { renderDetails, select } from './details.js';
import { renderChanges } from './diff.js';
import { $, h } from './dom.js';
import { applyFocus, cy, draw, fitTo } from './draw.js';
import { buildElements } from './elements.js';
import { fmtClock, fmtDateTime, toLocalInput } from './format.js';
import { renderLegend } from './legend.js';
import { loaded, state, syncAddress } from './state.js';

const REFRESH_MS = 10000;

cy.on('tap', 'node, edge', (evt) => select(evt.target.id()));
cy.on('tap', (evt) => {
  if (evt.target === cy) select(null);
});

// ---- refresh loop ---------------------------------------------------------

let refreshSeq = 0;
let timer = null;
let rendered = 0;
let timings = null;

function notice(text, isError) {
  const box = $('#notice');
  box.hidden = !text;
  box.className = isError ? 'error' : '';
  box.replaceChildren(...(Array.isArray(text) ? text : [text || '']));
}

function setStatus(text, isError) {
  const status = $('#status');
  status.textContent = text;
  status.className = isError ? 'muted error' : 'muted';
}

async function refresh() {
  clearTimeout(timer);
  timer = null;
  const seq = ++refreshSeq;
  const t0 = performance.now();
  let graph;
  let diff = null;
  let diffError = null;
  try {
    const graphReq = getJson('api/v1/graph', windowQuery(state));
    const diffReq = canDiff(state)
      ? getJson('api/v1/diff', diffQuery(state)).catch((err) => {
          diffError = err;
          return null;
        })
      : null;
    [graph, diff] = await Promise.all([graphReq, diffReq]);
  } catch (err) {
    if (seq !== refreshSeq) return;
    setStatus(`cannot load the map: ${err.message}`, true);
    if (!loaded.graph) notice(`Cannot load the map: ${err.message}`, true);
    schedule();
    return;
  }
  if (seq !== refreshSeq) return;
  loaded.graph = graph;
  loaded.diff = diff;
  const t1 = performance.now();
  draw(buildElements(graph, diff));
  timings = { fetch_ms: t1 - t0, draw_ms: performance.now() - t1 };
  renderChanges(diff);
  if (state.selected && cy.getElementById(state.selected).empty()) state.selected = null;
  renderDetails();

  const start = new Date(graph.window.start);
  const end = new Date(graph.window.end);
  const services = graph.nodes.filter((n) => n.kind === 'service').length;
  const sameDay = start.toDateString() === new Date().toDateString();
  setStatus(
    `${sameDay ? fmtClock(start) : fmtDateTime(start)}–${fmtClock(end)} · ${services} services, ${graph.nodes.length} nodes, ${graph.edges.length} edges` +
      (state.end ? ' · past window' : ` · updated ${fmtClock(new Date())}`),
    false,
  );
  if (diffError) {
    notice(`Cannot compare with the baseline: ${diffError.message}`, true);
  } else if (state.diff && !diff) {
    notice('Choose when the baseline window starts, next to "what changed".');
  } else if (!graph.nodes.length) {
    notice([
      'No calls in this window. Send spans over OTLP (gRPC :4317, HTTP :4318), or run ',
      h('code', {}, 'tracemap demo'),
      '.',
    ]);
  } else {
    notice(null);
  }
  rendered += 1;
  document.body.dataset.renders = String(rendered);
  if (rendered === 1) {
    // Marks the first drawn frame: the page-load figure the tests report.
    requestAnimationFrame(() => {
      performance.mark('tracemap:first-map');
      document.body.dataset.ready = 'true';
    });
  }
  schedule();
}

// A past window does not change, and a hidden tab need not poll.
function schedule() {
  clearTimeout(timer);
  timer = null;
  if (state.refresh && !state.end && !document.hidden) timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && state.refresh && !state.end) refresh();
  else schedule();
});

// ---- controls ---------------------------------------------------------------

function renderWindows() {
  const group = $('#windows');
  const buttons = WINDOWS.map((w) =>
    h(
      'button',
      {
        type: 'button',
        role: 'radio',
        'aria-checked': String(w === state.window),
        'data-window': w,
        onclick: () => {
          state.window = w;
          renderWindows();
          changed();
        },
      },
      w,
    ),
  );
  group.replaceChildren(...buttons);
}

function changed() {
  syncAddress();
  refresh();
}

const endInput = $('#end');
endInput.max = toLocalInput(new Date());
if (state.end) endInput.value = toLocalInput(state.end);
endInput.addEventListener('change', () => {
  state.end = parseDate(endInput.value);
  changed();
});
$('#now').addEventListener('click', () => {
  endInput.value = '';
  state.end = null;
  changed();
});

const search = $('#search');
search.value = state.query;
search.addEventListener('input', () => {
  state.query = search.value;
  syncAddress();
  applyFocus();
});
search.addEventListener('keydown', (evt) => {
  if (evt.key !== 'Enter') return;
  const matched = applyFocus();
  if (matched.nonempty()) fitTo(matched);
});

const diffToggle = $('#diff');
const baselineSelect = $('#baseline');
const baselineStart = $('#baseline-start');
diffToggle.checked = state.diff;
baselineSelect.value = state.baseline;
if (state.baselineStart) baselineStart.value = toLocalInput(state.baselineStart);
const showBaselineStart = () => {
  baselineStart.hidden = state.baseline !== 'custom';
};
showBaselineStart();
diffToggle.addEventListener('change', () => {
  state.diff = diffToggle.checked;
  renderLegend(state.diff);
  changed();
});
baselineSelect.addEventListener('change', () => {
  state.baseline = baselineSelect.value;
  showBaselineStart();
  if (state.diff) changed();
  else syncAddress();
});
baselineStart.addEventListener('change', () => {
  state.baselineStart = parseDate(baselineStart.value);
  if (state.diff) changed();
  else syncAddress();
});

const refreshToggle = $('#refresh');
refreshToggle.checked = state.refresh;
refreshToggle.addEventListener('change', () => {
  state.refresh = refreshToggle.checked;
  syncAddress();
  if (state.refresh) refresh();
  else schedule();
});

// For debugging from the console, and for the browser tests.
window.tracemap = {
  cy,
  state,
  refresh,
  get graph() {
    return loaded.graph;
  },
  get diff() {
    return loaded.diff;
  },
  // Of the last refresh: the API requests, and building plus laying out.
  get timings() {
    return timings;
  },
};

renderWindows();
renderLegend(state.diff);
refresh();
