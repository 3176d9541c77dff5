// tracemap's service map: reads /api/v1/graph (and /api/v1/series,
// /api/v1/diff), lays the graph out left to right with cytoscape + dagre,
// and polls to stay current. Plain browser JavaScript, no build step.
'use strict';

(function () {
  const WINDOWS = ['5m', '15m', '1h', '6h', '24h', '7d'];
  const DEFAULT_WINDOW = '15m';
  const REFRESH_MS = 10000;
  // An edge or node is amber or red from these; error rate is what users
  // feel first, a slow tail second.
  const HEALTH = { errorWarn: 0.01, errorCrit: 0.05, p99Warn: 500, p99Crit: 2000 };
  const HEALTH_COLOURS = { ok: '#8da2b5', warn: '#d99a00', crit: '#d62828' };
  const KINDS = {
    service: { label: 'service', shape: 'round-rectangle', colour: '#2f6fde', fill: '#e6eefc' },
    database: { label: 'database', shape: 'barrel', colour: '#7b3fb5', fill: '#f1e8f9' },
    messaging: { label: 'queue / topic', shape: 'rhomboid', colour: '#c76b12', fill: '#fcefe2' },
    virtual: { label: 'external (uninstrumented)', shape: 'hexagon', colour: '#6b7785', fill: '#eef0f2' },
    user: { label: 'user', shape: 'ellipse', colour: '#168a74', fill: '#e2f4f0' },
  };
  const CONNECTIONS = {
    '': 'request (client → server)',
    database: 'database call',
    messaging_system: 'message (producer → consumer)',
    virtual_node: 'call to or from an uninstrumented peer',
  };
  const CHANGES = {
    new: { label: 'new', colour: '#1a9e3f' },
    vanished: { label: 'vanished', colour: '#9aa3ad' },
    regressed: { label: 'regressed', colour: '#d62828' },
    improved: { label: 'improved', colour: '#2a7fb8' },
    unchanged: { label: 'unchanged', colour: '#c2c9d1' },
  };
  const CHANGE_ORDER = ['regressed', 'new', 'vanished', 'improved'];
  const QUANTILES = ['p50', 'p90', 'p99', 'avg', 'max'];

  // ---- formatting ---------------------------------------------------------

  const fmtInt = (n) => Math.round(n).toLocaleString('en-US');
  function fmtRate(perSecond) {
    if (perSecond === 0) return '0/s';
    // Two significant digits below 0.01/s: a rare call is not "0.00/s".
    if (perSecond < 0.01) return perSecond.toPrecision(2) + '/s';
    const digits = perSecond >= 100 ? 0 : perSecond >= 10 ? 1 : 2;
    return perSecond.toFixed(digits) + '/s';
  }
  function fmtPct(fraction) {
    const pct = fraction * 100;
    if (pct === 0) return '0%';
    const digits = pct >= 10 ? 1 : pct >= 0.1 ? 2 : 3;
    return pct.toFixed(digits) + '%';
  }
  function fmtMs(ms) {
    if (ms >= 1000) return (ms / 1000).toFixed(2) + ' s';
    return ms.toFixed(ms >= 100 ? 0 : 1) + ' ms';
  }
  const pad2 = (n) => String(n).padStart(2, '0');
  const fmtClock = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  const fmtDateTime = (d) =>
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(d)}`;
  // The value a datetime-local input shows for `d`, in local time.
  const toLocalInput = (d) => fmtDateTime(d).replace(' ', 'T');
  // RFC 3339 in UTC without milliseconds, as the API documents it.
  const toApiTime = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

  function health(errorRate, p99) {
    if (errorRate >= HEALTH.errorCrit || p99 >= HEALTH.p99Crit) return 'crit';
    if (errorRate >= HEALTH.errorWarn || p99 >= HEALTH.p99Warn) return 'warn';
    return 'ok';
  }

  // ---- DOM helpers (text only: service names come from spans) -------------

  const $ = (selector) => document.querySelector(selector);
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'onclick') node.addEventListener('click', value);
      else if (key === 'class') node.className = value;
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }
  const SVG_NS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  // ---- state, kept in the address so a view can be shared -----------------

  const params = new URLSearchParams(location.search);
  const validWindow = (w) => /^[1-9]\d*(s|m|h|d)$/.test(w || '');
  const parseDate = (text) => {
    const d = text ? new Date(text) : null;
    return d && !Number.isNaN(d.getTime()) ? d : null;
  };
  const state = {
    window: validWindow(params.get('window')) ? params.get('window') : DEFAULT_WINDOW,
    end: parseDate(params.get('end')),
    query: params.get('q') || '',
    diff: params.get('diff') !== null,
    baseline: params.get('baseline') || '1d',
    baselineStart: parseDate(params.get('baseline_start')),
    refresh: params.get('refresh') !== 'off',
    selected: null,
  };

  function syncAddress() {
    const q = new URLSearchParams();
    if (state.window !== DEFAULT_WINDOW) q.set('window', state.window);
    if (state.end) q.set('end', toApiTime(state.end));
    if (state.query) q.set('q', state.query);
    if (state.diff) {
      q.set('diff', '');
      if (state.baseline !== '1d') q.set('baseline', state.baseline);
      if (state.baseline === 'custom' && state.baselineStart) {
        q.set('baseline_start', toApiTime(state.baselineStart));
      }
    }
    if (!state.refresh) q.set('refresh', 'off');
    const text = q.toString();
    history.replaceState(null, '', text ? '?' + text : location.pathname);
  }

  // ---- API ----------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  // Relative paths, so the page also works behind a proxy's path prefix.
  async function getJson(path, query) {
    const url = path + '?' + new URLSearchParams(query).toString();
    const response = await fetch(url, { headers: { accept: 'application/json' } });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // not JSON: reported by status below
    }
    if (!response.ok) {
      const reason = body && body.error ? body.error : `${response.status} ${response.statusText}`;
      throw new ApiError(reason, response.status);
    }
    return body;
  }

  function windowQuery() {
    const q = { window: state.window };
    if (state.end) q.end = toApiTime(state.end);
    return q;
  }

  function diffQuery() {
    const q = windowQuery();
    if (state.baseline === 'custom') {
      if (state.baselineStart) q.baseline_start = toApiTime(state.baselineStart);
    } else {
      q.baseline_offset = state.baseline;
    }
    return q;
  }

  // ---- the graph ----------------------------------------------------------

  const nodeId = (name) => 'n:' + name;
  const edgeId = (e) => 'e:' + JSON.stringify([e.source, e.target, e.connection_type]);

  const STYLE = [
    {
      selector: 'node',
      style: {
        shape: 'data(shape)',
        width: 'data(w)',
        height: 30,
        'background-color': 'data(fill)',
        'border-color': 'data(colour)',
        'border-width': 2,
        label: 'data(name)',
        'font-size': 12,
        color: '#1d2733',
        'text-valign': 'center',
        'text-halign': 'center',
        'min-zoomed-font-size': 6,
      },
    },
    { selector: 'node.health-warn', style: { 'border-color': HEALTH_COLOURS.warn, 'border-width': 3 } },
    { selector: 'node.health-crit', style: { 'border-color': HEALTH_COLOURS.crit, 'border-width': 4 } },
    { selector: 'node.ghost', style: { 'border-style': 'dashed', opacity: 0.6 } },
    {
      selector: 'edge',
      style: {
        width: 'data(width)',
        'curve-style': 'bezier',
        'line-color': 'data(colour)',
        'target-arrow-color': 'data(colour)',
        'target-arrow-shape': 'triangle',
        'arrow-scale': 0.9,
        label: 'data(label)',
        'font-size': 10,
        color: '#34404c',
        'text-background-color': '#ffffff',
        'text-background-opacity': 0.85,
        'text-background-padding': 1,
        'text-wrap': 'wrap',
        'min-zoomed-font-size': 7,
      },
    },
    { selector: 'edge.messaging', style: { 'line-style': 'dashed', 'line-dash-pattern': [8, 3] } },
    { selector: 'edge.diff-new', style: { 'line-color': CHANGES.new.colour, 'target-arrow-color': CHANGES.new.colour } },
    {
      selector: 'edge.diff-vanished',
      style: {
        'line-color': CHANGES.vanished.colour,
        'target-arrow-color': CHANGES.vanished.colour,
        'line-style': 'dashed',
        'line-dash-pattern': [4, 4],
        color: '#7a8591',
      },
    },
    {
      selector: 'edge.diff-regressed',
      style: {
        'line-color': CHANGES.regressed.colour,
        'target-arrow-color': CHANGES.regressed.colour,
        width: 'data(wide)',
      },
    },
    {
      selector: 'edge.diff-improved',
      style: { 'line-color': CHANGES.improved.colour, 'target-arrow-color': CHANGES.improved.colour },
    },
    { selector: 'edge.diff-unchanged', style: { opacity: 0.35 } },
    { selector: 'node.match', style: { 'border-color': '#111', 'border-width': 4 } },
    { selector: '.dimmed', style: { opacity: 0.12 } },
    {
      selector: ':selected',
      style: { 'underlay-color': '#2f6fde', 'underlay-opacity': 0.25, 'underlay-padding': 5 },
    },
  ];

  const cy = cytoscape({
    container: $('#map'),
    style: STYLE,
    minZoom: 0.03,
    maxZoom: 4,
    boxSelectionEnabled: false,
    selectionType: 'single',
  });
  let userMovedView = false;
  cy.on('dragpan scrollzoom pinchzoom', () => {
    userMovedView = true;
  });

  function nodeElement(node, ghost) {
    const kind = KINDS[node.kind] || KINDS.service;
    const classes = [];
    if (ghost) classes.push('ghost');
    else if (node.requests > 0) classes.push('health-' + health(node.error_rate, node.latency_ms.p99));
    return {
      group: 'nodes',
      data: {
        id: nodeId(node.id),
        name: node.id,
        kind: node.kind,
        shape: kind.shape,
        colour: kind.colour,
        fill: kind.fill,
        w: Math.max(56, node.id.length * 7.2 + 24),
      },
      classes,
    };
  }

  // `numbers`: rate, error rate and p99 to show; the graph edge's own by
  // default. p99 is the server side, as the DOT view and the diff use.
  function edgeElement(edge, change, numbers) {
    const n = numbers || { rate: edge.rate_per_s, errorRate: edge.error_rate, p99: edge.server_latency_ms.p99 };
    const level = health(n.errorRate, n.p99);
    // Width grows with traffic, on a log scale so a hot path does not swamp.
    const width = 1.5 + Math.min(4.5, Math.log10(1 + n.rate) * 2);
    const classes = [];
    if (edge.connection_type === 'messaging_system') classes.push('messaging');
    if (change) classes.push('diff-' + change);
    return {
      group: 'edges',
      data: {
        id: edgeId(edge),
        source: nodeId(edge.source),
        target: nodeId(edge.target),
        connection: edge.connection_type,
        label: `${fmtRate(n.rate)} · ${fmtPct(n.errorRate)}\np99 ${fmtMs(n.p99)}`,
        colour: HEALTH_COLOURS[level],
        width,
        wide: Math.max(5, width * 1.8),
      },
      classes,
    };
  }

  // Kind of a node that only a vanished edge names.
  function ghostKind(name, edge, isTarget) {
    if (!isTarget) return name === 'user' ? 'user' : 'service';
    return { database: 'database', messaging_system: 'messaging', virtual_node: 'virtual' }[edge.connection_type] || 'service';
  }

  // The elements to draw: the window's graph, plus vanished edges (and
  // nodes seen only in the baseline) when comparing.
  function buildElements(graph, diff) {
    const changes = new Map();
    if (diff) for (const e of diff.edges) changes.set(edgeId(e), e);
    const nodes = graph.nodes.map((n) => nodeElement(n, false));
    const names = new Set(graph.nodes.map((n) => n.id));
    const edges = graph.edges.map((e) => {
      // An edge the diff does not list arrived between the two requests:
      // drawn plainly rather than guessed at.
      const change = diff && changes.has(edgeId(e)) ? changes.get(edgeId(e)).change : null;
      return edgeElement(e, change);
    });
    if (diff) {
      const baseSeconds = Math.max(1, (new Date(diff.baseline.end) - new Date(diff.baseline.start)) / 1000);
      for (const e of diff.edges) {
        if (e.change !== 'vanished' || !e.baseline) continue;
        for (const [name, isTarget] of [[e.source, false], [e.target, true]]) {
          if (names.has(name)) continue;
          names.add(name);
          nodes.push(nodeElement({ id: name, kind: ghostKind(name, e, isTarget) }, true));
        }
        const b = e.baseline;
        edges.push(edgeElement(e, 'vanished', { rate: b.requests / baseSeconds, errorRate: b.error_rate, p99: b.p99_ms }));
      }
    }
    return nodes.concat(edges);
  }

  // Network simplex ranks best but costs most: over a few hundred elements
  // tight-tree is about twice as fast with similar ranks (measured on a
  // 311-node, 626-edge graph from loadgen).
  function runLayout(fit) {
    cy.layout({
      name: 'dagre',
      rankDir: 'LR',
      ranker: cy.elements().length > 300 ? 'tight-tree' : 'network-simplex',
      nodeSep: 18,
      edgeSep: 8,
      rankSep: 130,
      fit,
      padding: 30,
      animate: false,
    }).run();
  }

  // Replaces the drawn elements with `elements`, laying out again only when
  // the set of nodes changed: a refresh does not jump around, and a new
  // edge between placed nodes needs no new layout.
  function draw(elements) {
    const wanted = new Map(elements.map((e) => [e.data.id, e]));
    let changed = false;
    let edgesChanged = false;
    cy.batch(() => {
      cy.elements().forEach((ele) => {
        if (!wanted.has(ele.id())) {
          ele.remove();
          if (ele.isNode()) changed = true;
        }
      });
      for (const e of elements) {
        if (e.group !== 'nodes') continue;
        const existing = cy.getElementById(e.data.id);
        if (existing.empty()) {
          cy.add(e);
          changed = true;
        } else {
          existing.data(e.data);
          existing.classes(e.classes);
        }
      }
      for (const e of elements) {
        if (e.group !== 'edges') continue;
        const existing = cy.getElementById(e.data.id);
        if (existing.empty()) {
          cy.add(e);
          edgesChanged = true;
        } else {
          existing.data(e.data);
          existing.classes(e.classes);
        }
      }
    });
    if (changed && cy.elements().nonempty()) runLayout(!userMovedView);
    else if (edgesChanged && !userMovedView) cy.fit(undefined, 30);
    applyFocus();
  }

  // Dims what the search or the selected node leaves out.
  function applyFocus() {
    const query = state.query.trim().toLowerCase();
    let keep = null;
    let matched = cy.collection();
    if (query) {
      matched = cy.nodes().filter((n) => n.data('name').toLowerCase().includes(query));
      keep = matched.union(matched.connectedEdges()).union(matched.neighborhood('node'));
    }
    const selected = state.selected ? cy.getElementById(state.selected) : cy.collection();
    if (selected.nonempty() && selected.isNode()) keep = selected.closedNeighborhood();
    cy.batch(() => {
      cy.elements().removeClass('dimmed match');
      if (keep) cy.elements().not(keep).addClass('dimmed');
      matched.addClass('match');
    });
    const services = cy.nodes().length;
    $('#matches').textContent = query ? `${matched.length} of ${services} match` : '';
    return matched;
  }

  // ---- details panel ------------------------------------------------------

  let lastGraph = null;
  let lastDiff = null;

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

  function focusButton(id, text) {
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
    const edges = lastGraph ? lastGraph.edges : [];
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

  function renderDetails() {
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
      const node = (lastGraph && lastGraph.nodes.find((n) => n.id === name)) || { id: name, kind: ele.data('kind') };
      parts = nodeDetails(node);
    } else {
      const id = ele.id();
      const change = lastDiff ? lastDiff.edges.find((e) => edgeId(e) === id) : null;
      const edge = (lastGraph && lastGraph.edges.find((e) => edgeId(e) === id)) || change;
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

  function select(id, center) {
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

  cy.on('tap', 'node, edge', (evt) => select(evt.target.id()));
  cy.on('tap', (evt) => {
    if (evt.target === cy) select(null);
  });

  // ---- time series (inline SVG) -------------------------------------------

  let seriesSeq = 0;

  async function loadSeries(container, subject) {
    const seq = ++seriesSeq;
    let body;
    try {
      body = await getJson('api/v1/series', { ...subject, ...windowQuery() });
    } catch (err) {
      if (seq === seriesSeq) {
        container.replaceChildren(h('p', { class: 'muted' }, `No history: ${err.message}`));
      }
      return;
    }
    if (seq !== seriesSeq) return;
    container.replaceChildren(...seriesChart(body.points || [], body.step_seconds || 60));
  }

  function seriesChart(points, step) {
    if (!points.some((p) => p.requests > 0)) return [h('p', { class: 'muted' }, 'No calls recorded in this window.')];
    const W = 350;
    const H = 110;
    const left = 36;
    const bottom = 18;
    const top = 6;
    const plotW = W - left - 4;
    const plotH = H - top - bottom;
    const times = points.map((p) => new Date(p.t).getTime());
    const t0 = times[0];
    const t1 = times[times.length - 1] + step * 1000;
    const max = Math.max(1, ...points.map((p) => p.requests));
    const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * plotW;
    const y = (v) => top + plotH - (v / max) * plotH;
    // Steps, not a smooth line: each point counts one whole interval.
    const area = (field) => {
      let d = `M${x(t0)},${y(0)}`;
      points.forEach((p, i) => {
        d += `L${x(times[i])},${y(p[field])}L${x(times[i] + step * 1000)},${y(p[field])}`;
      });
      return d + `L${x(t1)},${y(0)}Z`;
    };
    const unit = step === 60 ? 'per minute' : `per ${step >= 3600 ? step / 3600 + ' h' : step / 60 + ' min'}`;
    const readout = h('div', { class: 'readout' }, `${points.length} ${points.length === 1 ? 'point' : 'points'}, requests ${unit}`);
    const svg = s(
      'svg',
      { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Requests and errors over time' },
      s('path', { d: area('requests'), fill: '#9db8e8', stroke: '#2f6fde', 'stroke-width': 1 }),
      s('path', { d: area('errors'), fill: '#d62828', 'fill-opacity': 0.8 }),
      s('line', { x1: left, y1: top + plotH, x2: W - 4, y2: top + plotH, stroke: '#aab4bf' }),
      s('text', { x: left - 4, y: top + 8, 'text-anchor': 'end', 'font-size': 10, fill: '#5d6b79' }, fmtInt(max)),
      s('text', { x: left - 4, y: top + plotH, 'text-anchor': 'end', 'font-size': 10, fill: '#5d6b79' }, '0'),
      s('text', { x: left, y: H - 4, 'font-size': 10, fill: '#5d6b79' }, fmtClock(new Date(t0))),
      s('text', { x: W - 4, y: H - 4, 'text-anchor': 'end', 'font-size': 10, fill: '#5d6b79' }, fmtClock(new Date(t1))),
    );
    const cursor = s('line', { y1: top, y2: top + plotH, stroke: '#1d2733', 'stroke-dasharray': '2 2', visibility: 'hidden' });
    svg.append(cursor);
    svg.addEventListener('mousemove', (evt) => {
      const box = svg.getBoundingClientRect();
      const t = t0 + (((evt.clientX - box.left) * (W / box.width) - left) / plotW) * (t1 - t0);
      let i = times.findIndex((ti) => ti + step * 1000 > t);
      if (i < 0) i = points.length - 1;
      const p = points[Math.max(0, i)];
      const px = x(times[Math.max(0, i)]);
      cursor.setAttribute('x1', px);
      cursor.setAttribute('x2', px);
      cursor.setAttribute('visibility', 'visible');
      const p99 = p.p99_ms !== undefined && p.p99_ms !== null ? `, p99 ${fmtMs(p.p99_ms)}` : '';
      readout.textContent = `${fmtDateTime(new Date(p.t))}: ${fmtInt(p.requests)} requests, ${fmtInt(p.errors)} errors${p99}`;
    });
    return [svg, readout];
  }

  // ---- what changed -------------------------------------------------------

  function renderChanges(diff) {
    const panel = $('#changes');
    if (!diff) {
      panel.hidden = true;
      panel.replaceChildren();
      return;
    }
    const counts = {};
    for (const e of diff.edges) counts[e.change] = (counts[e.change] || 0) + 1;
    const listed = diff.edges
      .filter((e) => e.change !== 'unchanged')
      .sort((a, b) => CHANGE_ORDER.indexOf(a.change) - CHANGE_ORDER.indexOf(b.change));
    const base = diff.baseline || {};
    const baseText = base.start ? `${fmtDateTime(new Date(base.start))} – ${fmtClock(new Date(base.end))}` : '';
    const describe = (e) => {
      const parts = [];
      if (e.current && e.baseline) {
        if ((e.reasons || []).includes('error_rate')) {
          parts.push(`errors ${fmtPct(e.baseline.error_rate)} → ${fmtPct(e.current.error_rate)}`);
        }
        if ((e.reasons || []).includes('p99')) {
          parts.push(`p99 ${fmtMs(e.baseline.p99_ms)} → ${fmtMs(e.current.p99_ms)}`);
        }
      }
      return parts.join(', ');
    };
    panel.replaceChildren(
      h('h2', {}, 'What changed'),
      h('p', { class: 'sub' }, baseText ? `against ${baseText}` : ''),
      h(
        'p',
        { class: 'summary' },
        ['regressed', 'new', 'vanished', 'improved', 'unchanged'].map((c) =>
          h('span', {}, h('span', { class: 'badge ' + c }, `${counts[c] || 0} ${CHANGES[c].label}`), ' '),
        ),
      ),
      listed.length
        ? h(
            'ul',
            { class: 'links' },
            listed.map((e) =>
              h(
                'li',
                { 'data-change': e.change },
                h('span', { class: 'badge ' + e.change }, CHANGES[e.change].label),
                h(
                  'span',
                  {},
                  focusButton(edgeId(e), `${e.source} → ${e.target}`),
                  ' ',
                  h('span', { class: 'why' }, describe(e)),
                ),
              ),
            ),
          )
        : h('p', { class: 'muted' }, 'No edge changed beyond the thresholds.'),
    );
    panel.hidden = false;
  }

  // ---- legend ---------------------------------------------------------------

  function shapeIcon(shape, stroke, fill) {
    const common = { stroke, fill, 'stroke-width': 1.5 };
    const icon = {
      'round-rectangle': () => s('rect', { x: 1, y: 3, width: 20, height: 12, rx: 3, ...common }),
      barrel: () => s('path', { d: 'M4 3h14q3 6 0 12H4q-3-6 0-12Z', ...common }),
      rhomboid: () => s('path', { d: 'M5 3h16l-4 12H1Z', ...common }),
      hexagon: () => s('path', { d: 'M6 2h10l5 7-5 7H6L1 9Z', ...common }),
      ellipse: () => s('ellipse', { cx: 11, cy: 9, rx: 10, ry: 7, ...common }),
    }[shape]();
    return s('svg', { width: 22, height: 18, viewBox: '0 0 22 18' }, icon);
  }

  function lineIcon(colour, dashed, width) {
    return s(
      'svg',
      { width: 22, height: 10, viewBox: '0 0 22 10' },
      s('line', { x1: 1, y1: 5, x2: 21, y2: 5, stroke: colour, 'stroke-width': width || 2.5, 'stroke-dasharray': dashed ? '4 3' : 'none' }),
    );
  }

  function renderLegend() {
    const items = [h('h4', {}, 'nodes')];
    for (const kind of Object.values(KINDS)) {
      items.push(h('span', {}, shapeIcon(kind.shape, kind.colour, kind.fill), kind.label));
    }
    items.push(h('h4', {}, 'edges: req/s · errors · p99'));
    items.push(h('span', {}, lineIcon(HEALTH_COLOURS.ok), 'healthy'));
    const threshold = (rate, ms) => `errors ≥ ${rate * 100}% or p99 ≥ ${ms >= 1000 ? ms / 1000 + ' s' : ms + ' ms'}`;
    items.push(h('span', {}, lineIcon(HEALTH_COLOURS.warn), threshold(HEALTH.errorWarn, HEALTH.p99Warn)));
    items.push(h('span', {}, lineIcon(HEALTH_COLOURS.crit), threshold(HEALTH.errorCrit, HEALTH.p99Crit)));
    items.push(h('span', {}, lineIcon(HEALTH_COLOURS.ok, true), 'message queue'));
    if (state.diff) {
      items.push(h('h4', {}, 'what changed'));
      items.push(h('span', {}, lineIcon(CHANGES.new.colour), 'new'));
      items.push(h('span', {}, lineIcon(CHANGES.vanished.colour, true), 'vanished'));
      items.push(h('span', {}, lineIcon(CHANGES.regressed.colour, false, 5), 'regressed'));
      items.push(h('span', {}, lineIcon(CHANGES.improved.colour), 'improved'));
    }
    $('#legend').replaceChildren(...items);
  }

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
      const graphReq = getJson('api/v1/graph', windowQuery());
      const diffReq = state.diff && (state.baseline !== 'custom' || state.baselineStart)
        ? getJson('api/v1/diff', diffQuery()).catch((err) => {
            diffError = err;
            return null;
          })
        : null;
      [graph, diff] = await Promise.all([graphReq, diffReq]);
    } catch (err) {
      if (seq !== refreshSeq) return;
      setStatus(`cannot load the map: ${err.message}`, true);
      if (!lastGraph) notice(`Cannot load the map: ${err.message}`, true);
      schedule();
      return;
    }
    if (seq !== refreshSeq) return;
    lastGraph = graph;
    lastDiff = diff;
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
    if (matched.nonempty()) {
      userMovedView = true;
      cy.fit(matched, 80);
      // One match would fill the screen: stay at a reading zoom instead.
      if (cy.zoom() > 1.2) {
        cy.zoom(1.2);
        cy.center(matched);
      }
    }
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
    renderLegend();
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
      return lastGraph;
    },
    get diff() {
      return lastDiff;
    },
    // Of the last refresh: the API requests, and building plus laying out.
    get timings() {
      return timings;
    },
  };

  renderWindows();
  renderLegend();
  refresh();
})();
