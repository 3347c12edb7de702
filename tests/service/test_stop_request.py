"""SIGTERM/SIGINT as a stop request (service.stop_request): the handler takes no lock, so a
signal arriving while the main thread holds the stop event's own lock cannot hang the
process (a `project --follow` sent SIGTERM in CI never stopped: its handler called
``Event.set()``, which waited for the lock its own thread held inside ``Event.wait``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator

import pytest

from service.stop_request import (
    StopRequest,
    defer_termination,
    release_termination,
    take_early_signals,
)


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """The test installs SIGTERM/SIGINT handlers; pytest's own are put back after it."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.mark.usefixtures("own_handlers")
def test_a_signal_while_the_main_thread_holds_the_events_lock_is_recorded() -> None:
    stop = threading.Event()
    request = StopRequest(stop)
    request.install()
    # Where Event.wait is as it returns: holding the lock Event.set() takes. The handler runs
    # right here, in this thread; one that took that lock would never return.
    with stop._cond:  # type: ignore[attr-defined]
        signal.raise_signal(signal.SIGTERM)
    assert request.received == [signal.SIGTERM]
    assert not stop.is_set()  # set by the main thread's wait, not by the handler
    assert request.wait(seconds=5)
    assert stop.is_set()
    assert request.signal_name == "SIGTERM"


@pytest.mark.usefixtures("own_handlers")
def test_sigint_is_a_stop_request_too() -> None:
    request = StopRequest(threading.Event())
    request.install()
    signal.raise_signal(signal.SIGINT)
    assert request.wait(seconds=5)
    assert request.signal_name == "SIGINT"


def test_the_wait_ends_when_another_thread_sets_stop_or_at_its_deadline() -> None:
    stop = threading.Event()
    request = StopRequest(stop)
    assert not request.wait(seconds=0.05)  # neither: the deadline
    setter = threading.Thread(target=stop.set)
    setter.start()
    assert request.wait()  # no deadline: returns once another thread sets it
    setter.join()
    assert request.signal_name is None


@pytest.mark.usefixtures("own_handlers")
def test_a_sigterm_kept_while_the_command_loaded_is_taken_by_its_stop_request() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as the console script starts
    defer_termination()
    signal.raise_signal(signal.SIGTERM)  # recorded, not the end of the process
    request = StopRequest(threading.Event())
    request.install()
    assert request.wait(seconds=5)
    assert request.signal_name == "SIGTERM"
    assert take_early_signals() == []  # handed over once
    release_termination()  # the command's own handler stays
    assert signal.getsignal(signal.SIGTERM) == request._record


@pytest.mark.usefixtures("own_handlers")
def test_a_command_that_releases_sigterm_gets_the_default_back() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    defer_termination()
    release_termination()  # none came: nothing raised
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.usefixtures("own_handlers")
def test_a_sigterm_the_process_was_started_ignoring_stays_ignored() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nohup-like supervisors
    defer_termination()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    release_termination()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN


@pytest.mark.usefixtures("own_handlers")
@pytest.mark.parametrize("ignored", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_the_process_was_started_ignoring_is_no_stop_request(
    ignored: signal.Signals,
) -> None:
    # Review 35: `project --follow` and `serve` started with SIGTERM ignored stopped on one
    # (their handler replaced SIG_IGN), and a script's background `ledger serve &` (SIGINT
    # ignored, as the shell starts it) stopped on the Ctrl-C meant for the script.
    other = signal.SIGINT if ignored == signal.SIGTERM else signal.SIGTERM
    signal.signal(ignored, signal.SIG_IGN)
    defer_termination()
    request = StopRequest(threading.Event())
    request.install()
    assert signal.getsignal(ignored) is signal.SIG_IGN
    signal.raise_signal(ignored)
    assert request.received == []
    signal.raise_signal(other)
    assert request.received == [other]
