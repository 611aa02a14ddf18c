// The dashboard shell: login form, navigation and a hash router over the pages.
import { html, render, useState, useEffect } from "./lib.js";
import { api, session, ApiError } from "./api.js";
import { Overview } from "./pages/overview.js";
import { Keys, KeyDetail } from "./pages/keys.js";
import { Models } from "./pages/models.js";
import { ProviderKeys } from "./pages/provider_keys.js";
import { Policies } from "./pages/policies.js";
import { Health } from "./pages/health.js";
import { Usage } from "./pages/usage.js";
import { Playground } from "./pages/playground.js";
import { Audit } from "./pages/audit.js";

const PAGES = [
  ["overview", "Overview", Overview],
  ["keys", "Caller keys", Keys],
  ["models", "Models", Models],
  ["provider-keys", "Provider keys", ProviderKeys],
  ["policies", "Policies", Policies],
  ["health", "Health", Health],
  ["usage", "Usage", Usage],
  ["playground", "Playground", Playground],
  ["audit", "Audit log", Audit],
];

function currentRoute() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "overview", arg: parts[1] || null };
}

function Login({ message }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await api("GET", "/models?limit=1", undefined, key.trim());
      session.login(key.trim());
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401
        ? "That admin key was refused." : err.message);
    } finally {
      setBusy(false);
    }
  }
  return html`<main class="login">
    <form onSubmit=${submit} id="login-form">
      <h1>aisix</h1>
      <p>Sign in with an admin key (<code>admin.admin_keys</code>). It is kept in this tab's
        session storage only and sent as a Bearer token to the admin API.</p>
      ${message && html`<div class="notice muted" data-testid="login-message">${message}</div>`}
      <label for="admin-key">Admin key</label>
      <input id="admin-key" type="password" autocomplete="off" value=${key}
        onInput=${(e) => setKey(e.currentTarget.value)} autofocus />
      ${error && html`<div class="form-error" role="alert" data-testid="login-error">${error}</div>`}
      <button type="submit" class="primary" disabled=${busy || !key.trim()}>Sign in</button>
    </form>
  </main>`;
}

function App() {
  const [signedIn, setSignedIn] = useState(Boolean(session.key()));
  const [message, setMessage] = useState(null);
  const [route, setRoute] = useState(currentRoute());
  useEffect(() => session.onChange((msg) => {
    setSignedIn(Boolean(session.key()));
    setMessage(msg);
  }), []);
  useEffect(() => {
    const onHash = () => setRoute(currentRoute());
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);
  if (!signedIn) return html`<${Login} message=${message} />`;
  const entry = PAGES.find(([id]) => id === route.page) || PAGES[0];
  const Page = route.page === "keys" && route.arg ? KeyDetail : entry[2];
  return html`<div class="shell">
    <nav>
      <div class="brand">aisix</div>
      ${PAGES.map(([id, label]) => html`<a href=${`#/${id}`} data-nav=${id}
        class=${id === entry[0] ? "active" : ""}>${label}</a>`)}
      <button type="button" class="logout" data-testid="logout"
        onClick=${() => session.logout("Signed out.")}>Sign out</button>
    </nav>
    <main class="page" data-page=${entry[0]}>
      <${Page} key=${`${route.page}/${route.arg || ""}`} arg=${route.arg} />
    </main>
  </div>`;
}

const root = document.getElementById("app");
root.textContent = ""; // the "Loading…" placeholder: render() adds to what is there
render(html`<${App} />`, root);
