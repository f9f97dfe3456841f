"""Start-up cost of the CLI against a bare interpreter, measured side by side in one run.

    python benchmarks/startup.py [--repeat 15]

Runs `python -c pass`, `velollm --help` and `velollm detect --json` interleaved (so machine drift
hits all three alike) and prints medians and the ratios to the bare interpreter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "velollm --help": [sys.executable, "-m", "velollm_core", "--help"],
    "velollm detect --json": [sys.executable, "-m", "velollm_core", "detect", "--json"],
}


def time_once(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    for cmd in COMMANDS.values():  # warm the OS file cache
        time_once(cmd)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):
        for name, cmd in COMMANDS.items():
            samples[name].append(time_once(cmd))
    base = statistics.median(samples["python -c pass"])
    rows = {
        name: {"median_ms": statistics.median(values) * 1000, "ratio": statistics.median(values) / base}
        for name, values in samples.items()
    }
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for name, row in rows.items():
        print(f"{name:24} median {row['median_ms']:7.1f} ms   {row['ratio']:.2f}x python -c pass")


if __name__ == "__main__":
    main()
