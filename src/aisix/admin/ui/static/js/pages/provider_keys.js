// Provider keys: the upstream credentials. The secret is write-only: the API returns "***",
// the form never shows it, and saving with the field empty keeps the stored secret.
import { html } from "../lib.js";
import { ResourcePage } from "../resource_page.js";

const ADAPTERS = ["openai", "anthropic", "azure-openai", "gemini", "vertex", "bedrock"];

const fields = (editing) => [
  { path: "display_name", label: "Name" },
  { path: "adapter", label: "Adapter", type: "select", options: ADAPTERS, blank: "openai (default)" },
  { path: "provider", label: "Provider label", placeholder: "openai, deepseek, vllm…" },
  { path: "api_base", label: "API base URL", placeholder: "https://api.openai.com/v1" },
  { path: "secret", label: "Secret", type: "password", keepWhenEmpty: editing,
    help: editing ? "Write-only: leave empty to keep the stored secret" : "Write-only: never shown again" },
  { path: "azure.api_version", label: "Azure API version", group: "Adapter options" },
];

const COLUMNS = [
  { label: "Name", render: (e) => e.value.display_name },
  { label: "Adapter", render: (e) => e.value.adapter },
  { label: "Provider", render: (e) => e.value.provider || "–" },
  { label: "API base", render: (e) => e.value.api_base || "(adapter default)" },
  { label: "Secret", render: () => html`<span class="masked" title="write-only">•••••••• (write-only)</span>` },
  { label: "Id", render: (e) => html`<code>${e.id}</code>` },
];

function withoutSecret(value) {
  const { secret, api_key, ...rest } = value;
  void secret; void api_key;
  return rest;
}

export function ProviderKeys() {
  return html`<${ResourcePage} kind="provider_keys" title="Provider keys" noun="provider key"
    columns=${COLUMNS} prepare=${withoutSecret} variantOf=${() => "edit"}
    variants=${[{ id: "create", label: "New provider key", fields: fields(false) },
      { id: "edit", label: "Edit provider key", fields: fields(true), hidden: true }]} />`;
}
