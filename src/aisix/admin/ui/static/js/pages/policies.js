// Rate-limit and budget policies: limits and spend caps shared by a key, model, team or user.
import { html } from "../lib.js";
import { ResourcePage } from "../resource_page.js";
import { fmtUsd } from "../format.js";

const RATE_FIELDS = [
  { path: "name", label: "Name" },
  { path: "scope", label: "Scope", type: "select", options: ["api_key", "model", "team", "member", "team_member"] },
  { path: "scope_ref", label: "Scope reference", help: "a caller key id, a model id, a team_id or a user_id (by scope)" },
  { path: "window", label: "Window", type: "select", options: ["second", "minute", "hour", "day"] },
  { path: "max_requests", label: "Max requests", type: "number" },
  { path: "max_tokens", label: "Max tokens", type: "number" },
];

const BUDGET_FIELDS = [
  { path: "name", label: "Name" },
  { path: "scope", label: "Scope", type: "select", options: ["team", "user", "provider_key", "model"] },
  { path: "scope_ref", label: "Scope reference", help: "a team_id, a user_id, a provider key id or a model id (by scope)" },
  { path: "limit_usd", label: "Limit (USD)", type: "number" },
  { path: "period", label: "Period", type: "select", options: ["day", "week", "month", "total"] },
  { path: "mode", label: "Mode", type: "select", options: ["block", "warn"], blank: "block (default)" },
];

const common = [
  { label: "Name", render: (e) => e.value.name },
  { label: "Scope", render: (e) => `${e.value.scope} ${e.value.scope_ref}` },
];

export function Policies() {
  return html`<div>
    <${ResourcePage} kind="rate_limit_policies" title="Rate-limit policies" noun="rate-limit policy"
      columns=${[...common,
        { label: "Limit", render: (e) => [e.value.max_requests && `${e.value.max_requests} requests`,
          e.value.max_tokens && `${e.value.max_tokens} tokens`].filter(Boolean).join(", ") + ` per ${e.value.window}` }]}
      variants=${[{ id: "rate", label: "New rate-limit policy", fields: RATE_FIELDS }]} />
    <${ResourcePage} kind="budget_policies" title="Budget policies" noun="budget policy"
      columns=${[...common,
        { label: "Budget", render: (e) => `${fmtUsd(e.value.limit_usd)} per ${e.value.period} (${e.value.mode || "block"})` }]}
      variants=${[{ id: "budget", label: "New budget policy", fields: BUDGET_FIELDS }]} />
  </div>`;
}
