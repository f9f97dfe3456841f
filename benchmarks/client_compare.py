"""The load generator's hand-written HTTP/1.1 client (velollm_core.contract.streamclient) beside aiohttp and
httpx, on the same mock LLM server and streams: client CPU per streamed token, TTFT p50 and ITL p99 against
the mock's configured values, interleaved rounds, medians.

    /tmp/gl/bin/python benchmarks/client_compare.py --streams 256,1000 --itl-ms 100 --rounds 3

Runs in the peers' venv (/tmp/gl: aiohttp and uvloop are no VeloLLM dependencies), with the repository on
sys.path: streamclient needs nothing beyond the standard library. Each run is one client in a fresh
process (``--one``), N streams in a closed loop (each sends its next request when its stream ends) until
``--requests`` are done, every stream read to its end; the mock (velollm_testkit.mock, its own
``--mock-processes`` processes on one port) sends ``--tokens`` tokens per request, the first after
``--ttft-ms`` and the others every ``--itl-ms``.

Only the HTTP layer differs: each client hands its body's bytes as they come to the same parser (split
lines, ``json.loads`` each ``data:`` event), and each token event is stamped with ``perf_counter()`` when
its chunk reached the parser. StreamClient also stamps each chunk when the event loop read it off the
socket (its ``Response.chunks`` arrival time): the "read-stamped" TTFT beside the others shows what that
stamp saves. Client CPU is ``time.process_time()`` of the client's process over the level only (its imports, start-up
and one uncounted first request excluded), per token received; the mock's CPU is in its own processes.

Clients: ``streamclient`` (StreamClient.post_json, Response.chunks), ``aiohttp`` (one ClientSession, a
TCPConnector sized to the streams, ``content.iter_any()``), ``httpx`` (one AsyncClient, limits sized to the
streams, ``aiter_raw()``); ``--loops asyncio,uvloop`` runs each on both event loops.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
IMPORT_PATHS = [str(ROOT), str(ROOT / "testkit")]
sys.path[:0] = IMPORT_PATHS

CLIENTS = ("streamclient", "aiohttp", "httpx")
CLIENT_MODULES = {"streamclient": "velollm_core.contract.streamclient", "aiohttp": "aiohttp", "httpx": "httpx"}
LOOPS = ("asyncio", "uvloop")
FORMATS = {"openai": "/v1/completions", "llamacpp": "/completion"}
RESULT = ROOT / "benchmarks" / "results" / "loadgen" / "client_compare.json"


# --- one client in its own process -------------------------------------------------------------------------


class StreamRecord:
    """One stream's events: the shared parsing work, and each token's stamp."""

    __slots__ = ("buffer", "done", "fmt", "read_stamps", "stamps")

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt
        self.buffer = b""
        self.stamps: list[float] = []
        self.read_stamps: list[float] = []
        self.done = False

    def feed(self, data: bytes, reached: float, read: float | None = None) -> None:
        """Split ``data`` into lines and parse each ``data:`` event; a token event gets the chunk's stamps."""
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            event = json.loads(payload)
            if self.fmt == "openai":
                choices = event.get("choices")
                text = choices[0].get("text") if choices else None
            else:
                text = event.get("content")
                self.done = self.done or bool(event.get("stop"))
            if text:
                self.stamps.append(reached)
                if read is not None:
                    self.read_stamps.append(read)


async def stream_streamclient(client: Any, url: str, body: dict[str, Any], record: StreamRecord) -> None:
    async with client.post_json(url, body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        async for data, arrived in response.chunks():
            record.feed(data, time.perf_counter(), arrived)


async def stream_aiohttp(session: Any, url: str, body: dict[str, Any], record: StreamRecord) -> None:
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        async for data in response.content.iter_any():
            record.feed(data, time.perf_counter())


async def stream_httpx(client: Any, url: str, body: dict[str, Any], record: StreamRecord) -> None:
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        async for data in response.aiter_raw():
            record.feed(data, time.perf_counter())


def open_client(name: str, streams: int) -> tuple[Any, Any]:
    """The client object and its stream function; created inside the running loop."""
    if name == "streamclient":
        from velollm_core.contract.streamclient import StreamClient

        return StreamClient(), stream_streamclient
    if name == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=streams, limit_per_host=streams)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)), stream_aiohttp
    import httpx

    limits = httpx.Limits(max_connections=streams, max_keepalive_connections=streams)
    return httpx.AsyncClient(limits=limits, timeout=None), stream_httpx


async def close_client(name: str, client: Any) -> None:
    await (client.close() if name == "aiohttp" else client.aclose())


def request_body(fmt: str, number: int, tokens: int) -> dict[str, Any]:
    """A streamed request for exactly ``tokens`` tokens, its prompt unique by ``number``."""
    prompt = f"request {number} of the client comparison says"
    if fmt == "openai":
        return {"model": "velollm-mock", "prompt": prompt, "max_tokens": tokens, "stream": True, "ignore_eos": True}
    return {"prompt": prompt, "n_predict": tokens, "stream": True, "ignore_eos": True}


