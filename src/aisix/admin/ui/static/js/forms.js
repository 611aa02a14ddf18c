// A generic resource form: fields are described by their JSON path in the resource's `value`
// (`rate_limit.rpm`, `budget.limit_usd`), so the admin API's `error_msg`, which names the
// field path, is shown next to the field it is about.
import { html, useState } from "./lib.js";

/** The field path an admin API error message names, or null. */
export function errorPath(message) {
  const path = "([A-Za-z_][A-Za-z0-9_]*(?:\\[\\d+\\]|\\.[A-Za-z_][A-Za-z0-9_]*)*)";
  const patterns = [
    /^(?:unknown|missing) field "([^"]+)"/, // unknown field "budget.limit"
    new RegExp(`^${path}: `), // rate_limit.rpm: Input should be greater than 0
    new RegExp(`^${path} "`), // provider_key_id "…" does not exist; display_name "…" already in use
  ];
  for (const re of patterns) {
    const m = re.exec(message);
    if (m) return m[1];
  }
  return null;
}

/** The form field an error path belongs to: the longest field path that prefixes it. */
export function fieldFor(fields, path) {
  if (!path) return null;
  let best = null;
  for (const f of fields) {
    const p = f.path;
    if (path === p || path.startsWith(`${p}.`) || path.startsWith(`${p}[`)) {
      if (!best || p.length > best.path.length) best = f;
    }
  }
  return best;
}

function getPath(obj, path) {
  let cur = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = cur[part];
  }
  return cur;
}

function setPath(obj, path, value) {
  const parts = path.split(".");
  let cur = obj;
  for (const part of parts.slice(0, -1)) {
    if (cur[part] === null || typeof cur[part] !== "object") cur[part] = {};
    cur = cur[part];
  }
  const last = parts[parts.length - 1];
  if (value === undefined) delete cur[last];
  else cur[last] = value;
}

function prune(obj) {
  for (const [k, v] of Object.entries(obj)) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      prune(v);
      if (Object.keys(v).length === 0) delete obj[k];
    }
  }
  return obj;
}

/** The text an input shows for a stored value. */
function toText(field, value) {
  if (value === undefined || value === null) return field.type === "checkbox" ? false : "";
  switch (field.type) {
    case "checkbox": return Boolean(value);
    case "list": return value.join(", ");
    case "json": return JSON.stringify(value, null, 2);
    case "targets": return value.map((t) => [t.model, t.weight ?? "", t.priority ?? ""].join(",").replace(/,+$/, "")).join("\n");
    case "datetime": {
      const d = new Date(value);
      return Number.isNaN(d.getTime()) ? String(value) : d.toISOString().slice(0, 19);
    }
    default: return String(value);
  }
}

/** The stored value for an input's text; undefined means "leave the field out". */
function fromText(field, text) {
  if (field.type === "checkbox") return text ? true : undefined;
  const s = String(text ?? "").trim();
  if (s === "") return field.emptyValue === undefined ? undefined : structuredClone(field.emptyValue);
  switch (field.type) {
    case "number": return Number.isFinite(Number(s)) ? Number(s) : s;
    case "list": return s.split(/[\s,]+/).filter(Boolean);
    case "json": try { return JSON.parse(s); } catch { return s; }
    case "targets":
      return s.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
        const [model, weight, priority] = line.split(",").map((x) => x.trim());
        const t = { model };
        if (weight) t.weight = Number.isFinite(Number(weight)) ? Number(weight) : weight;
        if (priority) t.priority = Number.isFinite(Number(priority)) ? Number(priority) : priority;
        return t;
      });
    case "datetime": // datetime-local gives "YYYY-MM-DDTHH:MM[:SS]", taken as UTC
      if (/^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(s)) return `${s}:00Z`;
      return /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$/.test(s) ? `${s}Z` : s;
    default: return s;
  }
}

export function initialState(fields, value) {
  const state = {};
  for (const f of fields) state[f.path] = toText(f, getPath(value || {}, f.path));
  return state;
}

/** The resource value: `base` (fields the form does not show are kept) with the form's. */
export function buildValue(fields, state, base) {
  const value = structuredClone(base || {});
  for (const f of fields) {
    if (f.keepWhenEmpty && fromText(f, state[f.path]) === undefined) continue;
    setPath(value, f.path, fromText(f, state[f.path]));
  }
  return prune(value);
}

function Input({ field, value, onInput }) {
  const id = `f-${field.path.replace(/[^A-Za-z0-9]/g, "-")}`;
  const common = { id, name: field.path, "data-field": field.path };
  if (field.type === "checkbox") {
    return html`<input type="checkbox" ...${common} checked=${value}
      onChange=${(e) => onInput(e.currentTarget.checked)} />`;
  }
  if (field.type === "select") {
    return html`<select ...${common} value=${value} onChange=${(e) => onInput(e.currentTarget.value)}>
      ${field.blank !== false && html`<option value="">${field.blank || "(not set)"}</option>`}
      ${field.options.map((o) => {
        const [v, label] = Array.isArray(o) ? o : [o, o];
        return html`<option value=${v}>${label}</option>`;
      })}
    </select>`;
  }
  if (field.type === "json" || field.type === "targets") {
    return html`<textarea ...${common} rows="4" value=${value} placeholder=${field.placeholder || ""}
      onInput=${(e) => onInput(e.currentTarget.value)}></textarea>`;
  }
  const type = { number: "text", password: "password", datetime: "datetime-local" }[field.type] || "text";
  return html`<input type=${type} ...${common} value=${value} autocomplete="off"
    step=${field.type === "datetime" ? "1" : undefined}
    inputmode=${field.type === "number" ? "decimal" : undefined}
    placeholder=${field.placeholder || ""} onInput=${(e) => onInput(e.currentTarget.value)} />`;
}

/**
 * A form over `fields` for a resource `value`; `onSubmit(value)` returns a promise and may
 * reject with an ApiError, whose message is placed next to the field it names.
 */
export function ResourceForm({ fields, value, onSubmit, submitLabel, onCancel, formId }) {
  const [state, setState] = useState(() => initialState(fields, value));
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const field = error ? fieldFor(fields, errorPath(error)) : null;

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onSubmit(buildValue(fields, state, value));
    } catch (err) {
      setError(err.message || String(err));
    } finally {
      setBusy(false);
    }
  }

  const groups = [];
  for (const f of fields) {
    const g = f.group || "";
    if (!groups.length || groups[groups.length - 1].name !== g) groups.push({ name: g, fields: [] });
    groups[groups.length - 1].fields.push(f);
  }
  return html`<form class="resource-form" id=${formId} onSubmit=${submit} novalidate>
    ${groups.map((g) => html`<fieldset>
      ${g.name && html`<legend>${g.name}</legend>`}
      ${g.fields.map((f) => html`<div class=${`field${field === f ? " invalid" : ""}`}>
        <label for=${`f-${f.path.replace(/[^A-Za-z0-9]/g, "-")}`}>${f.label}</label>
        <${Input} field=${f} value=${state[f.path]}
          onInput=${(v) => setState({ ...state, [f.path]: v })} />
        ${f.help && html`<small class="help">${f.help}</small>`}
        ${field === f && html`<div class="field-error" role="alert" data-error-for=${f.path}>${error}</div>`}
      </div>`)}
    </fieldset>`)}
    ${error && !field && html`<div class="form-error" role="alert">${error}</div>`}
    <div class="actions">
      <button type="submit" class="primary" disabled=${busy}>${submitLabel || "Save"}</button>
      ${onCancel && html`<button type="button" onClick=${onCancel}>Cancel</button>`}
    </div>
  </form>`;
}
