-- Round 5, N1: the name a local proxy writes its quota counts under
-- (quota_counts.instance: proxy.instance_name, else '<host>@<listen>'),
-- written with each heartbeat. A proxy about to start under a name that a
-- live instance is writing refuses to start (two proxies under one name
-- overwrite each other's counts). NULL: a Redis-backend proxy, or one from
-- before this column.
ALTER TABLE instances ADD COLUMN counter TEXT;
