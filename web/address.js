// The view state as the address bar holds it, so a view can be shared, and
// the API queries it asks for. Pure: unit-tested in web/test/address.test.mjs.

import { toApiTime } from './format.js';

export const WINDOWS = ['5m', '15m', '1h', '6h', '24h', '7d'];
export const DEFAULT_WINDOW = '15m';

const validWindow = (w) => /^[1-9]\d*(s|m|h|d)$/.test(w || '');

/** A date from an address or an input's text, or null for none or garbage. */
export const parseDate = (text) => {
  const d = text ? new Date(text) : null;
  return d && !Number.isNaN(d.getTime()) ? d : null;
};

/** The view state an address's query string (`location.search`) names. */
export function parseState(search) {
  const params = new URLSearchParams(search);
  return {
    window: validWindow(params.get('window')) ? params.get('window') : DEFAULT_WINDOW,
    end: parseDate(params.get('end')),
    query: params.get('q') || '',
    diff: params.get('diff') !== null,
    baseline: params.get('baseline') || '1d',
    baselineStart: parseDate(params.get('baseline_start')),
    refresh: params.get('refresh') !== 'off',
    selected: null,
  };
}

/** The query string for `state`, without '?': defaults are left out. */
export function addressQuery(state) {
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
  return q.toString();
}

/** Query parameters of /api/v1/graph and /api/v1/series. */
export function windowQuery(state) {
  const q = { window: state.window };
  if (state.end) q.end = toApiTime(state.end);
  return q;
}

/** Query parameters of /api/v1/diff. */
export function diffQuery(state) {
  const q = windowQuery(state);
  if (state.baseline === 'custom') {
    if (state.baselineStart) q.baseline_start = toApiTime(state.baselineStart);
  } else {
    q.baseline_offset = state.baseline;
  }
  return q;
}

/** Whether a diff can be asked for: a custom baseline needs its start. */
export const canDiff = (state) => state.diff && (state.baseline !== 'custom' || Boolean(state.baselineStart));
