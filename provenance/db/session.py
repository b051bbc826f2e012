"""Engine creation and migrations (applied at start).

A SQLite database holds API key hashes, prompts and stored idempotent answers: its files (the database
and its ``-wal``/``-shm`` companions) are the service user's alone, mode 0600. A new database file is
created 0600 before SQLite opens it (SQLite gives its ``-wal``/``-shm`` files the database file's mode),
and files left more open by an older version are tightened at start.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

# The migrations ship inside the package (env.py, script.py.mako, versions/): alembic finds them
# through importlib.resources, so a wheel install migrates like a checkout does.
MIGRATIONS = "provenance.db:migrations"


DB_FILE_MODE = 0o600
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _sqlite_path(engine: Engine) -> Path | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def sqlite_files(engine: Engine) -> list[Path]:
    """The files of a file-backed SQLite database (those that exist), or [] for anything else."""
    base = _sqlite_path(engine)
    if base is None:
        return []
    return [path for path in (base.with_name(base.name + suffix) for suffix in SQLITE_SUFFIXES) if path.exists()]


def _create_private(engine: Engine) -> None:
    """Create a new SQLite file empty with mode 0600, so it is never readable by others, not even for a moment."""
    path = _sqlite_path(engine)
    if path is None:
        return
    # An existing file is tightened later; a missing folder is left for SQLite to report.
    with contextlib.suppress(FileExistsError, FileNotFoundError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_FILE_MODE))


def tighten_sqlite_files(engine: Engine) -> None:
    """Mode 0600 for the database's files (the owner may already have chosen tighter)."""
    for path in sqlite_files(engine):
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(DB_FILE_MODE)
        except OSError:  # not ours to change (another user's file, a read-only mount): SQLite says more
            pass


def make_engine(url: str) -> Engine:
    """An engine for the URL; SQLite gets a private file, WAL and foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _create_private(engine)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        # WAL lets the API read while the anchor worker writes. The journal mode belongs to the database file,
        # so it is set once here: switching it on every new connection fails ("disk I/O error") when several
        # threads open their first connections at the same moment.
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            tighten_sqlite_files(engine)  # with the -wal and -shm files there
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    """The Alembic configuration for this package's migrations on ``url``."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest migration."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
