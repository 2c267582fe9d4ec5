-- Two PostgreSQL roles for Tollgate, so that a compromised proxy host cannot
-- read admin password hashes, the generated JWT secret or the audit log.
--
--   tollgate_admin  owns the schema: runs the migrations, manages admins,
--                   keys, plans, settings and the audit log (`tollgate admin`,
--                   `tollgate keys …`, `tollgate audit …`).
--   tollgate_proxy  reads keys and plans; writes usage (and its batch ids),
--                   violations and their aggregates, instances, keys'
--                   last-used time and webhook events. It cannot read
--                   admins, settings, revoked_tokens or audit_events.
--
-- Run it as a superuser (or a role with CREATEROLE) in the Tollgate
-- database, once before the first start and again after every upgrade
-- (new tables get their grants):
--
--   psql -d tollgate -v ON_ERROR_STOP=1 -f deploy/postgres/roles.sql
--   psql -d tollgate -c '\password tollgate_admin'
--   psql -d tollgate -c '\password tollgate_proxy'
--
-- On a new database, start `tollgate admin` first (it creates the tables),
-- then run this file again so the proxy role gets its table grants. Give
-- each host its role through PGUSER/PGPASSWORD in its env file
-- (deploy/env/*.env.example); `storage.database_url` then names no user.
-- Upgrades: the admin role migrates; start the admin before the proxies.
-- A migration that adds a table the proxies write needs a grant below
-- (admin-api/tests/api/db_roles.rs runs the proxy's writes as this role).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_admin') THEN
        CREATE ROLE tollgate_admin LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tollgate_proxy') THEN
        CREATE ROLE tollgate_proxy LOGIN;
    END IF;
END
$$;

-- The schema: only the admin role creates objects in it.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO tollgate_admin;
GRANT USAGE ON SCHEMA public TO tollgate_proxy;
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO tollgate_admin, tollgate_proxy',
                   current_database());
    -- The admin role owns the database so that it can run the migrations.
    EXECUTE format('ALTER DATABASE %I OWNER TO tollgate_admin', current_database());
END
$$;
ALTER SCHEMA public OWNER TO tollgate_admin;

-- Tables that exist already (after the admin's first start) belong to the
-- admin role; the proxy gets exactly what it uses, per table.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO tollgate_admin', t.tablename);
        EXECUTE format('REVOKE ALL ON public.%I FROM PUBLIC, tollgate_proxy', t.tablename);
    END LOOP;
    FOR t IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
        EXECUTE format('REVOKE ALL ON SEQUENCE public.%I FROM PUBLIC, tollgate_proxy', t.sequencename);
    END LOOP;

    -- Migrations table: the proxy checks that the schema is up to date.
    IF to_regclass('public._sqlx_migrations') IS NOT NULL THEN
        GRANT SELECT ON public._sqlx_migrations TO tollgate_proxy;
    END IF;
    -- Keys and plans: read; only a key's last-used time is written.
    IF to_regclass('public.api_keys') IS NOT NULL THEN
        GRANT SELECT ON public.api_keys TO tollgate_proxy;
        GRANT UPDATE (last_used_at) ON public.api_keys TO tollgate_proxy;
    END IF;
    IF to_regclass('public.identities') IS NOT NULL THEN
        GRANT SELECT ON public.identities TO tollgate_proxy;
    END IF;
    IF to_regclass('public.plans') IS NOT NULL THEN
        GRANT SELECT ON public.plans TO tollgate_proxy;
    END IF;
    -- Service tokens (the verify API): only their hashes are read.
    IF to_regclass('public.service_tokens') IS NOT NULL THEN
        GRANT SELECT (token_hash) ON public.service_tokens TO tollgate_proxy;
    END IF;
    -- What the proxies report: usage rollups (and their retention),
    -- violations, their own instance rows.
    IF to_regclass('public.usage_minute') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.usage_minute TO tollgate_proxy;
    END IF;
    IF to_regclass('public.usage_hour') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.usage_hour TO tollgate_proxy;
    END IF;
    IF to_regclass('public.violations') IS NOT NULL THEN
        GRANT SELECT, INSERT, DELETE ON public.violations TO tollgate_proxy;
        GRANT USAGE ON SEQUENCE public.violations_id_seq TO tollgate_proxy;
    END IF;
    IF to_regclass('public.violation_aggregates') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.violation_aggregates TO tollgate_proxy;
    END IF;
    -- Usage flush batches already applied (idempotent retries).
    IF to_regclass('public.usage_batches') IS NOT NULL THEN
        GRANT SELECT, INSERT, DELETE ON public.usage_batches TO tollgate_proxy;
    END IF;
    IF to_regclass('public.instances') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.instances TO tollgate_proxy;
    END IF;
    -- Who holds each local proxy's quota-count name (migration 0017).
    IF to_regclass('public.instance_names') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.instance_names TO tollgate_proxy;
    END IF;
    -- Credit adjustments: read (top-ups applied to the live balances);
    -- a local limiter also writes its spends (rows with spent_by).
    IF to_regclass('public.credit_adjustments') IS NOT NULL THEN
        GRANT SELECT, INSERT ON public.credit_adjustments TO tollgate_proxy;
        GRANT USAGE ON SEQUENCE public.credit_adjustments_id_seq TO tollgate_proxy;
    END IF;
    IF to_regclass('public.credit_refills') IS NOT NULL THEN
        GRANT SELECT ON public.credit_refills TO tollgate_proxy;
    END IF;
    -- Quota resets and adjustments: read and applied by every proxy.
    IF to_regclass('public.quota_adjustments') IS NOT NULL THEN
        GRANT SELECT ON public.quota_adjustments TO tollgate_proxy;
    END IF;
    -- A local limiter's quota counts: written with each flush, read at start.
    IF to_regclass('public.quota_counts') IS NOT NULL THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.quota_counts TO tollgate_proxy;
    END IF;
    -- Webhook events (quota and credit events are enqueued where they
    -- happen: core::webhooks::enqueue_event): events and their deliveries
    -- are inserted; of the endpoints only which events each wants is read,
    -- never its URL or signing secret (the admin's worker delivers).
    IF to_regclass('public.webhook_events') IS NOT NULL THEN
        GRANT SELECT, INSERT ON public.webhook_events TO tollgate_proxy;
        GRANT USAGE ON SEQUENCE public.webhook_events_id_seq TO tollgate_proxy;
        GRANT INSERT ON public.webhook_deliveries TO tollgate_proxy;
        GRANT USAGE ON SEQUENCE public.webhook_deliveries_id_seq TO tollgate_proxy;
        GRANT SELECT (id, events, enabled) ON public.webhook_endpoints TO tollgate_proxy;
    END IF;
    -- Never: admins, settings (the generated JWT secret), revoked_tokens,
    -- audit_events, webhook endpoints' URLs and secrets. Revoked above,
    -- granted nowhere.
END
$$;
