"""GracefulStop: first signal requests a stop, second aborts, previous handlers come back."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from revrnn_cli.training import GracefulStop


def _wait_for(predicate, timeout: float = 2.0) -> None:
    """Python runs signal handlers between bytecodes of the main thread; give it a moment."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.001)


def test_sigterm_requests_a_stop(capsys) -> None:
    with GracefulStop() as stop:
        assert not stop.requested and stop.exit_code == 0
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: stop.requested)
        assert stop.requested and stop.signum == signal.SIGTERM
        assert stop.exit_code == 143
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "finishing the current step, then saving (press Ctrl-C again to stop at once, saving the state before this step)" in lines[0]


def test_sigint_exit_code() -> None:
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt without the handler
        _wait_for(lambda: stop.requested)
    assert stop.signum == signal.SIGINT and stop.exit_code == 130


def test_second_signal_raises_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt):
        with GracefulStop() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for(lambda: stop.requested)
            assert stop.requested
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=2.0)
            pytest.fail("second signal did not abort")


def test_previous_handlers_are_restored_also_on_error() -> None:
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGINT, mine)
        with GracefulStop():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine

        with pytest.raises(RuntimeError):
            with GracefulStop():
                raise RuntimeError("boom")
        assert signal.getsignal(signal.SIGTERM) is mine and signal.getsignal(signal.SIGINT) is mine

        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: seen)
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_outside_main_thread_installs_nothing() -> None:
    before = signal.getsignal(signal.SIGTERM)
    result = {}

    def body():
        with GracefulStop() as stop:
            result["handler"] = signal.getsignal(signal.SIGTERM)
            result["requested"] = stop.requested

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert result == {"handler": before, "requested": False}


def test_a_second_signal_inside_a_protected_section_is_only_noted() -> None:
    with GracefulStop(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        _wait_for(lambda: stop.requested)
        with stop.protected():  # e.g. the parameter update: must not be cut in half
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=0.3)
        assert stop.requested and stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):  # outside, the next one stops at once again
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=2.0)


def test_request_stops_without_a_signal_and_keeps_the_first_reason() -> None:
    with GracefulStop(announce=False) as stop:
        stop.request(141, "stdout was closed")
        stop.request(99, "something later")
        assert stop.requested and stop.exit_code == 141 and stop.reason == "stdout was closed"
        with pytest.raises(KeyboardInterrupt):  # a signal after a request is a second request: stop at once
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for(lambda: False, timeout=2.0)


def test_the_signal_that_stops_at_once_gives_the_reason_and_the_exit_code() -> None:
    with GracefulStop(announce=False) as stop:
        stop.request(141, "stdout was closed")
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, timeout=2.0)
    assert stop.reason == "SIGINT received again" and stop.exit_code == 130
