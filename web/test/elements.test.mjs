// Graph elements from API documents (web/elements.js).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { buildElements, edgeElement, edgeId, ghostKind, nodeElement, nodeId } from '../elements.js';
import { HEALTH_COLOURS } from '../health.js';
import { KINDS } from '../kinds.js';

const latency = (p99) => ({ p50: p99 / 4, p90: p99 / 2, p99, avg: p99 / 3, max: p99 * 2 });
const node = (id, kind, requests, errorRate, p99) => ({
  id,
  kind,
  requests,
  errors: Math.round(requests * errorRate),
  error_rate: errorRate,
  latency_ms: latency(p99),
});
const edge = (source, target, connection, rate, errorRate, p99) => ({
  source,
  target,
  connection_type: connection,
  rate_per_s: rate,
  requests: rate * 900,
  errors: Math.round(rate * 900 * errorRate),
  error_rate: errorRate,
  client_latency_ms: latency(p99 + 1),
  server_latency_ms: latency(p99),
});

const GRAPH = {
  window: { start: '2024-05-01T10:00:00Z', end: '2024-05-01T10:15:00Z' },
  nodes: [
    node('user', 'user', 0, 0, 0),
    node('frontend', 'service', 900, 0.02, 40),
    node('orders', 'service', 450, 0, 3000),
    node('postgres', 'database', 450, 0, 4),
  ],
  edges: [
    edge('user', 'frontend', '', 1, 0.02, 40),
    edge('frontend', 'orders', '', 0.5, 0, 3000),
    edge('orders', 'postgres', 'database', 0.5, 0, 4),
  ],
};

test('ids are stable and tell nodes from edges', () => {
  assert.equal(nodeId('orders'), 'n:orders');
  assert.equal(edgeId(GRAPH.edges[2]), 'e:["orders","postgres","database"]');
  assert.notEqual(edgeId({ ...GRAPH.edges[2], connection_type: '' }), edgeId(GRAPH.edges[2]));
});

test('a node takes its kind\'s shape and its health from errors and p99', () => {
  const frontend = nodeElement(GRAPH.nodes[1], false);
  assert.equal(frontend.group, 'nodes');
  assert.equal(frontend.data.id, 'n:frontend');
  assert.equal(frontend.data.name, 'frontend');
  assert.equal(frontend.data.shape, KINDS.service.shape);
  assert.deepEqual(frontend.classes, ['health-warn']);
  assert.deepEqual(nodeElement(GRAPH.nodes[2], false).classes, ['health-crit']);
  assert.deepEqual(nodeElement(GRAPH.nodes[3], false).classes, ['health-ok']);
  // No calls served: no health to show.
  assert.deepEqual(nodeElement(GRAPH.nodes[0], false).classes, []);
  assert.equal(nodeElement(GRAPH.nodes[3], false).data.shape, 'barrel');
  assert.equal(nodeElement({ id: 'x', kind: 'unknown' }, true).data.shape, KINDS.service.shape);
  assert.deepEqual(nodeElement({ id: 'x', kind: 'service' }, true).classes, ['ghost']);
  // Wide enough for the name, never narrower than 56.
  assert.equal(nodeElement({ id: 'a', kind: 'service' }, true).data.w, 56);
  assert.ok(nodeElement({ id: 'a-very-long-service-name', kind: 'service' }, true).data.w > 24 * 7);
});

test('an edge is labelled with rate, errors and server p99, coloured by health', () => {
  const e = edgeElement(GRAPH.edges[1], null);
  assert.equal(e.group, 'edges');
  assert.equal(e.data.source, 'n:frontend');
  assert.equal(e.data.target, 'n:orders');
  assert.equal(e.data.label, '0.50/s · 0%\np99 3.00 s');
  assert.equal(e.data.colour, HEALTH_COLOURS.crit);
  assert.deepEqual(e.classes, []);
  assert.equal(edgeElement(GRAPH.edges[0], null).data.colour, HEALTH_COLOURS.warn);
  assert.equal(edgeElement(GRAPH.edges[2], null).data.colour, HEALTH_COLOURS.ok);
  const queue = edgeElement(edge('a', 'b', 'messaging_system', 10, 0, 1), 'regressed');
  assert.deepEqual(queue.classes, ['messaging', 'diff-regressed']);
});

