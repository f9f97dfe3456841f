"""One benchmark's telemetry: the server's own counters and the hardware's sensors, per load level.

The engine makes one ``TelemetrySession(metrics_url, sources, names=...)`` (``names``: the backend's
declared ``Capabilities.metrics``), calls ``start()`` once the server is
up, ``begin_level(key)`` where a level's clock starts (after its warm-up), ``end_level(key, runs=...)``
when its last request ended, and ``finish()`` at the end; ``finish()``'s dict is the result's
``telemetry``. Two daemon threads sample while the load runs: the hardware at ``sample_hz`` (10) and
the server's ``/metrics`` at ``server_hz`` (1: each llama-server scrape is a task in its decode loop).
Counters are also read synchronously at each level's edges, so a level's deltas (server tokens,
joules) cover exactly the level.

What cannot be read is said once (``warn`` and the result's ``why``) and is "unknown" in the result,
never 0; the run goes on without it.
"""

from __future__ import annotations

import bisect
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from velollm_core.contract.metricnames import MetricNames
from velollm_core.contract.telemetry import DeviceReading, SensorUnavailable, TelemetrySource
from velollm_core.telemetry import prometheus
from velollm_core.telemetry.sampler import BoundedSeries, PeriodicSampler

UNKNOWN = "unknown"
DISAGREEMENT = 0.02  # client and server token counts further apart than this are flagged
SCRAPE_TIMEOUT_S = 5.0
# Idle connections are let go before llama-server's own 5 s keep-alive would close them under a request.
KEEPALIVE_EXPIRY_S = 2.0


def compare_client_server(client_tokens: dict[str, float | None], server_tokens: dict[str, float | None],
                          tolerance: float = DISAGREEMENT) -> dict[str, dict[str, Any]]:
    """Per key both sides hold: client, server, the difference in % of the client's, and whether it is
    more than ``tolerance`` (2%). A key either side lacks is left out: no figure is better than a guess."""
    out: dict[str, dict[str, Any]] = {}
    for key, client in client_tokens.items():
        server = server_tokens.get(key)
        if client is None or server is None:
            continue
        diff = 0.0 if client == server else (math.inf if client == 0 else (server - client) / client)
        out[key] = {"client": client, "server": server,
                    "diff_pct": round(diff * 100, 2) if math.isfinite(diff) else None,
                    "disagree": abs(diff) > tolerance}
    return out


class _Scraper:
    """GETs of one endpoint over one kept-alive connection (a new httpx client per scrape costs ~20 ms
    of CPU: SSL context and pool setup, which at 1 Hz was 2% of a core)."""

    def __init__(self) -> None:
        self._client = None

    def __call__(self, url: str) -> str:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=SCRAPE_TIMEOUT_S, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S))
        try:
            response = self._client.get(url)
        except httpx.RemoteProtocolError:  # the server closed a kept-alive connection as we reused it
            response = self._client.get(url)
        if response.status_code != 200:
            raise ScrapeFailed(f"HTTP {response.status_code} from {url}: {response.text.strip()[:200]}")
        return response.text

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class ScrapeFailed(Exception):
    pass


def _stderr_warn(message: str) -> None:
    sys.stderr.write(f"warning: telemetry: {message}\n")


