// Keys: a searchable, paged table with each key's requests of the last
// 24 h (one batch usage request per refresh), enable/disable and delete.
// The dialogs (create, edit, rotate, details) live in ./keys/.

import { api, get, qs, can } from '../api.js';
import { h, icon, replace, debounce, fmtInt, fmtAgo, fmtDateTime, fmtLimit } from '../dom.js';
import { confirmDialog } from '../dialog.js';
import { usageByKey } from '../analytics.js';
import { createDialog } from './keys/create.js';
import { editDialog } from './keys/edit.js';
import { rotateDialog } from './keys/rotate.js';
import { detailsDialog } from './keys/details.js';

export const title = 'API keys';

const PER_PAGE = 20;

export function mount(root, ctx) {
  // Viewers see the keys; changing them needs the admin role (the API
  // refuses it anyway, so the actions are not offered).
  const editable = can('admin');
  const params = new URLSearchParams(location.search);
  const state = {
    page: Math.max(1, Number(params.get('page')) || 1),
    name: params.get('q') || '',
    enabled: params.get('state') || '',
    plan: params.get('plan') || '',
    plans: null,
    data: null,
    usage: new Map(),
    lastJson: '',
  };

  const search = h('input', {
    type: 'search', id: 'key-search', name: 'q', placeholder: 'Search by name', value: state.name,
    autocomplete: 'off',
  });
  const stateSel = h('select', { id: 'key-state', name: 'state' },
    h('option', { value: '' }, 'All states'),
    h('option', { value: 'enabled' }, 'Enabled'),
    h('option', { value: 'disabled' }, 'Disabled'));
  stateSel.value = state.enabled;
  const planSel = h('select', { id: 'key-plan', name: 'plan' }, h('option', { value: '' }, 'All plans'));
  const createBtn = h('button', { type: 'button', class: 'btn primary', id: 'new-key' }, icon('plus'), 'New key');

  const tbody = h('tbody');
  const table = h('table', { class: 'table keys-table', id: 'keys-table' },
    h('caption', { class: 'sr-only', text: 'API keys' }),
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col', text: 'Name' }),
      h('th', { scope: 'col', text: 'Prefix', class: 'hide-sm' }),
      h('th', { scope: 'col', text: 'Plan / limits' }),
      h('th', { scope: 'col', text: 'State' }),
      h('th', { scope: 'col', class: 'num', text: 'Requests (24 h)' }),
      h('th', { scope: 'col', text: 'Last used', class: 'hide-sm' }),
      h('th', { scope: 'col', class: 'actions-col' }, h('span', { class: 'sr-only', text: 'Actions' })))),
    tbody);
  const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of keys' });

  root.append(
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', { text: 'API keys' }),
        h('p', { class: 'sub', text: editable
          ? 'Changes reach every proxy within a second.'
          : 'Read-only: your role is viewer.' })),
      editable ? createBtn : null),
    h('section', { class: 'panel' },
      h('form', { class: 'toolbar', role: 'search', on: { submit: (e) => e.preventDefault() } },
        h('label', { class: 'search' }, h('span', { class: 'sr-only', text: 'Search keys by name' }), icon('search'), search),
        h('label', {}, h('span', { class: 'sr-only', text: 'Filter by state' }), stateSel),
        h('label', {}, h('span', { class: 'sr-only', text: 'Filter by plan' }), planSel)),
      h('div', { class: 'table-wrap' }, table),
      pager));

  function syncUrl() {
    const q = qs({ q: state.name, state: state.enabled, plan: state.plan, page: state.page > 1 ? state.page : '' });
    history.replaceState(null, '', `/keys${q}`);
  }
  const onFilter = () => {
    state.page = 1;
    syncUrl();
    reload();
  };
  search.addEventListener('input', debounce(() => {
    state.name = search.value.trim();
    onFilter();
  }, 250));
  stateSel.addEventListener('change', () => {
    state.enabled = stateSel.value;
    onFilter();
  });
  planSel.addEventListener('change', () => {
    state.plan = planSel.value;
    onFilter();
  });
  createBtn.addEventListener('click', () => createDialog(env));

  async function loadPlans() {
    if (state.plans) return state.plans;
    const plans = await get('/api/plans');
    state.plans = plans;
    for (const p of plans) planSel.appendChild(h('option', { value: p.name, text: p.name }));
    planSel.value = state.plan;
    return plans;
  }

  async function refresh() {
    await loadPlans().catch(() => null);
    let data;
    try {
      data = await get(`/api/keys${qs({
        page: state.page, per_page: PER_PAGE, name: state.name, state: state.enabled, plan: state.plan,
      })}`);
    } catch (e) {
      if (e.status === 401) throw e;
      renderError(e);
      throw e;
    }
    if (data.items.length === 0 && data.total > 0 && state.page > 1) {
      state.page = Math.max(1, Math.ceil(data.total / PER_PAGE));
      syncUrl();
      return refresh();
    }
    state.usage = await usageByKey(data.items.map((k) => k.id)).catch(() => new Map());
    const json = JSON.stringify([data, [...state.usage]]);
    if (json === state.lastJson) return;
    state.lastJson = json;
    state.data = data;
    render();
  }

  async function reload() {
    state.lastJson = '';
    try {
      await refresh();
    } catch {
      // shown in the table
    }
  }

  /** What the dialogs need from the page. */
  const env = { ctx, loadPlans, reload };

  function renderError(e) {
    state.lastJson = '';
    replace(tbody, h('tr', {}, h('td', { colspan: '7', class: 'state-cell error' },
      h('p', { text: `Could not load the keys: ${e.message}` }),
      h('button', { type: 'button', class: 'btn ghost', on: { click: reload } }, 'Retry'))));
    replace(pager);
  }

  function render() {
    const { items, total, page, per_page: per } = state.data;
    const focused = document.activeElement && document.activeElement.dataset
      ? document.activeElement.dataset.focusKey : null;
    if (items.length === 0) {
      const filtered = state.name || state.enabled || state.plan;
      replace(tbody, h('tr', {}, h('td', { colspan: '7', class: 'state-cell' },
        filtered
          ? h('p', { text: 'No keys match these filters.' })
          : [h('p', { class: 'empty-title', text: 'No API keys yet' }),
            h('p', { text: 'Create a key for each client that calls your API.' }),
            editable ? h('button', { type: 'button', class: 'btn primary', on: { click: () => createDialog(env) } },
              icon('plus'), 'Create the first key') : null])));
    } else {
      replace(tbody, items.map(row));
    }
    const first = total === 0 ? 0 : (page - 1) * per + 1;
    const last = Math.min(total, page * per);
    const pages = Math.max(1, Math.ceil(total / per));
    replace(pager,
      h('span', { class: 'muted', text: total ? `${first}–${last} of ${fmtInt(total)}` : '' }),
      h('div', { class: 'pager-buttons' },
        h('button', {
          type: 'button', class: 'btn ghost small', disabled: page <= 1, 'aria-label': 'Previous page',
          on: { click: () => { state.page -= 1; syncUrl(); reload(); } },
        }, '‹ Prev'),
        h('span', { class: 'muted', text: `Page ${page} of ${pages}` }),
        h('button', {
          type: 'button', class: 'btn ghost small', disabled: page >= pages, 'aria-label': 'Next page',
          on: { click: () => { state.page += 1; syncUrl(); reload(); } },
        }, 'Next ›')));
    if (focused) {
      const el = root.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
      if (el) el.focus();
    }
  }

  function row(k) {
    const expired = k.expires_at && k.expires_at <= Date.now();
    const stateBadge = !k.enabled
      ? h('span', { class: 'badge muted', text: 'Disabled' })
      : expired ? h('span', { class: 'badge warn', text: 'Expired' }) : h('span', { class: 'badge ok', text: 'Enabled' });
    const u = state.usage.get(k.id);
    const limits = k.limits && k.limits.length
      ? h('span', { class: 'limits' }, h('span', { class: 'badge outline', text: 'custom' }), ' ',
        k.limits.map(fmtLimit).join(', '))
      : k.plan ? h('span', { class: 'badge plan', text: k.plan }) : h('span', { class: 'muted', text: 'route default' });
    const btn = (label, action, extra = {}) => h('button', {
      type: 'button', class: ['btn', 'small', extra.kind || 'ghost'], 'aria-label': `${label} key ${k.name}`,
      dataset: { action, id: String(k.id), focusKey: `${action}-${k.id}` },
      on: { click: () => onAction(action, k) },
    }, label);
    return h('tr', { dataset: { keyId: String(k.id) } },
      h('td', {},
        h('button', {
          type: 'button', class: 'link key-name', dataset: { action: 'details', focusKey: `details-${k.id}` },
          'aria-label': `Usage and details of key ${k.name}`, on: { click: () => detailsDialog(k) },
        }, k.name),
        k.owner ? h('div', { class: 'muted small', text: k.owner }) : null,
        k.expires_at && !expired ? h('div', { class: 'muted small', text: `expires ${fmtAgo(k.expires_at)}` }) : null),
      h('td', { class: 'hide-sm' }, h('code', { class: 'prefix', text: `${k.key_prefix}…` })),
      h('td', {}, limits),
      h('td', {}, stateBadge),
      h('td', { class: 'num' }, u ? [fmtInt(u.total),
        u.limited ? h('div', { class: 'small limited-text', text: `${fmtInt(u.limited)} limited` }) : null] : '0'),
      h('td', { class: 'hide-sm', title: k.last_used_at ? fmtDateTime(k.last_used_at) : '' }, fmtAgo(k.last_used_at)),
      h('td', { class: 'actions' }, editable ? [
        btn('Edit', 'edit'),
        btn(k.enabled ? 'Disable' : 'Enable', k.enabled ? 'disable' : 'enable'),
        btn('Rotate', 'rotate'),
        btn('Delete', 'delete', { kind: 'danger-ghost' })] : null));
  }

  async function onAction(action, k) {
    try {
      if (action === 'edit') return editDialog(k, env);
      if (action === 'enable' || action === 'disable') {
        await api('PATCH', `/api/keys/${k.id}`, { enabled: action === 'enable' });
        ctx.toast(`Key “${k.name}” ${action}d`);
      } else if (action === 'rotate') {
        return rotateDialog(k, env);
      } else if (action === 'delete') {
        const ok = await confirmDialog({
          title: `Delete key “${k.name}”?`,
          message: 'Requests with this key are refused within a second. Its usage history stays. This cannot be undone.',
          confirmLabel: 'Delete key',
          danger: true,
        });
        if (!ok) return;
        await api('DELETE', `/api/keys/${k.id}`);
        ctx.toast(`Key “${k.name}” deleted`);
      }
      await reload();
    } catch (e) {
      if (e.status !== 401) ctx.toast(e.message, 'error');
    }
  }

  return { refresh, unmount() {} };
}
