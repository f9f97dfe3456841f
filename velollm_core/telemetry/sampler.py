"""A background thread that calls one function at a fixed rate, and a time series of bounded size.

The sampler sleeps on an Event (so ``stop()`` returns at once), keeps to its schedule without
drifting (the next tick is planned from the start, not from the end of the last read), and measures
its own CPU time with ``time.thread_time()``: the overhead it adds is in every result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class PeriodicSampler:
    """Calls ``read(now)`` every ``period_s`` seconds on a daemon thread until ``stop()``.

    ``now`` is ``time.perf_counter()`` at the tick. An exception in ``read`` is kept (``error``) and
    ends the sampling: a sensor that broke mid-run must not spin at 10 Hz printing tracebacks.
    """

    def __init__(self, read: Callable[[float], None], period_s: float, name: str) -> None:
        self.read = read
        self.period_s = period_s
        self.name = name
        self.ticks = 0
        self.late_ticks = 0  # reads that took longer than a period (the next tick was skipped)
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"velollm-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cpu0, start = time.thread_time(), time.perf_counter()
        due = start
        try:
            while not self._stop.is_set():
                now = time.perf_counter()
                self.read(now)
                self.ticks += 1
                due += self.period_s
                after = time.perf_counter()
                if after > due:  # a slow read: skip the ticks it ran over rather than fire them in a burst
                    missed = int((after - due) / self.period_s) + 1
                    self.late_ticks += missed
                    due += missed * self.period_s
                self._stop.wait(due - after)
        except Exception as exc:  # noqa: BLE001 - kept and reported by the session, once
            self.error = exc
        finally:
            self.cpu_s = time.thread_time() - cpu0
            self.wall_s = time.perf_counter() - start

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


class BoundedSeries:
    """Points ``{"t": s, field: value}`` kept to at most ``limit``: when full, neighbours are merged in
    pairs (so spacing stays even over the whole run) and later points are merged as many at a time.

    Merging averages each field (power, utilization: the mean keeps the energy), except the fields
    in ``peaks``, whose maximum is kept (memory: a plot must show the peak that happened).
    """

    def __init__(self, limit: int = 512, peaks: tuple[str, ...] = ()) -> None:
        self.limit = max(limit, 2)
        self.peaks = set(peaks)
        self.points: list[dict[str, Any]] = []
        self.stride = 1  # raw points per kept point
        self._pending: list[dict[str, Any]] = []

    def add(self, point: dict[str, Any]) -> None:
        self._pending.append(point)
        if len(self._pending) >= self.stride:
            self.points.append(self._merge(self._pending))
            self._pending = []
        if len(self.points) >= self.limit:
            self.points = [self._merge(self.points[i:i + 2]) for i in range(0, len(self.points), 2)]
            self.stride *= 2

    def _merge(self, group: list[dict[str, Any]]) -> dict[str, Any]:
        if len(group) == 1:
            return group[0]
        merged: dict[str, Any] = {}
        for key in group[0]:
            values = [p[key] for p in group if isinstance(p.get(key), (int, float))]
            if not values:
                merged[key] = None
            elif key in self.peaks:
                merged[key] = max(values)
            else:
                merged[key] = sum(values) / len(values)
        return merged

    def columns(self) -> dict[str, list[Any]]:
        """The points as columns (``{"t": [...], "power_w": [...]}``), pending ones included."""
        points = self.points + ([self._merge(self._pending)] if self._pending else [])
        keys = list(points[0]) if points else []
        return {key: [_round(p.get(key)) for p in points] for key in keys}


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value
