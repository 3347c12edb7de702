"""The database roles the README documents (MariaDB), created here with exactly the README's
grants: the application role appends and reads and, even with the triggers gone, cannot rewrite
history (it lacks UPDATE and DELETE on events); the service role runs everything ``ledger
serve`` does (projector, sweeper, claims, connectors) and nothing more."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from connectors import SAMPLE_CSV
from forensics.chain import verify_chain
from ledger import Ledger, RunFinished, RunProgressed
from ledger.clock import utcnow
from service.claims import claim, prune_claims
from service.cli import cli
from tests import support
from tests.service.support import readme_grants
from tests.support import not_broken


@contextmanager
def role_url(db_url: str, role: str) -> Iterator[str]:
    """A fresh user with the README's grants for ``role``, on the test database."""
    url = make_url(db_url)
    name = f"{role}_{uuid.uuid4().hex[:6]}"
    password = uuid.uuid4().hex
    admin = create_engine(url)
    whos = [f"'{name}'@'%'", f"'{name}'@'localhost'"]
    with admin.begin() as conn:
        for who in whos:
            conn.execute(text(f"CREATE USER {who} IDENTIFIED BY '{password}'"))
            for grant in readme_grants(role):
                statement = grant.replace("ledger.", f"`{url.database}`.")
                conn.execute(text(statement.replace(f"'{role}'@'%'", who)))
    try:
        yield url.set(username=name, password=password).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            for who in whos:
                conn.execute(text(f"DROP USER IF EXISTS {who}"))
        admin.dispose()


def test_the_documented_application_role(ledger: Ledger, backend: str, db_url: str) -> None:
    if backend != "mysql":
        pytest.skip("database roles are a MariaDB matter")
    with role_url(db_url, "ledger_app") as app_url:
        app = Ledger.from_url(app_url)
        try:
            run_id = app.start_run(1, "SOURCE_1")
            app.append(
                [
                    RunProgressed(run_id=run_id, records_fetched=3),
                    RunFinished(run_id=run_id, status="success"),
                ]
            )
            assert [e.type for e in app.read_run(run_id)] == [
                "RunStarted",
                "RunProgressed",
                "RunFinished",
            ]
            assert verify_chain(app).ok
            for statement in (
                "UPDATE ledger_events SET actor = 'x'",
                "DELETE FROM ledger_events",
                "TRUNCATE TABLE ledger_events",
                "DROP TRIGGER ledger_events_no_update",
            ):
                with pytest.raises(DBAPIError), app.engine.begin() as conn:
                    conn.execute(text(statement))
            assert len(app.read_run(run_id)) == 3
            # A connector run through the CLI: events plus the source records it upserts.
            result = CliRunner().invoke(
                cli, ["run", "csv", "--path", str(SAMPLE_CSV), "--source-id", "2", "--db", app_url]
            )
            assert result.exit_code == 0, result.output
        finally:
            app.close()


def test_a_role_without_select_on_the_version_table_is_told_which_grant_it_lacks(
    ledger: Ledger, backend: str, db_url: str
) -> None:
    """A role granted what the README said before 2026-12-07 (SELECT on ``alembic_version``,
    where the revision was kept then): once ``ledger migrate`` moved the revision, its every
    command is refused naming the grant it lacks, exit 3."""
    if backend != "mysql":
        pytest.skip("database roles are a MariaDB matter")
    with role_url(db_url, "ledger_app") as app_url:
        admin = create_engine(make_url(db_url))
        name = make_url(app_url).username
        try:
            with admin.begin() as conn:
                for host in ("%", "localhost"):
                    database = make_url(db_url).database
                    conn.execute(
                        text(
                            f"REVOKE SELECT ON `{database}`.ledger_alembic_version "
                            f"FROM '{name}'@'{host}'"
                        )
                    )
        finally:
            admin.dispose()
        result = CliRunner().invoke(cli, ["status", "--db", app_url])
        assert result.exit_code == 3, result.output
        assert "grant SELECT on ledger_alembic_version to this user" in result.stderr
        assert make_url(app_url).password not in result.output


