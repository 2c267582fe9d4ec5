// The "Rotate key" dialog: a new secret for the same key, the old one
// refused at once or after a grace period; the new key is shown once.

import { api } from '../../api.js';
import { h } from '../../dom.js';
import { openDialog, secretDialog } from '../../dialog.js';

/** `env`: `{reload}` of the keys page. */
export function rotateDialog(k, { reload }) {
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

