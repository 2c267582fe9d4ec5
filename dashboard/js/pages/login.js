// The login page: username and password → a session token (sessionStorage).

import { api, session } from '../api.js';
import { h } from '../dom.js';

export const title = 'Log in';

/** A local path to go to after logging in (never another origin). */
function nextPath() {
  const n = new URLSearchParams(location.search).get('next') || '/';
  return n.startsWith('/') && !n.startsWith('//') && !n.startsWith('/login') ? n : '/';
}

export function mount(root, ctx) {
  const params = new URLSearchParams(location.search);
  const error = h('p', { class: 'form-error', role: 'alert', id: 'login-error', hidden: true });
  const notice = params.get('expired')
    ? h('p', { class: 'form-notice', role: 'status', text: 'Your session has ended. Log in again to continue.' })
    : null;
  const username = h('input', {
    id: 'username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none',
    spellcheck: 'false', placeholder: 'admin',
  });
  const password = h('input', {
    id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const submit = h('button', { type: 'submit', class: 'btn primary block', id: 'login-submit' }, 'Log in');

  const form = h('form', { class: 'login-card', novalidate: true, 'aria-labelledby': 'login-title' },
    h('div', { class: 'login-brand' }, h('img', { src: '/favicon.svg', alt: '', width: '36', height: '36' }),
      h('span', { text: 'Tollgate' })),
    h('h1', { id: 'login-title', text: 'Log in to the dashboard' }),
    notice,
    h('div', { class: 'field' }, h('label', { for: 'username', text: 'Username' }), username),
    h('div', { class: 'field' }, h('label', { for: 'password', text: 'Password' }), password),
    error,
    submit,
    h('p', { class: 'hint' }, 'tollgate dev prints the admin login when it starts.'),
  );

  function showError(msg) {
    error.textContent = msg;
    error.hidden = !msg;
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError('');
    if (!username.value.trim()) {
      showError('Enter your username.');
      username.focus();
      return;
    }
    if (!password.value) {
      showError('Enter your password.');
      password.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = 'Logging in…';
    try {
      const res = await api('POST', '/api/auth/login',
        { username: username.value.trim(), password: password.value }, { auth: false });
      session.set(res);
      ctx.navigate(nextPath(), { replace: true });
    } catch (err) {
      if (err.status === 401) showError('Wrong username or password.');
      else if (err.status === 429) showError(err.message || 'Too many failed logins. Wait a minute and try again.');
      else showError(err.message || 'Login failed.');
      password.select();
      password.focus();
    } finally {
      submit.disabled = false;
      submit.textContent = 'Log in';
    }
  });

  root.appendChild(h('div', { class: 'login-page' }, form));
  username.focus();
  return {};
}