def test_the_documented_service_role_runs_what_serve_runs(
    ledger: Ledger, backend: str, db_url: str, tmp_path: Path
) -> None:
    if backend != "mysql":
        pytest.skip("database roles are a MariaDB matter")
    run_id = ledger.start_run(1, "SOURCE_1", occurred_at=utcnow() - timedelta(hours=3))
    with role_url(db_url, "ledger_service") as service_url:
        runner = CliRunner()
        spool = ["--spool-dir", str(tmp_path / "spool")]
        for args in (
            ["run", "csv", "--path", str(SAMPLE_CSV), "--source-id", "2", *spool],
            ["project"],
            ["sweep"],
            ["project"],
            ["status"],
            ["report", "--format", "json"],
            ["verify"],
        ):
            result = runner.invoke(cli, [*args, "--db", service_url])
            assert result.exit_code in (0, 1), (args, result.output)  # 1: report's findings
            assert "denied" not in result.output, (args, result.output)
        service = Ledger.from_url(service_url)
        try:
            tick = utcnow().replace(microsecond=0)
            assert claim(service, "job", tick, "me")
            assert not claim(service, "job", tick, "other")
            assert claim(service, "job", tick + timedelta(seconds=1), "me")
            # The job's latest claim is kept (its tick may still be running): one goes.
            assert prune_claims(service, older_than=timedelta(0)) == 1
            with pytest.raises(DBAPIError), service.engine.begin() as conn:
                conn.execute(text("DELETE FROM ledger_events"))
        finally:
            service.close()
    assert ledger.run(run_id).state == "timed_out"  # type: ignore[union-attr]


def test_verify_as_the_service_role_says_what_it_could_not_check_of_the_triggers(
    ledger: Ledger, backend: str, db_url: str
) -> None:
    """MariaDB shows a trigger's definition only to a user with the TRIGGER privilege on its
    table, which the service role must not have (it could drop the triggers); with INSERT it
    sees their names. Its verify says the definitions were not checked, with the reason (never
    a silent pass), and still names a trigger that is gone."""
    if backend != "mysql":
        pytest.skip("database roles are a MariaDB matter")
    ledger.start_run(1, "SOURCE_1")
    runner = CliRunner()
    with role_url(db_url, "ledger_service") as service_url:
        result = runner.invoke(cli, ["verify", "--format", "json", "--db", service_url])
        assert result.exit_code == 0, result.output
        triggers = json.loads(result.stdout)["triggers"]
        assert triggers["checked"] is False
        assert "TRIGGER privilege" in triggers["unchecked_reason"]
        assert triggers["found"] == ["ledger_events_no_delete", "ledger_events_no_update"]
        text_out = runner.invoke(cli, ["verify", "--db", service_url]).stdout
        for words in (
            "triggers: NOT CHECKED: the database user ledger_service_",
            "can see the names of the triggers of ledger_events but not their",
            "run `ledger verify` as the schema owner",
        ):
            assert not_broken(words) in not_broken(text_out)
        with ledger.engine.begin() as conn:  # a redefinition the role cannot see...
            conn.execute(text("DROP TRIGGER ledger_events_no_update"))
            conn.execute(
                text(
                    "CREATE TRIGGER ledger_events_no_update BEFORE UPDATE ON ledger_events "
                    "FOR EACH ROW SET @ledger_noop = 1"
                )
            )
            conn.execute(text("DROP TRIGGER ledger_events_no_delete"))  # ...and a drop it can
        result = runner.invoke(cli, ["verify", "--format", "json", "--db", service_url])
        assert result.exit_code == 1
        report = json.loads(result.stdout)
        assert report["triggers"]["checked"] is False
        assert [(p["column"], p["message"]) for p in report["problems"]] == [
            (
                "ledger_events_no_delete",
                "trigger ledger_events_no_delete on ledger_events is missing (dropped?)",
            )
        ]
    owner = runner.invoke(cli, ["verify", "--format", "json", "--db", db_url])
    assert owner.exit_code == 1  # the schema owner sees what the service role could not
    assert json.loads(owner.stdout)["triggers"]["checked"] is True
    assert sorted(p["column"] for p in json.loads(owner.stdout)["problems"]) == [
        "ledger_events_no_delete",
        "ledger_events_no_update",
    ]


