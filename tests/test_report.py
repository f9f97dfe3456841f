"""``velollm report``: the text formats (csv, md, jsonl) and the HTML page, rendered in headless
Chromium (Debian's ``chromium``) through the DevTools protocol: no console error, no blocked load,
every expected chart drawn with data, a screenshot kept for a person to look at."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from velollm_testkit.plugin import FakeBackend
from velollm_testkit.real import missing

from velollm_core.bench.plan import BenchmarkPlan
from velollm_core.bench.runner import BenchmarkRunner
from velollm_core.bench.suites import get_suites

SCREENSHOT_DIR_ENV = "VELOLLM_REPORT_SCREENSHOTS"  # keep the screenshots there (else the test's tmp dir)


def velollm(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "velollm_core", *args], check=False, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})}, **kwargs)


# -- result documents: measured through the fake backend, levels/telemetry per the engine-v2 schema ---
def measured(speeds: float, iterations: int = 3) -> dict:
    """A benchmark result the real engine produced (three suites) over the test kit's FakeBackend."""
    from velollm_testkit.plugin import BackendPlugin

    from velollm_core.contract.plugins import load_plugins, pm

    load_plugins()
    plugin = BackendPlugin(FakeBackend())
    pm.register(plugin, name=f"report-fake-{id(plugin)}")
    try:
        plan = BenchmarkPlan(backend="fake", model="/models/smollm2-135m-q8_0.gguf", suites=get_suites([]),
                             iterations=iterations, warmup=0, options={"tokens_per_s": speeds})
        runner = BenchmarkRunner(plan)
        runner.run()
        return runner.result.model_dump(mode="json")
    finally:
        pm.unregister(plugin)


def _latency(median: float, p99: float) -> dict:
    return {"mean": median, "median": median, "p90": (median + p99) / 2, "p95": p99 * 0.97, "p99": p99, "n": 64}


