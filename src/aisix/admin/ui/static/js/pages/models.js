// Models: single-target aliases (one upstream model through a provider key) and routing
// aliases (failover, round robin, weighted, … over single-target aliases).
import { html, useState, useEffect } from "../lib.js";
import { listAll } from "../api.js";
import { ResourcePage } from "../resource_page.js";
import { rateLimitFields } from "./keys.js";

const STRATEGIES = ["failover", "round_robin", "weighted", "least_latency", "least_busy", "least_cost"];

const singleFields = (providerKeys) => [
  { path: "display_name", label: "Alias" },
  { path: "provider", label: "Provider", placeholder: "openai", help: "lowercase label, also the metrics label" },
  { path: "model_name", label: "Upstream model", placeholder: "gpt-4o" },
  { path: "provider_key_id", label: "Provider key", type: "select",
    options: providerKeys.map((p) => [p.id, p.value.display_name]), blank: "(choose)" },
  { path: "timeout", label: "Timeout (ms)", type: "number", group: "Timeouts and retries" },
  { path: "stream_timeout", label: "Stream timeout (ms)", type: "number", group: "Timeouts and retries" },
  { path: "retries", label: "Retries", type: "number", group: "Timeouts and retries" },
  { path: "pricing.input_per_million", label: "Input, USD per 1M tokens", type: "number", group: "Pricing" },
  { path: "pricing.output_per_million", label: "Output, USD per 1M tokens", type: "number", group: "Pricing" },
  { path: "pricing.cached_input_per_million", label: "Cached input, USD per 1M tokens", type: "number", group: "Pricing" },
  ...rateLimitFields(),
];

const routingFields = [
  { path: "display_name", label: "Alias" },
  { path: "routing.strategy", label: "Strategy", type: "select", options: STRATEGIES, blank: "failover (default)" },
  { path: "routing.targets", label: "Targets", type: "targets",
    help: "One per line: alias[,weight[,priority]] (single-target aliases)", placeholder: "gpt-4o-primary\ngpt-4o-secondary,1,1" },
  { path: "routing.retries", label: "Retries per target", type: "number" },
  { path: "routing.max_fallbacks", label: "Max fallbacks", type: "number" },
  { path: "routing.retry_backoff_ms", label: "Retry backoff (ms)", type: "number" },
  { path: "routing.retry_on_429", label: "Retry on 429", type: "checkbox" },
  { path: "routing.on_all_filtered", label: "When every target cools down", type: "select", options: ["fail", "original_order"] },
  ...rateLimitFields(),
];

const COLUMNS = [
  { label: "Alias", render: (e) => e.value.display_name },
  { label: "Kind", render: (e) => (e.value.routing ? html`<span class="badge">routing · ${e.value.routing.strategy || "failover"}</span>` : "single") },
  { label: "Target", render: (e) => (e.value.routing
    ? e.value.routing.targets.map((t) => t.model).join(" → ")
    : `${e.value.provider}/${e.value.model_name}`) },
  { label: "Pricing (in / out per 1M)", render: (e) => (e.value.pricing
    ? `$${e.value.pricing.input_per_million} / $${e.value.pricing.output_per_million}` : "–") },
  { label: "Id", render: (e) => html`<code>${e.id}</code>` },
];

export function Models() {
  const [providerKeys, setProviderKeys] = useState([]);
  useEffect(() => { listAll("provider_keys").then(setProviderKeys, () => setProviderKeys([])); }, []);
  return html`<${ResourcePage} kind="models" title="Models" noun="model" columns=${COLUMNS}
    variantOf=${(v) => (v.routing ? "routing" : "single")}
    variants=${[
      { id: "single", label: "New model", fields: () => singleFields(providerKeys), base: { provider: "openai" } },
      { id: "routing", label: "New routing alias", fields: routingFields },
    ]} />`;
}
