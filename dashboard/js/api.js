// The admin API client: JSON in and out, the session token in
// sessionStorage (gone when the tab closes), problem+json errors as ApiError.

const SESSION_KEY = 'tollgate.session';

export const session = {
  /** `{token, expires_at, username, role}` or null (none, unreadable or expired). */
  get() {
    let s;
    try {
      s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
    } catch {
      s = null;
    }
    if (!s || typeof s.token !== 'string') return null;
    if (s.expires_at && s.expires_at <= Date.now()) {
      this.clear();
      return null;
    }
    return s;
  },
  set(login) {
    const s = {
      token: login.token,
      expires_at: login.expires_at,
      username: login.admin && login.admin.username,
      role: login.admin && login.admin.role,
    };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  },
  clear() {
    sessionStorage.removeItem(SESSION_KEY);
  },
};

const RANKS = { viewer: 0, admin: 1, owner: 2 };

/**
 * Whether the signed-in admin's role may do what `needed` (`viewer`, `admin`,
 * `owner`) may. The API enforces roles; the dashboard only hides what would
 * be refused. An unknown role may do nothing beyond reading.
 */
export function can(needed) {
  const s = session.get();
  const have = s && s.role in RANKS ? RANKS[s.role] : 0;
  return have >= (RANKS[needed] ?? 99);
}

/** A failed API call: HTTP status (0: network) and the problem document. */
export class ApiError extends Error {
  constructor(status, problem) {
    const p = problem || {};
    super(p.detail || p.title || `HTTP ${status}`);
    this.status = status;
    this.problem = p;
    this.field = p.field || null;
  }
}

let unauthorizedHandler = () => {};

/** Called (once per failing call) when the API answers 401 to a signed-in call. */
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

/**
 * Call the API. `body` is sent as JSON. Resolves to the parsed JSON (null for
 * 204); rejects with ApiError. A 401 clears the session and calls the
 * unauthorized handler (the app sends the user to the login page).
 */
export async function api(method, path, body, { auth = true, signal } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const s = session.get();
  if (auth) {
    if (!s) {
      unauthorizedHandler();
      throw new ApiError(401, { title: 'Unauthorized', detail: 'Log in first.' });
    }
    headers.Authorization = `Bearer ${s.token}`;
  }
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Network error', detail: 'Cannot reach the admin API.' });
  }
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json().catch(() => null) : null;
  if (res.status === 401 && auth) {
    session.clear();
    unauthorizedHandler();
  }
  if (!res.ok) throw new ApiError(res.status, data || { title: res.statusText });
  return data;
}

export const get = (path, opts) => api('GET', path, undefined, opts);

/** A query string from an object, skipping empty values. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : '';
}
