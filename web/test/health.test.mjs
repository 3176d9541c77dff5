// The one set of health thresholds (web/health.js).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { HEALTH, HEALTH_COLOURS, health, healthRule } from '../health.js';

test('the thresholds are 1% and 5% errors, 500 ms and 2 s p99', () => {
  assert.deepEqual(HEALTH, { errorWarn: 0.01, errorCrit: 0.05, p99Warn: 500, p99Crit: 2000 });
  assert.deepEqual(Object.keys(HEALTH_COLOURS).sort(), ['crit', 'ok', 'warn']);
});

test('each threshold starts its level, and the worse signal wins', () => {
  assert.equal(health(0, 0), 'ok');
  assert.equal(health(0.0099, 499.9), 'ok');
  assert.equal(health(0.01, 0), 'warn');
  assert.equal(health(0, 500), 'warn');
  assert.equal(health(0.0499, 1999), 'warn');
  assert.equal(health(0.05, 0), 'crit');
  assert.equal(health(0, 2000), 'crit');
  assert.equal(health(0.02, 2500), 'crit');
  assert.equal(health(0.2, 10), 'crit');
});

test('the legend states the thresholds health() applies', () => {
  assert.equal(healthRule('warn'), 'errors ≥ 1% or p99 ≥ 500 ms');
  assert.equal(healthRule('crit'), 'errors ≥ 5% or p99 ≥ 2 s');
});
