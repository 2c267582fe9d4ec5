// The "New API key" dialog: name, owner, limits, access (scopes and client
// networks) and expiry; the new key is
// shown once in the copy-once dialog.

import { api } from '../../api.js';
import { openDialog, secretDialog } from '../../dialog.js';
import { nameOwnerFields, limitsFields, expiryFields, accessFields, fieldError } from './form.js';

/** `env`: `{ctx, loadPlans, reload}` of the keys page. */
export async function createDialog({ ctx, loadPlans, reload }) {
  let plans;
  try {
    plans = await loadPlans();
  } catch (e) {
    ctx.toast(`Could not load the plans: ${e.message}`, 'error');
    return;
  }
  const who = nameOwnerFields(null, { hint: 'Who or what uses it, e.g. “mobile app”.' });
  const limits = limitsFields(plans, null);
  const expiry = expiryFields(null);
  const access = accessFields(null);
  openDialog({
    title: 'New API key',
    id: 'create-dialog',
    body: [who.node, limits.node, access.node, expiry.node],
    actions: [
      { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
      { label: 'Create key', kind: 'primary', submit: true, testid: 'create' },
    ],
    onSubmit: async (d) => {
      const { name, owner } = who;
      if (!name.value.trim()) throw fieldError('Give the key a name.', name);
      const body = { name: name.value.trim(), ...limits.value() };
      if (owner.value.trim()) body.owner = owner.value.trim();
      const exp = expiry.value();
      if (exp) body.expires_at = exp;
      if (!body.limits) delete body.limits;
      if (!body.plan) delete body.plan;
      const { scopes, allowed_ips: nets } = access.value();
      if (scopes) body.scopes = scopes;
      if (nets) body.allowed_ips = nets;
      const created = await api('POST', '/api/keys', body);
      d.close();
      secretDialog({ title: 'Key created', keyText: created.key, name: created.name });
      reload();
    },
  });
}
