-- pullbroker schema 1: registry records, deployments, the local secret store's envelopes.
-- Applied by store/postgres_migrations.py inside one transaction under an advisory lock.
-- Rows hold references to secrets and encrypted envelopes, never a credential in plaintext;
-- the key-encryption key is never stored here.

CREATE TABLE registries (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL CONSTRAINT registries_display_name_key UNIQUE,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    registry_ca_pem TEXT NOT NULL,
    region TEXT NOT NULL,
    allow_basic_passthrough BOOLEAN NOT NULL,
    credential_version INTEGER NOT NULL,
    secret_ref TEXT,
    creator TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    etag TEXT NOT NULL,
    -- PENDING rows are the reconciler's journal: a create that wrote its record but has not
    -- yet stored its secret and flipped to READY.
    state TEXT NOT NULL
);
CREATE INDEX registries_host ON registries (host, state);
CREATE INDEX registries_pending ON registries (state) WHERE state <> 'ready';

CREATE TABLE deployments (
    id TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    registry_id TEXT NOT NULL,
    inline_credential BOOLEAN NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    failure_category TEXT NOT NULL,
    message TEXT NOT NULL,
    digest TEXT NOT NULL,
    creator TEXT NOT NULL,
    reported_by TEXT NOT NULL,
    create_time TIMESTAMPTZ NOT NULL,
    update_time TIMESTAMPTZ NOT NULL,
    etag TEXT NOT NULL
);
CREATE INDEX deployments_registry ON deployments (registry_id, state);

-- A counter rather than max(version)+1: a version number is never reused, even after the
-- newest version was deleted.
CREATE TABLE secret_key_versions (
    key TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
CREATE TABLE secret_envelopes (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    kek TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (key, version)
);
