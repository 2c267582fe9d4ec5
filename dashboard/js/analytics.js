// The analytics API (/api/analytics/…) as the pages use it: ranges, steps
// and the mapping of the API's fields to what the charts and cards show.

import { get, qs } from './api.js';

/** The ranges the overview offers: duration and chart step. */
export const RANGES = {
  '15m': { label: '15 min', ms: 15 * 60e3, step: '1m' },
  '1h': { label: '1 hour', ms: 3600e3, step: '1m' },
  '24h': { label: '24 hours', ms: 24 * 3600e3, step: '1h' },
  '7d': { label: '7 days', ms: 7 * 24 * 3600e3, step: '1h' },
};

/** `{from, to}` (Unix ms) for a range ending now. */
export function span(range) {
  const r = RANGES[range] || RANGES['1h'];
  const to = Date.now();
  return { from: to - r.ms, to };
}

export function summary(range) {
  return get(`/api/analytics/summary${qs(span(range))}`);
}

/** A time series as arrays: {xs (Unix ms), allowed, limited, errors, refused}. */
export async function series(range, extra = {}) {
  const r = RANGES[range] || RANGES['1h'];
  const res = await get(`/api/analytics/timeseries${qs({ ...span(range), step: r.step, ...extra })}`);
  const points = res.points || [];
  return {
    xs: points.map((p) => p.at),
    allowed: points.map((p) => p.allowed || 0),
    limited: points.map((p) => p.limited || 0),
    errors: points.map((p) => p.upstream_errors || 0),
    refused: points.map((p) => (p.unauthorized || 0) + (p.forbidden || 0)),
  };
}

export function violations(range, { page = 1, perPage = 10 } = {}) {
  return get(`/api/analytics/violations${qs({ ...span(range), page, per_page: perPage })}`);
}

export function topKeys(range, limit = 5) {
  return get(`/api/analytics/top-keys${qs({ ...span(range), limit })}`);
}

/**
 * One key over a range: the summary's counts, rates and latency, plus the
 * limits that apply (`limits_source`, `plan`, `limits`) and `routes`.
 */
export function keyUsage(id, range) {
  return get(`/api/analytics/keys/${encodeURIComponent(id)}${qs(span(range))}`);
}

export function keySeries(id, range) {
  return series(range, { key: id });
}

/**
 * Requests in the last 24 h per key id, for the keys table: Map id → {total,
 * limited}, in one request for the whole page of keys (at most 100 ids).
 */
export async function usageByKey(ids) {
  const out = new Map();
  if (!ids.length) return out;
  const res = await get(`/api/analytics/keys${qs({ ...span('24h'), ids: ids.join(',') })}`);
  for (const k of res.items || []) out.set(k.key_id, { total: k.total, limited: k.limited });
  return out;
}
