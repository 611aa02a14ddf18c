// Overview: requests, errors, latency, tokens and spend over the last hour / day / 30 days
// (usage/timeseries), and the top caller keys and models (usage/top). Where a gateway lacks
// those read endpoints the totals and top lists fall back to the hourly /usage aggregates.
import { html, useState, useMemo } from "../lib.js";
import { api, query } from "../api.js";
import { useLoad, Chart, Table, Notice, Unavailable, LoadError } from "../components.js";
import { RANGES, rangeBounds, fmtInt, fmtUsd, fmtMs, fmtUsdAxis } from "../format.js";

const TS = "/usage/timeseries";
const TOP = "/usage/top";

async function loadTop(by, bounds) {
  try {
    const data = await api("GET", `${TOP}${query({ by, metric: "cost_usd", limit: 10, ...bounds })}`);
    return { rows: data.rows, fallback: false };
  } catch (err) {
    if (err.status !== 404) throw err;
    const data = await api("GET", `/usage${query({ group_by: by, ...bounds })}`);
    return { rows: data.rows.slice(0, 10), fallback: true };
  }
}

async function loadOverview(range) {
  const bounds = rangeBounds(range);
  const [series, keys, models] = await Promise.all([
    api("GET", `${TS}${query({ bucket: RANGES[range].bucket, ...bounds })}`).catch((err) => ({ error: err })),
    loadTop("api_key", bounds),
    loadTop("model", bounds),
  ]);
  let totals;
  if (!series.error) {
    totals = series.points.reduce((t, p) => ({
      requests: t.requests + p.requests, errors: t.errors + p.errors,
      total_tokens: t.total_tokens + p.total_tokens, cost_usd: t.cost_usd + p.cost_usd,
    }), { requests: 0, errors: 0, total_tokens: 0, cost_usd: 0 });
  } else {
    const all = await api("GET", `/usage${query({ group_by: "model", ...bounds })}`);
    totals = all.rows.reduce((t, r) => ({
      requests: t.requests + r.requests, errors: null,
      total_tokens: t.total_tokens + r.total_tokens, cost_usd: t.cost_usd + r.cost_usd,
    }), { requests: 0, errors: null, total_tokens: 0, cost_usd: 0 });
  }
  return { series, keys, models, totals };
}

function Charts({ series }) {
  const data = useMemo(() => {
    const pts = series.points;
    const col = (k) => pts.map((p) => (p[k] === undefined ? null : p[k]));
    return {
      x: pts.map((p) => Date.parse(p.ts) / 1000),
      traffic: [{ label: "requests", values: col("requests") }, { label: "errors", values: col("errors") }],
      latency: [{ label: "p50", values: col("latency_p50_ms") }, { label: "p95", values: col("latency_p95_ms") }],
      tokens: [{ label: "prompt", values: col("prompt_tokens") }, { label: "completion", values: col("completion_tokens") }],
      spend: [{ label: "cost (USD)", values: col("cost_usd") }],
    };
  }, [series]);
  if (!series.points.length) return html`<p class="empty">No traffic in this range.</p>`;
  return html`<div class="charts">
    <${Chart} title="Requests and errors" x=${data.x} series=${data.traffic} testid="chart-requests" />
    <${Chart} title="Latency (ms)" x=${data.x} series=${data.latency} testid="chart-latency" />
    <${Chart} title="Tokens" x=${data.x} series=${data.tokens} testid="chart-tokens" />
    <${Chart} title="Spend (USD)" x=${data.x} series=${data.spend} testid="chart-spend"
      format=${fmtUsdAxis} />
  </div>`;
}

const topColumns = (label, link) => [
  { label, render: (r) => (link && r.key
    ? html`<a href=${`#/keys/${encodeURIComponent(r.key)}`}>${r.display_name || r.key}</a>`
    : (r.display_name || r.key || "–")) },
  { label: "Requests", num: true, render: (r) => fmtInt(r.requests) },
  { label: "Tokens", num: true, render: (r) => fmtInt(r.total_tokens) },
  { label: "Spend", num: true, render: (r) => fmtUsd(r.cost_usd) },
];

export function Overview() {
  const [range, setRange] = useState("day");
  const { data, error, loading } = useLoad(() => loadOverview(range), [range]);
  return html`<section>
    <header class="page-head">
      <h1>Overview</h1>
      <div class="segmented" role="group">
        ${Object.entries(RANGES).map(([id, r]) => html`<button type="button" data-range=${id}
          class=${id === range ? "active" : ""} onClick=${() => setRange(id)}>${r.label}</button>`)}
      </div>
    </header>
    ${error && html`<${LoadError} error=${error} what="Usage" />`}
    ${loading && !data && html`<p>Loading…</p>`}
    ${data && html`<div>
      <div class="cards" data-testid="totals">
        <div class="card"><span>Requests</span><strong data-testid="total-requests">${fmtInt(data.totals.requests)}</strong></div>
        <div class="card"><span>Errors</span><strong data-testid="total-errors">${fmtInt(data.totals.errors)}</strong></div>
        <div class="card"><span>Tokens</span><strong data-testid="total-tokens">${fmtInt(data.totals.total_tokens)}</strong></div>
        <div class="card"><span>Spend</span><strong data-testid="total-spend">${fmtUsd(data.totals.cost_usd)}</strong></div>
        ${!data.series.error && html`<div class="card"><span>p95 latency (max)</span><strong>${fmtMs(
          Math.max(0, ...data.series.points.map((p) => p.latency_p95_ms || 0)))}</strong></div>`}
      </div>
      ${data.series.error
        ? (data.series.error.status === 404
          ? html`<${Unavailable} what="Usage over time (charts)" endpoint="GET /admin/v1/usage/timeseries" />`
          : html`<${Notice} kind="error">Time series: ${data.series.error.message}</${Notice}>`)
        : html`<${Charts} series=${data.series} />`}
      ${(data.keys.fallback || data.series.error) && html`<p class="help">Totals and top lists from the
        hourly aggregates of <code>GET /admin/v1/usage</code>.</p>`}
      <div class="two-col">
        <div><h2>Top caller keys</h2><${Table} testid="top-keys" columns=${topColumns("Key", true)}
          rows=${data.keys.rows} empty="No usage in this range." /></div>
        <div><h2>Top models</h2><${Table} testid="top-models" columns=${topColumns("Model", false)}
          rows=${data.models.rows} empty="No usage in this range." /></div>
      </div>
    </div>`}
  </section>`;
}