def test_a_user_who_sees_no_trigger_is_told_so_not_that_they_are_missing(
    ledger: Ledger, backend: str, db_url: str
) -> None:
    if backend != "mysql":
        pytest.skip("database roles are a MariaDB matter")
    url = make_url(db_url)
    name, password = f"reader_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    whos = [f"'{name}'@'%'", f"'{name}'@'localhost'"]
    tables = ("ledger_events", "ledger_runs", "ledger_head", "ledger_alembic_version")
    tables += ("ingestion_runs", "ingestion_run_transitions", "projection_checkpoints")
    tables += ("projection_skips",)
    with ledger.engine.begin() as conn:
        for who in whos:
            conn.execute(text(f"CREATE USER {who} IDENTIFIED BY '{password}'"))
            for table in tables:
                conn.execute(text(f"GRANT SELECT ON `{url.database}`.{table} TO {who}"))
    reader = url.set(username=name, password=password).render_as_string(hide_password=False)
    try:
        result = CliRunner().invoke(cli, ["verify", "--format", "json", "--db", reader])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["triggers"]["found"] == []
        assert "cannot see the triggers of ledger_events" in report["triggers"]["unchecked_reason"]
    finally:
        with ledger.engine.begin() as conn:
            for who in whos:
                conn.execute(text(f"DROP USER IF EXISTS {who}"))


def test_migrate_without_the_trigger_grant_refuses_before_making_anything() -> None:
    """Without TRIGGER, `ledger migrate` failed (1142) after it had made ledger_events,
    ledger_runs and ledger_head (MariaDB commits each DDL statement), and `ledger append`
    then wrote events an UPDATE could rewrite. Now it says which grant is missing, exit 3,
    and makes nothing; with the grant, the same user migrates."""
    base = support.mysql_base_url()
    if base is None:
        pytest.skip("database grants are a MariaDB matter")
    db_url = support.create_mysql_database(base)
    url = make_url(db_url)
    name, password = f"owner_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    whos = [f"'{name}'@'%'", f"'{name}'@'localhost'"]
    admin = create_engine(url)
    owner = url.set(username=name, password=password).render_as_string(hide_password=False)
    try:
        with admin.begin() as conn:
            for who in whos:
                conn.execute(text(f"CREATE USER {who} IDENTIFIED BY '{password}'"))
                conn.execute(
                    text(
                        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP "
                        f"ON `{url.database}`.* TO {who}"
                    )
                )
        result = CliRunner().invoke(cli, ["migrate", "--db", owner])
        assert result.exit_code == 3, result.output
        assert f"lacks the TRIGGER privilege(s) on `{url.database}`" in result.stderr
        assert "nothing was changed" in result.stderr
        assert f"GRANT TRIGGER ON `{url.database}`.* TO '{name}'@" in result.stderr
        assert password not in result.output
        with admin.connect() as conn:
            assert conn.execute(text("SHOW TABLES")).all() == []
        sample = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"
        appended = CliRunner().invoke(cli, ["append", str(sample), "--db", owner])
        assert appended.exit_code == 1, appended.output
        assert "run `ledger migrate`" in appended.stderr
        with admin.begin() as conn:
            for who in whos:
                conn.execute(text(f"GRANT TRIGGER ON `{url.database}`.* TO {who}"))
        result = CliRunner().invoke(cli, ["migrate", "--db", owner])
        assert result.exit_code == 0, result.output
        with admin.connect() as conn:
            triggers = {row[0] for row in conn.execute(text("SHOW TRIGGERS"))}
        assert triggers == {"ledger_events_no_update", "ledger_events_no_delete"}
    finally:
        with admin.begin() as conn:
            for who in whos:
                conn.execute(text(f"DROP USER IF EXISTS {who}"))
        admin.dispose()
        support.drop_mysql_database(db_url)


