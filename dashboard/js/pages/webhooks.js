// Webhooks: the endpoints signed events are delivered to (Standard
// Webhooks), each with its delivery log and a "send test event" button.
// Viewers see the list and the logs; changes need the admin role.

import { api, get, can } from '../api.js';
import { h, icon, replace, fmtAgo, fmtDateTime } from '../dom.js';
import { openDialog, confirmDialog } from '../dialog.js';

export const title = 'Webhooks';

const EVENTS = [
  'key.disabled', 'key.rotated', 'key.deleted', 'key.expiring',
  'quota.warning', 'quota.exhausted', 'credits.low', 'credits.exhausted',
];

function createDialog(ctx, reload) {
  const url = h('input', { id: 'f-hook-url', name: 'url', type: 'url', required: true, autofocus: true, maxlength: '2048', placeholder: 'https://billing.internal/tollgate-events' });
  const desc = h('input', { id: 'f-hook-desc', name: 'description', maxlength: '500', autocomplete: 'off' });
  const all = h('input', { type: 'checkbox', id: 'f-hook-all', name: 'events-all', checked: true });
  const boxes = EVENTS.map((e) => h('label', { class: 'checkbox inline' },
    h('input', { type: 'checkbox', name: 'hook-event', value: e }), e));
  const sync = () => { for (const b of boxes) b.firstChild.disabled = all.checked; };
  all.addEventListener('change', sync);
  sync();
  openDialog({
    title: 'New webhook endpoint',
    id: 'webhook-dialog',
    body: [
      h('div', { class: 'field' }, h('label', { for: 'f-hook-url', text: 'URL' }), url,
        h('p', { class: 'hint', text: 'http:// or https://, no credentials in it: receivers check the signature.' })),
      h('div', { class: 'field' }, h('label', { for: 'f-hook-desc' }, 'Description ', h('span', { class: 'muted', text: '(optional)' })), desc),
      h('fieldset', { class: 'fieldset' }, h('legend', { text: 'Events' }),
        h('label', { class: 'checkbox' }, all, 'All events'),
        h('div', { class: 'checkboxes' }, boxes)),
    ],
    actions: [
      { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
      { label: 'Create endpoint', kind: 'primary', submit: true, testid: 'create' },
    ],
    onSubmit: async (d) => {
      const body = { url: url.value.trim() };
      if (desc.value.trim()) body.description = desc.value.trim();
      body.events = all.checked ? ['*'] : boxes.map((b) => b.firstChild).filter((b) => b.checked).map((b) => b.value);
      if (!body.events.length) throw new Error('Tick at least one event, or all events.');
      const created = await api('POST', '/api/webhooks', body);
      d.close();
      openDialog({
        title: 'Endpoint created',
        id: 'webhook-secret-dialog',
        wide: true,
        body: [
          h('p', {}, 'Its signing secret is shown only this once. Receivers verify ',
            h('code', { text: 'webhook-signature' }), ' with it (Standard Webhooks).'),
          h('div', { class: 'secret-row' }, h('code', { class: 'secret', id: 'webhook-secret', text: created.secret, tabindex: '0' })),
        ],
        actions: [{ label: 'Done', kind: 'ghost', submit: true, testid: 'done' }],
      });
      reload();
    },
  });
}

function logDialog(w) {
  const tbody = h('tbody');
  const d = openDialog({
    title: `Deliveries to ${w.url}`,
    id: 'deliveries-dialog',
    wide: true,
    body: h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'deliveries-table' },
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col', text: 'When' }), h('th', { scope: 'col', text: 'Event' }),
        h('th', { scope: 'col', text: 'Status' }), h('th', { scope: 'col', class: 'num', text: 'Attempts' }),
        h('th', { scope: 'col', text: 'Attempts (newest first)' }))),
      tbody)),
    actions: [{ label: 'Close', kind: 'ghost', submit: true }],
  });
  get(`/api/webhooks/${w.id}/deliveries`).then((page) => {
    if (!page.items.length) {
      replace(tbody, h('tr', {}, h('td', { colspan: '5', class: 'state-cell', text: 'No deliveries yet.' })));
      return;
    }
    replace(tbody, page.items.map((x) => h('tr', { dataset: { deliveryId: String(x.id), status: x.status } },
      h('td', { title: fmtDateTime(x.created_at) }, fmtAgo(x.created_at)),
      h('td', {}, h('code', { text: x.event_type })),
      h('td', {}, h('span', { class: ['badge', x.status === 'succeeded' ? 'ok' : x.status === 'failed' ? 'warn' : 'muted'], text: x.status })),
      h('td', { class: 'num', text: String(x.attempts) }),
      h('td', { class: 'small', text: x.log.map((a) => `${fmtDateTime(a.at)}: ${a.status_code ?? a.error ?? '?'} (${a.duration_ms} ms)`).join('; ') }))));
  }).catch((e) => d.setError(`Could not load the deliveries: ${e.message}`));
}

