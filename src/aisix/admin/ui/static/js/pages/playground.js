// Playground: a chat to an alias on the proxy as a caller key the operator pastes. The key
// stays in this component's memory only (never stored, never sent to the admin API). Shows
// the streamed answer, usage, cost (priced like the gateway, by the model that served) and
// `x-aisix-served-by`. The proxy must allow this page's origin (`proxy.cors.allow_origins`).
import { html, useState, useEffect } from "../lib.js";
import { listAll } from "../api.js";
import { Notice } from "../components.js";
import { fmtInt, fmtUsd } from "../format.js";

function defaultProxyUrl() {
  const configured = document.querySelector('meta[name="aisix-proxy-url"]')?.content;
  if (configured) return configured.replace(/\/+$/, "");
  const port = document.querySelector('meta[name="aisix-proxy-port"]')?.content || "3000";
  return `${location.protocol}//${location.hostname}:${port}`;
}

/** Contract §10.1: cost of a usage object at a model's pricing (0 without pricing). */
export function costOf(usage, pricing) {
  if (!usage || !pricing) return 0;
  const cached = usage.prompt_tokens_details?.cached_tokens || 0;
  const cachedPrice = pricing.cached_input_per_million ?? pricing.input_per_million;
  return ((usage.prompt_tokens - cached) * pricing.input_per_million + cached * cachedPrice
    + usage.completion_tokens * pricing.output_per_million) / 1e6;
}

async function* sseData(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

export function Playground() {
  const [models, setModels] = useState([]);
  const [form, setForm] = useState({ proxy: defaultProxyUrl(), key: "", model: "", message: "Hello from the aisix playground.", stream: true });
  const [out, setOut] = useState(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => { listAll("models").then(setModels, () => setModels([])); }, []);
  const set = (k) => (e) => setForm({ ...form, [k]: e.currentTarget.type === "checkbox" ? e.currentTarget.checked : e.currentTarget.value });

  async function send(e) {
    e.preventDefault();
    setBusy(true);
    const result = { text: "", usage: null, servedBy: null, requestId: null, error: null, status: null };
    setOut({ ...result });
    const body = { model: form.model, messages: [{ role: "user", content: form.message }], stream: form.stream };
    if (form.stream) body.stream_options = { include_usage: true };
    try {
      const response = await fetch(`${form.proxy}/v1/chat/completions`, {
        method: "POST", cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
        headers: { Authorization: `Bearer ${form.key}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      result.status = response.status;
      result.servedBy = response.headers.get("x-aisix-served-by");
      result.requestId = response.headers.get("x-aisix-request-id");
      if (!response.ok) {
        const err = await response.json().catch(() => null);
        result.error = err?.error?.message || `HTTP ${response.status}`;
      } else if (form.stream) {
        for await (const data of sseData(response.body)) {
          if (data === "[DONE]") break;
          const chunk = JSON.parse(data);
          if (chunk.error) { result.error = chunk.error.message; break; }
          result.text += chunk.choices?.[0]?.delta?.content || "";
          if (chunk.usage) result.usage = chunk.usage;
          setOut({ ...result });
        }
      } else {
        const data = await response.json();
        result.text = data.choices?.[0]?.message?.content || "";
        result.usage = data.usage || null;
      }
    } catch (err) {
      result.error = `${err.message}: the proxy at ${form.proxy} is unreachable or does not allow this page's origin `
        + `(${location.origin}); add it to proxy.cors.allow_origins`;
    }
    setOut({ ...result });
    setBusy(false);
  }

  const served = out && (out.servedBy || form.model);
  const pricing = served && models.find((m) => m.value.display_name === served)?.value.pricing;
  return html`<section>
    <header class="page-head"><h1>Playground</h1></header>
    <p class="help">Sends a chat completion to the proxy as the caller key you paste. The key is
      kept in this page's memory only: it is never stored and never sent to the admin API.</p>
    <form id="playground-form" class="resource-form" onSubmit=${send}>
      <fieldset>
        <div class="field"><label for="pg-proxy">Proxy URL</label><input id="pg-proxy" value=${form.proxy} onInput=${set("proxy")} /></div>
        <div class="field"><label for="pg-key">Caller key (plaintext)</label>
          <input id="pg-key" type="password" autocomplete="off" value=${form.key} onInput=${set("key")} /></div>
        <div class="field"><label for="pg-model">Model alias</label>
          <input id="pg-model" list="pg-models" value=${form.model} onInput=${set("model")} />
          <datalist id="pg-models">${models.map((m) => html`<option value=${m.value.display_name} />`)}</datalist></div>
        <div class="field"><label for="pg-message">Message</label>
          <textarea id="pg-message" rows="3" value=${form.message} onInput=${set("message")}></textarea></div>
        <div class="field"><label for="pg-stream">Stream</label>
          <input id="pg-stream" type="checkbox" checked=${form.stream} onChange=${set("stream")} /></div>
      </fieldset>
      <div class="actions"><button type="submit" class="primary" disabled=${busy || !form.key || !form.model}>Send</button></div>
    </form>
    ${out && html`<div class="panel" data-testid="playground-result">
      ${out.error && html`<${Notice} kind="error" testid="playground-error">${out.status ? `${out.status}: ` : ""}${out.error}</${Notice}>`}
      <pre class="answer" data-testid="answer">${out.text}</pre>
      <dl class="facts">
        <dt>Served by</dt><dd data-testid="served-by">${out.servedBy || (out.status === 200 ? form.model : "–")}</dd>
        <dt>Request id</dt><dd><code>${out.requestId || "–"}</code></dd>
        <dt>Usage</dt><dd data-testid="usage">${out.usage
          ? `${fmtInt(out.usage.prompt_tokens)} prompt + ${fmtInt(out.usage.completion_tokens)} completion = ${fmtInt(out.usage.total_tokens)} tokens` : "–"}</dd>
        <dt>Cost</dt><dd data-testid="cost">${out.usage ? (pricing ? fmtUsd(costOf(out.usage, pricing)) : "$0 (no pricing)") : "–"}</dd>
      </dl>
    </div>`}
  </section>`;
}
