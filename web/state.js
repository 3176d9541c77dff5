// The page's live view state, read from the address once at load and
// written back on every change, and the API documents last drawn.

import { addressQuery, parseState } from './address.js';

export const state = parseState(location.search);

/** The last /api/v1/graph and /api/v1/diff documents drawn. */
export const loaded = { graph: null, diff: null };

export function syncAddress() {
  const text = addressQuery(state);
  history.replaceState(null, '', text ? '?' + text : location.pathname);
}
