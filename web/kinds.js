// What the map's nodes, connections and diff changes are, and how each one
// looks: read by the styles, the panels and the legend alike.

export const KINDS = {
  service: { label: 'service', shape: 'round-rectangle', colour: '#2f6fde', fill: '#e6eefc' },
  database: { label: 'database', shape: 'barrel', colour: '#7b3fb5', fill: '#f1e8f9' },
  messaging: { label: 'queue / topic', shape: 'rhomboid', colour: '#c76b12', fill: '#fcefe2' },
  virtual: { label: 'external (uninstrumented)', shape: 'hexagon', colour: '#6b7785', fill: '#eef0f2' },
  user: { label: 'user', shape: 'ellipse', colour: '#168a74', fill: '#e2f4f0' },
};

export const CONNECTIONS = {
  '': 'request (client → server)',
  database: 'database call',
  messaging_system: 'message (producer → consumer)',
  virtual_node: 'call to or from an uninstrumented peer',
};

export const CHANGES = {
  new: { label: 'new', colour: '#1a9e3f' },
  vanished: { label: 'vanished', colour: '#9aa3ad' },
  regressed: { label: 'regressed', colour: '#d62828' },
  improved: { label: 'improved', colour: '#2a7fb8' },
  unchanged: { label: 'unchanged', colour: '#c2c9d1' },
};
// The order the "what changed" panel lists edges in.
export const CHANGE_ORDER = ['regressed', 'new', 'vanished', 'improved'];
