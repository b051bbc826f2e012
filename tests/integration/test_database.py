"""Stage 6: the schema comes only from Alembic, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from provenance.config import Settings
from provenance.db.models import Base
from provenance.db.session import alembic_config, make_engine, migrate
from provenance.runtime.services import Services
from tests.conftest import encode, photo, wait_for


def _assert_schema_matches_models(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # idempotent at start
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert head is not None and MigrationContext.configure(conn).get_current_revision() == head
    assert {"records", "signing_keys", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_schema_from_migrations(tmp_path: Path) -> None:
    _assert_schema_matches_models(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_postgresql_schema_from_migrations(postgres_url: str) -> None:
    _assert_schema_matches_models(postgres_url)


def test_certify_and_verify_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    services = Services.open(Settings(data_dir=tmp_path, database_url=postgres_url, anchor_poll_interval_s=0.05))
    try:
        assert services.engine.url.get_backend_name() == "postgresql"
        certified = services.certifier.certify(encode(photo("coffee.png")))
        wait_for(lambda: services.repository.get(certified.record.id).status == "registered")
        result = services.verifier.verify(certified.data)
        assert result.verdict == "authentic" and result.record_id == certified.record.id
    finally:
        services.close()
