// How the page writes numbers, durations and times. Pure: unit-tested in
// web/test/format.test.mjs, and the browser tests parse these formats back.

export const fmtInt = (n) => Math.round(n).toLocaleString('en-US');

export function fmtRate(perSecond) {
  if (perSecond === 0) return '0/s';
  // Two significant digits below 0.01/s: a rare call is not "0.00/s".
  if (perSecond < 0.01) return perSecond.toPrecision(2) + '/s';
  const digits = perSecond >= 100 ? 0 : perSecond >= 10 ? 1 : 2;
  return perSecond.toFixed(digits) + '/s';
}

export function fmtPct(fraction) {
  const pct = fraction * 100;
  if (pct === 0) return '0%';
  const digits = pct >= 10 ? 1 : pct >= 0.1 ? 2 : 3;
  return pct.toFixed(digits) + '%';
}

export function fmtMs(ms) {
  if (ms >= 1000) return (ms / 1000).toFixed(2) + ' s';
  return ms.toFixed(ms >= 100 ? 0 : 1) + ' ms';
}

const pad2 = (n) => String(n).padStart(2, '0');
export const fmtClock = (d) => `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
export const fmtDateTime = (d) =>
  `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${fmtClock(d)}`;
// The value a datetime-local input shows for `d`, in local time.
export const toLocalInput = (d) => fmtDateTime(d).replace(' ', 'T');
// RFC 3339 in UTC without milliseconds, as the API documents it.
export const toApiTime = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');
