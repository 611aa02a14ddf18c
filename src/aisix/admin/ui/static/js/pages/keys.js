// Caller keys: a server-paged list with search, create (plaintext made and hashed in the
// browser, shown once), and a detail page to edit, disable, rotate with grace and delete a
// key, with its usage and budget burn-down.
import { html, useState } from "../lib.js";
import { api, query } from "../api.js";
import {
  useLoad, Table, Pager, SecretOnce, DeleteButton, Notice, LoadError, Chart,
} from "../components.js";
import { ResourceForm } from "../forms.js";
import { newPlaintext, sha256Hex } from "../keygen.js";
import { fmtInt, fmtUsd, fmtUsdAxis, fmtTime, rfc3339 } from "../format.js";

const PAGE = 50;
const RL = [["rps", "Requests / second"], ["rpm", "Requests / minute"], ["rph", "Requests / hour"],
  ["rpd", "Requests / day"], ["tpm", "Tokens / minute"], ["tpd", "Tokens / day"], ["concurrency", "Concurrent requests"]];

export const rateLimitFields = (group = "Rate limit") => RL.map(([k, label]) => ({
  path: `rate_limit.${k}`, label, type: "number", group,
}));

export const KEY_FIELDS = [
  { path: "display_name", label: "Name", help: "Optional, unique" },
  { path: "allowed_models", label: "Allowed models", type: "list", emptyValue: [],
    help: "Aliases, comma separated; * for every alias, empty for none", placeholder: "gpt-4o-prod, chat-*" },
  { path: "team_id", label: "Team id" },
  { path: "user_id", label: "User id" },
  { path: "expires_at", label: "Expires at (UTC)", type: "datetime" },
  { path: "disabled", label: "Disabled", type: "checkbox" },
  ...rateLimitFields(),
  { path: "budget.limit_usd", label: "Limit (USD)", type: "number", group: "Budget" },
  { path: "budget.period", label: "Period", type: "select", options: ["day", "week", "month", "total"], group: "Budget" },
  { path: "budget.mode", label: "Mode", type: "select", options: ["block", "warn"], group: "Budget" },
  { path: "metadata", label: "Metadata (JSON object)", type: "json", group: "Metadata", placeholder: '{"owner": "team-a"}' },
];

function keyState(value) {
  if (value.disabled) return html`<span class="badge off">disabled</span>`;
  if (value.expires_at && Date.parse(value.expires_at) < Date.now()) return html`<span class="badge off">expired</span>`;
  return html`<span class="badge on">active</span>`;
}

async function loadKeys(q, offset) {
  // searched and paged on the server: one page of matches, however many keys there are
  return api("GET", `/apikeys${query({ limit: PAGE, offset, search: q || undefined })}`);
}

