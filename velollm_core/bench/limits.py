"""How many requests this process can have in flight at once: the load generator's own caps and the
operating system's limits (open files, processes), raised where that needs no privileges."""

from __future__ import annotations

from velollm_core.contract.errors import UserInputError

# The asyncio load generator holds this many streams (one connection each); a backend without
# StreamCalls runs one thread per stream, and is held to THREAD_STREAMS.
MAX_STREAMS = 4096
THREAD_STREAMS = 1024
_RESERVED_FILES = 64  # descriptors kept for the server's log, result files, the interpreter


def stream_limit(threads: bool = False) -> tuple[int, str]:
    """The most concurrent streams this process can run, and what sets that limit."""
    cap = THREAD_STREAMS if threads else MAX_STREAMS
    limit, why = cap, f"{cap} is the load generator's own cap"
    try:
        import resource
    except ImportError:  # Windows
        return limit, why
    files, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if files != resource.RLIM_INFINITY and files - _RESERVED_FILES < limit:
        # The soft limit (often 1024) may rise to the hard one without privileges, as servers do.
        wanted = limit + _RESERVED_FILES if hard == resource.RLIM_INFINITY else min(hard, limit + _RESERVED_FILES)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            files = wanted
        except (ValueError, OSError):
            pass
    if files != resource.RLIM_INFINITY and files - _RESERVED_FILES < limit:
        limit, why = max(1, files - _RESERVED_FILES), f"the open-file limit (ulimit -n) is {files}"
    procs = resource.getrlimit(resource.RLIMIT_NPROC)[0] if hasattr(resource, "RLIMIT_NPROC") else -1
    if threads and procs not in (-1, resource.RLIM_INFINITY) and procs // 2 < limit:
        limit, why = max(1, procs // 2), f"the process/thread limit (ulimit -u) is {procs}"
    return limit, why


def check_concurrency(max_concurrency: int, threads: bool = False) -> None:
    """Refuse ``max_concurrency`` requests in flight where this machine cannot run that many streams."""
    limit, why = stream_limit(threads)
    if max_concurrency > limit:
        kind = "a thread and a connection" if threads else "a connection"
        raise UserInputError(f"--concurrency {max_concurrency} is more than this machine can run: at most {limit} "
                             f"streams (each stream is {kind}; {why})")
