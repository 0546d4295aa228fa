"""The state database, split by job: lifecycle and error boundary (`database`), damage checks
(`damage`), documents, jobs, credentials and cursors, the status read model, the composed
`store`, the tables and their Alembic migrations; SQLite by default, PostgreSQL alike."""
