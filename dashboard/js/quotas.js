// Quota and credit use of a key or an identity (GET /api/{keys|identities}/{id}/quotas):
// per quota a bar, used / limit and when it resets, with the admin's
// "Reset" and "Adjust" actions (POST …/quotas/{name}, confirmed first);
// the credit balance below. Shared by the key details dialog and the
// identity page.

import { api, get, can } from './api.js';
import { h, replace, fmtInt, fmtDateTime } from './dom.js';
import { openDialog, confirmDialog } from './dialog.js';

/** `kind`: 'keys' or 'identities'. Returns the section's element. */
export function quotaSection(kind, id) {
  const el = h('div', { class: 'quota-use', id: `${kind === 'keys' ? 'key' : 'identity'}-quotas` });
  const load = async () => {
    try {
      render(await get(`/api/${kind}/${id}/quotas`));
    } catch (e) {
      if (e.status !== 401) replace(el, h('p', { class: 'form-error', text: `Could not load the quotas: ${e.message}` }));
    }
  };
  const change = async (q, body, what) => {
    await api('POST', `/api/${kind}/${id}/quotas/${encodeURIComponent(q.name)}`, body);
    replace(status, `${what}: every proxy applies it within a second.`);
    setTimeout(load, 1500);
  };
  const status = h('p', { class: 'muted quota-status', role: 'status' });
  function render(u) {
    const note = {
      unavailable: 'Redis or the database did not answer: the counts are not known right now.',
      database: 'Counted by the local limiter: as the proxy last wrote them (within one usage flush).',
    }[u.counted];
    const rows = u.quotas.map((q) => {
      const used = q.used == null ? null : Math.min(q.used, q.quota);
      const actions = can('admin') ? h('span', { class: 'quota-actions' },
        h('button', {
          type: 'button', class: 'btn ghost small', dataset: { action: 'quota-reset', quota: q.name },
          on: { click: async () => {
            const ok = await confirmDialog({
              title: `Reset quota “${q.name}”?`,
              message: `Its count for the current period goes back to 0: ${fmtInt(q.quota)} more uses until ${fmtDateTime(q.resets_at)}.`,
              confirmLabel: 'Reset quota',
              danger: true,
            });
            if (ok) change(q, { reset: true }, `Quota ${q.name} reset`).catch((e) => replace(status, `Could not reset: ${e.message}`));
          } },
        }, 'Reset'),
        h('button', {
          type: 'button', class: 'btn ghost small', dataset: { action: 'quota-adjust', quota: q.name },
          on: { click: () => adjustDialog(q, change) },
        }, 'Adjust…')) : null;
      return h('div', { class: 'quota-row', dataset: { quota: q.name } },
        h('div', { class: 'quota-head' },
          h('strong', { text: q.name }),
          h('span', { class: 'quota-used', text: used == null
            ? `— / ${fmtInt(q.quota)} per ${q.period}`
            : `${fmtInt(q.used)} / ${fmtInt(q.quota)} per ${q.period}` }),
          q.scope === 'identity' ? h('span', { class: 'badge', text: 'shared' }) : null,
          actions),
        h('progress', { max: String(q.quota), value: String(used ?? 0), 'aria-label': `${q.name} used` }),
        h('p', { class: 'muted quota-reset', text: `Resets ${fmtDateTime(q.resets_at)}` }));
    });
    const credits = u.credits ? h('p', { class: 'quota-credits', id: `${kind}-credits` },
      u.credits.balance == null
        ? `Credits: ${fmtInt(u.credits.granted)} granted (balance counted by each proxy)`
        : `Credits: ${fmtInt(u.credits.balance)} left of ${fmtInt(u.credits.granted)} granted`) : null;
    replace(el,
      rows.length ? rows : h('p', { class: 'muted', text: 'No calendar quota applies.' }),
      rows.length && note ? h('p', { class: 'muted', text: note }) : null,
      credits,
      status);
  }
  load();
  return el;
}

function adjustDialog(q, change) {
  const input = h('input', { id: 'f-used-delta', type: 'number', step: '1', required: true, inputmode: 'numeric' });
  openDialog({
    title: `Adjust quota “${q.name}”`,
    id: 'quota-adjust-dialog',
    body: [
      h('p', { text: 'Uses to add to the current period’s count; a negative number gives uses back (the count never goes below 0).' }),
      h('div', { class: 'field' }, h('label', { for: 'f-used-delta', text: 'Uses to add' }), input),
    ],
    actions: [
      { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
      { label: 'Adjust quota', kind: 'primary', submit: true, testid: 'adjust' },
    ],
    onSubmit: async (d) => {
      const n = Number(input.value);
      await change(q, { used_delta: Number.isInteger(n) ? n : input.value }, `Quota ${q.name} adjusted by ${input.value}`);
      d.close();
    },
  });
}
