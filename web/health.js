// The page's health thresholds and colours: edges, nodes, the details
// panel and the legend all read them from here. The numbers are those of
// src/web/health.rs (tracemap map, DOT), and a Rust test keeps them equal.

// An edge or node is amber or red from these; error rate is what users
// feel first, a slow tail second.
export const HEALTH = { errorWarn: 0.01, errorCrit: 0.05, p99Warn: 500, p99Crit: 2000 };
export const HEALTH_COLOURS = { ok: '#8da2b5', warn: '#d99a00', crit: '#d62828' };

/** 'ok', 'warn' or 'crit' for an error rate (0..1) and a p99 in ms. */
export function health(errorRate, p99) {
  if (errorRate >= HEALTH.errorCrit || p99 >= HEALTH.p99Crit) return 'crit';
  if (errorRate >= HEALTH.errorWarn || p99 >= HEALTH.p99Warn) return 'warn';
  return 'ok';
}

/** The legend's words for where 'warn' or 'crit' starts. */
export function healthRule(level) {
  const [rate, ms] = level === 'crit' ? [HEALTH.errorCrit, HEALTH.p99Crit] : [HEALTH.errorWarn, HEALTH.p99Warn];
  // Round thresholds read better as "2 s" than as fmtMs's "2.00 s".
  return `errors ≥ ${rate * 100}% or p99 ≥ ${ms >= 1000 ? ms / 1000 + ' s' : ms + ' ms'}`;
}
