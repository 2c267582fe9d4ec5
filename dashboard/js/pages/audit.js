// Audit: who changed what — every admin change, `tollgate keys …` change and
// login, newest first, filtered by actor and action, paged. Needs the admin
// role (viewers are not offered the page; the API refuses them anyway).

import { get, qs } from '../api.js';
import { h, replace, debounce, fmtInt, fmtAgo, fmtDateTime } from '../dom.js';

export const title = 'Audit log';

const PER_PAGE = 50;

function changesText(c) {
  if (!c || typeof c !== 'object') return '';
  return Object.entries(c).map(([field, v]) => {
    if (v && typeof v === 'object' && ('before' in v || 'after' in v)) {
      return `${field}: ${JSON.stringify(v.before)} → ${JSON.stringify(v.after)}`;
    }
    return `${field}: ${JSON.stringify(v)}`;
  }).join('; ');
}

export function mount(root) {
  const state = { page: 1, actor: '', action: '', data: null, lastJson: '' };
  const actor = h('input', { type: 'search', id: 'audit-actor', placeholder: 'Actor (alice, cli:root)', autocomplete: 'off' });
  const action = h('input', { type: 'search', id: 'audit-action', placeholder: 'Action (key., login.failure)', autocomplete: 'off' });
  const tbody = h('tbody');
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of audit events' });
  root.append(
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', { text: 'Audit log' }),
        h('p', { class: 'sub', text: 'Every change to admins, keys and plans, and every login. Append-only.' }))),
    h('section', { class: 'panel' },
      h('form', { class: 'toolbar', role: 'search', on: { submit: (e) => e.preventDefault() } },
        h('label', { class: 'search' }, h('span', { class: 'sr-only', text: 'Filter by actor' }), actor),
        h('label', { class: 'search' }, h('span', { class: 'sr-only', text: 'Filter by action' }), action)),
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'audit-table' },
        h('caption', { class: 'sr-only', text: 'Audit events' }),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', text: 'When' }),
          h('th', { scope: 'col', text: 'Who' }),
          h('th', { scope: 'col', text: 'Action' }),
          h('th', { scope: 'col', text: 'Target' }),
          h('th', { scope: 'col', text: 'From', class: 'hide-sm' }),
          h('th', { scope: 'col', text: 'Changes' }))),
        tbody)),
      pager));

  const onFilter = debounce(() => {
    state.actor = actor.value.trim();
    state.action = action.value.trim();
    state.page = 1;
    refresh();
  }, 250);
  actor.addEventListener('input', onFilter);
  action.addEventListener('input', onFilter);

  function render() {
    const { items, total, page, per_page: per } = state.data;
    if (items.length === 0) {
      replace(tbody, h('tr', {}, h('td', { colspan: '6', class: 'state-cell' },
        h('p', { text: state.actor || state.action ? 'No events match these filters.' : 'No events yet.' }))));
    } else {
      replace(tbody, items.map((e) => h('tr', { dataset: { auditId: String(e.id), action: e.action } },
        h('td', { title: fmtDateTime(e.at) }, fmtAgo(e.at)),
        h('td', {}, h('span', { text: e.actor }),
          e.actor_kind !== 'admin' ? h('span', { class: 'badge muted', text: e.actor_kind }) : null),
        h('td', {}, h('code', { text: e.action })),
        h('td', { text: e.target ? `${e.target_type || ''} ${e.target}` : '' }),
        h('td', { class: 'hide-sm', text: e.client_ip || '' }),
        h('td', { class: 'small', text: changesText(e.changes) }))));
    }
    const pages = Math.max(1, Math.ceil(total / per));
    replace(pager,
      h('span', { class: 'muted', text: total ? `${fmtInt(total)} events` : '' }),
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

  async function refresh() {
    const data = await get(`/api/audit${qs({
      page: state.page, per_page: PER_PAGE, actor: state.actor, action: state.action,
    })}`);
    const json = JSON.stringify(data);
    if (json === state.lastJson) return;
    state.lastJson = json;
    state.data = data;
    render();
  }

  return { refresh };
}
