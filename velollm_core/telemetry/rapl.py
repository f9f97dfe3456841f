"""CPU package energy from RAPL through Linux's powercap sysfs: ``/sys/class/powercap/*/energy_uj``.

Each top-level zone (``intel-rapl:0``, one per CPU package; AMD Zen packages appear under the same
driver) has a microjoule counter that wraps at ``max_energy_range_uj``. Sub-zones (``intel-rapl:0:0``
core, ``:1`` uncore, ``:2`` dram) are parts of their package and would count twice; the MMIO copy of
the package counter (``intel-rapl-mmio:0``) too. A ``psys`` zone (the whole platform, on laptops)
overlaps the packages, so it is read only where no package zone exists. Since Linux 5.10
(CVE-2020-8694) ``energy_uj`` is readable by root only: that is said, not hidden.

Registered as a built-in plugin (``telemetry_sources``), so it is listed and can be disabled like any.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from velollm_core.contract.telemetry import DeviceReading, SensorUnavailable
from velollm_core.hookspecs import hookimpl

POWERCAP = Path("/sys/class/powercap")


@dataclass
class RaplZone:
    """One counter, unwrapped: ``total_uj`` grows for ever while the hardware counter wraps."""

    path: Path
    name: str
    max_range_uj: int | None
    last_uj: int | None = None
    total_uj: int = 0

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())

    def advance(self, raw: int) -> None:
        if self.last_uj is not None:
            step = raw - self.last_uj
            if step < 0:  # wrapped: the counter ran up to max_energy_range_uj and restarted at 0
                step += self.max_range_uj or 0
            self.total_uj += max(step, 0)
        self.last_uj = raw


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def find_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """The package zones under ``root`` (psys where there is none), in name order."""
    zones = []
    for path in sorted(root.glob("*:*")):
        if path.name.count(":") != 1 or path.name.startswith("intel-rapl-mmio") or not (path / "energy_uj").exists():
            continue
        max_range = _text(path / "max_energy_range_uj")
        zones.append(RaplZone(path, _text(path / "name") or path.name,
                              int(max_range) if max_range and max_range.isdigit() else None))
    packages = [zone for zone in zones if zone.name.startswith("package")]
    return packages or [zone for zone in zones if zone.name.startswith("psys")]


def _label(zone: RaplZone) -> str:
    number = zone.name.removeprefix("package-")
    return f"CPU package {number}" if number != zone.name else f"RAPL {zone.name}"


class RaplSource:
    """CPU package energy (no power gauge: power is the counter's slope, computed by the summary)."""

    name = "rapl"

    def __init__(self, root: Path = POWERCAP) -> None:
        self.root = root
        self.zones: list[RaplZone] = []
        self._lock = threading.Lock()

    def open(self) -> list[str]:
        if not self.root.is_dir():
            raise SensorUnavailable(f"RAPL: {self.root} does not exist (no powercap driver, or not exposed "
                                    "to this container): CPU energy unknown")
        zones = find_zones(self.root)
        if not zones:
            raise SensorUnavailable(f"RAPL: no package zone with energy_uj under {self.root}: CPU energy unknown")
        readable, notes = [], []
        for zone in zones:
            try:
                zone.advance(zone.read_uj())
            except PermissionError:
                notes.append(f"RAPL: {zone.path / 'energy_uj'} is readable by root only (Linux >= 5.10)")
                continue
            except (OSError, ValueError) as exc:
                notes.append(f"RAPL: cannot read {zone.path / 'energy_uj'}: {exc}")
                continue
            if zone.max_range_uj is None:
                notes.append(f"RAPL: {zone.path} has no max_energy_range_uj: a wrap of its counter would be lost")
            readable.append(zone)
        if not readable:
            raise SensorUnavailable("; ".join(notes) + ": CPU energy unknown")
        self.zones = readable
        return notes

    def read(self) -> list[DeviceReading]:
        readings = []
        with self._lock:
            for zone in self.zones:
                try:
                    zone.advance(zone.read_uj())
                except (OSError, ValueError):
                    continue  # one missed read: the next one still sees the whole step (unless it wrapped twice)
                readings.append(DeviceReading(device=f"rapl:{zone.name}", name=_label(zone), kind="cpu",
                                              energy_j=zone.total_uj / 1e6))
        return readings

    def close(self) -> None:
        self.zones = []


@hookimpl
def telemetry_sources() -> list[RaplSource]:
    """RAPL CPU package energy, where powercap exposes it."""
    return [RaplSource()]
