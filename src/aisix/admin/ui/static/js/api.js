// The admin API client: the admin key lives in sessionStorage (this tab only, gone when it
// closes, never in a cookie, so there is no CSRF surface) and goes out as a Bearer token.
// Any 401 forgets the key and sends the operator back to the login form with a message.

const KEY = "aisix.adminKey";
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const session = {
  key: () => sessionStorage.getItem(KEY),
  login(key) { sessionStorage.setItem(KEY, key); emit(null); },
  logout(message) { sessionStorage.removeItem(KEY); emit(message || null); },
  onChange(fn) { listeners.add(fn); return () => listeners.delete(fn); },
};

function emit(message) { for (const fn of listeners) fn(message); }

/** Calls the admin API; resolves to the parsed JSON body, rejects with an ApiError. */
export async function api(method, path, body, key) {
  const token = key || session.key();
  const headers = { Authorization: `Bearer ${token || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/admin/v1${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, `the admin API is unreachable (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (response.ok) return data;
  const message = (data && data.error_msg) || `HTTP ${response.status}`;
  if (response.status === 401 && !key) {
    session.logout("The admin key was refused (401): log in again.");
  }
  throw new ApiError(response.status, message);
}

/** Builds a query string from the entries of `params` that are set. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** Every entry of a resource kind, read in pages of 1000 (the API's largest page). */
export async function listAll(kind) {
  const out = [];
  for (let offset = 0; ; offset += 1000) {
    const page = await api("GET", `/${kind}${query({ limit: 1000, offset })}`);
    out.push(...page.list);
    if (out.length >= page.total || page.list.length === 0) return out;
  }
}
