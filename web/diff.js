// The "what changed" panel: how many edges changed each way against the
// baseline window, and a link to each edge that did.

import { focusButton } from './details.js';
import { $, h } from './dom.js';
import { edgeId } from './elements.js';
import { fmtClock, fmtDateTime, fmtMs, fmtPct } from './format.js';
import { CHANGES, CHANGE_ORDER } from './kinds.js';

export function renderChanges(diff) {
  const panel = $('#changes');
  if (!diff) {
    panel.hidden = true;
    panel.replaceChildren();
    return;
  }
  const counts = {};
  for (const e of diff.edges) counts[e.change] = (counts[e.change] || 0) + 1;
  const listed = diff.edges
    .filter((e) => e.change !== 'unchanged')
    .sort((a, b) => CHANGE_ORDER.indexOf(a.change) - CHANGE_ORDER.indexOf(b.change));
  const base = diff.baseline || {};
  const baseText = base.start ? `${fmtDateTime(new Date(base.start))} – ${fmtClock(new Date(base.end))}` : '';
  const describe = (e) => {
    const parts = [];
    if (e.current && e.baseline) {
      if ((e.reasons || []).includes('error_rate')) {
        parts.push(`errors ${fmtPct(e.baseline.error_rate)} → ${fmtPct(e.current.error_rate)}`);
      }
      if ((e.reasons || []).includes('p99')) {
        parts.push(`p99 ${fmtMs(e.baseline.p99_ms)} → ${fmtMs(e.current.p99_ms)}`);
      }
    }
    return parts.join(', ');
  };
  panel.replaceChildren(
    h('h2', {}, 'What changed'),
    h('p', { class: 'sub' }, baseText ? `against ${baseText}` : ''),
    h(
      'p',
      { class: 'summary' },
      ['regressed', 'new', 'vanished', 'improved', 'unchanged'].map((c) =>
        h('span', {}, h('span', { class: 'badge ' + c }, `${counts[c] || 0} ${CHANGES[c].label}`), ' '),
      ),
    ),
    listed.length
      ? h(
          'ul',
          { class: 'links' },
          listed.map((e) =>
            h(
              'li',
              { 'data-change': e.change },
              h('span', { class: 'badge ' + e.change }, CHANGES[e.change].label),
              h(
                'span',
                {},
                focusButton(edgeId(e), `${e.source} → ${e.target}`),
                ' ',
                h('span', { class: 'why' }, describe(e)),
              ),
            ),
          ),
        )
      : h('p', { class: 'muted' }, 'No edge changed beyond the thresholds.'),
  );
  panel.hidden = false;
}
