// The "Edit key" dialog: name, owner, enabled, limits, access (scopes and
// client networks) and expiry.

import { api } from '../../api.js';
import { h } from '../../dom.js';
import { openDialog } from '../../dialog.js';
import { nameOwnerFields, limitsFields, expiryFields, accessFields, fieldError } from './form.js';

/** `env`: `{ctx, loadPlans, reload}` of the keys page. */
export function editDialog(k, { ctx, loadPlans, reload }) {
  loadPlans().then((plans) => {
    const who = nameOwnerFields(k);
    const enabled = h('input', { type: 'checkbox', id: 'f-enabled', name: 'enabled', checked: k.enabled });
    const limits = limitsFields(plans, k);
    const expiry = expiryFields(k);
    const access = accessFields(k);
    openDialog({
      title: `Edit key “${k.name}”`,
      id: 'edit-dialog',
      body: [who.node, h('label', { class: 'checkbox' }, enabled, 'Enabled'), limits.node, access.node, expiry.node],
      actions: [
        { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
        { label: 'Save changes', kind: 'primary', submit: true, testid: 'save' },
      ],
      onSubmit: async (d) => {
        const { name, owner } = who;
        if (!name.value.trim()) throw fieldError('The name cannot be empty.', name);
        const body = { name: name.value.trim(), owner: owner.value.trim() || null, enabled: enabled.checked, ...limits.value(), ...access.value() };
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
