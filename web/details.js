// The details panel of the selected edge or node: its numbers, latency
// quantiles, neighbours and chart; and selecting, which opens it.

import { $, h } from './dom.js';
import { applyFocus, cy } from './draw.js';
import { edgeId } from './elements.js';
import { fmtInt, fmtMs, fmtPct, fmtRate } from './format.js';
import { health } from './health.js';
import { CHANGES, CONNECTIONS, KINDS } from './kinds.js';
import { loadSeries } from './series.js';
import { loaded, state } from './state.js';

const QUANTILES = ['p50', 'p90', 'p99', 'avg', 'max'];

function cell(value, field, format) {
  return h('td', { 'data-field': field, 'data-value': value }, format(value));
}

// Rate, requests, errors and error rate; `p99` only colours the rate.
function redList(stats, prefix, p99) {
  const level = health(stats.error_rate, p99);
  const rows = [];
  if (stats.rate_per_s !== undefined) {
    rows.push(['rate', 'rate_per_s', stats.rate_per_s, fmtRate]);
  }
  rows.push(['requests', 'requests', stats.requests, fmtInt]);
  rows.push(['errors', 'errors', stats.errors, fmtInt]);
  rows.push(['error rate', 'error_rate', stats.error_rate, fmtPct]);
  if (stats.p99_ms !== undefined) rows.push(['p99 (server)', 'p99_ms', stats.p99_ms, fmtMs]);
  return h(
    'dl',
    { class: 'red' },
    rows.map(([label, field, value, format]) => [
      h('dt', {}, label),
      h(
        'dd',
        {
          'data-field': (prefix || '') + field,
          'data-value': value,
          class: field === 'error_rate' ? 'health-' + level : null,
        },
        format(value),
      ),
    ]),
  );
}

function latencyTable(rows) {
  const columns = QUANTILES.filter((q) => rows.some(([, , lat]) => lat && lat[q] !== undefined));
  return h(
    'table',
    { class: 'lat' },
    h('thead', {}, h('tr', {}, h('th', {}, 'latency'), columns.map((q) => h('th', {}, q)))),
    h(
      'tbody',
      {},
      rows.map(([label, field, lat]) =>
        h('tr', {}, h('th', {}, label), columns.map((q) => cell(lat[q], `${field}.${q}`, fmtMs))),
      ),
    ),
  );
}

function closeButton() {
  return h('button', { type: 'button', class: 'close', 'aria-label': 'Close', onclick: () => select(null) }, '×');
}

export function focusButton(id, text) {
  return h('button', { type: 'button', class: 'linklike', onclick: () => select(id, true) }, text);
}

function edgeDetails(edge, change) {
  const parts = [
    closeButton(),
    h('h2', {}, `${edge.source} → ${edge.target}`),
    h('p', { class: 'sub' }, CONNECTIONS[edge.connection_type] || edge.connection_type),
  ];
  if (change) {
    parts.push(
      h(
        'p',
        { class: 'sub' },
        h('span', { class: 'badge ' + change.change }, CHANGES[change.change].label),
        ' ',
        (change.reasons || []).map((r) => (r === 'error_rate' ? 'error rate' : r)).join(', '),
      ),
    );
  }
  // The window's own graph when the edge is in it, so labels and panel agree.
  const current = edge.requests !== undefined ? edge : change && change.current;
  if (current) {
    parts.push(redList(current, '', current.server_latency_ms.p99));
    parts.push(
      latencyTable([
        ['client', 'client_latency_ms', current.client_latency_ms],
        ['server', 'server_latency_ms', current.server_latency_ms],
      ]),
    );
  } else {
    parts.push(h('p', { class: 'muted' }, 'No calls in this window.'));
  }
  if (change && change.baseline) {
    parts.push(h('h3', {}, 'baseline window'));
    parts.push(redList(change.baseline, 'baseline.', change.baseline.p99_ms));
  }
  parts.push(h('h3', {}, 'requests and errors over the window'));
  const chart = h('div', { class: 'chart', id: 'series' }, h('p', { class: 'muted' }, 'loading…'));
  parts.push(chart);
  loadSeries(chart, {
    client: edge.source,
    server: edge.target,
    connection_type: edge.connection_type,
  });
  return parts;
}

