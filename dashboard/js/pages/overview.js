// Overview: metric cards for a range, traffic and violations charts, latency
// percentiles, top keys and the most recent violations.

import { h, replace, fmtInt, fmtPct, fmtMs, fmtNum, fmtWhen, fmtDateTime } from '../dom.js';
import { timeChart } from '../charts.js';
import * as analytics from '../analytics.js';

export const title = 'Overview';

const RANGE_KEY = 'tollgate.range';

export function mount(root, ctx) {
  const params = new URLSearchParams(location.search);
  let range = params.get('range') || localStorage.getItem(RANGE_KEY) || '1h';
  if (!analytics.RANGES[range]) range = '1h';

  const rangeButtons = Object.entries(analytics.RANGES).map(([k, r]) =>
    h('button', { type: 'button', 'aria-pressed': String(k === range), dataset: { range: k } }, r.label));
  const seg = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Time range' }, rangeButtons);
  seg.addEventListener('click', (e) => {
    const b = e.target.closest('button[data-range]');
    if (!b || b.dataset.range === range) return;
    range = b.dataset.range;
    localStorage.setItem(RANGE_KEY, range);
    history.replaceState(null, '', range === '1h' ? '/' : `/?range=${range}`);
    for (const x of rangeButtons) x.setAttribute('aria-pressed', String(x === b));
    for (const c of Object.values(cards)) c.root.classList.add('loading');
    ctx.refresh();
  });

  const card = (id, label, swatch) => {
    const value = h('div', { class: 'value', text: '—' });
    const foot = h('div', { class: 'foot', text: '\u00a0' });
    const root = h('article', { class: 'card metric loading', dataset: { metric: id } },
      h('div', { class: 'label' }, swatch ? h('span', { class: ['swatch', swatch], 'aria-hidden': 'true' }) : null, label),
      value, foot);
    return { root, value, foot };
  };
  const cards = {
    total: card('total', 'Total requests'),
    allowed: card('allowed', 'Allowed', 'allowed'),
    limited: card('limited', 'Limited (429)', 'limited'),
    block_rate: card('block_rate', 'Block rate'),
    active_keys: card('active_keys', 'Active keys'),
    avg: card('avg_latency', 'Avg latency'),
    p95: card('p95_latency', 'p95 latency'),
  };

  const trafficEl = h('div', { id: 'traffic-chart' });
  const violationsEl = h('div', { id: 'violations-chart' });
  const pctEl = h('div', { class: 'percentiles', id: 'latency-percentiles' });
  const topBody = h('tbody');
  const violBody = h('tbody');
  const violCount = h('span', { class: 'muted small' });

  root.append(
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', { text: 'Overview' }),
        h('p', { class: 'sub', text: 'Requests through every proxy instance, updated live.' })),
      seg),
    h('div', { class: 'cards', id: 'metric-cards' }, Object.values(cards).map((c) => c.root)),
    h('div', { class: 'grid-2' },
      h('section', { class: 'panel', 'aria-labelledby': 'traffic-title' },
        h('div', { class: 'section-head' }, h('h2', { id: 'traffic-title', text: 'Traffic' })), trafficEl),
      h('section', { class: 'panel', 'aria-labelledby': 'latency-title' },
        h('div', { class: 'section-head' }, h('h2', { id: 'latency-title', text: 'Latency percentiles' })), pctEl)),
    h('div', { class: 'grid-2' },
      h('section', { class: 'panel', 'aria-labelledby': 'vchart-title' },
        h('div', { class: 'section-head' }, h('h2', { id: 'vchart-title', text: 'Violations by period' })), violationsEl),
      h('section', { class: 'panel', 'aria-labelledby': 'top-title' },
        h('div', { class: 'section-head' }, h('h2', { id: 'top-title', text: 'Top keys' })),
        h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'top-keys-table' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Key' }), h('th', { scope: 'col', class: 'num', text: 'Requests' }),
            h('th', { scope: 'col', class: 'num', text: 'Limited' }))),
          topBody)))),
    h('section', { class: 'panel', 'aria-labelledby': 'recent-title' },
      h('div', { class: 'section-head' }, h('h2', { id: 'recent-title', text: 'Recent violations' }), violCount),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table violations-table', id: 'violations-table' },
        h('thead', {}, h('tr', {},
          ['Time', 'Status', 'Key', 'Route', 'Request', 'Client IP', 'Limit']
            .map((t, i) => h('th', { scope: 'col', class: i === 5 || i === 3 ? 'hide-sm' : null, text: t })))),
        violBody))),
  );

  const traffic = timeChart(trafficEl, {
    series: [
      { label: 'Allowed', color: '--c-allowed', fill: true },
      { label: 'Limited', color: '--c-limited', fill: true },
      { label: 'Errors', color: '--c-errors' },
    ],
    height: 260,
    empty: 'No traffic in this range yet',
    label: 'Requests over time: allowed, limited and upstream errors',
  });
  const violChart = timeChart(violationsEl, {
    kind: 'bars',
    series: [
      { label: 'Limited (429)', color: '--c-limited' },
      { label: 'Refused key (401/403)', color: '--c-denied' },
    ],
    height: 220,
    empty: 'No violations in this range',
    label: 'Refused requests per period',
  });

  function sectionError(body, cols, e) {
    replace(body, h('tr', {}, h('td', { colspan: String(cols), class: 'state-cell error', text: `Could not load: ${e.message}` })));
  }

  async function refresh() {
    const [sum, ser, viol, top] = await Promise.allSettled([
      analytics.summary(range),
      analytics.series(range),
      analytics.violations(range, { perPage: 10 }),
      analytics.topKeys(range, 5),
    ]);
    const failures = [sum, ser, viol, top].filter((r) => r.status === 'rejected').map((r) => r.reason);
    if (failures.some((e) => e && e.status === 401)) throw failures.find((e) => e.status === 401);

    if (sum.status === 'fulfilled') renderSummary(sum.value);
    if (ser.status === 'fulfilled') {
      const s = ser.value;
      traffic.update(s.xs, [s.allowed, s.limited, s.errors]);
      violChart.update(s.xs, [s.limited, s.refused]);
    }
    if (viol.status === 'fulfilled') renderViolations(viol.value);
    else sectionError(violBody, 7, viol.reason);
    if (top.status === 'fulfilled') renderTop(top.value);
    else sectionError(topBody, 3, top.reason);
    if (failures.length) throw failures[0];
  }

  function renderSummary(s) {
    const set = (c, v, foot) => {
      c.root.classList.remove('loading');
      c.value.textContent = v;
      c.foot.textContent = foot || '\u00a0';
    };
    set(cards.total, fmtInt(s.total), `${fmtNum(s.requests_per_minute, 1)} req/min`);
    set(cards.allowed, fmtInt(s.allowed), s.total ? `${fmtPct(s.allowed / s.total)} of requests` : '');
    set(cards.limited, fmtInt(s.limited), s.upstream_errors ? `${fmtInt(s.upstream_errors)} upstream errors` : '');
    set(cards.block_rate, fmtPct(s.block_rate), `${fmtInt(s.unauthorized)} × 401 · ${fmtInt(s.forbidden)} × 403`);
    set(cards.active_keys, fmtInt(s.active_keys), 'keys with requests');
    set(cards.avg, fmtMs(s.avg_latency_ms), 'through the proxy');
    set(cards.p95, fmtMs(s.p95_latency_ms), `p99 ${fmtMs(s.p99_latency_ms)}`);

    const rows = [['p50', s.p50_latency_ms], ['p95', s.p95_latency_ms], ['p99', s.p99_latency_ms], ['avg', s.avg_latency_ms]];
    const max = Math.max(1e-9, ...rows.map(([, v]) => v || 0));
    if (!s.total) {
      replace(pctEl, h('p', { class: 'muted', text: 'No requests in this range yet.' }));
      return;
    }
    replace(pctEl, rows.map(([name, v]) => {
      const fill = h('span', { class: 'fill' });
      fill.style.width = `${Math.max(2, ((v || 0) / max) * 100)}%`;
      return h('div', { class: 'pct-row', dataset: { pct: name } },
        h('span', { class: 'name', text: name }), h('span', { class: 'bar', 'aria-hidden': 'true' }, fill),
        h('span', { class: 'val', text: fmtMs(v) }));
    }), h('p', { class: 'pct-note', text: 'Percentiles are read from a fixed latency histogram: each is the upper bound of its bucket.' }));
  }

  function renderViolations(v) {
    // Valid keys over their limits come one by one; refusals without a valid
    // key come counted per minute, route, status, reason and client network.
    const counted = (v.aggregated || []).map((a, i) => ({
      aggregate: i, at: a.at, status: a.status, route: a.route, count: a.count,
      reason: a.reason, client_ip: a.client_net,
    }));
    const items = [...(v.items || []), ...counted].sort((a, b) => b.at - a.at).slice(0, 10);
    const total = (v.total || 0) + (v.aggregated_refusals || 0);
    violCount.textContent = total ? `newest ${items.length} rows of ${fmtInt(total)} refusals` : '';
    if (!items.length) {
      replace(violBody, h('tr', {}, h('td', { colspan: '7', class: 'state-cell' },
        h('p', { class: 'empty-title', text: 'No violations in this range' }),
        h('p', { text: 'Requests refused with 401, 403 or 429 show up here.' }))));
      return;
    }
    replace(violBody, items.map((x) => x.aggregate !== undefined ? h('tr', { dataset: { violation: `counted-${x.aggregate}`, count: String(x.count) } },
      h('td', { title: fmtDateTime(x.at), text: fmtWhen(x.at) }),
      h('td', {}, h('span', { class: ['badge', `s${x.status}`], text: String(x.status) })),
      h('td', {}, h('span', { class: 'muted', text: 'no valid key' }), h('div', { class: 'small', text: `× ${fmtInt(x.count)}` })),
      h('td', { class: 'hide-sm', text: x.route }),
      h('td', { class: 'path' }, h('code', { text: x.reason })),
      h('td', { class: 'hide-sm' }, h('code', { text: x.client_ip || '—' })),
      h('td', { text: '—' })) : h('tr', { dataset: { violation: String(x.id) } },
      h('td', { title: fmtDateTime(x.at), text: fmtWhen(x.at) }),
      h('td', {}, h('span', {
        class: ['badge', `s${x.status}`], text: String(x.status),
        title: { 401: 'no API key', 403: 'unknown, disabled or expired key', 429: 'rate limited' }[x.status] || '',
      })),
      h('td', {}, x.key_id ? [x.key_name || `#${x.key_id}`,
        x.key_prefix ? h('div', {}, h('code', { class: 'small muted', text: `${x.key_prefix}…` })) : null]
        : h('span', { class: 'muted', text: 'no key' })),
      h('td', { class: 'hide-sm', text: x.route }),
      h('td', { class: 'path' }, h('code', { text: `${x.method} ${x.path}` })),
      h('td', { class: 'hide-sm' }, h('code', { text: x.client_ip || '—' })),
      h('td', { text: x.limit || '—' }))));
  }

  function renderTop(t) {
    const items = t.items || t;
    if (!items.length) {
      replace(topBody, h('tr', {}, h('td', { colspan: '3', class: 'state-cell', text: 'No keyed requests in this range.' })));
      return;
    }
    replace(topBody, items.map((k) => h('tr', {},
      h('td', {}, k.name || (k.key_id ? `#${k.key_id} (deleted)` : 'no key'),
        k.key_prefix ? h('div', {}, h('code', { class: 'small muted', text: `${k.key_prefix}…` })) : null),
      h('td', { class: 'num', text: fmtInt(k.total) }),
      h('td', { class: 'num', text: fmtInt(k.limited) }))));
  }

  return {
    refresh,
    unmount() {
      traffic.destroy();
      violChart.destroy();
    },
  };
}