const COLUMNS = [
  { label: "Name", render: (e) => html`<a href=${`#/keys/${encodeURIComponent(e.id)}`} data-key-link=${e.id}>${e.value.display_name || e.id}</a>` },
  { label: "Team", render: (e) => e.value.team_id || "–" },
  { label: "Allowed models", render: (e) => (e.value.allowed_models || []).join(", ") || "(none)" },
  { label: "Budget", render: (e) => (e.value.budget ? `${fmtUsd(e.value.budget.limit_usd)} / ${e.value.budget.period}` : "–") },
  { label: "Expires", render: (e) => fmtTime(e.value.expires_at) },
  { label: "State", render: (e) => keyState(e.value) },
];

function CreateKey({ onDone }) {
  const [created, setCreated] = useState(null);
  if (created) {
    return html`<div class="panel" data-testid="key-created">
      <${SecretOnce} label="The new caller key:" value=${created.plaintext} testid="new-key" />
      <p>Key id <code data-testid="new-key-id">${created.id}</code> ·
        <a href=${`#/keys/${encodeURIComponent(created.id)}`}>open it</a></p>
      <button type="button" onClick=${() => onDone(true)}>Done</button>
    </div>`;
  }
  async function create(value) {
    const plaintext = newPlaintext();
    const body = { ...value, key_hash: await sha256Hex(plaintext) };
    const entry = await api("POST", "/apikeys", body);
    setCreated({ id: entry.id, plaintext });
  }
  return html`<div class="panel"><h2>New caller key</h2>
    <p class="help">The plaintext is generated in this browser and shown once; only its SHA-256
      goes to the gateway.</p>
    <${ResourceForm} formId="key-form" fields=${KEY_FIELDS} value=${{}} onSubmit=${create}
      submitLabel="Create key" onCancel=${() => onDone(false)} />
  </div>`;
}

export function Keys() {
  const [q, setQ] = useState("");
  const [typed, setTyped] = useState("");
  const [offset, setOffset] = useState(0);
  const [creating, setCreating] = useState(false);
  const { data, error, reload } = useLoad(() => loadKeys(q, offset), [q, offset]);
  return html`<section>
    <header class="page-head"><h1>Caller keys</h1>
      ${!creating && html`<button type="button" class="primary" data-testid="new-key-button"
        onClick=${() => setCreating(true)}>New key</button>`}</header>
    ${creating && html`<${CreateKey} onDone=${(changed) => { setCreating(false); if (changed) reload(); }} />`}
    <form class="search" onSubmit=${(e) => { e.preventDefault(); setOffset(0); setQ(typed.trim()); }}>
      <input type="search" placeholder="Search name, id, team, user, model, metadata" value=${typed}
        data-testid="key-search" onInput=${(e) => setTyped(e.currentTarget.value)} />
      <button type="submit">Search</button>
    </form>
    ${error && html`<${LoadError} error=${error} what="Caller keys" />`}
    ${data && html`<div>
      <${Table} testid="keys-table" columns=${COLUMNS} rows=${data.list} rowKey=${(e) => e.id}
        empty=${q ? "No key matches." : "No caller keys yet."} />
      <${Pager} offset=${offset} limit=${PAGE} total=${data.total} onChange=${setOffset} />
    </div>`}
  </section>`;
}

function BudgetBurn({ usage }) {
  const b = usage.budget;
  if (!b) return html`<p class="help">This key has no budget.</p>`;
  const pct = (x) => `${Math.min(100, (100 * x) / b.limit_usd).toFixed(1)}%`;
  return html`<div class="burn" data-testid="budget-burn">
    <progress max=${b.limit_usd} value=${Math.min(b.spent_usd, b.limit_usd)} data-testid="budget-bar"></progress>
    <p><strong data-testid="budget-spent">${fmtUsd(b.spent_usd)}</strong>${` spent of ${fmtUsd(b.limit_usd)} (${pct(b.spent_usd)})`
      + ` this ${b.period}, ${fmtUsd(b.reserved_usd || 0)} reserved, ${fmtUsd(b.remaining_usd)} left`
      + ` · mode ${b.mode} · resets ${b.period_resets_at ? fmtTime(b.period_resets_at) : "never"}`}</p>
  </div>`;
}

function KeyUsage({ id }) {
  const usage = useLoad(() => api("GET", `/apikeys/${encodeURIComponent(id)}/usage`), [id]);
  const series = useLoad(async () => {
    // the budget period (or month) so far, hourly; daily (at most ~5 years) for `total` budgets
    const now = Date.now();
    const start = Math.max(usage.data ? Date.parse(usage.data.from) : now - 86400e3, now - 1800 * 86400e3);
    const bucket = now - start > 1900 * 3600e3 ? "day" : "hour";
    return api("GET", `/usage/timeseries${query({
      bucket, from: rfc3339(new Date(start)), to: rfc3339(new Date(now)), api_key_id: id,
    })}`);
  }, [id, usage.data]);
  if (usage.error) return html`<${LoadError} error=${usage.error} what="Usage" />`;
  if (!usage.data) return html`<p>Loading usage…</p>`;
  const u = usage.data;
  const pts = series.data ? series.data.points : [];
  return html`<div data-testid="key-usage">
    <div class="cards">
      <div class="card"><span>Requests</span><strong data-testid="key-requests">${fmtInt(u.requests)}</strong></div>
      <div class="card"><span>Tokens</span><strong>${fmtInt(u.total_tokens)}</strong></div>
      <div class="card"><span>Spend</span><strong data-testid="key-spend">${fmtUsd(u.cost_usd)}</strong></div>
    </div>
    <p class="help">From ${fmtTime(u.from)} to ${fmtTime(u.to)}.</p>
    <${BudgetBurn} usage=${u} />
    ${series.error && html`<${LoadError} error=${series.error} what="Usage over time"
      endpoint="GET /admin/v1/usage/timeseries" />`}
    ${pts.length > 0 && html`<${Chart} title=${`Spend per ${series.data.bucket} (USD)`} x=${pts.map((p) => Date.parse(p.ts) / 1000)}
      series=${[{ label: "cost (USD)", values: pts.map((p) => p.cost_usd) }]} testid="chart-key-spend"
      format=${fmtUsdAxis} />`}
  </div>`;
}

function Rotate({ id, onRotated }) {
  const [grace, setGrace] = useState("0");
  const [result, setResult] = useState(null);
  const [error, setError] = useState(null);
  async function rotate(e) {
    e.preventDefault();
    setError(null);
    const seconds = grace.trim() === "" ? 0 : Number(grace);
    try {
      const out = await api("POST", `/apikeys/${encodeURIComponent(id)}/rotate`,
        { grace_seconds: Number.isFinite(seconds) ? seconds : grace });
      setResult(out);
      onRotated(out.entry);
    } catch (err) {
      setError(err.message);
    }
  }
  return html`<div class="panel"><h2>Rotate</h2>
    <form onSubmit=${rotate} class="inline" id="rotate-form">
      <div class=${`field${error ? " invalid" : ""}`}>
        <label for="grace">Grace period (seconds, 0–86400): the old key keeps working this long</label>
        <input id="grace" name="grace_seconds" value=${grace} onInput=${(e) => setGrace(e.currentTarget.value)} />
        ${error && html`<div class="field-error" role="alert" data-error-for="grace_seconds">${error}</div>`}
      </div>
      <button type="submit" data-testid="rotate">Rotate key</button>
    </form>
    ${result && html`<${SecretOnce} label="The rotated caller key:" value=${result.plaintext} testid="rotated-key" />`}
    ${result && result.entry.value.previous_key_expires_at && html`<p class="help">The previous key works
      until ${fmtTime(result.entry.value.previous_key_expires_at)}.</p>`}
  </div>`;
}

export function KeyDetail({ arg: id }) {
  const { data, error, reload } = useLoad(() => api("GET", `/apikeys/${encodeURIComponent(id)}`), [id]);
  const [saved, setSaved] = useState(null);
  const [version, setVersion] = useState(0);
  if (error) return html`<section><p><a href="#/keys">‹ Caller keys</a></p><${LoadError} error=${error} what="Caller key" /></section>`;
  if (!data) return html`<p>Loading…</p>`;
  async function save(value) {
    const entry = await api("PUT", `/apikeys/${encodeURIComponent(id)}`, value);
    setSaved(`Saved (revision ${entry.revision}).`);
    reload();
  }
  return html`<section>
    <p><a href="#/keys">‹ Caller keys</a></p>
    <header class="page-head"><h1>${data.value.display_name || data.id}</h1>
      ${keyState(data.value)}
      <${DeleteButton} onDelete=${async () => {
        await api("DELETE", `/apikeys/${encodeURIComponent(id)}`);
        location.hash = "#/keys";
      }} /></header>
    <p class="help">id <code>${data.id}</code> · revision <span data-testid="revision">${data.revision}</span> ·
      hash <code>${data.value.key_hash.slice(0, 12)}…</code></p>
    <div class="two-col">
      <div class="panel"><h2>Usage and budget</h2><${KeyUsage} id=${id} /></div>
      <${Rotate} id=${id} onRotated=${() => { setVersion((v) => v + 1); reload(); }} />
    </div>
    <div class="panel"><h2>Settings</h2>
      ${saved && html`<${Notice} testid="saved">${saved}</${Notice}>`}
      <${ResourceForm} key=${`${data.revision}-${version}`} formId="key-edit-form" fields=${KEY_FIELDS}
        value=${data.value} onSubmit=${save} submitLabel="Save changes" />
    </div>
  </section>`;
}
