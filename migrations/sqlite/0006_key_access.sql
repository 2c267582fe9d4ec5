-- Issue 21: per-key scopes and client networks (JSON as TEXT, NULL = none).
--   scopes:      {"routes": ["users", "billing-*"], "methods": ["GET"]}
--                (each list optional; left out = the plan's list, else all)
--   allowed_ips: ["203.0.113.0/24", "2001:db8::/32"]
ALTER TABLE api_keys ADD COLUMN scopes TEXT;
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT;
