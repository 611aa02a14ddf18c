// One page for a resource kind of the admin API: a paged list, a create form, and per-row
// edit and delete. The kind's fields are form field specs (see forms.js); `fieldsFor(value)`
// may pick them by the value (single-target vs routing models).
import { html, useState } from "./lib.js";
import { api, query } from "./api.js";
import { useLoad, Table, Pager, DeleteButton, LoadError, Notice } from "./components.js";
import { ResourceForm } from "./forms.js";

const PAGE = 50;

/**
 * `kind`: admin path segment; `title`; `columns`: table columns over envelopes;
 * `variants`: [{id, label, fields, base?}] forms to create (edit picks `variantOf(value)`);
 * `prepare(value)`: the value a form starts from (e.g. without the masked secret).
 */
export function ResourcePage({ kind, title, noun, columns, variants, variantOf, prepare, intro }) {
  const [offset, setOffset] = useState(0);
  const [editing, setEditing] = useState(null); // {variant, entry|null}
  const [flash, setFlash] = useState(null);
  const { data, error, reload } = useLoad(() => api("GET", `/${kind}${query({ limit: PAGE, offset })}`), [kind, offset]);
  const pick = (entry) => variants.find((v) => v.id === (variantOf ? variantOf(entry.value) : variants[0].id));

  async function save(value) {
    const entry = editing.entry;
    const out = entry
      ? await api("PUT", `/${kind}/${encodeURIComponent(entry.id)}`, value)
      : await api("POST", `/${kind}`, value);
    setFlash(`${entry ? "Saved" : "Created"} ${noun} ${out.value.display_name || out.value.name || out.id}.`);
    setEditing(null);
    reload();
  }
  const actions = {
    label: "", render: (e) => html`<span class="row-actions">
      <button type="button" data-testid="edit" onClick=${() => { setFlash(null); setEditing({ variant: pick(e), entry: e }); }}>Edit</button>
      <${DeleteButton} onDelete=${async () => {
        await api("DELETE", `/${kind}/${encodeURIComponent(e.id)}`);
        setFlash(`Deleted ${noun} ${e.value.display_name || e.value.name || e.id}.`);
        reload();
      }} />
    </span>`,
  };
  const start = editing && (editing.entry ? (prepare ? prepare(editing.entry.value) : editing.entry.value) : (editing.variant.base || {}));
  return html`<section data-kind=${kind}>
    <header class="page-head"><h1>${title}</h1>
      ${!editing && variants.filter((v) => !v.hidden).map((v) => html`<button type="button" class="primary" data-testid=${`new-${v.id}`}
        onClick=${() => { setFlash(null); setEditing({ variant: v, entry: null }); }}>${v.label}</button>`)}
    </header>
    ${intro && html`<p class="help">${intro}</p>`}
    ${flash && html`<${Notice} testid="flash">${flash}</${Notice}>`}
    ${editing && html`<div class="panel">
      <h2>${editing.entry ? `Edit ${editing.entry.value.display_name || editing.entry.value.name || editing.entry.id}` : editing.variant.label}</h2>
      <${ResourceForm} key=${editing.entry ? editing.entry.id : editing.variant.id} formId=${`${kind}-form`}
        fields=${typeof editing.variant.fields === "function" ? editing.variant.fields() : editing.variant.fields}
        value=${start} onSubmit=${save} submitLabel=${editing.entry ? "Save" : "Create"}
        onCancel=${() => setEditing(null)} />
    </div>`}
    ${error && html`<${LoadError} error=${error} what=${title} />`}
    ${data && html`<div>
      <${Table} testid=${`${kind}-table`} columns=${[...columns, actions]} rows=${data.list}
        rowKey=${(e) => e.id} empty=${`No ${title.toLowerCase()} yet.`} />
      <${Pager} offset=${offset} limit=${PAGE} total=${data.total} onChange=${setOffset} />
    </div>`}
  </section>`;
}
