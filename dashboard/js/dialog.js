// Modal dialogs on the native <dialog> element: focus moves into the dialog
// and back to where it was, Esc closes it, Enter submits its form.

import { h, icon } from './dom.js';

/**
 * Open a modal dialog.
 *   title:    heading text
 *   body:     node(s) inside the form
 *   actions:  [{label, kind: 'primary'|'danger'|'ghost', submit: bool, onClick}]
 *   onSubmit: async (dialogApi) => {…}; a thrown error is shown in the dialog
 *   onClose:  called once when the dialog is gone
 *   wide:     a wider dialog
 * Returns {el, close, setError, setBusy}.
 */
export function openDialog({ title, body, actions = [], onSubmit, onClose, wide = false, id }) {
  const opener = document.activeElement;
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const titleId = `dlg-title-${Math.random().toString(36).slice(2, 8)}`;
  const buttons = actions.map((a) =>
    h('button', {
      type: a.submit ? 'submit' : 'button',
      class: ['btn', a.kind || 'ghost'],
      dataset: a.testid ? { testid: a.testid } : undefined,
      on: a.onClick ? { click: (e) => a.onClick(e, api) } : undefined,
    }, a.label),
  );
  const form = h('form', { class: 'dialog-form', novalidate: true },
    h('header', { class: 'dialog-head' },
      h('h2', { id: titleId, text: title }),
      h('button', { type: 'button', class: 'icon-btn', 'aria-label': 'Close', on: { click: () => close() } }, '×'),
    ),
    h('div', { class: 'dialog-body' }, body, error),
    buttons.length ? h('footer', { class: 'dialog-actions' }, buttons) : null,
  );
  const el = h('dialog', { class: ['dialog', wide && 'wide'], 'aria-labelledby': titleId, id }, form);
  let closed = false;

  function setError(msg) {
    error.textContent = msg || '';
    error.hidden = !msg;
  }
  function setBusy(busy) {
    for (const b of buttons) b.disabled = busy;
    form.setAttribute('aria-busy', busy ? 'true' : 'false');
  }
  function close() {
    if (closed) return;
    closed = true;
    if (el.open) el.close();
    el.remove();
    if (opener && typeof opener.focus === 'function' && document.contains(opener)) opener.focus();
    if (onClose) onClose();
  }
  const api = { el, close, setError, setBusy, form };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!onSubmit) return close();
    setError('');
    setBusy(true);
    try {
      await onSubmit(api);
    } catch (err) {
      setError(err && err.message ? err.message : String(err));
      const field = err && err.field ? form.querySelector(`[name="${CSS.escape(err.field.split(/[[.]/)[0])}"]`) : null;
      if (field) field.focus();
    } finally {
      if (!closed) setBusy(false);
    }
  });
  el.addEventListener('close', () => close());
  document.body.appendChild(el);
  el.showModal();
  const first = form.querySelector('[autofocus]') || form.querySelector('input, select, textarea, .dialog-actions button');
  if (first) first.focus();
  return api;
}

/** Ask to confirm; resolves true (confirmed) or false. */
export function confirmDialog({ title, message, confirmLabel = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    let ok = false;
    openDialog({
      title,
      body: h('p', { text: message }),
      actions: [
        { label: 'Cancel', kind: 'ghost', onClick: (_e, d) => d.close() },
        { label: confirmLabel, kind: danger ? 'danger' : 'primary', submit: true, testid: 'confirm' },
      ],
      onSubmit: async (d) => {
        ok = true;
        d.close();
      },
      onClose: () => resolve(ok),
    });
  });
}

/** Show a freshly issued key exactly once, with a copy button. */
export function secretDialog({ title, keyText, name }) {
  const code = h('code', { class: 'secret', id: 'secret-key', text: keyText, tabindex: '0' });
  const status = h('span', { class: 'copy-status', role: 'status' });
  const copyBtn = h('button', { type: 'button', class: 'btn primary', id: 'copy-key' }, icon('copy'), 'Copy');
  copyBtn.addEventListener('click', async () => {
    const ok = await copyText(keyText, code);
    status.textContent = ok ? 'Copied to the clipboard' : 'Select the key and copy it (Ctrl+C)';
    if (ok) copyBtn.replaceChildren(icon('check'), 'Copied');
  });
  return openDialog({
    title,
    id: 'secret-dialog',
    wide: true,
    body: [
      h('p', {}, 'This is the only time the full key of ', h('strong', { text: name }),
        ' is shown. Store it somewhere safe now: only its hash is kept.'),
      h('div', { class: 'secret-row' }, code, copyBtn),
      status,
    ],
    actions: [{ label: 'Done', kind: 'ghost', submit: true, testid: 'done' }],
  });
}

async function copyText(text, selectEl) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // Fall through to selecting the text.
  }
  const range = document.createRange();
  range.selectNodeContents(selectEl);
  const sel = window.getSelection();
  sel.removeAllRanges();
  sel.addRange(range);
  try {
    return document.execCommand('copy');
  } catch {
    return false;
  }
}
