// Monitoring: /api/health — the admin API, database, Redis, every proxy
// instance and every upstream target.

import { get } from '../api.js';
import { h, replace, fmtAgo, fmtDuration, fmtDateTime, fmtMs, fmtNum, fmtInt } from '../dom.js';

export const title = 'Monitoring';

const STATUS_TEXT = { up: 'Up', down: 'Down', unknown: 'Unknown', ok: 'All systems up', degraded: 'Degraded' };

// The upstream targets table: what each column shows (the header tooltip says
// where the figure comes from).
const TARGET_COLUMNS = [
  { text: 'Upstream' },
  { text: 'Target' },
  { text: 'Status' },
  {
    text: 'Uptime',
    title: 'How long the health checks have seen the target up without interruption (hover a value for the time it came up). '
      + 'Needs a health_check on the upstream.',
  },
  {
    text: 'Latency (p50)',
    cls: 'num',
    title: "Median time from a request's arrival at the proxy to this target's response header, "
      + 'over the requests proxied to it in the last 5 minutes',
  },
  {
    text: 'Check RTT',
    cls: 'num hide-sm',
    title: 'Round trip of the last passing health check (GET of the upstream\'s health_check.path)',
  },
  { text: 'Last checked' },
  { text: 'Reported by', cls: 'hide-sm', title: 'The proxy instance whose heartbeat these figures come from' },
];

const present = (v) => v !== null && v !== undefined;

function pill(status, text) {
  return h('span', { class: ['status-pill', `s-${status}`] }, h('span', { class: 'dot', 'aria-hidden': 'true' }),
    text || STATUS_TEXT[status] || status);
}

export function mount(root) {
  const overall = h('div', { class: 'overall', 'aria-live': 'polite' });
  const components = h('div', { class: 'cards components', id: 'components' });
  const instBody = h('tbody');
  const upBody = h('tbody');

  root.append(
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', { text: 'Monitoring' }),
        h('p', { class: 'sub', text: 'Health of every part of the gateway, as the admin API sees it now.' })),
      overall),
    components,
    h('section', { class: 'panel' },
      h('div', { class: 'section-head' }, h('h2', { text: 'Proxy instances' })),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'instances-table' },
        h('caption', { class: 'sr-only', text: 'Proxy instances' }),
        h('thead', {}, h('tr', {},
          ['Instance', 'Address', 'Version', 'Status', 'Uptime', 'Last seen', 'Req/s', 'Requests']
            .map((t, i) => h('th', { scope: 'col', class: i >= 6 ? 'num' : i === 0 || i === 2 ? 'hide-sm' : null, text: t })))),
        instBody))),
    h('section', { class: 'panel' },
      h('div', { class: 'section-head' }, h('h2', { text: 'Upstream targets' })),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'upstreams-table' },
        h('caption', { class: 'sr-only', text: 'Upstream targets' }),
        h('thead', {}, h('tr', {},
          TARGET_COLUMNS.map((c) => h('th', { scope: 'col', class: c.cls || null, title: c.title || null, text: c.text })))),
        upBody))),
  );

  async function refresh() {
    let r;
    try {
      r = await get('/api/health');
    } catch (e) {
      // 503: the database is down; the body is still the full report.
      if (e.status === 503 && e.problem && e.problem.admin) r = e.problem;
      else throw e;
    }
    render(r);
  }

  function render(r) {
    replace(overall, pill(r.status), h('span', { class: 'muted small', text: `checked ${fmtDateTime(r.checked_at)}` }));

    const comp = (name, status, lines) => h('article', { class: 'card component', dataset: { component: name } },
      h('header', {}, h('h3', { text: name }), pill(status)),
      h('dl', {}, lines.filter(Boolean).map(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })])));
    const db = r.database;
    const redis = r.redis;
    replace(components,
      comp('Admin API', r.admin.status, [
        ['Version', r.admin.version],
        ['Uptime', fmtDuration(r.admin.uptime_seconds)],
      ]),
      comp('Database', db.status, [
        ['Kind', db.kind],
        ['Latency', db.latency_ms !== null && db.latency_ms !== undefined ? fmtMs(db.latency_ms) : '—'],
        db.error ? ['Error', db.error] : null,
      ]),
      redis
        ? comp('Redis', redis.status, [
          ['Kind', redis.kind],
          ['Latency', redis.latency_ms !== null && redis.latency_ms !== undefined ? fmtMs(redis.latency_ms) : '—'],
          redis.error ? ['Error', redis.error] : null,
        ])
        : comp('Redis', 'unknown', [['Limiter', 'local (in-process): Redis is not used']]));
    const redisCard = components.lastChild;
    if (!redis) redisCard.querySelector('.status-pill').lastChild.textContent = 'Not used';

    const now = Date.now();
    if (!r.instances.length) {
      replace(instBody, h('tr', {}, h('td', { colspan: '8', class: 'state-cell' },
        h('p', { class: 'empty-title', text: 'No proxy instance has reported yet' }),
        h('p', {}, 'Proxies heartbeat every few seconds once running: ', h('code', { text: 'tollgate proxy --config FILE' })))));
    } else {
      replace(instBody, r.instances.map((i) => {
        const s = i.stats || {};
        return h('tr', { dataset: { instance: i.id } },
          h('td', { class: 'hide-sm' }, h('code', { class: 'small', text: i.id })),
          h('td', {}, h('code', { text: i.address })),
          h('td', { class: 'hide-sm', text: i.version }),
          h('td', {}, pill(i.status)),
          h('td', { text: fmtDuration(i.uptime_seconds) }),
          h('td', { title: fmtDateTime(i.last_seen), text: fmtAgo(i.last_seen, now) }),
          h('td', { class: 'num', text: s.requests_per_second !== undefined ? fmtNum(s.requests_per_second, 2) : '—' }),
          h('td', { class: 'num' }, s.requests !== undefined ? fmtInt(s.requests) : '—',
            s.limited ? h('div', { class: 'small limited-text', text: `${fmtInt(s.limited)} limited` }) : null));
      }));
    }

    if (!r.upstreams.length) {
      replace(upBody, h('tr', {}, h('td', { colspan: String(TARGET_COLUMNS.length), class: 'state-cell', text: 'No upstreams are configured.' })));
    } else {
      replace(upBody, r.upstreams.map((t) => h('tr', { dataset: { upstream: t.upstream, target: t.target } },
        h('td', { text: t.upstream }),
        h('td', {}, h('code', { text: t.target })),
        h('td', {}, pill(t.status), t.error ? h('div', { class: 'small error-text', text: t.error }) : null),
        h('td', {
          class: 'c-uptime',
          title: present(t.up_since) ? `up since ${fmtDateTime(t.up_since)}` : null,
          text: present(t.uptime_seconds) ? fmtDuration(t.uptime_seconds) : '—',
        }),
        h('td', { class: 'num c-latency' }, present(t.latency_ms) ? fmtMs(t.latency_ms) : '—',
          t.latency_samples ? h('div', { class: 'small muted', text: `${fmtInt(t.latency_samples)} req` }) : null),
        h('td', { class: 'num hide-sm c-check', text: present(t.check_latency_ms) ? fmtMs(t.check_latency_ms) : '—' }),
        h('td', { title: t.checked_at ? fmtDateTime(t.checked_at) : null, text: t.checked_at ? fmtAgo(t.checked_at, now) : 'not checked' }),
        h('td', { class: 'hide-sm' }, t.reported_by ? h('code', { class: 'small', text: t.reported_by }) : '—'))));
    }
  }

  return { refresh, unmount() {} };
}
