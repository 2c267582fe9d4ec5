// Identities: customers owning several keys. A searchable, paged list; a
// row opens the identity's detail below it: its limits, its keys and their
// usage over the last 24 hours (GET /api/analytics/identities/{id}).

import { quotaSection } from '../quotas.js';
import { get, qs } from '../api.js';
import { h, replace, debounce, fmtInt, fmtAgo, fmtDateTime, fmtLimit, fmtPct } from '../dom.js';

export const title = 'Identities';

const PER_PAGE = 50;
const DAY_MS = 24 * 3600 * 1000;

export function mount(root) {
  const state = { page: 1, search: '', data: null, lastJson: '', open: null };
  const search = h('input', { type: 'search', id: 'identity-search', placeholder: 'Search external id or name', autocomplete: 'off' });
  const tbody = h('tbody');
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of identities' });
  const detail = h('section', { class: 'panel', id: 'identity-detail', hidden: true });
  root.append(
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', { text: 'Identities' }),
        h('p', { class: 'sub', text: 'Customers owning several keys. A limit with scope: identity is one bucket for all their keys.' }))),
    h('section', { class: 'panel' },
      h('form', { class: 'toolbar', role: 'search', on: { submit: (e) => e.preventDefault() } },
        h('label', { class: 'search' }, h('span', { class: 'sr-only', text: 'Search identities' }), search)),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'identities-table' },
        h('caption', { class: 'sr-only', text: 'Identities' }),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', text: 'External id' }),
          h('th', { scope: 'col', text: 'Name' }),
          h('th', { scope: 'col', text: 'Plan' }),
          h('th', { scope: 'col', text: 'Own limits', class: 'hide-sm' }),
          h('th', { scope: 'col', text: 'Created' }))),
        tbody)),
      pager),
    detail);

  search.addEventListener('input', debounce(() => {
    state.search = search.value.trim();
    state.page = 1;
    refresh();
  }, 250));

  function render() {
    const { items, total, page, per_page: per } = state.data;
    if (items.length === 0) {
      replace(tbody, h('tr', {}, h('td', { colspan: '5', class: 'state-cell' },
        h('p', { text: state.search ? 'No identities match.' : 'No identities yet (POST /api/identities or `tollgate identities create`).' }))));
    } else {
      replace(tbody, items.map((i) => h('tr', {
        dataset: { identityId: String(i.id) }, class: 'clickable', tabindex: '0',
        on: { click: () => openDetail(i), keydown: (e) => { if (e.key === 'Enter') openDetail(i); } },
      },
      h('td', {}, h('code', { text: i.external_id })),
      h('td', { text: i.name }),
      h('td', { text: i.plan || '—' }),
      h('td', { class: 'hide-sm small', text: (i.limits || []).map(fmtLimit).join(', ') || '—' }),
      h('td', { title: fmtDateTime(i.created_at) }, fmtAgo(i.created_at)))));
    }
    const pages = Math.max(1, Math.ceil(total / per));
    replace(pager,
      h('span', { class: 'muted', text: total ? `${fmtInt(total)} identities` : '' }),
      h('div', { class: 'pager-buttons' },
        h('button', {
          type: 'button', class: 'btn ghost small', disabled: page <= 1, 'aria-label': 'Previous page',
          on: { click: () => { state.page -= 1; refresh(); } },
        }, '‹ Prev'),
        h('span', { class: 'muted', text: `Page ${page} of ${pages}` }),
        h('button', {
          type: 'button', class: 'btn ghost small', disabled: page >= pages, 'aria-label': 'Next page',
          on: { click: () => { state.page += 1; refresh(); } },
        }, 'Next ›')));
  }

  async function openDetail(identity) {
    state.open = identity.id;
    const to = Date.now();
    const [keys, usage] = await Promise.all([
      get(`/api/identities/${identity.id}/keys${qs({ per_page: 200 })}`),
      get(`/api/analytics/identities/${identity.id}${qs({ from: to - DAY_MS, to })}`),
    ]);
    if (state.open !== identity.id) return;
    const byKey = new Map(usage.keys.map((k) => [k.key_id, k]));
    detail.hidden = false;
    replace(detail,
      h('h2', { text: `${identity.name} (${identity.external_id})` }),
      h('p', { class: 'sub', id: 'identity-usage', text:
        `Last 24 h: ${fmtInt(usage.usage.total)} requests, ${fmtInt(usage.usage.limited)} limited, block rate ${fmtPct(usage.usage.block_rate)}` }),
      h('h3', { text: 'Shared quotas and credits' }),
      quotaSection('identities', identity.id),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'identity-keys' },
        h('caption', { text: `${fmtInt(keys.total)} keys` }),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', text: 'Key' }),
          h('th', { scope: 'col', text: 'Name' }),
          h('th', { scope: 'col', text: 'Requests (24 h)' }),
          h('th', { scope: 'col', text: 'Limited' }),
          h('th', { scope: 'col', text: 'Enabled' }))),
        h('tbody', {}, keys.items.map((k) => {
          const u = byKey.get(k.id);
          return h('tr', { dataset: { keyId: String(k.id) } },
            h('td', {}, h('code', { text: k.key_prefix })),
            h('td', { text: k.name }),
            h('td', { text: fmtInt(u ? u.total : 0) }),
            h('td', { text: fmtInt(u ? u.limited : 0) }),
            h('td', { text: k.enabled ? 'yes' : 'no' }));
        })))));
  }

  async function refresh() {
    const data = await get(`/api/identities${qs({ page: state.page, per_page: PER_PAGE, search: state.search })}`);
    const json = JSON.stringify(data);
    if (json === state.lastJson) return;
    state.lastJson = json;
    state.data = data;
    render();
  }

  return { refresh };
}
