// Audit log: every admin write (who, when, what, and the diff of `value`, secrets masked),
// from GET /admin/v1/audit with its filters, paged on the server.
import { html, useState } from "../lib.js";
import { api, query } from "../api.js";
import { useLoad, Table, Pager, LoadError } from "../components.js";
import { fmtTime, fromLocalInput, rfc3339 } from "../format.js";

const PAGE = 50;
const KINDS = ["provider_keys", "models", "api_keys", "rate_limit_policies", "budget_policies"];
const ACTIONS = ["create", "update", "delete", "rotate"];

const show = (v) => (v === undefined ? "∅" : JSON.stringify(v));

function Diff({ diff }) {
  const entries = Object.entries(diff || {});
  if (!entries.length) return "–";
  return html`<ul class="diff">${entries.map(([path, d]) => html`<li>
    <code>${path}</code>: <del>${show(d.before)}</del> → <ins>${show(d.after)}</ins></li>`)}</ul>`;
}

const COLUMNS = [
  { label: "Time", render: (e) => fmtTime(e.at) },
  { label: "Actor", render: (e) => html`<code>${e.actor}</code>` },
  { label: "Action", render: (e) => html`<span class="badge" data-action=${e.action}>${e.action}</span>` },
  { label: "Kind", render: (e) => e.kind },
  { label: "Resource", render: (e) => html`<code>${e.resource_id}</code>` },
  { label: "Changes", render: (e) => html`<${Diff} diff=${e.diff} />` },
];

export function Audit() {
  const empty = { kind: "", action: "", resource_id: "", actor: "", from: "", to: "" };
  const [form, setForm] = useState(empty);
  const [filters, setFilters] = useState(empty);
  const [offset, setOffset] = useState(0);
  const { data, error } = useLoad(() => {
    const from = fromLocalInput(filters.from);
    const to = fromLocalInput(filters.to);
    return api("GET", `/audit${query({
      ...filters, from: from && rfc3339(from), to: to && rfc3339(to), limit: PAGE, offset,
    })}`);
  }, [filters, offset]);
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  return html`<section>
    <header class="page-head"><h1>Audit log</h1></header>
    <form class="inline" id="audit-form" onSubmit=${(e) => { e.preventDefault(); setOffset(0); setFilters({ ...form }); }}>
      <label>Kind <select name="kind" value=${form.kind} onChange=${set("kind")}>
        <option value="">(any)</option>${KINDS.map((k) => html`<option value=${k}>${k}</option>`)}</select></label>
      <label>Action <select name="action" value=${form.action} onChange=${set("action")}>
        <option value="">(any)</option>${ACTIONS.map((a) => html`<option value=${a}>${a}</option>`)}</select></label>
      <label>Resource id <input name="resource_id" value=${form.resource_id} onInput=${set("resource_id")} /></label>
      <label>Actor <input name="actor" value=${form.actor} onInput=${set("actor")} /></label>
      <label>From (UTC) <input type="datetime-local" name="from" value=${form.from} onInput=${set("from")} /></label>
      <label>To (UTC) <input type="datetime-local" name="to" value=${form.to} onInput=${set("to")} /></label>
      <button type="submit" class="primary">Filter</button>
    </form>
    ${error && html`<${LoadError} error=${error} what="The audit log" endpoint="GET /admin/v1/audit" />`}
    ${data && html`<div>
      <${Table} testid="audit-table" columns=${COLUMNS} rows=${data.entries} rowKey=${(e) => e.id}
        empty="No audit entries match." />
      <${Pager} offset=${data.offset} limit=${data.limit} total=${data.total} onChange=${setOffset} />
    </div>`}
  </section>`;
}
