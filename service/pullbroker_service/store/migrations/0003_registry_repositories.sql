-- pullbroker schema 3: a registry record's repository globs (domain/repository_globs.py).
-- Several records may serve one host; a pull that names no record gets the one whose glob
-- matches the repository most specifically. Empty (the default for existing rows): every
-- repository of the host, as before.

ALTER TABLE registries ADD COLUMN repositories TEXT[] NOT NULL DEFAULT '{}';