export function mount(root, ctx) {
  const editable = can('admin');
  const tbody = h('tbody');
  const state = { lastJson: '' };
  const createBtn = h('button', { type: 'button', class: 'btn primary', id: 'new-webhook', on: { click: () => createDialog(ctx, refresh) } }, icon('plus'), 'New endpoint');
  root.append(
    h('div', { class: 'page-head' },
      h('div', {}, h('h1', { text: 'Webhooks' }),
        h('p', { class: 'sub', text: 'Signed events (key disabled, rotated, deleted, expiring; quotas and credits) delivered with retries from a durable outbox.' })),
      editable ? createBtn : null),
    h('section', { class: 'panel' },
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'webhooks-table' },
        h('caption', { class: 'sr-only', text: 'Webhook endpoints' }),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col', text: 'URL' }), h('th', { scope: 'col', text: 'Events' }),
          h('th', { scope: 'col', text: 'State' }), h('th', { scope: 'col', text: 'Secret', class: 'hide-sm' }),
          h('th', { scope: 'col', class: 'actions-col' }, h('span', { class: 'sr-only', text: 'Actions' })))),
        tbody))));

  const action = async (what, w) => {
    try {
      if (what === 'log') return logDialog(w);
      if (what === 'test') {
        await api('POST', `/api/webhooks/${w.id}/test`);
        ctx.toast('Test event sent: see the delivery log');
      } else if (what === 'delete') {
        const ok = await confirmDialog({ title: 'Delete endpoint', message: `Delete ${w.url} and its delivery log?`, confirmLabel: 'Delete', danger: true });
        if (!ok) return undefined;
        await api('DELETE', `/api/webhooks/${w.id}`);
        ctx.toast('Endpoint deleted');
      } else if (what === 'toggle') {
        await api('PATCH', `/api/webhooks/${w.id}`, { enabled: !w.enabled });
      }
      state.lastJson = '';
      return refresh();
    } catch (e) {
      ctx.toast(e.message, 'error');
      return undefined;
    }
  };

  function render(list) {
    if (!list.length) {
      replace(tbody, h('tr', {}, h('td', { colspan: '5', class: 'state-cell', text: 'No endpoints yet.' })));
      return;
    }
    const btn = (label, what, w, kind) => h('button', {
      type: 'button', class: ['btn', 'small', kind || 'ghost'], dataset: { action: what, id: String(w.id) },
      on: { click: () => action(what, w) },
    }, label);
    replace(tbody, list.map((w) => h('tr', { dataset: { webhookId: String(w.id) } },
      h('td', {}, h('code', { text: w.url }), w.description ? h('div', { class: 'muted small', text: w.description }) : null),
      h('td', { class: 'small', text: w.events.join(', ') }),
      h('td', {}, h('span', { class: ['badge', w.enabled ? 'ok' : 'muted'], text: w.enabled ? 'enabled' : 'disabled' })),
      h('td', { class: 'hide-sm' }, h('code', { text: w.secret_hint || '—' })),
      h('td', { class: 'actions' },
        btn('Delivery log', 'log', w),
        editable ? [btn('Send test event', 'test', w), btn(w.enabled ? 'Disable' : 'Enable', 'toggle', w),
          btn('Delete', 'delete', w, 'danger')] : null))));
  }

  async function refresh() {
    const list = await get('/api/webhooks');
    const json = JSON.stringify(list);
    if (json === state.lastJson) return;
    state.lastJson = json;
    render(list);
  }

  return { refresh };
}
