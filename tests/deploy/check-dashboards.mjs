// Offline checks of every Grafana dashboard under dashboards/grafana/:
//
// 1. Types: the dashboard JSON, written out as a TypeScript object literal,
//    must satisfy @grafana/schema's `Dashboard` under `tsc --strict`, and
//    each panel's `options` and `fieldConfig.defaults.custom` must satisfy
//    the Options/FieldConfig types of its panel plugin. Object literals get
//    TypeScript's excess-property check, so an unknown or misspelt field
//    fails, as does a wrong type or an enum value the schema lacks.
// 2. PromQL: every query expression parses with Prometheus's own lezer
//    grammar (@prometheus-io/lezer-promql), Grafana's $__ variables
//    substituted first.
// 3. Shape: unique panel ids, every query on the ${datasource} variable.
//
// Before trusting a pass, the script checks that each check still fails on
// a broken copy of the first dashboard (unknown fields, wrong types, bad
// enum values, bad PromQL); if a broken copy passes, the check is broken
// and the script fails.
//
// Usage: node check-dashboards.mjs [DASHBOARD.json ...]
// (default: every dashboards/grafana/*.json). Exit status 0 only if all pass.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';
import { parser as promqlParser } from '@prometheus-io/lezer-promql';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const SCHEMA = '@grafana/schema/dist/esm/raw/composable';

// Panel plugin id -> its types in @grafana/schema (module, has FieldConfig).
// A panel type missing here fails the check: add its types when adding one.
const PANEL_TYPES = {
  timeseries: { module: `${SCHEMA}/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen`, fieldConfig: true },
  table: { module: `${SCHEMA}/table/panelcfg/x/TablePanelCfg_types.gen`, fieldConfig: true },
  stat: { module: `${SCHEMA}/stat/panelcfg/x/StatPanelCfg_types.gen`, fieldConfig: false },
  nodeGraph: { module: `${SCHEMA}/nodegraph/panelcfg/x/NodeGraphPanelCfg_types.gen`, fieldConfig: false },
};

/** Every panel, rows' nested panels included. */
function allPanels(dashboard) {
  const out = [];
  for (const panel of dashboard.panels ?? []) {
    out.push(panel);
    for (const inner of panel.panels ?? []) {
      out.push(inner);
    }
  }
  return out;
}

/** TypeScript source asserting `dashboard` against the schema types. */
function dashboardSource(dashboard) {
  const lines = [
    "import type { Dashboard } from '@grafana/schema';",
    // JSON holds enum *values*: map the schema's enums to their literal
    // values, and check everything else as it is.
    'type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T'
      + ' : T extends ReadonlyArray<infer U> ? Json<U>[] : T extends object ? { [K in keyof T]: Json<T[K]> } : T;',
  ];
  const used = new Set();
  for (const panel of allPanels(dashboard)) {
    if (panel.type !== 'row' && PANEL_TYPES[panel.type]) {
      used.add(panel.type);
    }
  }
  for (const type of used) {
    lines.push(`import type * as ${type} from '${PANEL_TYPES[type].module}';`);
  }
  lines.push(`export const dashboard = (${JSON.stringify(dashboard, null, 2)}) satisfies Json<Dashboard>;`);
  allPanels(dashboard).forEach((panel, i) => {
    if (panel.type === 'row') {
      return;
    }
    const types = PANEL_TYPES[panel.type];
    if (!types) {
      lines.push(`const unknownPanelType${i}: never = ${JSON.stringify(`no schema for panel type ${panel.type}`)};`);
      return;
    }
    lines.push(`export const panel${i}Options = (${JSON.stringify(panel.options ?? {})}) satisfies Json<${panel.type}.Options>;`);
    const custom = panel.fieldConfig?.defaults?.custom;
    if (types.fieldConfig) {
      lines.push(`export const panel${i}Custom = (${JSON.stringify(custom ?? {})}) satisfies Json<${panel.type}.FieldConfig>;`);
    } else if (custom !== undefined) {
      lines.push(`const panel${i}Custom: never = ${JSON.stringify(`panel type ${panel.type} takes no fieldConfig.defaults.custom`)};`);
    }
  });
  return lines.join('\n') + '\n';
}

