"""A telemetry source for the mock server's pretend GPU (``--gpu-busy-pct``): the diagnosis's tests
see a GPU busy or idle exactly as the mock says, through the same ``telemetry_sources`` hook a GPU
vendor's plugin answers.

Register ``MockGpuPlugin(url)`` (the ``register_plugin`` fixture) and every benchmark in the process
samples ``velollm_mock_gpu_utilization_pct`` from the mock's ``/metrics`` as one ``gpu`` device.
"""

from __future__ import annotations

import httpx

from velollm_core.api import DeviceReading, SensorUnavailable, hookimpl

GAUGE = "velollm_mock_gpu_utilization_pct"


class MockGpuSource:
    """The mock's pretend GPU as one device of kind ``gpu``: its utilisation, nothing else."""

    name = "mock-gpu"

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/metrics"
        self.client: httpx.Client | None = None

    def _utilization(self) -> float | None:
        assert self.client is not None
        for line in self.client.get(self.url).text.splitlines():
            if line.startswith(GAUGE + " "):
                return float(line.split()[1])
        return None

    def open(self) -> list[str]:
        self.client = httpx.Client(timeout=5.0)
        try:
            found = self._utilization()
        except httpx.HTTPError as exc:
            raise SensorUnavailable(f"mock-gpu: {self.url} does not answer ({type(exc).__name__})") from None
        if found is None:
            raise SensorUnavailable(f"mock-gpu: {self.url} has no {GAUGE} (start the mock with --gpu-busy-pct)")
        return []

    def read(self) -> list[DeviceReading]:
        return [DeviceReading(device="mock-gpu:0", name="mock GPU", kind="gpu", utilization_pct=self._utilization())]

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class MockGpuPlugin:
    """A plugin object answering ``telemetry_sources`` with the mock's pretend GPU at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    @hookimpl
    def telemetry_sources(self) -> list[MockGpuSource]:
        return [MockGpuSource(self.url)]
