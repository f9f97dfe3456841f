"""Start-up cost of the CLI against a bare interpreter, measured side by side in one run.

    python benchmarks/startup.py [--repeat 20] [--baseline DIR] [--from-source] [--json]

Runs `python -c pass`, `velollm --help` and `velollm detect --json` interleaved (so machine drift
hits all of them alike) and prints medians and the ratios to the bare interpreter. Every command
runs in an empty folder, so the working directory adds nothing to ``sys.path``.

Commands run as an installed copy does: with cached bytecode (the warm-up run writes it), even where
the environment sets ``PYTHONDONTWRITEBYTECODE`` (which would have every run compile VeloLLM's
modules from source while click, pydantic and the rest load their installed bytecode).
``--from-source`` keeps the variable and measures that case.

``--baseline DIR`` also times the same commands with the code of another tree put first on
``PYTHONPATH`` (``velollm_core`` and every ``plugins/*/`` package of DIR), interleaved with the
rest: before and after measured under the same load. Make DIR with
``git archive <commit> velollm_core plugins | tar -x -C DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "velollm --help": ["-m", "velollm_core", "--help"],
    "velollm detect --json": ["-m", "velollm_core", "detect", "--json"],
}


def child_env(from_source: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not from_source:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def baseline_env(env: dict[str, str], tree: Path) -> dict[str, str]:
    """``env`` with ``tree``'s core and plugins put before the installed ones."""
    paths = [str(tree), *(str(p) for p in sorted((tree / "plugins").glob("*/")) if p.is_dir())]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def time_once(args: list[str], cwd: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   cwd=cwd, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--baseline", type=Path, help="a tree holding velollm_core/ and plugins/ to compare with")
    parser.add_argument("--from-source", action="store_true", help="keep PYTHONDONTWRITEBYTECODE if set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    env = child_env(args.from_source)
    runs = {name: (cmd, env) for name, cmd in COMMANDS.items()}
    if args.baseline:
        for name, cmd in COMMANDS.items():
            if cmd[0] == "-m":
                runs[f"{name} [baseline]"] = (cmd, baseline_env(env, args.baseline.resolve()))
    with tempfile.TemporaryDirectory() as cwd:
        for cmd, env in runs.values():  # warm the OS file cache and VeloLLM's plugin index
            time_once(cmd, cwd, env)
        samples: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, (cmd, env) in runs.items():
                samples[name].append(time_once(cmd, cwd, env))
    base = statistics.median(samples["python -c pass"])
    rows = {
        name: {"median_ms": statistics.median(values) * 1000, "ratio": statistics.median(values) / base,
               "n": len(values)}
        for name, values in samples.items()
    }
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for name, row in rows.items():
        print(f"{name:36} median {row['median_ms']:7.1f} ms   {row['ratio']:.2f}x python -c pass")


if __name__ == "__main__":
    main()
