// The dashboard's pages, registered here and nowhere else: the router
// (app.js), the navigation bar and the server's list of page paths
// (admin-api/src/dashboard.rs reads the `path:` lines of this file) all come
// from this list. A page module exports `title` and `mount(root, ctx)`,
// which returns `{refresh, unmount}`.
//
// Each entry: `path` (the URL; one segment), the module, and for the
// navigation bar its `nav` label, in this order, and the least `role` that
// sees the link (the API enforces roles; the link is only hidden).

import * as login from './login.js';
import * as overview from './overview.js';
import * as keys from './keys.js';
import * as identities from './identities.js';
import * as monitoring from './monitoring.js';
import * as audit from './audit.js';
import * as webhooks from './webhooks.js';

export const PAGES = [
  { path: '/', page: overview, nav: 'Overview' },
  { path: '/overview', page: overview },
  { path: '/keys', page: keys, nav: 'Keys' },
  { path: '/identities', page: identities, nav: 'Identities' },
  { path: '/monitoring', page: monitoring, nav: 'Monitoring' },
  { path: '/webhooks', page: webhooks, nav: 'Webhooks' },
  { path: '/audit', page: audit, nav: 'Audit', role: 'admin' },
  { path: '/login', page: login },
];

/** The login page (shown without a session). */
export const LOGIN = login;
