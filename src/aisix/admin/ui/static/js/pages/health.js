// Health: the runtime state of every model target (GET /admin/v1/models/status), refreshed
// every 5 seconds: healthy or cooling down, why, until when, latency and requests in flight.
import { html, useEffect } from "../lib.js";
import { api } from "../api.js";
import { useLoad, Table, LoadError } from "../components.js";
import { fmtTime, fmtMs, fmtInt } from "../format.js";

const COLUMNS = [
  { label: "Model", render: (m) => m.display_name },
  { label: "Kind", render: (m) => m.kind },
  { label: "State", render: (m) => html`<span class=${`badge ${m.status === "healthy" ? "on" : m.status === "cooldown" ? "off" : ""}`}
    data-status=${m.status}>${m.status}</span>` },
  { label: "Cooldown until", render: (m) => fmtTime(m.cooldown_until) },
  { label: "Reason", render: (m) => m.status_reason || "–" },
  { label: "Last error", render: (m) => (m.last_error
    ? `${fmtTime(m.last_error.at)} · ${m.last_error.status ?? ""} ${m.last_error.message || ""}` : "–") },
  { label: "Latency (EWMA)", num: true, render: (m) => fmtMs(m.latency_ewma_ms) },
  { label: "In flight", num: true, render: (m) => (m.in_flight === undefined ? "–" : fmtInt(m.in_flight)) },
];

export function Health() {
  const { data, error, reload } = useLoad(() => api("GET", "/models/status"), []);
  useEffect(() => {
    const timer = setInterval(reload, 5000);
    return () => clearInterval(timer);
  }, []);
  const cooling = data ? data.filter((m) => m.status === "cooldown").length : 0;
  return html`<section>
    <header class="page-head"><h1>Health</h1>
      <button type="button" onClick=${reload}>Refresh</button></header>
    ${error && html`<${LoadError} error=${error} what="Model status" />`}
    ${data && html`<div>
      <p data-testid="health-summary">${data.length} models · ${cooling} cooling down</p>
      <${Table} testid="health-table" columns=${COLUMNS} rows=${data} rowKey=${(m) => m.id}
        empty="No models configured." />
    </div>`}
  </section>`;
}
