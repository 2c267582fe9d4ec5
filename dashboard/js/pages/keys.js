// Keys: a searchable, paged table; create (plan or custom limits, expiry) with
// a copy-once dialog; edit; enable/disable; rotate; delete; per-key usage.

import { api, get, qs, can } from '../api.js';
import { h, icon, replace, debounce, fmtInt, fmtAgo, fmtDateTime, fmtLimit, fmtMs, fmtPct } from '../dom.js';
import { openDialog, confirmDialog, secretDialog } from '../dialog.js';
import { timeChart } from '../charts.js';
import { usageByKey, keyUsage, keySeries } from '../analytics.js';

export const title = 'API keys';

const PER_PAGE = 20;
const PERIODS = [
  ['1s', 'second'], ['1m', 'minute'], ['1h', 'hour'], ['1d', 'day'],
];
const EXPIRY = [
  ['', 'Never'], ['1', 'In 1 day'], ['7', 'In 7 days'], ['30', 'In 30 days'], ['90', 'In 90 days'],
  ['365', 'In 1 year'], ['custom', 'On a date…'],
];

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
  createBtn.addEventListener('click', () => createDialog());

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
            editable ? h('button', { type: 'button', class: 'btn primary', on: { click: () => createDialog() } },
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
      if (action === 'edit') return editDialog(k);
      if (action === 'enable' || action === 'disable') {
        await api('PATCH', `/api/keys/${k.id}`, { enabled: action === 'enable' });
        ctx.toast(`Key “${k.name}” ${action}d`);
      } else if (action === 'rotate') {
        return rotateDialog(k);
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

  // -------------------------------------------------------------------------
  // Forms

  /** The limits part of the create/edit form: plan, route default or custom. */
  function limitsFields(plans, key) {
    const mode = key && key.limits && key.limits.length ? 'custom' : key && !key.plan ? 'default' : 'plan';
    const planSelect = h('select', { id: 'f-plan', name: 'plan' },
      plans.map((p) => h('option', { value: p.name }, `${p.name} — ${p.limits.map(fmtLimit).join(', ')}`)));
    if (key && key.plan) planSelect.value = key.plan;
    else if (plans.some((p) => p.name === 'free')) planSelect.value = 'free';
    const rows = h('div', { class: 'limit-rows' });
    const addRow = (l = { name: '', rate: '', per: '1m', burst: '' }) => {
      const i = rows.children.length;
      const per = h('select', { name: 'limit-per', 'aria-label': `Limit ${i + 1} period` },
        PERIODS.map(([v, label]) => h('option', { value: v }, `per ${label}`)));
      if (!PERIODS.some(([v]) => v === l.per)) per.appendChild(h('option', { value: l.per }, `per ${l.per}`));
      per.value = l.per;
      const r = h('div', { class: 'limit-row' },
        h('input', { name: 'limit-name', 'aria-label': `Limit ${i + 1} name`, placeholder: 'name', value: l.name || `limit${i + 1}` }),
        h('input', { name: 'limit-rate', type: 'number', min: '1', 'aria-label': `Limit ${i + 1} requests`, placeholder: 'requests', value: l.rate ?? '' }),
        per,
        h('input', { name: 'limit-burst', type: 'number', min: '1', 'aria-label': `Limit ${i + 1} burst (optional)`, placeholder: 'burst', value: l.burst ?? '' }),
        h('button', {
          type: 'button', class: 'icon-btn', 'aria-label': `Remove limit ${i + 1}`,
          on: { click: () => { if (rows.children.length > 1) r.remove(); } },
        }, '×'));
      rows.appendChild(r);
    };
    for (const l of (key && key.limits && key.limits.length ? key.limits : [{ name: 'minute', rate: 60, per: '1m', burst: '' }])) addRow(l);
    const custom = h('div', { class: 'custom-limits' }, rows,
      h('button', { type: 'button', class: 'btn ghost small', on: { click: () => addRow() } }, icon('plus'), 'Add a limit'));
    const radios = [['plan', 'A plan'], ['custom', 'Custom limits'], ['default', 'The route’s default plan']].map(([v, label]) =>
      h('label', { class: 'radio' }, h('input', { type: 'radio', name: 'mode', value: v, checked: v === mode }), label));
    const planWrap = h('div', { class: 'field' }, h('label', { for: 'f-plan', text: 'Plan' }), planSelect);
    const sync = () => {
      const m = radios.map((r) => r.firstChild).find((r) => r.checked).value;
      planWrap.hidden = m !== 'plan';
      custom.hidden = m !== 'custom';
    };
    for (const r of radios) r.firstChild.addEventListener('change', sync);
    sync();
    const node = h('fieldset', { class: 'fieldset' }, h('legend', { text: 'Limits' }),
      h('div', { class: 'radios' }, radios), planWrap, custom);
    return {
      node,
      /** `{plan, limits}` for the API; throws naming the bad input. */
      value() {
        const m = radios.map((r) => r.firstChild).find((r) => r.checked).value;
        if (m === 'plan') return { plan: planSelect.value || null, limits: null };
        if (m === 'default') return { plan: null, limits: null };
        const limits = [...rows.children].map((r, i) => {
          const name = r.querySelector('[name=limit-name]').value.trim();
          const rate = Number(r.querySelector('[name=limit-rate]').value);
          const burstV = r.querySelector('[name=limit-burst]').value;
          if (!name) throw fieldError(`Limit ${i + 1} needs a name.`, r.querySelector('[name=limit-name]'));
          if (!Number.isInteger(rate) || rate < 1) {
            throw fieldError(`Limit ${i + 1}: requests must be a whole number of at least 1.`, r.querySelector('[name=limit-rate]'));
          }
          const l = { name, rate, per: r.querySelector('[name=limit-per]').value };
          if (burstV !== '') {
            const burst = Number(burstV);
            if (!Number.isInteger(burst) || burst < 1) {
              throw fieldError(`Limit ${i + 1}: burst must be a whole number of at least 1.`, r.querySelector('[name=limit-burst]'));
            }
            l.burst = burst;
          }
          return l;
        });
        return { plan: null, limits };
      },
    };
  }

  function expiryFields(key) {
    const sel = h('select', { id: 'f-expiry', name: 'expiry' });
    if (key && key.expires_at) sel.appendChild(h('option', { value: 'keep' }, `Keep: ${fmtDateTime(key.expires_at)}`));
    for (const [v, label] of EXPIRY) sel.appendChild(h('option', { value: v }, label));
    sel.value = key && key.expires_at ? 'keep' : '';
    const date = h('input', { type: 'datetime-local', id: 'f-expiry-date', name: 'expiry_date', 'aria-label': 'Expiry date and time' });
    const dateWrap = h('div', { class: 'field', hidden: true }, h('label', { for: 'f-expiry-date', text: 'Expires at (local time)' }), date);
    sel.addEventListener('change', () => { dateWrap.hidden = sel.value !== 'custom'; });
    return {
      node: [h('div', { class: 'field' }, h('label', { for: 'f-expiry', text: 'Expiry' }), sel), dateWrap],
      /** Unix ms, null (never) or undefined (keep). */
      value() {
        if (sel.value === 'keep') return undefined;
        if (sel.value === '') return null;
        if (sel.value === 'custom') {
          const t = date.value ? new Date(date.value).getTime() : NaN;
          if (!Number.isFinite(t) || t <= Date.now()) throw fieldError('Pick an expiry date in the future.', date);
          return t;
        }
        return Date.now() + Number(sel.value) * 86400000;
      },
    };
  }

  async function createDialog() {
    let plans;
    try {
      plans = await loadPlans();
    } catch (e) {
      ctx.toast(`Could not load the plans: ${e.message}`, 'error');
      return;
    }
    const name = h('input', { id: 'f-name', name: 'name', required: true, autofocus: true, maxlength: '200', autocomplete: 'off' });
    const owner = h('input', { id: 'f-owner', name: 'owner', maxlength: '200', autocomplete: 'off' });
    const limits = limitsFields(plans, null);
    const expiry = expiryFields(null);
    openDialog({
      title: 'New API key',
      id: 'create-dialog',
      body: [
        h('div', { class: 'field' }, h('label', { for: 'f-name', text: 'Name' }), name,
          h('p', { class: 'hint', text: 'Who or what uses it, e.g. “mobile app”.' })),
        h('div', { class: 'field' }, h('label', { for: 'f-owner' }, 'Owner ', h('span', { class: 'muted', text: '(optional)' })), owner),
        limits.node,
        expiry.node,
      ],
      actions: [
        { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
        { label: 'Create key', kind: 'primary', submit: true, testid: 'create' },
      ],
      onSubmit: async (d) => {
        if (!name.value.trim()) throw fieldError('Give the key a name.', name);
        const body = { name: name.value.trim(), ...limits.value() };
        if (owner.value.trim()) body.owner = owner.value.trim();
        const exp = expiry.value();
        if (exp) body.expires_at = exp;
        if (!body.limits) delete body.limits;
        if (!body.plan) delete body.plan;
        const created = await api('POST', '/api/keys', body);
        d.close();
        secretDialog({ title: 'Key created', keyText: created.key, name: created.name });
        reload();
      },
    });
  }

  function editDialog(k) {
    loadPlans().then((plans) => {
      const name = h('input', { id: 'f-name', name: 'name', required: true, value: k.name, maxlength: '200', autofocus: true });
      const owner = h('input', { id: 'f-owner', name: 'owner', value: k.owner || '', maxlength: '200' });
      const enabled = h('input', { type: 'checkbox', id: 'f-enabled', name: 'enabled', checked: k.enabled });
      const limits = limitsFields(plans, k);
      const expiry = expiryFields(k);
      openDialog({
        title: `Edit key “${k.name}”`,
        id: 'edit-dialog',
        body: [
          h('div', { class: 'field' }, h('label', { for: 'f-name', text: 'Name' }), name),
          h('div', { class: 'field' }, h('label', { for: 'f-owner' }, 'Owner ', h('span', { class: 'muted', text: '(optional)' })), owner),
          h('label', { class: 'checkbox' }, enabled, 'Enabled'),
          limits.node,
          expiry.node,
        ],
        actions: [
          { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
          { label: 'Save changes', kind: 'primary', submit: true, testid: 'save' },
        ],
        onSubmit: async (d) => {
          if (!name.value.trim()) throw fieldError('The name cannot be empty.', name);
          const body = { name: name.value.trim(), owner: owner.value.trim() || null, enabled: enabled.checked, ...limits.value() };
          const exp = expiry.value();
          if (exp !== undefined) body.expires_at = exp;
          await api('PATCH', `/api/keys/${k.id}`, body);
          d.close();
          ctx.toast(`Key “${body.name}” saved`);
          reload();
        },
      });
    }).catch((e) => ctx.toast(`Could not load the plans: ${e.message}`, 'error'));
  }

  function rotateDialog(k) {
    const grace = h('select', { id: 'f-grace', name: 'grace' },
      h('option', { value: '0' }, 'Refuse it at once'),
      h('option', { value: '3600' }, 'Keep it valid for 1 hour'),
      h('option', { value: '86400' }, 'Keep it valid for 24 hours'),
      h('option', { value: '604800' }, 'Keep it valid for 7 days'));
    openDialog({
      title: `Rotate key “${k.name}”?`,
      id: 'rotate-dialog',
      body: [
        h('p', { text: 'A new secret is issued for the same key (same limits and history). The new key is shown once.' }),
        h('div', { class: 'field' }, h('label', { for: 'f-grace', text: 'The current secret' }), grace),
      ],
      actions: [
        { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
        { label: 'Rotate key', kind: 'primary', submit: true, testid: 'rotate' },
      ],
      onSubmit: async (d) => {
        const res = await api('POST', `/api/keys/${k.id}/rotate`, { grace_seconds: Number(grace.value) });
        d.close();
        secretDialog({ title: 'Key rotated', keyText: res.key, name: res.name });
        reload();
      },
    });
  }

  function detailsDialog(k) {
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
          h('dt', { text: 'State' }), h('dd', { text: k.enabled ? 'enabled' : 'disabled' }),
          h('dt', { text: 'Created' }), h('dd', { text: fmtDateTime(k.created_at) }),
          h('dt', { text: 'Expires' }), h('dd', { text: k.expires_at ? fmtDateTime(k.expires_at) : 'never' }),
          h('dt', { text: 'Last used' }), h('dd', { text: k.last_used_at ? fmtDateTime(k.last_used_at) : 'never' })),
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

  return { refresh, unmount() {} };
}

function stat(label, value) {
  return h('div', {}, h('dt', { text: label }), h('dd', { text: value }));
}

function fieldError(message, el) {
  const e = new Error(message);
  if (el) setTimeout(() => el.focus(), 0);
  return e;
}
