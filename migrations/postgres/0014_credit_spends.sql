-- Findings B13: a proxy with the local limiter writes what its requests
-- spent from each balance as rows of credit_adjustments (negative; refunds
-- positive), with the usage flush: spent_by names the writing proxy
-- instance (NULL: a top-up or adjustment by an admin), spent_at when the
-- first of the row's spends happened (Unix ms). Every local proxy applies
-- every row once by id except its own spends, so a restart keeps what was
-- spent and N local proxies converge on one balance; the Redis backend
-- never applies spend rows (Redis is the balance's system of record).
ALTER TABLE credit_adjustments ADD COLUMN spent_by TEXT;
ALTER TABLE credit_adjustments ADD COLUMN spent_at BIGINT;