/** tsc --strict --noEmit over the generated sources; returns error texts per file. */
function typeErrors(dashboards) {
  const dir = fs.mkdtempSync(path.join(here, '.typecheck-'));
  try {
    const files = dashboards.map(([name, dashboard], i) => {
      const file = path.join(dir, `d${i}.ts`);
      fs.writeFileSync(file, dashboardSource(dashboard));
      return [name, file];
    });
    const program = ts.createProgram(files.map(([, file]) => file), {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      skipLibCheck: true,
      types: [],
    });
    const byFile = new Map(files.map(([name]) => [name, []]));
    for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
      const text = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
      const entry = files.find(([, file]) => diagnostic.file && path.resolve(diagnostic.file.fileName) === file);
      const name = entry ? entry[0] : '(global)';
      let where = '';
      if (diagnostic.file && diagnostic.start !== undefined) {
        const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
        where = `generated line ${line + 1}: `;
      }
      if (!byFile.has(name)) {
        byFile.set(name, []);
      }
      byFile.get(name).push(where + text);
    }
    return byFile;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Every PromQL expression: panel targets and query variables. */
function expressions(dashboard) {
  const out = [];
  for (const panel of allPanels(dashboard)) {
    for (const target of panel.targets ?? []) {
      if (typeof target.expr === 'string') {
        out.push([`panel ${panel.id} "${panel.title}" ${target.refId}`, target.expr]);
      }
    }
  }
  for (const variable of dashboard.templating?.list ?? []) {
    if (variable.type === 'query') {
      const query = typeof variable.query === 'string' ? variable.query : variable.query?.query;
      // label_values(metric, label) is Grafana's, not PromQL: check its selector.
      const labelValues = /^label_values\((.*),\s*\w+\)$/.exec(query ?? '');
      out.push([`variable ${variable.name}`, labelValues ? labelValues[1] : query]);
    }
  }
  return out;
}

/** Grafana's interval variables as durations; other $variables stay (they belong in label values). */
function substituteGrafanaVariables(expr) {
  return expr.replace(/\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}/g, '5m');
}

function promqlErrors(dashboard) {
  const errors = [];
  for (const [where, expr] of expressions(dashboard)) {
    const text = substituteGrafanaVariables(expr);
    const tree = promqlParser.parse(text);
    let at = -1;
    tree.iterate({
      enter(node) {
        if (at < 0 && node.type.isError) {
          at = node.from;
        }
      },
    });
    if (at >= 0) {
      errors.push(`${where}: PromQL syntax error at ${at}: ${text.slice(0, at)}⟨here⟩${text.slice(at)}`);
    }
  }
  return errors;
}

function shapeErrors(dashboard) {
  const errors = [];
  const ids = new Set();
  for (const panel of allPanels(dashboard)) {
    if (ids.has(panel.id)) {
      errors.push(`panel id ${panel.id} is used twice`);
    }
    ids.add(panel.id);
    for (const target of panel.targets ?? []) {
      if (target.datasource?.uid !== '${datasource}') {
        errors.push(`panel ${panel.id} "${panel.title}" ${target.refId}: datasource is not the \${datasource} variable`);
      }
    }
  }
  if (!(dashboard.templating?.list ?? []).some((v) => v.type === 'datasource' && v.name === 'datasource')) {
    errors.push('no "datasource" variable of type datasource');
  }
  return errors;
}

/**
 * Broken copies of `dashboard` that each check must reject, for the right
 * reason: [what, mutate, check, text the error must contain].
 */