@contextmanager
def ledger_of_an_earlier_release() -> Iterator[tuple[str, Engine]]:
    """A database of its own, migrated, its revision in ``alembic_version`` as releases before
    2026-12-07 kept it (MariaDB); its URL and an admin engine on it."""
    base = support.mysql_base_url()
    if base is None:
        pytest.skip("database grants are a MariaDB matter")
    db_url = support.create_mysql_database(base)
    admin = create_engine(make_url(db_url))
    try:
        support.migrate(db_url)
        with admin.begin() as conn:
            revision = conn.execute(text("SELECT version_num FROM ledger_alembic_version")).one()
            conn.execute(text("DROP TABLE ledger_alembic_version"))
            conn.execute(
                text(
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
                )
            )
            conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision[0]})
        yield db_url, admin
    finally:
        admin.dispose()
        support.drop_mysql_database(db_url)


@contextmanager
def user_with(admin: Engine, db_url: str, grants: list[str]) -> Iterator[str]:
    """A fresh user granted ``grants`` (statements naming ``'WHO'``); its URL."""
    url = make_url(db_url)
    name, password = f"r_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    whos = [f"'{name}'@'%'", f"'{name}'@'localhost'"]
    try:
        with admin.begin() as conn:
            for who in whos:
                conn.execute(text(f"CREATE USER {who} IDENTIFIED BY '{password}'"))
                for grant in grants:
                    statement = grant.replace("ledger.", f"`{url.database}`.")
                    conn.execute(text(statement.replace("'WHO'", who)))
        yield url.set(username=name, password=password).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            for who in whos:
                conn.execute(text(f"DROP USER IF EXISTS {who}"))


def test_the_roles_granted_as_before_read_a_ledger_of_an_earlier_release() -> None:
    """The application role as the README granted it before 2026-12-07 (SELECT on
    ``alembic_version``) on a ledger that release migrated: the revision is still in
    ``alembic_version``, but every command was refused, exit 3, "grant SELECT on
    ledger_alembic_version", a grant MariaDB refuses on a table not there yet (1146): the
    server hides from such a role whether ``ledger_alembic_version`` exists (1142 for both).
    Now the role reads the revision where it is, until the migrate that moves it."""
    with ledger_of_an_earlier_release() as (db_url, admin):
        grants = [
            grant.replace("ledger_alembic_version", "alembic_version").replace(
                "'ledger_app'@'%'", "'WHO'"
            )
            for grant in readme_grants("ledger_app")
        ]
        with user_with(admin, db_url, grants) as app_url:
            sample = Path(__file__).resolve().parents[2] / "examples" / "sample_events.jsonl"
            result = CliRunner().invoke(cli, ["append", str(sample), "--db", app_url])
            assert result.exit_code == 0, result.output


def test_migrate_by_a_role_that_cannot_move_the_revision_refuses_before_changing_anything() -> None:
    """A role that may read and create tables but not write rows, running migrate on a ledger
    of an earlier release (at the newest revision, so migrate's privilege check was skipped):
    it made ``ledger_alembic_version`` (MariaDB commits a CREATE at once), then failed on its
    INSERT with the driver's "(1142, INSERT command denied …)", and every process read the
    empty table as "schema at nothing (empty database)". Now it is refused before the move,
    naming the privileges, exit 3, nothing made."""
    with ledger_of_an_earlier_release() as (db_url, admin):
        database = make_url(db_url).database
        with user_with(admin, db_url, ["GRANT SELECT, CREATE ON ledger.* TO 'WHO'"]) as url:
            result = CliRunner().invoke(cli, ["migrate", "--db", url])
            assert result.exit_code == 3, result.output
            assert "lacks the INSERT, UPDATE, DELETE, ALTER, INDEX, DROP, TRIGGER" in (
                result.stderr
            ), result.stderr
            assert "nothing was changed" in result.stderr
            assert make_url(url).password not in result.output
        with admin.connect() as conn:
            tables = set(conn.execute(text("SHOW TABLES")).scalars())
        assert "ledger_alembic_version" not in tables
        assert "alembic_version" in tables
        assert f"`{database}`" in result.stderr