async def level(name: str, url: str, fmt: str, streams: int, requests: int, tokens: int) -> dict[str, Any]:
    """N streams in a closed loop until ``requests`` are sent and read to the end, after one uncounted
    request on a client of its own (the library's first-use work: lazy imports, caches)."""
    bodies = [request_body(fmt, i, tokens) for i in range(requests)]
    warm_client, warm_stream = open_client(name, 1)
    await warm_stream(warm_client, url, request_body(fmt, -1, 2), StreamRecord(fmt))
    await close_client(name, warm_client)
    records: list[tuple[float, StreamRecord]] = []
    errors: list[str] = []
    next_request = iter(range(requests))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    client, stream = open_client(name, streams)

    async def one_stream() -> None:
        for i in next_request:
            record = StreamRecord(fmt)
            sent = time.perf_counter()
            try:
                await stream(client, url, bodies[i], record)
            except Exception as exc:  # noqa: BLE001 (each library raises its own kinds: a failure is counted)
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
            records.append((sent, record))

    await asyncio.gather(*(one_stream() for _ in range(streams)))
    await close_client(name, client)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ttft = [(r.stamps[0] - sent) * 1000 for sent, r in records if r.stamps]
    read_ttft = [(r.read_stamps[0] - sent) * 1000 for sent, r in records if r.read_stamps]
    gaps = [(b - a) * 1000 for _, r in records for a, b in zip(r.stamps, r.stamps[1:], strict=False)]
    received = sum(len(r.stamps) for _, r in records)
    return {"cpu_s": cpu, "wall_s": wall, "tokens_received": received, "requests_done": sum(r.done for _, r in records),
            "errors": len(errors), "error_kinds": sorted(set(errors))[:3],
            "cpu_ms_per_token": cpu / received * 1000 if received else None,
            "ttft_ms": {"p50": _pct(ttft, 0.5), "p99": _pct(ttft, 0.99)},
            "read_stamped_ttft_ms": {"p50": _pct(read_ttft, 0.5), "p99": _pct(read_ttft, 0.99)} if read_ttft else None,
            "itl_ms": {"p50": _pct(gaps, 0.5), "p99": _pct(gaps, 0.99), "max": max(gaps, default=None), "n": len(gaps)}}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _raise_fd_limit() -> None:
    """1,000 streams need more than the common soft limit of 1,024 open files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def run_one(args: argparse.Namespace) -> int:
    _raise_fd_limit()
    importlib.import_module(CLIENT_MODULES[args.one])  # imported before the level: its CPU is not counted
    if args.one_loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    row = asyncio.run(level(args.one, args.url, args.format, args.one_streams, args.requests_n, args.tokens))
    print(json.dumps(row))
    return 0


# --- the comparison ----------------------------------------------------------------------------------------


def run_child(client: str, loop: str, url: str, streams: int, requests: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--one", client, "--one-loop", loop, "--url", url, "--one-streams", str(streams),
           "--requests-n", str(requests), "--tokens", str(args.tokens), "--format", args.format]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), check=False, timeout=900)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-10:])
        raise SystemExit(f"the {client} run ({loop}) failed with exit code {done.returncode}:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    """This process's environment with the repository's packages importable (the mock and the children)."""
    paths = [*IMPORT_PATHS, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians over the rounds of each (streams, client, loop)."""
    out = []
    for key in sorted({(r["streams"], r["client"], r["loop"]) for r in rows},
                      key=lambda k: (k[0], CLIENTS.index(k[1]), k[2])):
        mine = [r for r in rows if (r["streams"], r["client"], r["loop"]) == key]

        def median_of(*keys: str, runs: list[dict[str, Any]] = mine) -> float | None:
            values = []
            for r in runs:
                value: Any = r
                for k in keys:
                    value = value.get(k) if isinstance(value, dict) else None
                if value is not None:
                    values.append(value)
            return statistics.median(values) if values else None

        out.append({"streams": key[0], "client": key[1], "loop": key[2], "rounds": len(mine),
                    "tokens_expected": mine[0]["tokens_expected"], "tokens_received": median_of("tokens_received"),
                    "errors": median_of("errors"), "cpu_ms_per_token": median_of("cpu_ms_per_token"),
                    "ttft_p50_ms": median_of("ttft_ms", "p50"),
                    "read_stamped_ttft_p50_ms": median_of("read_stamped_ttft_ms", "p50"),
                    "itl_p50_ms": median_of("itl_ms", "p50"), "itl_p99_ms": median_of("itl_ms", "p99"),
                    "mock_lateness_p99_ms": median_of("mock", "lateness_ms", "p99"), "wall_s": median_of("wall_s")})
    return out


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(summary: list[dict[str, Any]], args: argparse.Namespace) -> str:
    heading = (f"mock ({args.format}): TTFT {args.ttft_ms:g} ms, ITL {args.itl_ms:g} ms, {args.tokens} tokens per "
               f"request, {args.mock_processes} process(es); medians of rounds")
    lines = [heading, "| N | client | loop | tokens got/exp | CPU ms/tok | TTFT p50 | read TTFT | ITL p99 | err |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['streams']} | {s['client']} | {s['loop']} | {_f(s['tokens_received'], 0)}/"
                     f"{s['tokens_expected']} | {_f(s['cpu_ms_per_token'], 4)} | {_f(s['ttft_p50_ms'])} "
                     f"| {_f(s['read_stamped_ttft_p50_ms'])} | {_f(s['itl_p99_ms'])} | {_f(s['errors'], 0)} |")
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    versions = {}
    for name in ("aiohttp", "httpx", "uvloop"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "python": sys.version.split()[0], "versions": versions,
            "commit": commit, "load_average": os.getloadavg()[0],
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        levels = [int(x) for x in args.streams.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--streams {args.streams!r}: give numbers of streams, e.g. 256,1000")
    clients = [c for c in args.clients.split(",") if c]
    loops = [loop for loop in args.loops.split(",") if loop]
    if not levels or min(levels) < 1 or not clients or not set(clients) <= set(CLIENTS) or not loops \
            or not set(loops) <= set(LOOPS):
        parser.error(f"--streams takes positive numbers, --clients some of {', '.join(CLIENTS)}, "
                     f"--loops some of {', '.join(LOOPS)}")
    for name in {*clients, *loops} - {"streamclient", "asyncio"}:
        try:
            __import__(name)
        except ImportError:
            parser.error(f"{name} is not installed in {sys.executable}: run this under /tmp/gl/bin/python")
    os.environ["PYTHONPATH"] = _env()["PYTHONPATH"]  # the mock's processes import the test kit from the tree
    from velollm_testkit.mock import mock_llm

    variants = [(client, loop) for client in clients for loop in loops]
    rows: list[dict[str, Any]] = []
    with mock_llm(processes=args.mock_processes, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
                  output_tokens=args.tokens) as mock:
        url = mock.url + FORMATS[args.format]
        for streams in levels:
            requests = args.requests or 2 * streams
            for round_no in range(1, args.rounds + 1):
                # Each round in another order (rotated), so that no client always follows the same one.
                shift = (round_no - 1) % len(variants)
                for client, loop in variants[shift:] + variants[:shift]:
                    mock.reset()
                    row = run_child(client, loop, url, streams, requests, args)
                    stats = mock.stats()
                    row.update(client=client, loop=loop, streams=streams, round=round_no, requests=requests,
                               tokens_expected=requests * args.tokens,
                               mock={"tokens": stats["tokens"], "lateness_ms": stats["lag_ms"],
                                     "connections_opened": stats["accepted"], "cpu_s": round(stats["cpu_s"], 3)})
                    rows.append(row)
                    print(f"c{streams} r{round_no} {client}/{loop}: {row['tokens_received']}/{row['tokens_expected']} "
                          f"tokens, {_f(row['cpu_ms_per_token'], 4)} ms CPU/token, TTFT p50 "
                          f"{_f(row['ttft_ms']['p50'])} ms, ITL p99 {_f(row['itl_ms']['p99'])} ms, errors "
                          f"{row['errors']}", file=sys.stderr, flush=True)
    summary = summarize(rows)
    text = table(summary, args)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {"command": " ".join([sys.executable, *sys.argv]), "machine": _machine(),
                "mock": {"format": args.format, "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms,
                         "tokens": args.tokens, "processes": args.mock_processes},
                "summary": summary, "rows": rows, "table": text}
    args.output.write_text(json.dumps(document, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="64", help="concurrent streams per level, comma-separated")
    parser.add_argument("--requests", type=int, help="requests per level and client (default: 2 per stream)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS), help="which clients, comma-separated")
    parser.add_argument("--loops", default="asyncio", help="event loops, comma-separated: asyncio, uvloop")
    parser.add_argument("--format", choices=sorted(FORMATS), default="openai", help="the mock's wire format")
    parser.add_argument("--ttft-ms", type=float, default=50.0)
    parser.add_argument("--itl-ms", type=float, default=100.0)
    parser.add_argument("--tokens", type=int, default=32, help="tokens per request")
    parser.add_argument("--mock-processes", type=int, default=2, help="mock processes sharing the port")
    parser.add_argument("--output", type=Path, default=RESULT, help=f"the JSON of every run (default {RESULT})")
    # One run in this process, for the comparison above (not for a person).
    parser.add_argument("--one", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--one-loop", choices=LOOPS, default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--one-streams", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--requests-n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    return run_one(args) if args.one else compare(args, parser)


if __name__ == "__main__":
    raise SystemExit(main())
