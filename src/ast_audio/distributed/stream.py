"""A Dataset's rows on the driver as they come, watched: a job that stops producing rows says what it waits
for, then gives up, instead of hanging silently."""

from __future__ import annotations

import _thread
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from ast_audio.errors import ASTAudioError


class StalledError(ASTAudioError):
    """No row came for longer than the job's bound while work remained."""


class _Watch(threading.Thread):
    """Beside the main thread: reports a silence every `report_after_s` and, after `give_up_after_s`, interrupts
    the main thread (which is waiting inside Ray Data; an interrupt there ends the execution cleanly)."""

    def __init__(self, report_after_s: float, give_up_after_s: float, waiting: Callable[[], str],
                 report: Callable[[str], None]) -> None:
        super().__init__(name="ast-audio-stall-watch", daemon=True)
        self.report_after_s, self.give_up_after_s = report_after_s, give_up_after_s
        self.waiting, self.report = waiting, report
        self.last_result = time.monotonic()
        self.stopped = threading.Event()
        self.gave_up: str | None = None

    def what(self) -> str:
        try:
            return self.waiting()
        except Exception as exc:  # the report must not end the watch (e.g. Ray disconnected meanwhile)
            return f"(what it waits for could not be read: {exc})"

    def run(self) -> None:
        reported = self.last_result
        while not self.stopped.wait(min(1.0, self.report_after_s / 4)):
            now = time.monotonic()
            silent = now - self.last_result
            if silent >= self.give_up_after_s:
                self.gave_up = f"no result for {_seconds(silent)}, giving up: {self.what()}"
                _thread.interrupt_main()
                return
            if silent >= self.report_after_s and now - max(reported, self.last_result) >= self.report_after_s:
                reported = now
                self.report(f"no result for {_seconds(silent)}: {self.what()}")


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def stream_rows(dataset: Any, *, report_after_s: float, give_up_after_s: float,
                waiting: Callable[[], str], report: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """Yield `dataset`'s rows (dicts) as its blocks finish. After `report_after_s` seconds without a row,
    `report(...)` says how long and `waiting()` what the job waits for, again every `report_after_s`; after
    `give_up_after_s` without a row, the execution is stopped and StalledError raised. Iterate it from the
    main thread (elsewhere it reports but cannot give up). Errors of the pipeline are raised here."""
    in_main = threading.current_thread() is threading.main_thread()
    watch = _Watch(report_after_s, give_up_after_s if in_main else float("inf"), waiting, report)
    # Giving up interrupts the main thread as Ctrl-C does: whatever SIGINT handler the process holds (a library
    # may have set one that ignores it, and then a stalled job would wait forever), Python's own raises here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if in_main else None
    watch.start()
    try:
        for block in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            watch.last_result = time.monotonic()
            yield from block.to_pylist()
    except KeyboardInterrupt:
        if watch.gave_up:
            raise StalledError(watch.gave_up) from None
        raise
    finally:
        watch.stopped.set()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