@dataclass
class _Device:
    """Readings of one device at full rate (between level edges), and its bounded plot series."""

    name: str
    kind: str
    source: str
    method: str | None = None  # "counter" (the sensor's energy counter) or "integrated power"
    # (t, utilization, memory used, power, cumulative energy) per reading, oldest first
    raw: list[tuple[float, float | None, int | None, float | None, float | None]] = field(default_factory=list)
    integrated_j: float = 0.0
    series: BoundedSeries = field(default_factory=lambda: BoundedSeries(peaks=("memory_used_bytes",)))
    memory_total_bytes: int | None = None

    def add(self, t: float, reading: DeviceReading, t0: float) -> None:
        last = self.raw[-1] if self.raw else None
        if self.method is None:
            self.method = "counter" if reading.energy_j is not None else (
                "integrated power" if reading.power_w is not None else None)
        power = reading.power_w
        energy = reading.energy_j
        if self.method == "integrated power" and power is not None:
            if last is not None and last[3] is not None:
                self.integrated_j += (power + last[3]) / 2 * (t - last[0])  # trapezoid
            energy = self.integrated_j
        if power is None and energy is not None and last is not None and last[4] is not None and t > last[0]:
            power = (energy - last[4]) / (t - last[0])  # RAPL: power is the counter's slope
        self.raw.append((t, reading.utilization_pct, reading.memory_used_bytes, power, energy))
        self.memory_total_bytes = reading.memory_total_bytes or self.memory_total_bytes
        self.series.add({"t": t - t0, "utilization_pct": reading.utilization_pct,
                         "memory_used_bytes": reading.memory_used_bytes, "power_w": power})

    def energy_between(self, windows: list[tuple[float, float]]) -> float | None:
        """Joules spent within ``windows``, the counter interpolated between the readings around each edge."""
        points = [(r[0], r[4]) for r in self.raw if r[4] is not None]
        if not points or not windows:
            return None
        times = [p[0] for p in points]

        def at(t: float) -> float:
            i = bisect.bisect_left(times, t)
            if i == 0:
                return points[0][1]
            if i >= len(points):
                return points[-1][1]
            (ta, ea), (tb, eb) = points[i - 1], points[i]
            return ea + (eb - ea) * (t - ta) / (tb - ta) if tb > ta else eb

        return sum(at(b) - at(a) for a, b in windows)


def _stats(values: list[float]) -> dict[str, float] | str:
    return {"mean": round(sum(values) / len(values), 3), "peak": round(max(values), 3)} if values else UNKNOWN


