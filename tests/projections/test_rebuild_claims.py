"""One rebuild at a time across the nodes of a cluster (issue 18): the claim row that a Galera
node certifies, where the named lock holds on one node only. A rebuild through another node is
played by a claim row naming another node, as that rebuild would have written it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import Connection, insert, select, text, update

from ledger import Ledger
from ledger.clock import use_clock
from ledger.dialects import lock_name
from projections import ProjectionBusyError, rebuild
from projections.dialects import database_node, exclusive_rebuild
from projections.rebuild_claims import CLAIM_TTL, LOCAL_TTL, RebuildClaim
from projections.schema import PROJECTION_NAME, rebuild_claims
from tests.cluster.galera import wait_until
from tests.projection_support import replayed_rows, table_rows

CLAIMED_AT = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _claim_left_by(ledger: Ledger, node: str, heartbeat_at: datetime = CLAIMED_AT) -> None:
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(rebuild_claims).values(
                projection=PROJECTION_NAME,
                claimed_by="other-host:4242:feedf00d",
                node=node,
                claimed_at=CLAIMED_AT,
                heartbeat_at=heartbeat_at,
            )
        )


def _claims(ledger: Ledger) -> list[str]:
    with ledger.engine.connect() as conn:
        return list(conn.execute(select(rebuild_claims.c.claimed_by)).scalars())


def _this_node(ledger: Ledger) -> str:
    with ledger.engine.connect() as conn:
        return database_node(conn)


def test_a_rebuild_through_another_node_refuses_this_one_until_its_claim_lapses(
    ledger: Ledger,
) -> None:
    run_id = ledger.start_run(1, "SOURCE_1")
    _claim_left_by(ledger, "node-2.example:3306")
    with freeze_time(CLAIMED_AT + CLAIM_TTL / 2):
        with pytest.raises(ProjectionBusyError) as refused:
            rebuild(ledger)
        assert str(refused.value) == (
            f"another rebuild of {PROJECTION_NAME} is running (other-host:4242:feedf00d, "
            "through database node node-2.example:3306, since 2026-12-02 09:00:00 UTC; last "
            "heard of 30 s ago): if it is gone, its claim lapses 60 s after that"
        )
        assert table_rows(ledger) == {}, "nothing was replayed"
    with freeze_time(CLAIMED_AT + CLAIM_TTL):  # silent for the whole TTL: its process is gone
        assert rebuild(ledger).events == 1
    assert set(table_rows(ledger)) == {run_id}
    assert _claims(ledger) == [], "a rebuild that ended leaves no claim"


def test_a_claim_left_through_this_node_lapses_once_its_holder_missed_a_renewal(
    ledger: Ledger,
) -> None:
    """This node's rebuild lock is free, so no lock session of the holder is left: once it has
    not renewed its claim for two heartbeats, it is gone."""
    ledger.start_run(1, "SOURCE_1")
    _claim_left_by(ledger, _this_node(ledger))
    with freeze_time(CLAIMED_AT + LOCAL_TTL / 2), pytest.raises(ProjectionBusyError) as refused:
        rebuild(ledger)
    assert "last heard of 10 s ago): if it is gone, its claim lapses 20 s after that" in str(
        refused.value
    )
    with freeze_time(CLAIMED_AT + LOCAL_TTL):
        assert rebuild(ledger).events == 1
    assert _claims(ledger) == []


def test_a_rebuild_that_cannot_renew_its_claim_stops_before_its_swap(ledger: Ledger) -> None:
    for source in range(1, 4):
        ledger.start_run(source, f"SOURCE_{source}")
    before = table_rows(ledger)
    with freeze_time(CLAIMED_AT) as frozen:

        def stalled(done: int, total: int) -> None:
            if done == 1:
                frozen.tick(CLAIM_TTL)  # as if the process were paused past the TTL

        with pytest.raises(
            ProjectionBusyError, match=re.escape("lost its claim (not renewed for 60 s)")
        ):
            rebuild(ledger, batch_size=1, progress=stalled)
    assert table_rows(ledger) == before, "the live tables were not swapped"
    assert _claims(ledger) == []
    assert table_rows(ledger) == before
    rebuild(ledger)
    assert table_rows(ledger) == replayed_rows(ledger)


def test_a_claim_taken_over_is_found_by_the_check_before_the_swap(ledger: Ledger) -> None:
    claim = RebuildClaim(ledger, PROJECTION_NAME, _this_node(ledger))
    claim.take()
    try:
        claim.check()
        with ledger.engine.begin() as conn:  # another node's rebuild took the lapsed claim
            conn.execute(update(rebuild_claims).values(claimed_by="node-2:77:cafe"))
        claim.check()  # from memory: the heartbeat has not been refused yet
        with (
            ledger.engine.connect() as conn,
            pytest.raises(
                ProjectionBusyError, match=re.escape("lost its claim (node-2:77:cafe holds it now)")
            ),
        ):
            claim.check(conn)
    finally:
        claim.release()
    assert _claims(ledger) == ["node-2:77:cafe"], "the release leaves another's claim alone"


def test_a_live_claim_is_judged_by_the_database_clock_whatever_the_hosts_say(
    backend: str, db_url: str
) -> None:
    """Clock skew between the claim's writer and its reader: the holder's host runs 5 minutes
    slow, yet it renewed its claim a moment ago. Both measure time by the database's clock."""
    if backend == "sqlite":
        pytest.skip("SQLite runs on this host's clock: there is no other host to be skewed")
    use_clock(None)  # the database server's clock, as in production
    ledger = Ledger.from_url(db_url)
    try:
        ledger.start_run(1, "SOURCE_1")
        holder = RebuildClaim(ledger, PROJECTION_NAME, "node-2.example:3306")
        with freeze_time(datetime.now(UTC) - timedelta(minutes=5)):  # its host's clock is slow
            holder.take()
        try:
            with pytest.raises(ProjectionBusyError, match=re.escape("last heard of 0 s ago")):
                rebuild(ledger)
            holder.check()  # and the holder, by the same clock, has not been silent either
        finally:
            holder.release()
        assert table_rows(ledger) == {}, "nothing was replayed"
    finally:
        ledger.close()


