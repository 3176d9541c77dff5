// The legend: node kinds, edge health and, when comparing, the changes.

import { $, h, s } from './dom.js';
import { HEALTH_COLOURS, healthRule } from './health.js';
import { CHANGES, KINDS } from './kinds.js';

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

// `comparing`: whether the map shows what changed against a baseline.
export function renderLegend(comparing) {
  const items = [h('h4', {}, 'nodes')];
  for (const kind of Object.values(KINDS)) {
    items.push(h('span', {}, shapeIcon(kind.shape, kind.colour, kind.fill), kind.label));
  }
  items.push(h('h4', {}, 'edges: req/s · errors · p99'));
  items.push(h('span', {}, lineIcon(HEALTH_COLOURS.ok), 'healthy'));
  items.push(h('span', {}, lineIcon(HEALTH_COLOURS.warn), healthRule('warn')));
  items.push(h('span', {}, lineIcon(HEALTH_COLOURS.crit), healthRule('crit')));
  items.push(h('span', {}, lineIcon(HEALTH_COLOURS.ok, true), 'message queue'));
  if (comparing) {
    items.push(h('h4', {}, 'what changed'));
    items.push(h('span', {}, lineIcon(CHANGES.new.colour), 'new'));
    items.push(h('span', {}, lineIcon(CHANGES.vanished.colour, true), 'vanished'));
    items.push(h('span', {}, lineIcon(CHANGES.regressed.colour, false, 5), 'regressed'));
    items.push(h('span', {}, lineIcon(CHANGES.improved.colour), 'improved'));
  }
  $('#legend').replaceChildren(...items);
}

