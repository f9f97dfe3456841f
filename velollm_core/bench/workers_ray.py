"""Load workers as Ray actors across a cluster's nodes (``--cluster ADDRESS|auto``).

Ray is the distributed engine vLLM and LLMPerf already use, so a serving cluster often runs one; VeloLLM
joins it as a driver and places one actor per worker, spread over the nodes. Each actor runs its share
of the level (``workers.run_share``) on a thread with its own event loop, exactly as a local worker
process does, and hands back only raw samples when polled; every latency is timed on the actor's own
clock. The actors belong to this driver: stopping the level kills them, and Ray ends them if VeloLLM
dies. Every node needs VeloLLM and the backend's plugin installed (the shares carry its calls).

Ray is an optional extra (``pip install 'velollm[ray]'``), imported only here.
"""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from typing import Any

from velollm_core.bench.workers import Workers, WorkerShare, run_share
from velollm_core.contract.errors import UserInputError, VeloError

# How long a worker waits for go once its share is built; past it the level was abandoned.
GO_TIMEOUT_S = 600.0


def _ray():
    try:
        import ray
    except ImportError:
        raise UserInputError("--cluster needs Ray, which is not installed: pip install 'velollm[ray]'") from None
    return ray


def connect(address: str) -> Any:
    """Ray, joined to the cluster at ``address`` (``auto``: the one running on this host) once."""
    ray = _ray()
    if ray.is_initialized():
        return ray
    _probe(address)
    # ray.init sets its own SIGTERM handler (sys.exit) and a native one that prints a stack; VeloLLM's
    # (contract.interrupt: the result file's final status, every worker stopped) must stay.
    saved = _signal_handlers()
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise VeloError(f"cannot reach the Ray cluster at {address} ({first[:160]}); is it running "
                        "(`ray start --head`, `ray status`)?") from None
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    return ray


def _signal_handlers() -> dict[int, Any]:
    from velollm_core.contract.interrupt import HANDLED

    wanted = [getattr(signal, name) for name in HANDLED if hasattr(signal, name)]
    return {signum: signal.getsignal(signum) for signum in wanted if signal.getsignal(signum) is not None}


def _probe(address: str) -> None:
    """Refuse a HOST:PORT nothing listens on at once: Ray itself retries for minutes first."""
    import socket
    from urllib.parse import urlsplit

    if address == "auto":
        return
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise UserInputError(f"--cluster {address!r}: give HOST:PORT of the Ray head (its GCS port, 6379 by "
                             "default) or auto")
    try:
        socket.create_connection((host, port), timeout=5.0).close()
    except OSError as exc:
        raise VeloError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is it running "
                        "(`ray start --head`, `ray status`)?") from None


def cluster_nodes(address: str) -> int:
    """The live nodes of the cluster at ``address``."""
    ray = connect(address)
    return max(1, sum(1 for node in ray.nodes() if node.get("Alive")))


class _Worker:
    """The actor: a share run on a thread; messages wait in a queue until polled."""

    def __init__(self) -> None:
        self.messages: queue.Queue = queue.Queue()
        self.go_signal = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, share: WorkerShare) -> None:
        import ray

        node = ray.get_runtime_context().get_node_id()

        def emit(message: tuple) -> None:
            if message[0] == "ready":  # which node it runs on: the parent counts the nodes the level used
                message = ("ready", {**message[1], "node": node})
            self.messages.put(message)

        def wait_go() -> bool:
            return self.go_signal.wait(GO_TIMEOUT_S)

        self.thread = threading.Thread(target=run_share, args=(share, emit, wait_go), daemon=True)
        self.thread.start()

    def go(self) -> None:
        self.go_signal.set()

    def poll(self, timeout_s: float) -> list[tuple]:
        try:
            taken = [self.messages.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while True:
            try:
                taken.append(self.messages.get_nowait())
            except queue.Empty:
                return taken


class RayWorkers(Workers):
    """One actor per share, spread over the nodes (``SPREAD``), one CPU each."""

    POLL_S = 0.2

    def __init__(self, address: str) -> None:
        self.ray = connect(address)
        self.where = f"Ray cluster at {address}"
        self.actors: list[Any] = []
        self.polls: dict[Any, int] = {}  # each outstanding poll and its worker
        self.gone: dict[int, str] = {}

    def start(self, shares: list[WorkerShare]) -> None:
        actor_class = self.ray.remote(num_cpus=1, max_concurrency=4)(_Worker)
        for share in shares:
            actor = actor_class.options(scheduling_strategy="SPREAD").remote()
            actor.start.remote(share)
            self.actors.append(actor)
            self.polls[actor.poll.remote(self.POLL_S)] = len(self.actors) - 1

    def go(self) -> None:
        self.ray.get([actor.go.remote() for actor in self.actors])

    def poll(self, timeout_s: float) -> list[tuple[int, tuple]]:
        if not self.polls:
            return []
        # Ray's blocking calls turn a SIGTERM that lands inside them into a plain KeyboardInterrupt:
        # wait in Python instead, so the signal arrives here as itself (its exit code, the file's status).
        until = time.monotonic() + timeout_s
        while True:
            ready, _ = self.ray.wait(list(self.polls), num_returns=len(self.polls), timeout=0)
            if ready or time.monotonic() >= until:
                break
            time.sleep(0.02)
        messages = []
        for ref in ready:
            worker = self.polls.pop(ref)
            try:
                messages.extend((worker, message) for message in self.ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - Ray's actor-died errors: the worker is lost
                self.gone[worker] = f"worker {worker} (a Ray actor) ended mid-level: {str(exc).splitlines()[0][:200]}"
                continue
            self.polls[self.actors[worker].poll.remote(self.POLL_S)] = worker
        return messages

    def lost(self, worker: int) -> str | None:
        return self.gone.get(worker)

    def stop(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):  # an actor already gone
                self.ray.kill(actor)
        self.actors, self.polls = [], {}
