// The parts of the create and edit forms: name and owner, limits (a plan,
// custom limits or the route's default) and expiry. Each part is
// `{node, value()}`; `value()` throws an Error naming the bad input (and
// focuses it).

import { h, icon, fmtDateTime, fmtLimit } from '../../dom.js';

const PERIODS = [
  ['1s', 'second'], ['1m', 'minute'], ['1h', 'hour'], ['1d', 'day'],
];
const EXPIRY = [
  ['', 'Never'], ['1', 'In 1 day'], ['7', 'In 7 days'], ['30', 'In 30 days'], ['90', 'In 90 days'],
  ['365', 'In 1 year'], ['custom', 'On a date…'],
];

/** Name and owner inputs, filled from `key` (if any). */
export function nameOwnerFields(key, { hint } = {}) {
  const name = h('input', {
    id: 'f-name', name: 'name', required: true, autofocus: true, maxlength: '200', autocomplete: 'off',
    value: key ? key.name : undefined,
  });
  const owner = h('input', {
    id: 'f-owner', name: 'owner', maxlength: '200', autocomplete: 'off', value: key ? key.owner || '' : undefined,
  });
  return {
    name,
    owner,
    node: [
      h('div', { class: 'field' }, h('label', { for: 'f-name', text: 'Name' }), name,
        hint ? h('p', { class: 'hint', text: hint }) : null),
      h('div', { class: 'field' }, h('label', { for: 'f-owner' }, 'Owner ', h('span', { class: 'muted', text: '(optional)' })), owner),
    ],
  };
}

/** The limits part of the create/edit form: plan, route default or custom. */
export function limitsFields(plans, key) {
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

export function expiryFields(key) {
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

export function fieldError(message, el) {
  const e = new Error(message);
  if (el) setTimeout(() => el.focus(), 0);
  return e;
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/** Split a list typed with commas, spaces or line breaks. */
function items(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean);
}

/**
 * Scopes (route globs, methods) and client networks (`allowed_ips`), filled
 * from `key`. Empty means "no restriction of the key's own" (the plan's
 * scopes, if any, still apply).
 */
export function accessFields(key) {
  const scopes = (key && key.scopes) || {};
  const routes = h('input', {
    id: 'f-routes', name: 'scopes', autocomplete: 'off', placeholder: 'users, billing-*',
    value: (scopes.routes || []).join(', '),
  });
  const own = new Set((scopes.methods || []).map((m) => m.toUpperCase()));
  const extra = [...own].filter((m) => !METHODS.includes(m));
  const boxes = [...METHODS, ...extra].map((m) => h('label', { class: 'checkbox inline' },
    h('input', { type: 'checkbox', name: 'scope-method', value: m, checked: own.has(m) }), m));
  const ips = h('textarea', {
    id: 'f-ips', name: 'allowed_ips', rows: '2', autocomplete: 'off', placeholder: '203.0.113.0/24\n2001:db8::/32',
  });
  ips.value = ((key && key.allowed_ips) || []).join('\n');
  const node = h('fieldset', { class: 'fieldset', id: 'f-access' }, h('legend', { text: 'Access' }),
    h('div', { class: 'field' }, h('label', { for: 'f-routes' }, 'Routes ', h('span', { class: 'muted', text: '(names; * matches any run of characters; empty: all)' })), routes),
    h('div', { class: 'field', role: 'group', 'aria-label': 'Methods' },
      h('span', { class: 'label' }, 'Methods ', h('span', { class: 'muted', text: '(none ticked: all)' })),
      h('div', { class: 'checkboxes' }, boxes)),
    h('div', { class: 'field' }, h('label', { for: 'f-ips' }, 'Client networks ', h('span', { class: 'muted', text: '(CIDRs, one per line; empty: any address)' })), ips));
  return {
    node,
    /** `{scopes, allowed_ips}`: objects/lists, or null for "none". */
    value() {
      const r = items(routes.value);
      const m = boxes.map((b) => b.firstChild).filter((b) => b.checked).map((b) => b.value);
      const s = {};
      if (r.length) s.routes = r;
      if (m.length) s.methods = m;
      const nets = items(ips.value);
      return { scopes: Object.keys(s).length ? s : null, allowed_ips: nets.length ? nets : null };
    },
  };
}
