// The view state in the address and the API queries (web/address.js).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULT_WINDOW, addressQuery, canDiff, diffQuery, parseDate, parseState, windowQuery } from '../address.js';

test('an empty address is the default view', () => {
  const state = parseState('');
  assert.deepEqual(state, {
    window: DEFAULT_WINDOW,
    end: null,
    query: '',
    diff: false,
    baseline: '1d',
    baselineStart: null,
    refresh: true,
    selected: null,
  });
  assert.equal(addressQuery(state), '');
  assert.deepEqual(windowQuery(state), { window: '15m' });
  assert.equal(canDiff(state), false);
});

test('every parameter is read, and written back the same', () => {
  const search =
    '?window=1h&end=2024-05-01T10%3A00%3A00Z&q=cart&diff=&baseline=custom&baseline_start=2024-04-30T10%3A00%3A00Z&refresh=off';
  const state = parseState(search);
  assert.equal(state.window, '1h');
  assert.equal(state.end.toISOString(), '2024-05-01T10:00:00.000Z');
  assert.equal(state.query, 'cart');
  assert.equal(state.diff, true);
  assert.equal(state.baseline, 'custom');
  assert.equal(state.baselineStart.toISOString(), '2024-04-30T10:00:00.000Z');
  assert.equal(state.refresh, false);
  assert.equal('?' + addressQuery(state), search);
  assert.deepEqual(windowQuery(state), { window: '1h', end: '2024-05-01T10:00:00Z' });
  assert.deepEqual(diffQuery(state), {
    window: '1h',
    end: '2024-05-01T10:00:00Z',
    baseline_start: '2024-04-30T10:00:00Z',
  });
  assert.equal(canDiff(state), true);
});

test('bad windows and dates fall back to the defaults', () => {
  for (const bad of ['0m', '15x', 'm', '-5m', '1.5h']) {
    assert.equal(parseState(`?window=${bad}`).window, DEFAULT_WINDOW, bad);
  }
  assert.equal(parseState('?window=90s').window, '90s');
  assert.equal(parseState('?end=yesterday').end, null);
  assert.equal(parseDate(''), null);
  assert.equal(parseDate('2024-05-01T10:00').getMinutes(), 0);
});

test('a diff against an offset asks for it; a custom baseline needs its start', () => {
  const offset = parseState('?diff&baseline=7d');
  assert.deepEqual(diffQuery(offset), { window: '15m', baseline_offset: '7d' });
  assert.equal(addressQuery(offset), 'diff=&baseline=7d');
  const custom = parseState('?diff&baseline=custom');
  assert.equal(canDiff(custom), false);
  assert.deepEqual(diffQuery(custom), { window: '15m' });
  // Baseline settings are kept only while comparing.
  assert.equal(addressQuery(parseState('?baseline=7d')), '');
});
