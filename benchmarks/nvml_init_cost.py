"""What `velollm detect` pays NVML for on a machine with NVIDIA GPUs, measured in fresh processes.

    python benchmarks/nvml_init_cost.py [--repeat 15]

Each case runs in its own interpreter (as `velollm detect --json` does) and prints its median wall
time next to `python -c pass`: importing pynvml, nvmlInit(), nvmlInitWithFlags(NO_ATTACH) (which
skips attaching to the GPUs), and each flavour followed by the queries the NVIDIA plugin makes.
Reading the same facts from /proc/driver/nvidia is timed too. Run it where a GPU and its driver are.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

QUERIES = """
n = pynvml.nvmlDeviceGetCount()
for i in range(n):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    pynvml.nvmlDeviceGetName(h); pynvml.nvmlDeviceGetMemoryInfo(h); pynvml.nvmlDeviceGetPciInfo(h)
    pynvml.nvmlDeviceGetMemoryBusWidth(h); pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM)
    pynvml.nvmlDeviceGetUUID(h)
pynvml.nvmlSystemGetDriverVersion()
"""
CASES = {
    "python -c pass": "pass",
    "import pynvml": "import pynvml",
    "nvmlInit": "import pynvml; pynvml.nvmlInit()",
    "nvmlInit + queries": "import pynvml; pynvml.nvmlInit()\n" + QUERIES,
    "init NO_ATTACH": "import pynvml; pynvml.nvmlInitWithFlags(pynvml.NVML_INIT_FLAG_NO_ATTACH)",
    "init NO_ATTACH + queries": "import pynvml; pynvml.nvmlInitWithFlags(pynvml.NVML_INIT_FLAG_NO_ATTACH)\n" + QUERIES,
    "read /proc/driver/nvidia": "import glob\nfor f in glob.glob('/proc/driver/nvidia/gpus/*/information'): open(f).read()",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    errors: dict[str, str] = {}
    for _ in range(args.repeat):
        for name, code in CASES.items():  # interleaved: drift hits every case alike
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
            times[name].append(time.perf_counter() - start)
            if done.returncode:
                errors[name] = done.stderr.strip().splitlines()[-1]
    base = statistics.median(times["python -c pass"])
    print(f"{'case':28} {'median ms':>10} {'x pass':>7}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28} {median * 1000:10.1f} {median / base:7.2f}  {errors.get(name, '')}")


if __name__ == "__main__":
    main()
