"""``velollm detect --json`` against nvidia-smi's own answer on a machine with real NVIDIA GPUs."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

QUERY = "index,name,memory.total,driver_version,pci.bus_id,uuid"


def nvidia_smi_rows() -> list[dict[str, str]]:
    """nvidia-smi's own view, parsed here independently of the plugin; skips where it does not answer."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        pytest.skip("nvidia-smi not on PATH")
    try:
        proc = subprocess.run(
            [exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("nvidia-smi did not answer")
    if proc.returncode != 0:
        pytest.skip(f"nvidia-smi failed: {proc.stderr.strip() or proc.stdout.strip()}")
    keys = QUERY.split(",")
    return [
        dict(zip(keys, (cell.strip() for cell in row))) for row in csv.reader(proc.stdout.splitlines()) if row
    ]


def velollm_detect() -> dict:
    script = Path(sys.executable).parent / "velollm"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "velollm_core"]
    proc = subprocess.run(
        [*command, "detect", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def short_bus_id(bus_id: str) -> str:
    domain, rest = bus_id.lower().split(":", 1)
    return f"{int(domain, 16) & 0xFFFF:04x}:{rest}"


def test_detect_matches_nvidia_smi():
    rows = nvidia_smi_rows()
    if not rows:
        pytest.skip("nvidia-smi lists no GPU")
    report = velollm_detect()
    gpus = [gpu for gpu in report["gpus"] if gpu["vendor"] == "nvidia"]
    assert len(gpus) == len(rows), report["warnings"]
    by_bus = {gpu["pci_bus_id"]: gpu for gpu in gpus}
    for row in rows:
        gpu = by_bus[short_bus_id(row["pci.bus_id"])]
        assert gpu["source"] in {"nvml", "nvidia-smi"}
        assert gpu["name"] == row["name"]
        assert gpu["uuid"] == row["uuid"]
        assert gpu["driver_version"] == row["driver_version"]
        smi_total = int(row["memory.total"]) * 2**20
        assert abs(gpu["memory_total_bytes"] - smi_total) <= 0.01 * smi_total
        assert 0 <= gpu["memory_free_bytes"] <= gpu["memory_total_bytes"]
        if gpu["source"] == "nvml":
            # NVML gives bus width and memory clock: bandwidth must be a real number, not a guess.
            assert gpu["bandwidth_gbps"] and gpu["bandwidth_gbps"] > 100
            assert gpu["compute_capability"]
