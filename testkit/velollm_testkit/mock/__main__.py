"""The mock LLM server's command line:

    python -m velollm_testkit.mock --port 0 --ttft-ms 50 --itl-ms 20 --output-tokens 128

prints its URL on the first stdout line and serves until SIGTERM or Ctrl-C. A usage error is one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import fields

from velollm_testkit.mock.config import MockConfig
from velollm_testkit.mock.server import serve

PROG = "python -m velollm_testkit.mock"


def _raise_fd_limit() -> None:
    """1,000 streams need more than the common soft limit of 1,024 open files."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ImportError, ValueError, OSError):
        pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2: a usage error
        sys.stderr.write(f"velollm mockserver: {message} (see --help)\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A loopback mock LLM server (llama-server, OpenAI, Ollama and "
                                            "TGI wire formats).")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: a free one; the URL is printed)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="share the port with other mock processes (SO_REUSEPORT); prints 'URL PRIVATE_URL', "
                             "the second this process's own port for /mock/stats")
    defaults = MockConfig()
    helps = {"ttft_ms": "time to first token", "itl_ms": "gap between tokens",
             "output_tokens": "answer length when the request does not force one (the model's EOS)",
             "prefill_ms_per_token": "added to the TTFT per uncached prompt token",
             "jitter_ms": "each gap uniform in itl +/- jitter", "seed": "seed of the jitter",
             "slots": "concurrent generations, more wait (0: no limit)", "ctx_size": "context per slot",
             "vocab_size": "fixed token ids", "model": "model name served",
             "fail_every": "every Nth generation request answers HTTP 503 (0: never)",
             "kv_cache_tokens": "KV cache cells of all slots; a request waits until it fits (0: no limit)",
             "prefill_stalls": "1: a prefill delays every other stream's next token",
             "gpu_busy_pct": "utilisation of a pretend GPU while generating, in /metrics (0: none)",
             "reasoning_tokens": "thinking tokens before each answer, where the format separates them",
             "image_tokens": "prompt tokens of each attached image"}
    for field in fields(MockConfig):
        default = getattr(defaults, field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(default), default=default,
                            help=f"{helps[field.name]} (default {default})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = MockConfig(**{f.name: getattr(args, f.name) for f in fields(MockConfig)})
    try:
        config.check()
        if not 0 <= args.port <= 65535:
            raise ValueError("--port must lie between 0 and 65535")
    except ValueError as exc:
        sys.stderr.write(f"velollm mockserver: {exc}\n")
        return 2
    _raise_fd_limit()

    def ready(url: str) -> None:
        sys.stdout.write(url + "\n")
        sys.stdout.flush()
        sys.stderr.write(f"velollm mockserver: {url} ttft {config.ttft_ms:g} ms, itl {config.itl_ms:g} ms, "
                         f"{config.output_tokens} tokens, pid {os.getpid()}\n")

    try:
        asyncio.run(serve(config, args.host, args.port, ready, reuse_port=args.reuse_port))
    except OSError as exc:
        sys.stderr.write(f"velollm mockserver: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
