"""The application role the README documents (MariaDB): it can append and read, and even if
the triggers were gone it could not rewrite history, because it lacks UPDATE and DELETE."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ledger import Ledger, RunFinished, RunProgressed, verify_chain

GRANTS = (  # exactly the README's "Grants on MySQL/MariaDB"
    "GRANT SELECT, INSERT ON `{db}`.ledger_events TO {user}",
    "GRANT SELECT, INSERT, UPDATE ON `{db}`.ledger_runs TO {user}",
    "GRANT SELECT, UPDATE ON `{db}`.ledger_head TO {user}",
)


def test_the_documented_application_role(ledger: Ledger, backend: str, db_url: str) -> None:
    if backend != "mysql":
        pytest.skip("database roles are a MariaDB matter")
    url = make_url(db_url)
    name = f"ledger_app_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    user = f"'{name}'@'%'"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE USER {user} IDENTIFIED BY '{password}'"))
        conn.execute(text(f"CREATE USER '{name}'@'localhost' IDENTIFIED BY '{password}'"))
        for grant in GRANTS:
            for who in (user, f"'{name}'@'localhost'"):
                conn.execute(text(grant.format(db=url.database, user=who)))
    app_url = url.set(username=name, password=password).render_as_string(hide_password=False)
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
    finally:
        app.close()
        with admin.begin() as conn:
            conn.execute(text(f"DROP USER IF EXISTS {user}"))
            conn.execute(text(f"DROP USER IF EXISTS '{name}'@'localhost'"))
        admin.dispose()
