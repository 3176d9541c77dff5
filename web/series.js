// The details panel's chart of requests and errors over the window, from
// /api/v1/series, drawn as inline SVG.

import { windowQuery } from './address.js';
import { getJson } from './api.js';
import { h, s } from './dom.js';
import { fmtClock, fmtDateTime, fmtInt, fmtMs } from './format.js';
import { state } from './state.js';

// Only the latest request may fill a chart: a slow older answer is dropped.
let seriesSeq = 0;

export async function loadSeries(container, subject) {
  const seq = ++seriesSeq;
  let body;
  try {
    body = await getJson('api/v1/series', { ...subject, ...windowQuery(state) });
  } catch (err) {
    if (seq === seriesSeq) {
      container.replaceChildren(h('p', { class: 'muted' }, `No history: ${err.message}`));
    }
    return;
  }
  if (seq !== seriesSeq) return;
  container.replaceChildren(...seriesChart(body.points || [], body.step_seconds || 60));
}

function seriesChart(points, step) {
  if (!points.some((p) => p.requests > 0)) return [h('p', { class: 'muted' }, 'No calls recorded in this window.')];
  const W = 350;
  const H = 110;
  const left = 36;
  const bottom = 18;
  const top = 6;
  const plotW = W - left - 4;
  const plotH = H - top - bottom;
  const times = points.map((p) => new Date(p.t).getTime());
  const t0 = times[0];
  const t1 = times[times.length - 1] + step * 1000;
  const max = Math.max(1, ...points.map((p) => p.requests));
  const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * plotW;
  const y = (v) => top + plotH - (v / max) * plotH;
  // Steps, not a smooth line: each point counts one whole interval.
  const area = (field) => {
    let d = `M${x(t0)},${y(0)}`;
    points.forEach((p, i) => {
      d += `L${x(times[i])},${y(p[field])}L${x(times[i] + step * 1000)},${y(p[field])}`;
    });
    return d + `L${x(t1)},${y(0)}Z`;
  };
  const unit = step === 60 ? 'per minute' : `per ${step >= 3600 ? step / 3600 + ' h' : step / 60 + ' min'}`;
  const readout = h('div', { class: 'readout' }, `${points.length} ${points.length === 1 ? 'point' : 'points'}, requests ${unit}`);
  const svg = s(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Requests and errors over time' },
    s('path', { d: area('requests'), fill: '#9db8e8', stroke: '#2f6fde', 'stroke-width': 1 }),
    s('path', { d: area('errors'), fill: '#d62828', 'fill-opacity': 0.8 }),
    s('line', { x1: left, y1: top + plotH, x2: W - 4, y2: top + plotH, stroke: '#aab4bf' }),
    s('text', { x: left - 4, y: top + 8, 'text-anchor': 'end', 'font-size': 10, fill: '#5d6b79' }, fmtInt(max)),
    s('text', { x: left - 4, y: top + plotH, 'text-anchor': 'end', 'font-size': 10, fill: '#5d6b79' }, '0'),
    s('text', { x: left, y: H - 4, 'font-size': 10, fill: '#5d6b79' }, fmtClock(new Date(t0))),
    s('text', { x: W - 4, y: H - 4, 'text-anchor': 'end', 'font-size': 10, fill: '#5d6b79' }, fmtClock(new Date(t1))),
  );
  const cursor = s('line', { y1: top, y2: top + plotH, stroke: '#1d2733', 'stroke-dasharray': '2 2', visibility: 'hidden' });
  svg.append(cursor);
  svg.addEventListener('mousemove', (evt) => {
    const box = svg.getBoundingClientRect();
    const t = t0 + (((evt.clientX - box.left) * (W / box.width) - left) / plotW) * (t1 - t0);
    let i = times.findIndex((ti) => ti + step * 1000 > t);
    if (i < 0) i = points.length - 1;
    const p = points[Math.max(0, i)];
    const px = x(times[Math.max(0, i)]);
    cursor.setAttribute('x1', px);
    cursor.setAttribute('x2', px);
    cursor.setAttribute('visibility', 'visible');
    const p99 = p.p99_ms !== undefined && p.p99_ms !== null ? `, p99 ${fmtMs(p.p99_ms)}` : '';
    readout.textContent = `${fmtDateTime(new Date(p.t))}: ${fmtInt(p.requests)} requests, ${fmtInt(p.errors)} errors${p99}`;
  });
  return [svg, readout];
}
