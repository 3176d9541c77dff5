// The map itself: cytoscape's styles, drawing a set of elements with a
// dagre layout, and dimming what the search or the selection leaves out.
// `cytoscape` is the global the vendored scripts define before this runs.

import { $ } from './dom.js';
import { HEALTH_COLOURS } from './health.js';
import { CHANGES } from './kinds.js';
import { state } from './state.js';

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

export const cy = cytoscape({
  container: $('#map'),
  style: STYLE,
  minZoom: 0.03,
  maxZoom: 4,
  boxSelectionEnabled: false,
  selectionType: 'single',
});

// Once the user pans or zooms, a refresh no longer fits the map for them.
let userMovedView = false;
cy.on('dragpan scrollzoom pinchzoom', () => {
  userMovedView = true;
});

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
export function draw(elements) {
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
export function applyFocus() {
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

// Brings `eles` into view; later refreshes leave the view where it is.
export function fitTo(eles) {
  userMovedView = true;
  cy.fit(eles, 80);
  // One match would fill the screen: stay at a reading zoom instead.
  if (cy.zoom() > 1.2) {
    cy.zoom(1.2);
    cy.center(eles);
  }
}