def test_a_live_rebuild_whose_lock_session_was_cut_keeps_its_claim(
    backend: str, ledger: Ledger
) -> None:
    """The rebuild's lock session sits idle the whole rebuild: a proxy's idle timeout (HAProxy's
    `timeout server`), a network cut or a DBA's KILL ends it while the rebuild goes on. The
    node's lock is free then, but its holder is alive and renewing its claim."""
    if backend == "sqlite":
        pytest.skip("a file lock lives as long as its process")
    ledger.start_run(1, "SOURCE_1")
    with ledger.engine.connect() as conn:
        name = lock_name(conn, f"{PROJECTION_NAME}.rebuild")
    refused: ProjectionBusyError | None = None
    # Its end finds the lock's session gone: the server freed the lock with it, and the end
    # says so in the log rather than raising over the rebuild's own outcome.
    with exclusive_rebuild(ledger, PROJECTION_NAME) as claim:
        with ledger.engine.connect() as conn:
            session = conn.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": name}).scalar()
            conn.exec_driver_sql(f"KILL {int(session)}")
            wait_until(
                lambda: (
                    conn.execute(text("SELECT IS_FREE_LOCK(:name)"), {"name": name}).scalar() == 1
                ),
                10,
                "the killed session's lock to be freed",
            )
        try:
            rebuild(ledger)
        except ProjectionBusyError as exc:
            refused = exc
        claim.check()  # still this process's
    assert refused is not None, "a second rebuild ran beside the live one"
    assert "last heard of 0 s ago" in str(refused)
    assert table_rows(ledger) == {}, "nothing was replayed"


def test_every_replay_transaction_renews_the_claim_in_it(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each transaction of the bulk replay writes only if the claim is still this rebuild's
    (a compare-and-set in it), so a rebuild that was taken over cannot add one more transaction
    of events to the shadow tables of the rebuild that took over (they have the same names)."""
    import projections.rebuilder as rebuilder

    for source in range(1, 6):
        ledger.start_run(source, f"SOURCE_{source}")
    monkeypatch.setattr(rebuilder, "EVENTS_PER_TRANSACTION", 2)
    renewals_in_a_transaction: list[bool] = []
    check = RebuildClaim.check

    def spied(self: RebuildClaim, conn: Connection | None = None) -> None:
        renewals_in_a_transaction.append(conn is not None and conn.in_transaction())
        check(self, conn)

    monkeypatch.setattr(RebuildClaim, "check", spied)
    assert rebuild(ledger, batch_size=1).events == 5
    assert renewals_in_a_transaction == [True] * 4  # 3 replay transactions, then the swap's
    assert table_rows(ledger) == replayed_rows(ledger)


def test_a_takeover_loses_to_a_renewal_committed_between_its_read_and_its_write(
    backend: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MySQL reads the claim row without a lock: a holder's renewal can commit after the
    takeover read a lapsed heartbeat and before it writes. The holder is alive then; its claim
    must not be taken over (it would stop a live rebuild at its next check)."""
    if backend == "sqlite":
        pytest.skip("BEGIN IMMEDIATE: nothing commits between a takeover's read and its write")
    _claim_left_by(ledger, "node-2.example:3306")
    renewed_at = CLAIMED_AT + 2 * CLAIM_TTL

    def renewal_commits_meanwhile() -> datetime:  # the takeover reads the clock after the row
        with ledger.engine.begin() as conn:
            conn.execute(update(rebuild_claims).values(heartbeat_at=renewed_at))
        monkeypatch.setattr(ledger, "clock", lambda: renewed_at)
        return renewed_at

    monkeypatch.setattr(ledger, "clock", renewal_commits_meanwhile)
    claim = RebuildClaim(ledger, PROJECTION_NAME, _this_node(ledger))
    try:
        with pytest.raises(ProjectionBusyError, match=re.escape("last heard of 0 s ago")):
            claim.take()
    finally:
        claim.release()
    assert _claims(ledger) == ["other-host:4242:feedf00d"], "the live holder keeps its claim"