test('edge width grows with the log of the rate and is capped', () => {
  const width = (rate) => edgeElement(edge('a', 'b', '', rate, 0, 1), null).data.width;
  assert.equal(width(0), 1.5);
  assert.ok(width(1) < width(10) && width(10) < width(100));
  assert.equal(width(1e9), 6);
  assert.equal(edgeElement(edge('a', 'b', '', 0, 0, 1), null).data.wide, 5);
});

test('a node only a vanished edge names gets the kind its connection implies', () => {
  const e = (connection) => ({ source: 'a', target: 'b', connection_type: connection });
  assert.equal(ghostKind('user', e(''), false), 'user');
  assert.equal(ghostKind('a', e('database'), false), 'service');
  assert.equal(ghostKind('b', e('database'), true), 'database');
  assert.equal(ghostKind('b', e('messaging_system'), true), 'messaging');
  assert.equal(ghostKind('b', e('virtual_node'), true), 'virtual');
  assert.equal(ghostKind('b', e(''), true), 'service');
});

test('the graph alone draws its nodes, then its edges', () => {
  const elements = buildElements(GRAPH, null);
  assert.deepEqual(
    elements.map((e) => e.data.id),
    [...GRAPH.nodes.map((n) => nodeId(n.id)), ...GRAPH.edges.map(edgeId)],
  );
  assert.ok(elements.every((e) => !e.classes.some((c) => c.startsWith('diff-'))));
});

test('a diff marks changed edges and adds vanished ones with their baseline numbers', () => {
  const vanished = {
    source: 'orders',
    target: 'legacy-billing',
    connection_type: 'virtual_node',
    change: 'vanished',
    reasons: [],
    baseline: { requests: 1800, errors: 90, error_rate: 0.05, p99_ms: 120 },
  };
  const diff = {
    baseline: { start: '2024-04-30T10:00:00Z', end: '2024-04-30T10:15:00Z' },
    edges: [
      { ...GRAPH.edges[1], change: 'regressed', reasons: ['p99'] },
      { ...GRAPH.edges[2], change: 'unchanged', reasons: [] },
      vanished,
      // Vanished but with no baseline numbers: nothing to draw.
      { source: 'x', target: 'y', connection_type: '', change: 'vanished', reasons: [] },
    ],
  };
  const elements = buildElements(GRAPH, diff);
  const byId = new Map(elements.map((e) => [e.data.id, e]));
  assert.equal(elements.length, GRAPH.nodes.length + 1 + GRAPH.edges.length + 1);
  // Not in the diff: arrived between the two requests, drawn plainly.
  assert.deepEqual(byId.get(edgeId(GRAPH.edges[0])).classes, []);
  assert.deepEqual(byId.get(edgeId(GRAPH.edges[1])).classes, ['diff-regressed']);
  assert.deepEqual(byId.get(edgeId(GRAPH.edges[2])).classes, ['diff-unchanged']);
  const ghost = byId.get(nodeId('legacy-billing'));
  assert.deepEqual(ghost.classes, ['ghost']);
  assert.equal(ghost.data.kind, 'virtual');
  assert.ok(!byId.has(nodeId('x')) && !byId.has(nodeId('y')));
  // 1,800 requests over the 15-minute baseline: 2/s.
  const gone = byId.get(edgeId(vanished));
  assert.deepEqual(gone.classes, ['diff-vanished']);
  assert.equal(gone.data.label, '2.00/s · 5.00%\np99 120 ms');
  assert.equal(gone.data.colour, HEALTH_COLOURS.crit);
  // Nodes still come before edges, so cytoscape has both ends first.
  const firstEdge = elements.findIndex((e) => e.group === 'edges');
  assert.ok(elements.slice(firstEdge).every((e) => e.group === 'edges'));
});
