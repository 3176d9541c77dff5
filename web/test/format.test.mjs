// The page's number and time formats (web/format.js).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { fmtClock, fmtDateTime, fmtInt, fmtMs, fmtPct, fmtRate, toApiTime, toLocalInput } from '../format.js';

test('integers are rounded and grouped in thousands', () => {
  assert.equal(fmtInt(0), '0');
  assert.equal(fmtInt(999.4), '999');
  assert.equal(fmtInt(1234.6), '1,235');
  assert.equal(fmtInt(12345678), '12,345,678');
});

test('rates keep two significant digits when rare and fewer decimals when high', () => {
  assert.equal(fmtRate(0), '0/s');
  assert.equal(fmtRate(0.004), '0.0040/s');
  assert.equal(fmtRate(0.00012345), '0.00012/s');
  assert.equal(fmtRate(0.01), '0.01/s');
  assert.equal(fmtRate(0.354), '0.35/s');
  assert.equal(fmtRate(12.34), '12.3/s');
  assert.equal(fmtRate(150.4), '150/s');
});

test('percentages get more decimals the smaller they are', () => {
  assert.equal(fmtPct(0), '0%');
  assert.equal(fmtPct(0.0005), '0.050%');
  assert.equal(fmtPct(0.025), '2.50%');
  assert.equal(fmtPct(0.5), '50.0%');
  assert.equal(fmtPct(1), '100.0%');
});

test('durations are ms below a second and seconds from it', () => {
  assert.equal(fmtMs(0), '0.0 ms');
  assert.equal(fmtMs(12.34), '12.3 ms');
  assert.equal(fmtMs(99.96), '100.0 ms');
  assert.equal(fmtMs(123.4), '123 ms');
  assert.equal(fmtMs(999), '999 ms');
  assert.equal(fmtMs(1000), '1.00 s');
  assert.equal(fmtMs(12345), '12.35 s');
});

test('clock, date and input times are local; API times are UTC without milliseconds', () => {
  const d = new Date(2024, 0, 2, 3, 4, 5, 678); // local time
  assert.equal(fmtClock(d), '03:04');
  assert.equal(fmtDateTime(d), '2024-01-02 03:04');
  assert.equal(toLocalInput(d), '2024-01-02T03:04');
  assert.equal(toApiTime(new Date(Date.UTC(2024, 4, 1, 10, 0, 30, 250))), '2024-05-01T10:00:30Z');
});
