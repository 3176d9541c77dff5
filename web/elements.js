// Cytoscape elements from the API's graph and diff documents. Pure:
// unit-tested in web/test/elements.test.mjs.

import { fmtMs, fmtPct, fmtRate } from './format.js';
import { HEALTH_COLOURS, health } from './health.js';
import { KINDS } from './kinds.js';

export const nodeId = (name) => 'n:' + name;
export const edgeId = (e) => 'e:' + JSON.stringify([e.source, e.target, e.connection_type]);

export function nodeElement(node, ghost) {
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
export function edgeElement(edge, change, numbers) {
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
export function ghostKind(name, edge, isTarget) {
  if (!isTarget) return name === 'user' ? 'user' : 'service';
  return { database: 'database', messaging_system: 'messaging', virtual_node: 'virtual' }[edge.connection_type] || 'service';
}

// The elements to draw: the window's graph, plus vanished edges (and
// nodes seen only in the baseline) when comparing.
export function buildElements(graph, diff) {
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
