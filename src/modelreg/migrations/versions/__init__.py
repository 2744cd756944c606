"""Alembic revisions of the core schema (a package only so that setuptools ships them;
Alembic skips this file)."""
