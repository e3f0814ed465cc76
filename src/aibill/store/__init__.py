"""Storage: SQLAlchemy tables, the engine, migrations and database error mapping."""