function nodeDetails(node) {
  const kind = KINDS[node.kind] || KINDS.service;
  const parts = [closeButton(), h('h2', {}, node.id), h('p', { class: 'sub' }, kind.label)];
  if (node.requests !== undefined) {
    parts.push(redList(node, '', node.latency_ms.p99));
    parts.push(
      h(
        'p',
        { class: 'sub' },
        node.kind === 'service'
          ? 'Requests this service served (its server and consumer spans).'
          : 'As its callers saw it.',
      ),
    );
    parts.push(latencyTable([['served', 'latency_ms', node.latency_ms]]));
  } else {
    parts.push(h('p', { class: 'muted' }, 'Seen only in the baseline window.'));
  }
  const edges = loaded.graph ? loaded.graph.edges : [];
  const link = (e, other) =>
    h(
      'li',
      {},
      focusButton(edgeId(e), other),
      h('span', { class: 'muted' }, ` ${fmtRate(e.rate_per_s)} · ${fmtPct(e.error_rate)}`),
    );
  const callers = edges.filter((e) => e.target === node.id);
  const callees = edges.filter((e) => e.source === node.id);
  if (callers.length) {
    parts.push(h('h3', {}, `called by (${callers.length})`), h('ul', { class: 'links' }, callers.map((e) => link(e, e.source))));
  }
  if (callees.length) {
    parts.push(h('h3', {}, `calls (${callees.length})`), h('ul', { class: 'links' }, callees.map((e) => link(e, e.target))));
  }
  parts.push(h('h3', {}, 'requests and errors over the window'));
  const chart = h('div', { class: 'chart', id: 'series' }, h('p', { class: 'muted' }, 'loading…'));
  parts.push(chart);
  loadSeries(chart, { node: node.id });
  return parts;
}

export function renderDetails() {
  const panel = $('#details');
  const ele = state.selected ? cy.getElementById(state.selected) : null;
  if (!ele || ele.empty()) {
    panel.hidden = true;
    panel.replaceChildren();
    delete panel.dataset.id;
    mapBeside(false);
    return;
  }
  let parts;
  if (ele.isNode()) {
    const name = ele.data('name');
    const node = (loaded.graph && loaded.graph.nodes.find((n) => n.id === name)) || { id: name, kind: ele.data('kind') };
    parts = nodeDetails(node);
  } else {
    const id = ele.id();
    const change = loaded.diff ? loaded.diff.edges.find((e) => edgeId(e) === id) : null;
    const edge = (loaded.graph && loaded.graph.edges.find((e) => edgeId(e) === id)) || change;
    parts = edgeDetails(edge, change);
  }
  // A refresh of the same selection keeps the scroll position and shows
  // the previous chart until the new series arrives.
  const same = panel.dataset.id === ele.id();
  const scroll = same ? panel.scrollTop : 0;
  const oldChart = same ? panel.querySelector('#series') : null;
  const oldChildren = oldChart ? [...oldChart.childNodes] : [];
  panel.replaceChildren(...parts);
  if (oldChildren.length && !oldChildren.some((c) => c.textContent === 'loading…')) {
    panel.querySelector('#series').replaceChildren(...oldChildren);
  }
  panel.dataset.id = ele.id();
  panel.dataset.selected = ele.isNode() ? 'node' : 'edge';
  panel.hidden = false;
  panel.scrollTop = scroll;
  mapBeside(true);
}

// The open panel takes its width from the map rather than covering it.
function mapBeside(panelOpen) {
  const main = document.querySelector('main');
  if (main.classList.contains('with-details') === panelOpen) return;
  main.classList.toggle('with-details', panelOpen);
  cy.resize();
}

export function select(id, center) {
  state.selected = id;
  cy.elements().unselect();
  if (id) {
    const ele = cy.getElementById(id);
    if (ele.nonempty()) {
      ele.select();
      if (center) cy.animate({ center: { eles: ele }, duration: 250 });
    }
  }
  applyFocus();
  renderDetails();
}

