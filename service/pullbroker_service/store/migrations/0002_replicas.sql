-- pullbroker schema 2: what replicas need to be one service.
-- Applied by store/postgres_migrations.py inside one transaction under an advisory lock.

-- A registry's previous credential version (kept for RollbackRegistry), as in SQLite.
ALTER TABLE registries ADD COLUMN previous_secret_ref TEXT;

-- Every committed write of a deployment notifies its id on `pullbroker_deployments`, so a
-- WatchDeployment on any replica (LISTEN) wakes at once. Sent by the server at commit, from
-- the same transaction as the write: no write is committed without its notification.
CREATE FUNCTION pullbroker_notify_deployment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pullbroker_deployments', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$;
CREATE TRIGGER deployments_notify AFTER INSERT OR UPDATE OR DELETE ON deployments
    FOR EACH ROW EXECUTE FUNCTION pullbroker_notify_deployment();

-- One audit trail for every replica: append-only. The broker only ever INSERTs; the
-- triggers below refuse UPDATE, DELETE and TRUNCATE to everyone but a superuser who drops
-- them on purpose. Rows hold names and reasons (scrubbed), never a secret or a token.
CREATE TABLE audit_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    identity TEXT NOT NULL,
    role TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    scope TEXT NOT NULL,
    deployment TEXT NOT NULL,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL,
    request_id TEXT NOT NULL,
    replica TEXT NOT NULL
);
CREATE INDEX audit_events_identity ON audit_events (identity, seq);

CREATE FUNCTION pullbroker_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION pullbroker_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION pullbroker_audit_append_only();
