"""Schema migrations for PostgreSQL, NNNN_name.sql, applied in order (postgres_migrations.py)."""
