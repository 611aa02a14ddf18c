// Shared building blocks: data loading, notices, tables, paging, copy, two-step delete, charts.
import { html, useState, useEffect, useRef, uPlot } from "./lib.js";

/**
 * Loads `fn()` when `deps` change; returns {data, error, loading, reload}. An error with
 * status 404 on an endpoint means this gateway does not have it (yet): pages show that.
 */
export function useLoad(fn, deps) {
  const [state, setState] = useState({ data: null, error: null, loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    fn().then(
      (data) => live && setState({ data, error: null, loading: false }),
      (error) => live && setState({ data: null, error, loading: false }),
    );
    return () => { live = false; };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export function Notice({ kind, children, testid }) {
  return html`<div class=${`notice ${kind || "info"}`} role=${kind === "error" ? "alert" : "status"}
    data-testid=${testid}>${children}</div>`;
}

/** The "not available" state for an endpoint this gateway does not serve. */
export function Unavailable({ what, endpoint }) {
  return html`<${Notice} kind="muted" testid="unavailable">
    ${what} is not available on this gateway: <code>${endpoint}</code> answered 404.
  </${Notice}>`;
}

/** Shows a load error: 404 as "not available", anything else as an error. */
export function LoadError({ error, what, endpoint }) {
  if (error.status === 404 && endpoint) return html`<${Unavailable} what=${what} endpoint=${endpoint} />`;
  return html`<${Notice} kind="error">${what}: ${error.message}</${Notice}>`;
}

export function Table({ columns, rows, empty, testid, rowKey }) {
  if (!rows.length) return html`<p class="empty" data-testid=${testid}>${empty || "Nothing yet."}</p>`;
  return html`<table data-testid=${testid}>
    <thead><tr>${columns.map((c) => html`<th class=${c.num ? "num" : ""}>${c.label}</th>`)}</tr></thead>
    <tbody>${rows.map((r, i) => html`<tr key=${rowKey ? rowKey(r) : i} data-row=${rowKey ? rowKey(r) : i}>
      ${columns.map((c) => html`<td class=${c.num ? "num" : ""}>${c.render ? c.render(r) : r[c.key]}</td>`)}
    </tr>`)}</tbody>
  </table>`;
}

export function Pager({ offset, limit, total, onChange }) {
  const last = Math.min(offset + limit, total);
  return html`<div class="pager">
    <button type="button" disabled=${offset === 0} onClick=${() => onChange(Math.max(0, offset - limit))}>‹ Previous</button>
    <span data-testid="pager-status">${total ? `${offset + 1}–${last} of ${total}` : "0 of 0"}</span>
    <button type="button" disabled=${last >= total} onClick=${() => onChange(offset + limit)}>Next ›</button>
  </div>`;
}

/** Copies text to the clipboard (the async Clipboard API, else a selected textarea). */
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    await navigator.clipboard.writeText(text);
    return;
  }
  const area = document.createElement("textarea");
  area.value = text;
  document.body.appendChild(area);
  area.select();
  const ok = document.execCommand("copy");
  area.remove();
  if (!ok) throw new Error("the browser refused to copy");
}

/** A plaintext shown once, with a copy button. */
export function SecretOnce({ label, value, testid }) {
  const [copied, setCopied] = useState(null);
  return html`<div class="secret-once" data-testid=${testid}>
    <p><strong>${label}</strong> It is shown only now: aisix stores only its SHA-256 hash.</p>
    <div class="copy-row">
      <input type="text" readonly value=${value} data-testid="plaintext" onFocus=${(e) => e.currentTarget.select()} />
      <button type="button" data-testid="copy" onClick=${() => copyText(value).then(
        () => setCopied("Copied to the clipboard."), (err) => setCopied(`Copy failed: ${err.message}`))}>Copy</button>
    </div>
    ${copied && html`<small data-testid="copy-status">${copied}</small>`}
  </div>`;
}

/** A delete button that asks for a second click. */
export function DeleteButton({ onDelete, label }) {
  const [armed, setArmed] = useState(false);
  const [error, setError] = useState(null);
  return html`<span class="delete">
    <button type="button" class=${armed ? "danger" : ""} data-testid="delete"
      onClick=${() => {
        if (!armed) { setArmed(true); return; }
        setArmed(false);
        onDelete().catch((err) => setError(err.message));
      }}>${armed ? "Confirm delete" : label || "Delete"}</button>
    ${error && html`<span class="field-error" role="alert">${error}</span>`}
  </span>`;
}

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];

/** A uPlot line chart: `x` in epoch seconds, `series` [{label, values}]. */
export function Chart({ title, x, series, testid, format }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current) return undefined;
    const width = Math.max(280, box.current.clientWidth || 480);
    const plot = new uPlot({
      width, height: 180,
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
        points: { show: true, size: 4 },
        value: format ? (u, v) => (v === null ? "–" : format(v)) : undefined,
      }))],
      axes: [{}, { size: 70, values: format ? (u, vals) => vals.map((v) => format(v)) : undefined }],
      scales: { x: { time: true } },
    }, [x, ...series.map((s) => s.values)], box.current);
    return () => plot.destroy();
  }, [x, series]);
  return html`<figure class="chart" data-testid=${testid}>
    <figcaption>${title}</figcaption>
    <div ref=${box}></div>
  </figure>`;
}
