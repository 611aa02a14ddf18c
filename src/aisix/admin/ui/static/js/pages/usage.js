// Usage explorer: usage grouped by caller key, model, team or provider key over a time range
// (GET /admin/v1/usage, hourly aggregates), exported as CSV in the browser.
import { html, useState } from "../lib.js";
import { api, query } from "../api.js";
import { useLoad, Table, LoadError } from "../components.js";
import { fmtInt, fmtUsd, toLocalInput, fromLocalInput, rfc3339, toCsv } from "../format.js";

const GROUPS = [["api_key", "Caller key"], ["model", "Model"], ["team", "Team"], ["provider_key", "Provider key"]];
const CSV_COLUMNS = ["key", "display_name", "requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "errors"];

function columns(groupBy) {
  const label = GROUPS.find(([g]) => g === groupBy)[1];
  return [
    { label, render: (r) => (groupBy === "api_key" && r.key
      ? html`<a href=${`#/keys/${encodeURIComponent(r.key)}`}>${r.display_name || r.key}</a>`
      : (r.display_name || r.key || html`<em>(none)</em>`)) },
    { label: "Requests", num: true, render: (r) => fmtInt(r.requests) },
    { label: "Prompt tokens", num: true, render: (r) => fmtInt(r.prompt_tokens) },
    { label: "Completion tokens", num: true, render: (r) => fmtInt(r.completion_tokens) },
    { label: "Total tokens", num: true, render: (r) => fmtInt(r.total_tokens) },
    { label: "Spend", num: true, render: (r) => fmtUsd(r.cost_usd) },
  ];
}

export function Usage() {
  const now = new Date();
  const [form, setForm] = useState({
    group_by: "api_key", from: toLocalInput(new Date(now.getTime() - 86400e3)), to: toLocalInput(now),
  });
  const [params, setParams] = useState(form);
  const [csv, setCsv] = useState(null);
  const { data, error } = useLoad(() => {
    const from = fromLocalInput(params.from);
    const to = fromLocalInput(params.to);
    return api("GET", `/usage${query({
      group_by: params.group_by, from: from && rfc3339(from), to: to && rfc3339(to),
    })}`);
  }, [params]);

  function exportCsv() {
    const text = toCsv(CSV_COLUMNS, data.rows);
    if (csv) URL.revokeObjectURL(csv.url);
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const name = `aisix-usage-${data.group_by}-${data.from}-${data.to}.csv`.replace(/:/g, "");
    setCsv({ url, name, rows: data.rows.length });
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
  }
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.value });
  return html`<section>
    <header class="page-head"><h1>Usage</h1></header>
    <form class="inline" id="usage-form" onSubmit=${(e) => { e.preventDefault(); setParams({ ...form }); }}>
      <label>Group by <select name="group_by" value=${form.group_by} onChange=${set("group_by")}>
        ${GROUPS.map(([g, label]) => html`<option value=${g}>${label}</option>`)}</select></label>
      <label>From (UTC) <input type="datetime-local" name="from" value=${form.from} onInput=${set("from")} /></label>
      <label>To (UTC) <input type="datetime-local" name="to" value=${form.to} onInput=${set("to")} /></label>
      <button type="submit" class="primary">Show</button>
    </form>
    ${error && html`<${LoadError} error=${error} what="Usage" />`}
    ${data && html`<div>
      <p class="help">${data.from} – ${data.to} (hourly aggregates: the range is widened to whole hours).</p>
      <${Table} testid="usage-table" columns=${columns(data.group_by)} rows=${data.rows}
        rowKey=${(r) => String(r.key)} empty="No usage in this range." />
      <div class="actions">
        <button type="button" data-testid="export-csv" disabled=${!data.rows.length} onClick=${exportCsv}>Export CSV</button>
        ${csv && html`<a href=${csv.url} download=${csv.name} data-testid="csv-link">${csv.name}</a>
          <small>(${csv.rows} rows)</small>`}
      </div>
    </div>`}
  </section>`;
}
