// Formatting and time helpers shared by the pages.

export const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
export const fmtUsd = (n) => (n === null || n === undefined ? "–" : `$${Number(n).toFixed(n >= 1 ? 2 : 6)}`);
/** Short USD for chart axes: tiny amounts in exponent form, so ticks stay distinct. */
export function fmtUsdAxis(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "$0";
  return Math.abs(v) < 0.01 ? `$${v.toExponential(1)}` : `$${v.toFixed(2)}`;
}
export const fmtMs = (n) => (n === null || n === undefined ? "–" : `${Number(n).toFixed(1)} ms`);

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace(".000Z", "Z");
}

/** RFC 3339 (UTC, whole seconds) for a Date. */
export const rfc3339 = (d) => d.toISOString().replace(/\.\d{3}Z$/, "Z");

/** A `datetime-local` input value (UTC) for a Date, and back. */
export const toLocalInput = (d) => rfc3339(d).slice(0, 16);
export function fromLocalInput(value) {
  if (!value) return null;
  const d = new Date(`${value}:00Z`);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** The overview's ranges: span in seconds and the time-series bucket. */
export const RANGES = {
  hour: { label: "Last hour", seconds: 3600, bucket: "minute" },
  day: { label: "Last day", seconds: 86400, bucket: "hour" },
  month: { label: "Last 30 days", seconds: 30 * 86400, bucket: "day" },
};

export function rangeBounds(name, now = new Date()) {
  const { seconds } = RANGES[name];
  return { from: rfc3339(new Date(now.getTime() - seconds * 1000)), to: rfc3339(now) };
}

/** CSV text for rows (RFC 4180 quoting), columns in the given order. */
export function toCsv(columns, rows) {
  const cell = (v) => {
    const s = v === null || v === undefined ? "" : String(v);
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [columns.map(cell).join(",")];
  for (const row of rows) lines.push(columns.map((c) => cell(row[c])).join(","));
  return `${lines.join("\r\n")}\r\n`;
}