def with_sweep(doc: dict) -> dict:
    """Load levels c1..c16 (throughput flattening past c8, latency climbing), the knee, a roofline and
    telemetry series, shaped as docs/engine-v2 and velollm_core/telemetry/session.py write them."""
    levels, t = [], 0.0
    marks = []
    for c, out_tps, ttft, tpot in ((1, 52.0, 40.0, 19.0), (2, 96.0, 48.0, 20.5), (4, 170.0, 61.0, 23.0),
                                   (8, 240.0, 95.0, 32.0), (16, 252.0, 310.0, 61.0)):
        levels.append({"key": f"c{c}", "profile": "concurrent", "workload": "pp512/tg128", "concurrency": c,
                       "rate": None, "duration_s": 20.0, "completed": 8 * c, "failed": 0, "failures": {},
                       "short_outputs": 0, "max_concurrency": c, "request_throughput": out_tps / 128,
                       "output_throughput": out_tps, "total_token_throughput": out_tps * 5,
                       "ttft_ms": _latency(ttft, ttft * 1.8), "tpot_ms": _latency(tpot, tpot * 1.3),
                       "itl_ms": _latency(tpot, tpot * 2.2), "e2el_ms": _latency(ttft + 127 * tpot, (ttft + 127 * tpot) * 1.4),
                       "goodput": {"slo": {"ttft_ms": 500, "tpot_ms": 50}, "requests_per_s": out_tps / 128,
                                   "share": 1.0 if tpot < 50 else 0.2},
                       "prompt_tokens": {"requested": 512, "reported_median": 512, "mismatch": False}})
        marks.append({"key": f"c{c}", "start_s": t, "end_s": t + 20.0})
        t += 21.0
    times = [i * 0.5 for i in range(int(t / 0.5))]
    power = [60.0 + 3 * min(16, 2 ** int(x // 21)) + (i % 7) for i, x in enumerate(times)]
    memory = [2.1 * 2**30 + 2**27 * min(16, 2 ** int(x // 21)) for x in times]
    roof_suites = {suite: {"pct_of_limit": pct, "max_decode_tokens_per_s": 400.0, "decode_tokens_per_s": pct * 4}
                   for suite, pct in zip(doc["summary"], (71.0, 64.5, 58.2))}
    return {**doc, "levels": levels, "sweep": {"knee": "c8", "why": "c16 adds 5% throughput for 3.3x TTFT"},
            "roofline": {"bandwidth_gbps": 38.4, "source": "test", "device": "cpu", "bytes_per_token": 140 * 2**20,
                         "max_decode_tokens_per_s": 261.6, "suites": roof_suites},
            "telemetry": {"devices": [{"id": "cpu0", "name": "CPU package 0", "kind": "cpu", "source": "rapl"}],
                          "why": [],
                          "levels": [{"key": f"c{c}", "workload": "pp512/tg128",
                                      "client_vs_server": {
                                          "decode_tokens_per_s": {"client": 52.0, "server": 52.3, "diff_pct": 0.58,
                                                                  "disagree": False},
                                          "completion_tokens": {"client": 128 * c, "server": 128 * c + (9 if c == 16 else 0),
                                                                "diff_pct": 0.44 if c == 16 else 0.0,
                                                                "disagree": c == 16}},
                                      "tokens_per_joule": {"cpu": {"end_to_end": 0.8 * c, "decode": 1.1 * c}}}
                                     for c in (1, 16)],
                          "series": {"start_unix": 0.0, "levels": marks,
                                     "devices": {"cpu0": {"t": times, "power_w": power, "memory_used_bytes": memory,
                                                          "utilization_pct": [None] * len(times)}},
                                     "server": {"t": times, "requests_running": [min(16, 2 ** int(x // 21))
                                                                                 for x in times]}}}}


def speculative(vanilla: dict, spec: dict, draft_max: int = 8) -> dict:
    """A speculative bench document as velollm_core/speculative/bench.py writes it, advisor included."""
    per_suite = {}
    for suite in vanilla["summary"]:
        v = vanilla["summary"][suite]["decode_tokens_per_s"]["median"]
        s = spec["summary"][suite]["decode_tokens_per_s"]["median"]
        per_suite[suite] = {"vanilla_decode_tokens_per_s": v, "speculative_decode_tokens_per_s": s, "speedup": s / v,
                            "vanilla_ttft_ms": 1.0, "speculative_ttft_ms": 1.2, "drafted": 300, "accepted": 210,
                            "acceptance_rate": 0.7, "n": 3}
    curve = [{"draft_max": k, "tokens_per_step": 1 + 0.8 * k / (1 + 0.2 * k),
              "predicted_speedup": round(1 + 0.9 * k / (1 + 0.25 * k) - 0.035 * k, 3)} for k in (1, 2, 3, 4, 6, 8, 12, 16)]
    return {"status": "complete", "started_at": vanilla["started_at"], "target": "/models/target.gguf",
            "draft": "/models/draft.gguf", "settings": {"draft": "model", "draft_max": draft_max, "p_min": 0.75},
            "speculative_server_args": ["--draft-max", str(draft_max)], "compatibility": None,
            "vanilla": vanilla, "speculative": spec, "per_suite": per_suite,
            "speedup": spec["summary"]["short_completion"]["decode_tokens_per_s"]["median"] / vanilla["summary"][
                "short_completion"]["decode_tokens_per_s"]["median"],
            "acceptance_rate": 0.7, "outputs_identical": True, "differences": [],
            "advisor": {"curve": curve, "predicted_speedup_measured_config": 2.1, "recommendation":
                        "use draft max 8: 2.43x predicted", "measured_speedup": 1.9}}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report-results")
    verify = {"runtime": "llamacpp", "model": "/models/target.gguf", "rounds": 3, "elapsed_s": 30.0,
              "candidates": [{"name": name, "args": args, "decode_tokens_per_s": decode, "prompt_tokens_per_s": prefill,
                              "error": None}
                             for name, args, decode, prefill in (("defaults", [], [10.0, 11.0, 10.5], [50.0, 52.0, 51.0]),
                                                                 ("proposal", ["-t", "2"], [12.0, 12.5, 12.2],
                                                                  [60.0, 58.0, 61.0]))],
              "changes": [], "final": {"args": ["-t", "2"], "measured_as": "proposal",
                                       "vs_defaults": {"decode_tokens_per_s": {"ratio": 1.16}}},
              "proposal": {}, "notes": []}
    docs = {"sweep": with_sweep(measured(100.0)), "plain": measured(80.0),
            "spec": speculative(measured(50.0), measured(95.0)), "verify": verify}
    paths = {}
    for name, doc in docs.items():
        paths[name] = folder / f"{name}.json"
        paths[name].write_text(json.dumps(doc, indent=2) + "\n")
    return paths


# -- text formats ------------------------------------------------------------------------------------
def test_csv_has_one_row_per_suite_level_and_speculative_suite(results):
    proc = velollm("report", str(results["sweep"]), str(results["spec"]), "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    tables = [row["table"] for row in rows]
    # sweep: 3 suites + 5 levels; spec: 3 suites and 3 sequential levels on each side + 3 speculative rows
    assert tables.count("suite") == 3 + 6 and tables.count("level") == 5 + 6 and tables.count("speculative") == 3
    knee = [row for row in rows if row["knee"] == "True"]
    assert [row["level"] for row in knee] == ["c8"]
    spec = [row for row in rows if row["table"] == "speculative"]
    assert {row["draft_max"] for row in spec} == {"8"} and float(spec[0]["speedup"]) == pytest.approx(1.9)
    first = next(row for row in rows if row["table"] == "suite")
    assert first["backend"] == "fake" and float(first["decode_tps_median"]) == 100.0 and first["roofline_pct"] == "71.0"


def test_jsonl_is_one_object_per_csv_row(results):
    csv_rows = list(csv.DictReader(io.StringIO(velollm("report", str(results["sweep"]), "--format", "csv").stdout)))
    lines = velollm("report", str(results["sweep"]), "--format", "jsonl").stdout.splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == len(csv_rows) == 8
    assert objects[0]["decode_tps_median"] == 100.0 and objects[0]["prompt_tps_median"] is None


def test_markdown_tables_by_kind(results, tmp_path):
    out = tmp_path / "r.md"
    proc = velollm("report", str(results["sweep"]), str(results["plain"]), "--output", str(out))
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    text = out.read_text()
    assert "### suite" in text and "### level" in text and "### speculative" not in text
    header = next(line for line in text.splitlines() if line.startswith("| source"))
    widths = {len(line.split("|")) for line in text.splitlines() if line.startswith("|")}
    assert "decode_tps_median" in header and len(widths) == 2  # every row of a table as wide as its header


def test_history_ids_work_like_files(results, tmp_path):
    env = {"VELOLLM_HISTORY_DB": str(tmp_path / "h.db")}
    assert velollm("history", "import", str(results["sweep"]), env=env).returncode == 0
    by_id = velollm("report", "#1", "--format", "csv", env=env)
    by_file = velollm("report", str(results["sweep"]), "--format", "csv")
    assert by_id.returncode == 0, by_id.stderr
    assert by_id.stdout == by_file.stdout.replace(str(results["sweep"]), "#1")


def test_bad_input_is_one_line_exit_2(tmp_path):
    html_to_stdout = velollm("report", "nope.json")
    assert html_to_stdout.returncode == 2 and "--output" in html_to_stdout.stderr
    other = tmp_path / "detect.json"
    other.write_text(json.dumps({"os": {}, "cpu": {}, "gpus": []}))
    for args in (["nope.json", "--format", "csv"], [str(other), "--format", "md"]):
        proc = velollm("report", *args, env={"VELOLLM_HISTORY_DB": str(tmp_path / "h.db")})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""


def test_secrets_never_reach_a_report(results, tmp_path):
    doc = json.loads(results["plain"].read_text())
    doc["settings"]["host"] = "http://admin:hunter2@127.0.0.1:8080/?api_key=sk-live-123"
    doc["settings"]["options"] = {"api_key": "sk-live-456", "server_args": "--api-key sk-live-789 -t 2"}
    doc["environment"]["backend"]["server_flags"] = ["--api-key", "sk-live-000", "--port", "8080"]
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps(doc))
    for fmt in ("html", "csv", "md", "jsonl"):
        out = tmp_path / f"r.{fmt}"
        proc = velollm("report", str(leaky), "--format", fmt, "--output", str(out))
        assert proc.returncode == 0, proc.stderr
        text = out.read_text()
        assert "hunter2" not in text and "sk-live" not in text


# -- HTML in a real browser --------------------------------------------------------------------------
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    missing("headless Chromium", "none on PATH (Debian: apt-get install -y chromium; scripts/test installs it as root)")


def _moved_up(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class DevTools:
    """Chromium driven over --remote-debugging-pipe (fd 3 in, fd 4 out; NUL-framed JSON): no port,
    no websocket library, nothing but the browser and this process."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends moved to 10 and up: one of them may be 3 or 4 itself, which the shell below
        # would close right after moving it there.
        to_browser_r, from_browser_w = _moved_up(to_browser_r), _moved_up(from_browser_w)
        # bash moves the pipes to fds 3 and 4 and execs Chromium (no preexec_fn: unsafe with threads;
        # not dash: it redirects single-digit fds only).
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "--no-first-run", "--disable-extensions", "--hide-scrollbars", "--disable-background-networking",
                "about:blank"]
        script = f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-'
        self.proc = subprocess.Popen(["bash", "-c", script, binary, *args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(timeout)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, timeout: float) -> dict:
        import select

        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout)
            if not ready:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


# What the page reports about itself once loaded: the charts, and the marks each one holds.
_INSPECT = """JSON.stringify({
  charts: [...document.querySelectorAll('figure.chart')].map(f => ({
    kind: f.dataset.kind, id: f.querySelector('svg') && f.querySelector('svg').id,
    width: f.querySelector('svg') ? f.querySelector('svg').getBoundingClientRect().width : 0,
    points: f.querySelectorAll('.point').length
      + [...f.querySelectorAll('polyline[data-n]')].reduce((n, p) => n + Number(p.dataset.n), 0), bars: f.querySelectorAll('.bar').length,
    marks: [...f.querySelectorAll('.mark title')].map(t => t.textContent)})),
  disagreements: document.querySelectorAll('span.bad').length,
  height: document.documentElement.scrollHeight, scripts: document.scripts.length,
  resources: performance.getEntriesByType('resource').length})"""


def render(page: Path, screenshot: Path, profile: Path) -> tuple[dict, list[str]]:
    """Open ``page`` in headless Chromium: (what _INSPECT found, console/log errors); a full-page PNG."""
    browser = DevTools(chromium(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1500, "height": 900, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        found = json.loads(browser.send("Runtime.evaluate", {"expression": _INSPECT, "returnByValue": True},
                                        session=session)["result"]["value"])
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1500, "height": min(found["height"], 16000),
                                                            "deviceScaleFactor": 1, "mobile": False}, session=session)
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        errors = []
        for event in browser.events:
            params = event.get("params", {})
            if event.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif event.get("method") == "Runtime.exceptionThrown":
                errors.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
            elif event.get("method") == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                errors.append(f"log ({params['entry'].get('source')}): {params['entry'].get('text')}")
        return found, errors
    finally:
        browser.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get(SCREENSHOT_DIR_ENV) or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_html_report_renders_every_chart_with_no_console_error(results, tmp_path):
    chromium()
    page = tmp_path / "report.html"
    proc = velollm("report", *(str(results[name]) for name in ("sweep", "plain", "spec", "verify")), "--output",
                   str(page))
    assert proc.returncode == 0, proc.stderr
    html = page.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    found, errors = render(page, _screenshot_dir(tmp_path) / "report.png", tmp_path / "profile")
    assert errors == [], errors
    assert found["scripts"] == 0 and found["resources"] == 0  # nothing fetched, nothing run
    by_id = {chart["id"]: chart for chart in found["charts"]}
    # per-suite bars: 3 suites x 4 results (sweep, plain, spec vanilla, spec speculative)
    for chart_id in ("chart-decode_tokens_per_s", "chart-roofline"):
        assert chart_id in by_id, sorted(by_id)
    assert by_id["chart-decode_tokens_per_s"]["bars"] == 12
    assert by_id["chart-roofline"]["bars"] == 3
    load = by_id["chart-load-ttft_ms"]
    assert load["points"] >= 10 and load["marks"] == ["knee c8"]  # the sweep's median + p99 lines, c8 ringed
    spec = next(chart for chart in found["charts"] if chart["kind"] == "speculative")
    assert spec["points"] == 8 + 1 and spec["marks"] == ["predicted 2.10x"]  # the curve, the measured point
    telemetry = [chart for chart in found["charts"] if chart["kind"] == "telemetry"]
    assert len(telemetry) == 3 and all(chart["points"] > 100 for chart in telemetry)  # power, memory, requests
    assert found["disagreements"] == 1  # the client/server token counts of c16, flagged
    assert by_id["chart-verify-3-decode"]["bars"] == by_id["chart-verify-3-prefill"]["bars"] == 2
    assert all(chart["width"] > 300 for chart in found["charts"])


def test_render_check_catches_a_page_that_fetches(tmp_path):
    """The browser check itself: a page loading anything from outside is reported as an error."""
    chromium()
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" "
                    "content=\"default-src 'none'\"></head><body><img src=\"https://example.invalid/x.png\">"
                    "<script>console.error('boom')</script></body></html>")
    _, errors = render(page, tmp_path / "bad.png", tmp_path / "profile")
    assert any("example.invalid" in error for error in errors), errors


def test_the_measured_draft_length_is_the_one_the_bench_recorded():
    from velollm_core.report.data import draft_max_of

    assert draft_max_of({"settings": {"draft_max": 12}}) == 12
    # the server's flags are the backend's business: the report never reads them
    assert draft_max_of({"settings": {}, "speculative_server_args": ["--draft-max", "16"]}) is None
    assert draft_max_of({"settings": {"draft_max": True}}) is None
