// The key details dialog: the key's record, the limits that apply to it and
// its usage over a chosen range (counts, latency, a chart, per route).

import { h, replace, fmtInt, fmtDateTime, fmtLimit, fmtMs, fmtPct } from '../../dom.js';
import { openDialog } from '../../dialog.js';
import { timeChart } from '../../charts.js';
import { keyUsage, keySeries } from '../../analytics.js';
import { quotaSection } from '../../quotas.js';

export function detailsDialog(k) {
  const chartEl = h('div', { class: 'chart-box' });
  const stats = h('dl', { class: 'stats-grid' });
  const rangeSel = h('select', { id: 'f-key-range', 'aria-label': 'Usage range' },
    h('option', { value: '1h' }, 'Last hour'), h('option', { value: '24h' }, 'Last 24 hours'),
    h('option', { value: '7d' }, 'Last 7 days'));
  rangeSel.value = '1h';
  const limitsList = k.limits && k.limits.length
    ? `custom: ${k.limits.map(fmtLimit).join(', ')}` : k.plan ? `plan ${k.plan}` : 'the route’s default plan';
  const limitsDd = h('dd', { text: limitsList });
  const routesBody = h('tbody');
  const routesTable = h('div', { class: 'table-wrap', hidden: true }, h('table', { class: 'table', id: 'key-routes' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Route' }), h('th', { scope: 'col', class: 'num', text: 'Requests' }),
      h('th', { scope: 'col', class: 'num', text: 'Limited' }), h('th', { scope: 'col', class: 'num', text: 'p95' }))),
    routesBody));
  const d = openDialog({
    title: `Key “${k.name}”`,
    id: 'details-dialog',
    wide: true,
    body: [
      h('dl', { class: 'meta' },
        h('dt', { text: 'Prefix' }), h('dd', {}, h('code', { text: `${k.key_prefix}…` })),
        h('dt', { text: 'Limits' }), limitsDd,
        h('dt', { text: 'Routes' }), h('dd', { text: k.scopes && k.scopes.routes ? k.scopes.routes.join(', ') : 'all' }),
        h('dt', { text: 'Methods' }), h('dd', { text: k.scopes && k.scopes.methods ? k.scopes.methods.join(', ') : 'all' }),
        h('dt', { text: 'Networks' }), h('dd', { text: k.allowed_ips ? k.allowed_ips.join(', ') : 'any' }),
        h('dt', { text: 'State' }), h('dd', { text: k.enabled ? 'enabled' : 'disabled' }),
        h('dt', { text: 'Created' }), h('dd', { text: fmtDateTime(k.created_at) }),
        h('dt', { text: 'Expires' }), h('dd', { text: k.expires_at ? fmtDateTime(k.expires_at) : 'never' }),
        h('dt', { text: 'Last used' }), h('dd', { text: k.last_used_at ? fmtDateTime(k.last_used_at) : 'never' })),
      h('h3', { text: 'Quotas and credits' }),
      quotaSection('keys', k.id),
      h('div', { class: 'section-head' }, h('h3', { text: 'Usage' }), rangeSel),
      stats,
      chartEl,
      routesTable,
    ],
    actions: [{ label: 'Close', kind: 'ghost', submit: true }],
    onClose: () => chart.destroy(),
  });
  const chart = timeChart(chartEl, {
    series: [
      { label: 'Allowed', color: '--c-allowed', fill: true },
      { label: 'Limited', color: '--c-limited', fill: true },
      { label: 'Errors', color: '--c-errors' },
    ],
    height: 200,
    empty: 'No requests with this key in this range',
    label: `Requests with key ${k.name} over time`,
  });
  const load = async () => {
    try {
      const [u, series] = await Promise.all([keyUsage(k.id, rangeSel.value), keySeries(k.id, rangeSel.value)]);
      replace(stats,
        stat('Requests', fmtInt(u.total)), stat('Allowed', fmtInt(u.allowed)), stat('Limited', fmtInt(u.limited)),
        stat('Block rate', fmtPct(u.block_rate)), stat('Avg latency', fmtMs(u.avg_latency_ms)),
        stat('p95 latency', fmtMs(u.p95_latency_ms)));
      chart.update(series.xs, [series.allowed, series.limited, series.errors]);
      const applied = (u.limits || []).map(fmtLimit).join(', ');
      limitsDd.textContent = u.limits_source === 'key' ? `own limits: ${applied}`
        : u.limits_source === 'plan' ? `plan ${u.plan}: ${applied}` : 'each route’s default plan';
      routesTable.hidden = !(u.routes && u.routes.length);
      replace(routesBody, (u.routes || []).map((r) => h('tr', {},
        h('td', { text: r.route }), h('td', { class: 'num', text: fmtInt(r.total) }),
        h('td', { class: 'num', text: fmtInt(r.limited) }), h('td', { class: 'num', text: fmtMs(r.p95_latency_ms) }))));
    } catch (e) {
      if (e.status !== 401) d.setError(`Could not load the usage: ${e.message}`);
    }
  };
  rangeSel.addEventListener('change', load);
  load();
}


function stat(label, value) {
  return h('div', {}, h('dt', { text: label }), h('dd', { text: value }));
}