const BROKEN = [
  ['an unknown top-level field', (d) => { d.titel = d.title; }, 'types', "'\"titel\"' does not exist"],
  ['an unknown panel field', (d) => { firstOf(d, 'timeseries').gridPoss = { h: 1, w: 1, x: 0, y: 0 }; }, 'types', "'\"gridPoss\"' does not exist"],
  ['a string where the schema wants a number', (d) => { d.schemaVersion = '42'; }, 'types', "Type 'string' is not assignable to type 'number'"],
  ['a legend placement the schema lacks', (d) => { firstOf(d, 'timeseries').options.legend.placement = 'middle'; }, 'types', "'\"middle\"' is not assignable"],
  ['an unknown node graph option', (d) => { firstOf(d, 'nodeGraph').options.nodes.mainStatUnitt = 'reqps'; }, 'types', "'\"mainStatUnitt\"' does not exist"],
  ['a table cell option missing its required fields', (d) => { delete firstOf(d, 'table').fieldConfig.defaults.custom.cellOptions; }, 'types', 'cellOptions'],
  ['a panel type with no schema', (d) => { firstOf(d, 'stat').type = 'nosuchpanel'; }, 'types', 'no schema for panel type nosuchpanel'],
  ['a PromQL expression with an unbalanced parenthesis', (d) => { firstTarget(d).expr += ')'; }, 'promql', 'PromQL syntax error'],
  ['a PromQL range without a duration', (d) => { firstTarget(d).expr = 'rate(traces_spanmetrics_calls_total[])'; }, 'promql', 'PromQL syntax error'],
];

function firstOf(dashboard, type) {
  const panel = allPanels(dashboard).find((p) => p.type === type);
  if (!panel) {
    throw new Error(`self-test needs a ${type} panel in the first dashboard`);
  }
  return panel;
}

function firstTarget(dashboard) {
  return allPanels(dashboard).find((p) => (p.targets ?? []).length > 0).targets[0];
}

function main() {
  const args = process.argv.slice(2);
  const dir = path.join(repo, 'dashboards', 'grafana');
  const paths = args.length > 0
    ? args.map((a) => path.resolve(a))
    : fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => path.join(dir, f));
  if (paths.length === 0) {
    console.error(`no dashboards found in ${dir}`);
    process.exit(1);
  }
  const dashboards = paths.map((p) => [path.relative(repo, p), JSON.parse(fs.readFileSync(p, 'utf8'))]);

  // The checks themselves first: each broken copy must be rejected.
  const [, first] = dashboards[0];
  const broken = BROKEN.map(([what, mutate, check, expect]) => {
    const copy = structuredClone(first);
    mutate(copy);
    return [`broken copy with ${what}`, copy, check, expect];
  });
  const brokenTypeErrors = typeErrors(broken.filter(([, , c]) => c === 'types').map(([n, d]) => [n, d]));
  let failed = 0;
  let passed = 0;
  for (const [name, copy, check, expect] of broken) {
    const reasons = check === 'types' ? brokenTypeErrors.get(name) : promqlErrors(copy);
    const caught = reasons.some((r) => r.includes(expect));
    if (caught) {
      passed += 1;
      console.log(`ok: ${check} check rejects a ${name}`);
    } else {
      failed += 1;
      console.log(`FAILED: ${check} check does not reject a ${name} with "${expect}": the check is broken; got ${JSON.stringify(reasons)}`);
    }
  }

  const types = typeErrors(dashboards);
  for (const error of types.get('(global)') ?? []) {
    failed += 1;
    console.log(`FAILED: ${error}`);
  }
  for (const [name, dashboard] of dashboards) {
    const errors = [
      ...(types.get(name) ?? []).map((e) => `@grafana/schema: ${e}`),
      ...promqlErrors(dashboard),
      ...shapeErrors(dashboard),
    ];
    const count = expressions(dashboard).length;
    if (errors.length === 0) {
      passed += 1;
      console.log(`ok: ${name}: ${allPanels(dashboard).length} panels match @grafana/schema 13, ${count} PromQL expressions parse`);
    } else {
      failed += 1;
      console.log(`FAILED: ${name}:`);
      for (const error of errors) {
        console.log(`  ${error}`);
      }
    }
  }
  console.log(`dashboards: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main();
