"""The state database: SQLAlchemy tables, the store, and Alembic migrations."""
