-- Least-privilege roles for a fleet store (README, "Many sensors"). Run as the database's
-- owner after the owner has created the schema once (`dfs-sensor store copy` or a first
-- `dfs-sensor replay --db postgresql://OWNER@HOST/DB`), then set passwords:
--   psql -d dfs -f scripts/postgres-roles.sql
--   psql -d dfs -c "ALTER ROLE dfs_sensor PASSWORD '...'"   (and dfs_analyst)
-- Sensors write their tables and nothing else; DELETE is retention's pruning of events and
-- key days. Analysts read. Neither can create, alter or drop anything (PostgreSQL 15
-- no longer lets PUBLIC create in the public schema).
CREATE ROLE dfs_sensor LOGIN;
CREATE ROLE dfs_analyst LOGIN;
GRANT SELECT ON schema_version TO dfs_sensor;
GRANT SELECT, INSERT, UPDATE, DELETE ON events, key_days TO dfs_sensor;
GRANT SELECT, INSERT, UPDATE ON alerts, coercion_alerts TO dfs_sensor;
GRANT SELECT, INSERT ON alert_records TO dfs_sensor;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO dfs_sensor;
GRANT SELECT ON schema_version, events, key_days, alerts, coercion_alerts, alert_records TO dfs_analyst;
