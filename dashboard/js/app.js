// The dashboard shell: routing (history API; the server answers index.html
// for every page path), the session, the header, toasts and the live refresh
// loop (every few seconds while the tab is visible, paused while hidden).

import { session, onUnauthorized, api, can } from './api.js';
import { h, replace, fmtAgo } from './dom.js';
import { PAGES, LOGIN } from './pages/index.js';

const ROUTES = Object.fromEntries(PAGES.map((p) => [p.path, p.page]));

/** How often pages refresh, ms (≤ 5 s; `localStorage['tollgate.refresh_ms']` overrides, 1–60 s). */
function refreshInterval() {
  const v = Number(localStorage.getItem('tollgate.refresh_ms'));
  return Number.isFinite(v) && v >= 1000 && v <= 60000 ? v : 5000;
}

const main = document.getElementById('main');
const topbar = document.getElementById('topbar');
const liveEl = document.getElementById('live');
const whoEl = document.getElementById('whoami');
const bannerEl = document.getElementById('banner');
const toastsEl = document.getElementById('toasts');

// The navigation bar, from the page list.
topbar.querySelector('nav').replaceChildren(...PAGES.filter((p) => p.nav).map((p) => h('a', {
  href: p.path,
  id: `nav-${p.path.slice(1) || 'overview'}`,
  dataset: p.role ? { link: '', role: p.role } : { link: '' },
  hidden: Boolean(p.role),
}, p.nav)));

let current = null; // {page, path, instance}
let timer = null;
let inFlight = false;
let lastOk = 0;
let lastError = null;

// ---------------------------------------------------------------------------
// Navigation

export function navigate(to, { replace: rep = false } = {}) {
  if (to === location.pathname + location.search) return render();
  if (rep) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  render();
}

function render() {
  const path = location.pathname.replace(/\/+$/, '') || '/';
  const s = session.get();
  if (path !== '/login' && !s) {
    const next = location.pathname + location.search;
    history.replaceState(null, '', next === '/' ? '/login' : `/login?next=${encodeURIComponent(next)}`);
    return render();
  }
  if (path === '/login' && s) {
    history.replaceState(null, '', '/');
    return render();
  }
  const page = ROUTES[path] || null;
  unmount();
  topbar.hidden = !s;
  document.body.classList.toggle('signed-in', Boolean(s));
  whoEl.textContent = s && s.username ? `${s.username}${s.role ? ` · ${s.role}` : ''}` : '';
  document.body.dataset.role = (s && s.role) || '';
  // Pages a role may not use are not offered.
  for (const a of topbar.querySelectorAll('nav a[data-role]')) {
    a.hidden = !can(a.dataset.role);
  }
  for (const a of topbar.querySelectorAll('nav a')) {
    const target = a.getAttribute('href');
    const active = target === path || (target === '/' && path === '/overview');
    if (active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  showBanner(null);
  if (!page) {
    document.title = 'Not found · Tollgate';
    replace(main, h('section', { class: 'empty-page' },
      h('h1', { text: 'Page not found' }),
      h('p', {}, 'There is no dashboard page at ', h('code', { text: path }), '.'),
      h('a', { href: '/', class: 'btn primary', dataset: { link: '' } }, 'Go to the overview')));
    return;
  }
  document.title = `${page.title} · Tollgate`;
  main.replaceChildren();
  const instance = page.mount(main, ctx);
  current = { page, path, instance };
  if (page !== LOGIN) main.focus({ preventScroll: true });
  refreshNow();
}

function unmount() {
  if (current && current.instance && current.instance.unmount) current.instance.unmount();
  current = null;
}

// Same-origin links marked data-link navigate without a reload.
document.addEventListener('click', (e) => {
  const a = e.target.closest && e.target.closest('a[data-link]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  e.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', render);

// ---------------------------------------------------------------------------
// Live refresh

async function refreshNow() {
  clearTimeout(timer);
  timer = null;
  const c = current;
  if (!c || !c.instance || !c.instance.refresh) return;
  if (document.visibilityState === 'hidden') {
    updateLive();
    return;
  }
  if (inFlight) return schedule();
  inFlight = true;
  try {
    await c.instance.refresh();
    lastOk = Date.now();
    lastError = null;
    showBanner(null);
  } catch (e) {
    if (e && e.status === 401) return; // handled: back to the login page
    lastError = e;
    showBanner(e && e.status === 0
      ? 'Cannot reach the admin API. Retrying…'
      : `Could not refresh: ${e && e.message ? e.message : e}`);
  } finally {
    inFlight = false;
  }
  updateLive();
  if (current === c) schedule();
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(refreshNow, refreshInterval());
}

function updateLive() {
  if (!current || !current.instance || !current.instance.refresh) {
    liveEl.hidden = true;
    return;
  }
  liveEl.hidden = false;
  let state;
  let text;
  if (document.visibilityState === 'hidden') {
    state = 'paused';
    text = 'Paused';
  } else if (lastError) {
    state = 'error';
    text = 'Reconnecting';
  } else {
    state = 'live';
    text = lastOk ? `Live · ${fmtAgo(lastOk)}` : 'Live';
  }
  liveEl.dataset.state = state;
  liveEl.lastChild.textContent = text;
}
setInterval(updateLive, 1000);

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') refreshNow();
  else {
    clearTimeout(timer);
    timer = null;
    updateLive();
  }
});

// ---------------------------------------------------------------------------
// Banner and toasts

function showBanner(msg) {
  bannerEl.textContent = msg || '';
  bannerEl.hidden = !msg;
}

export function toast(msg, kind = 'ok') {
  const el = h('div', { class: ['toast', kind], role: kind === 'error' ? 'alert' : 'status', text: msg });
  toastsEl.appendChild(el);
  setTimeout(() => el.classList.add('leaving'), 3500);
  setTimeout(() => el.remove(), 4000);
}

// ---------------------------------------------------------------------------
// Session

onUnauthorized(() => {
  if (location.pathname === '/login') return;
  session.clear();
  const next = location.pathname + location.search;
  history.replaceState(null, '', `/login?next=${encodeURIComponent(next)}&expired=1`);
  render();
});

// Log out: revoke the token on the server, then forget it here (even when
// the server cannot be reached: the token is gone from this browser).
document.getElementById('logout').addEventListener('click', async () => {
  if (session.get()) {
    try {
      await api('POST', '/api/auth/logout');
    } catch {
      // Already invalid, or the API is down: nothing more to do here.
    }
  }
  session.clear();
  navigate('/login');
});

/** What pages get. */
const ctx = { navigate, toast, api, refresh: refreshNow };

render();
