"""Ctrl-C in ``RemoteTuner.search`` becomes an event checked between requests (the cancel that follows must
not hang on a lock an exception left held), and a second Ctrl-C still stops at once."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from tuner_service.remote_tuner import ctrl_c


@pytest.fixture
def default_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_the_first_ctrl_c_sets_the_event_and_the_second_raises(default_sigint) -> None:
    with ctrl_c() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupted.wait(5)  # no KeyboardInterrupt in the middle of whatever was running
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises by here at the latest
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_outside_the_main_thread_nothing_changes(default_sigint) -> None:
    seen = []

    def run() -> None:
        with ctrl_c() as interrupted:
            seen.append((interrupted.is_set(), signal.getsignal(signal.SIGINT)))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == [(False, signal.default_int_handler)]