def merge_windows(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The union of time intervals, as disjoint intervals in order."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted(w for w in windows if w[1] > w[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _field(run: Any, name: str) -> Any:
    return run.get(name) if isinstance(run, dict) else getattr(run, name, None)


class TelemetrySession:
    """See the module docstring. ``sources`` default to every plugin's ``telemetry_sources()``."""

    def __init__(self, metrics_url: str | None, sources: list[TelemetrySource] | None = None, *,
                 names: MetricNames | None = None,
                 sample_hz: float = 10.0, server_hz: float = 1.0, series_limit: int = 512,
                 warn: Callable[[str], None] | None = _stderr_warn,
                 http_get: Callable[[str], str] | None = None) -> None:
        from velollm_core.contract.urls import redact_url

        # The server's metric names as its backend declares them; None: it declares none, so the
        # server is not scraped and nothing is said about it on the console.
        self.names = names
        self.metrics_url = metrics_url if names is not None else None
        self.shown_url = redact_url(metrics_url) if metrics_url else None
        self.sources = sources
        self.sample_hz, self.server_hz = sample_hz, server_hz
        self.series_limit = series_limit
        self.warn = warn or (lambda message: None)
        self.http_get = http_get or _Scraper()
        self.why: list[str] = []
        self.devices: dict[str, _Device] = {}
        self.levels: list[dict[str, Any]] = []
        self.flavor: str | None = None
        self.server_why: str | None = None
        self.scrape_failures = 0
        self.last_scrape_error: str | None = None
        self._open: list[TelemetrySource] = []
        self._samplers: list[PeriodicSampler] = []
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._unix0 = time.time()
        self._level: dict[str, Any] | None = None
        self._server_series = BoundedSeries(series_limit, peaks=("requests_waiting", "requests_running"))
        self._marks: list[dict[str, Any]] = []
        self._started = False

    # -- what cannot be read, said once ------------------------------------------------------------

    def _say(self, message: str, *, show: bool = True) -> None:
        """Record ``message`` in ``why`` once; on the console too unless ``show`` is False."""
        if message not in self.why:
            self.why.append(message)
            if show:
                self.warn(message)

    # -- start and stop ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open every source and the server's metrics; start the samplers. Never raises for a sensor."""
        from velollm_core.contract.telemetry import hardware_sources

        self._started = True
        self._t0, self._unix0 = time.perf_counter(), time.time()
        unavailable: list[tuple[str, str]] = []  # (sensor, why): said one by one only where others work
        for source in self.sources if self.sources is not None else hardware_sources():
            name = str(getattr(source, "name", source))
            try:
                notes = source.open()
            except SensorUnavailable as exc:
                unavailable.append((name, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - a sensor's bug costs only that sensor
                unavailable.append((name, f"{name}: failed to open: {type(exc).__name__}: {exc}"))
                continue
            for note in notes or []:
                self._say(note)
            self._open.append(source)
        self._sample_hardware(time.perf_counter())
        # Where no sensor works (a CPU-only container, commonly) the console gets one line for them all;
        # each reason is in ``why`` either way.
        for _, why in unavailable:
            self._say(why, show=bool(self.devices))
        if not self.devices:
            self._say("no hardware sensor is readable: power, energy and tokens per joule are unknown", show=False)
            names = ", ".join(name for name, _ in unavailable)
            self.warn(f"no power sensor readable{f' ({names})' if names else ''}: energy and tok/J unknown")
        if self.names is None:
            self.server_why = "the backend declares no server metrics"
        elif self.metrics_url is None:
            self.server_why = "the backend exposes no Prometheus metrics endpoint"
        else:
            self._scrape(first=True)
        if self.server_why:
            self._say(f"server metrics: {self.server_why}", show=self.names is not None)
        if self._open:
            self._samplers.append(PeriodicSampler(self._sample_hardware, 1.0 / self.sample_hz, "hardware"))
        if self.server_why is None and self.server_hz > 0:
            self._samplers.append(PeriodicSampler(lambda now: self._scrape(), 1.0 / self.server_hz, "server"))
        for sampler in self._samplers:
            sampler.start()

    def finish(self) -> dict[str, Any]:
        """Stop sampling, close the sources; the result's ``telemetry`` dict."""
        for sampler in self._samplers:
            sampler.stop()
            if sampler.error is not None:
                self._say(f"the {sampler.name} sampler stopped: {type(sampler.error).__name__}: {sampler.error}")
        for source in self._open:
            _close(source)
        self._open = []
        if isinstance(self.http_get, _Scraper):
            self.http_get.close()
        return {
            "sample_hz": self.sample_hz,
            "server_poll_hz": self.server_hz if self.server_why is None else None,
            "server": {"url": self.shown_url, "flavor": self.flavor, "available": self.server_why is None,
                       "why": self.server_why, "scrape_failures": self.scrape_failures,
                       "last_scrape_error": self.last_scrape_error},
            "devices": [{"id": key, "name": d.name, "kind": d.kind, "source": d.source,
                         "energy": d.method or UNKNOWN, "memory_total_bytes": d.memory_total_bytes}
                        for key, d in self.devices.items()],
            "why": list(self.why),
            "levels": self.levels,
            "series": {
                "start_unix": round(self._unix0, 3),
                "devices": {key: _present(d.series.columns()) for key, d in self.devices.items()},
                "server": _present(self._server_series.columns()),
                "levels": self._marks,
            },
            "sampler": self.overhead(),
        }

    def overhead(self) -> dict[str, Any]:
        """CPU seconds the sampling threads used, per second of sampling (their own thread clocks)."""
        out: dict[str, Any] = {}
        for s in self._samplers:
            out[s.name] = {"ticks": s.ticks, "late_ticks": s.late_ticks, "cpu_s": round(s.cpu_s, 4),
                           "wall_s": round(s.wall_s, 3),
                           "cpu_per_s": round(s.cpu_s / s.wall_s, 5) if s.wall_s else None}
        return out

    # -- sampling ----------------------------------------------------------------------------------

    def _sample_hardware(self, now: float) -> None:
        with self._lock:
            for source in list(self._open):
                try:
                    readings = source.read()
                except Exception as exc:  # noqa: BLE001 - a sensor that broke mid-run is dropped, said once
                    self._open.remove(source)
                    _close(source)
                    self._say(f"{source.name}: reading failed, no more samples from it: {type(exc).__name__}: {exc}")
                    continue
                for reading in readings:
                    device = self.devices.get(reading.device)
                    if device is None:
                        device = self.devices[reading.device] = _Device(
                            reading.name, reading.kind, source.name,
                            series=BoundedSeries(self.series_limit, peaks=("memory_used_bytes",)))
                    device.add(now, reading, self._t0)
            if self._level is None:  # between levels only the latest reading matters (the next edge)
                for device in self.devices.values():
                    del device.raw[:-1]

    def _scrape(self, first: bool = False) -> prometheus.ServerFigures | None:
        assert self.metrics_url is not None and self.names is not None
        try:
            figures = prometheus.server_figures(prometheus.parse(self.http_get(self.metrics_url)), self.names)
        except Exception as exc:  # noqa: BLE001 - any failure of the endpoint: said, and the run goes on
            why = str(exc) if isinstance(exc, (ScrapeFailed, prometheus.MetricsFormatError)) else (
                f"{type(exc).__name__} reading {self.shown_url}")
            if first:
                self.server_why = why
            else:
                self.scrape_failures += 1
                self.last_scrape_error = why
            return None
        if first:
            self.flavor = figures.flavor
            if not figures.counters and not figures.gauges:
                servers = list(dict.fromkeys(self.names.flavors.values())) or ["declared"]
                listed = ", ".join(servers[:-1]) + " or " + servers[-1] if len(servers) > 1 else servers[0]
                self.server_why = f"{self.shown_url} answers, but with none of the {listed} metrics"
        now = time.perf_counter()
        with self._lock:
            self._server_series.add({"t": now - self._t0, **{k: figures.gauges.get(k) for k in prometheus.GAUGE_KEYS}})
            if self._level is not None:
                for key, value in figures.gauges.items():
                    self._level["gauges"].setdefault(key, []).append(value)
        return figures

    # -- levels ------------------------------------------------------------------------------------

    def begin_level(self, key: str, workload: str | None = None) -> None:
        """Mark where level ``key`` (of ``workload``) starts: its counters are read now."""
        if not self._started:
            self.start()
        now = time.perf_counter()
        with self._lock:
            self._level = {"key": key, "workload": workload, "t": now, "gauges": {}, "stamped": []}
        self._sample_hardware(now)
        self._level["server"] = self._scrape() if self.server_why is None else None

    def run_ended(self, run: Any) -> None:
        """A sequential run just ended: its decode phase is the last ``total_ms - ttft_ms`` before now."""
        now = time.perf_counter()
        total, ttft = _field(run, "total_ms"), _field(run, "ttft_ms")
        if self._level is not None and isinstance(total, (int, float)) and isinstance(ttft, (int, float)):
            self._level["stamped"].append((now - (total - ttft) / 1000.0, now))

    def end_level(self, key: str, runs: Iterable[Any] | None = None, *, tokens: dict[str, float] | None = None,
                  origin: float | None = None, window: tuple[float, float] | None = None,
                  window_tokens: float | None = None, other_requests: bool = False) -> dict[str, Any]:
        """Close level ``key`` and return its summary (also kept for ``finish()``).

        ``runs`` are the level's measured RunRecords (or dicts): their token counts are the client's,
        and ``started_s`` / ``ttft_ms`` / ``ended_s`` (seconds since ``origin``, a ``perf_counter``
        time, by default ``begin_level``'s) place each decode phase (sequential runs are placed by
        ``run_ended`` instead). ``tokens`` overrides the counts. End-to-end tokens per joule is output
        tokens over the energy of ``window`` (perf_counter times; default the whole level), with
        ``window_tokens`` (every token generated in it) where given. ``other_requests``: the server
        also served uncounted requests in the level (warm-up, cool-down, cache primes), so the client's
        figures are shown beside the server's but not judged (``disagree`` None).
        """
        now = time.perf_counter()
        level = self._level
        if level is None or level["key"] != key:
            raise ValueError(f"end_level({key!r}) without begin_level({key!r})")
        after = self._scrape() if self.server_why is None else None
        self._sample_hardware(now)
        runs = list(runs or [])
        client: dict[str, Any] = {"prompt_tokens": _sum(runs, "prompt_tokens"),
                                  "completion_tokens": _sum(runs, "completion_tokens")}
        client.update(tokens or {})
        decode = merge_windows(level["stamped"] + self._decode_windows(runs, level["t"] if origin is None else origin))
        span = window if window is not None else (level["t"], now)
        out_tokens = window_tokens if window_tokens is not None else client["completion_tokens"]
        summary: dict[str, Any] = {
            "key": key,
            "workload": level["workload"],
            "duration_s": round(now - level["t"], 3),
            "window_s": round(span[1] - span[0], 3),
            "tokens": {**client, "window_output_tokens": out_tokens},
            "server": self._server_summary(level, after, now - level["t"]),
            "hardware": {},
        }
        with self._lock:
            energy: dict[str, dict[str, float | None]] = {}
            for device_id, device in self.devices.items():
                summary["hardware"][device_id] = part = self._device_summary(device, span, decode)
                kind = energy.setdefault(device.kind, {"level": 0.0, "decode": 0.0})
                for name, value in (("level", part["energy_j"]), ("decode", part["decode_energy_j"])):
                    kind[name] = kind[name] + value if isinstance(value, float) and kind[name] is not None else None
            self._level = None
            for device in self.devices.values():
                del device.raw[:-1]
        energy.setdefault("cpu", {"level": None, "decode": None})
        summary["energy_j"] = {kind: _known(parts["level"]) for kind, parts in energy.items()}
        summary["tokens_per_joule"] = {
            kind: {"end_to_end": _per(out_tokens, parts["level"]),
                   "decode": _per(out_tokens if window_tokens is not None else client["completion_tokens"],
                                  parts["decode"] if decode else None)}
            for kind, parts in energy.items()}
        if isinstance(summary["server"], dict):
            summary["client_vs_server"] = self._client_vs_server(runs, client, summary["server"], other_requests)
        self._marks.append({"key": key, "workload": level["workload"], "start_s": round(level["t"] - self._t0, 3),
                            "end_s": round(now - self._t0, 3)})
        self.levels.append(summary)
        return summary

    @staticmethod
    def _client_vs_server(runs: list[Any], client: dict[str, Any], server: dict[str, Any],
                          other_requests: bool) -> dict[str, Any]:
        """Token counts (judged only when the server served nothing else) and the per-stream decode rate."""
        # As llama.cpp's counters sum them: n tokens per request over its generation time, which is
        # the client's first-to-last-token time, (n - 1) / r for the client's rate r.
        rates = [(n, (n - 1) / r) for run in runs
                 if isinstance(n := _field(run, "completion_tokens"), int) and n > 1
                 and isinstance(r := _field(run, "client_decode_tokens_per_s"), (int, float)) and r > 0]
        client_rate = sum(n for n, _ in rates) / sum(t for _, t in rates) if rates else None
        out = compare_client_server({"decode_tokens_per_s": client_rate},
                                    {"decode_tokens_per_s": server.get("decode_tokens_per_s_per_stream")})
        counts = compare_client_server(
            {"prompt_tokens": client["prompt_tokens"], "completion_tokens": client["completion_tokens"]},
            {"prompt_tokens": server.get("prompt_tokens"), "completion_tokens": server.get("generated_tokens")})
        out.update(counts)
        if other_requests:  # warm-up, cool-down or cache primes ran too: the server's figures hold them
            for figure in out.values():
                figure["disagree"] = None
        for figure in out.values():
            if isinstance(figure["client"], float):
                figure["client"] = round(figure["client"], 2)
        return out

    def _decode_windows(self, runs: list[Any], origin: float) -> list[tuple[float, float]]:
        windows = []
        for run in runs:
            started, ended, ttft = _field(run, "started_s"), _field(run, "ended_s"), _field(run, "ttft_ms")
            if isinstance(started, (int, float)) and isinstance(ended, (int, float)) and isinstance(ttft, (int, float)):
                windows.append((origin + started + ttft / 1000.0, origin + ended))
        return windows

    def _device_summary(self, device: _Device, span: tuple[float, float],
                        decode: list[tuple[float, float]]) -> dict[str, Any]:
        inside = [r for r in device.raw if span[0] <= r[0] <= span[1]]
        energy = device.energy_between([span])
        duration = span[1] - span[0]
        powers = [r[3] for r in inside if r[3] is not None]
        memory = [r[2] for r in device.raw if r[2] is not None]  # the whole level: a peak anywhere counts
        power: dict[str, float] | str = _stats(powers)
        if isinstance(power, dict) and energy is not None and duration > 0:
            power["mean"] = round(energy / duration, 3)  # the counter's mean is exact; the samples' is not
        return {
            "utilization_pct": _stats([r[1] for r in inside if r[1] is not None]),
            "memory_used_bytes": {"peak": max(memory), "at_start": memory[0]} if memory else UNKNOWN,
            "power_w": power,
            "energy_j": round(energy, 3) if energy is not None else UNKNOWN,
            "decode_energy_j": round(e, 3) if decode and (e := device.energy_between(decode)) is not None else UNKNOWN,
            "energy_method": device.method or UNKNOWN,
            "samples": len(inside),
        }

    def _server_summary(self, level: dict[str, Any], after: prometheus.ServerFigures | None,
                        duration: float) -> dict[str, Any] | str:
        before = level.get("server")
        if self.server_why is not None:
            return UNKNOWN
        if before is None or after is None:
            return {"why": "a scrape at the level's edge failed"}
        deltas = prometheus.counter_deltas(before, after)
        out: dict[str, Any] = {"flavor": after.flavor, **{k: round(v, 4) for k, v in deltas.items()}}
        if deltas.get("prompt_seconds"):
            out["prompt_tokens_per_s"] = round(deltas.get("prompt_tokens", 0.0) / deltas["prompt_seconds"], 2)
        if deltas.get("generation_seconds"):
            # llama.cpp sums generation time over slots: tokens per second of one stream
            out["decode_tokens_per_s_per_stream"] = round(
                deltas.get("generated_tokens", 0.0) / deltas["generation_seconds"], 2)
        if "generated_tokens" in deltas and duration > 0:
            out["generated_tokens_per_s"] = round(deltas["generated_tokens"] / duration, 2)
        if deltas.get("draft_tokens"):
            out["acceptance_rate"] = round(deltas.get("accepted_tokens", 0.0) / deltas["draft_tokens"], 4)
        per_position = prometheus.position_deltas(before, after)
        if per_position:
            out["accepted_per_position"] = [per_position[p] for p in sorted(per_position)]
            if deltas.get("drafts"):
                out["acceptance_per_position"] = [round(per_position[p] / deltas["drafts"], 4)
                                                  for p in sorted(per_position)]
        gauges = level["gauges"]
        for key in ("requests_running", "requests_waiting", "kv_cache_usage", "generation_tokens_per_s"):
            values = gauges.get(key) or ([after.gauges[key]] if key in after.gauges else [])
            out[key] = _stats(values)
        if out["kv_cache_usage"] == UNKNOWN and "longest_sequence_tokens" in after.gauges:
            out["longest_sequence_tokens"] = after.gauges["longest_sequence_tokens"]
        return out


def _present(columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The columns that hold a value somewhere (a server exports only some of the gauges we know)."""
    return {key: values for key, values in columns.items() if any(v is not None for v in values)}


def _close(source: TelemetrySource) -> None:
    try:
        source.close()
    except Exception:  # noqa: BLE001, S110 - closing a sensor must not fail the run
        pass


def _sum(runs: list[Any], name: str) -> float | None:
    values = [_field(run, name) for run in runs]
    known = [v for v in values if isinstance(v, (int, float))]
    return sum(known) if known and len(known) == len(values) else None


def _known(value: float | None) -> float | str:
    return round(value, 3) if isinstance(value, float) else UNKNOWN


def _per(tokens: float | None, joules: float | None) -> float | str:
    if not tokens or not isinstance(joules, float) or joules <= 0:
        return UNKNOWN
    return round(tokens / joules, 4)
