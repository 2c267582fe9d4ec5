// DOM construction and formatting helpers. Every piece of text from the API
// goes through textContent (never innerHTML), so nothing it returns can become
// markup or script.

/**
 * Create an element.
 *   h('button', { class: 'btn', type: 'button', on: { click: fn } }, 'Save')
 * Props: `class`, `text`, `on` (event listeners), `dataset`, boolean
 * attributes (true → present, false/null/undefined → absent), anything else
 * is set as an attribute. Children: nodes, strings, numbers, arrays, or
 * null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
    else if (k === 'text') el.textContent = String(v);
    else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = Boolean(v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Inline SVG icon from a small fixed set (paths are constants, not data). */
const ICONS = {
  copy: 'M8 8h11v13H8zM5 16H4V3h11v1',
  plus: 'M12 5v14M5 12h14',
  refresh: 'M20 11A8 8 0 1 0 18 17M20 4v7h-7',
  key: 'M14 10a4 4 0 1 1-1.2-2.8L21 15v3h-3v-2h-2v-2h-2',
  search: 'M11 18a7 7 0 1 1 0-14 7 7 0 0 1 0 14zM21 21l-5-5',
  chart: 'M4 20V10M10 20V4M16 20v-7M22 20H2',
  logout: 'M15 4h4v16h-4M10 8l-4 4 4 4M6 12h10',
  check: 'M5 12l5 5 9-10',
};
export function icon(name) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name] || '');
  svg.appendChild(path);
  return svg;
}

// ---------------------------------------------------------------------------
// Formatting

const intFmt = new Intl.NumberFormat('en-US');
const compactFmt = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

export function fmtInt(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return Math.abs(n) >= 1e6 ? compactFmt.format(n) : intFmt.format(Math.round(n));
}

export function fmtNum(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

/** A ratio 0..1 as a percentage. */
export function fmtPct(r) {
  if (r === null || r === undefined || Number.isNaN(r)) return '—';
  const p = r * 100;
  return `${p >= 10 || p === 0 ? p.toFixed(0) : p.toFixed(1)} %`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '—';
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 100) return `${ms.toFixed(0)} ms`;
  if (ms >= 10) return `${ms.toFixed(1)} ms`;
  return `${ms.toFixed(2)} ms`;
}

/** Seconds as "3 d 4 h", "5 m 10 s". */
export function fmtDuration(secs) {
  if (secs === null || secs === undefined || Number.isNaN(secs)) return '—';
  secs = Math.max(0, Math.floor(secs));
  const d = Math.floor(secs / 86400);
  const hh = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (d > 0) return `${d} d ${hh} h`;
  if (hh > 0) return `${hh} h ${m} m`;
  if (m > 0) return `${m} m ${s} s`;
  return `${s} s`;
}

/** Unix ms → "12 s ago" / "in 3 d" / "never". */
export function fmtAgo(ms, now = Date.now()) {
  if (!ms) return 'never';
  const diff = Math.round((now - ms) / 1000);
  const future = diff < 0;
  const a = Math.abs(diff);
  let txt;
  if (a < 5) return future ? 'in a moment' : 'just now';
  if (a < 60) txt = `${a} s`;
  else if (a < 3600) txt = `${Math.floor(a / 60)} min`;
  else if (a < 86400) txt = `${Math.floor(a / 3600)} h`;
  else txt = `${Math.floor(a / 86400)} d`;
  return future ? `in ${txt}` : `${txt} ago`;
}

const dtFmt = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** A Date of `ms`, or null for none or one no Date holds (beyond ±8.64e15 ms). */
function dateOf(ms) {
  if (!ms) return null;
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function fmtDateTime(ms) {
  const d = dateOf(ms);
  return d ? dtFmt.format(d) : '—';
}

/** Time of day for today's timestamps, date and time otherwise. */
export function fmtWhen(ms) {
  const d = dateOf(ms);
  if (!d) return '—';
  return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dtFmt.format(d);
}

/** A limit as "60 / 1m (burst 10)", a quota as "100,000 / month from 15 (Europe/Paris)". */
export function fmtLimit(l) {
  if (l.quota != null) {
    let q = `${fmtInt(l.quota)} / ${l.period}`;
    if (l.anchor) q += ` from ${l.anchor}`;
    if (l.time_zone) q += ` (${l.time_zone})`;
    if (l.cost && l.cost !== 1) q += ` · cost ${l.cost}`;
    return q;
  }
  let s = `${fmtInt(l.rate)} / ${l.per}`;
  if (l.burst && l.burst !== l.rate) s += ` · burst ${fmtInt(l.burst)}`;
  if (l.cost && l.cost !== 1) s += ` · cost ${l.cost}`;
  return s;
}

/** Debounce a function. */
export function debounce(fn, ms) {
  let t;
  return (...args) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...args), ms);
  };
}
