"""RAPL through powercap sysfs: which zones count, the counter's wraparound, unreadable counters, and
this machine's own /sys/class/powercap (read for real; where it is absent the source says so)."""

from __future__ import annotations

from pathlib import Path

import pytest

from velollm_core.contract.telemetry import SensorUnavailable
from velollm_core.telemetry import rapl

MAX_UJ = 262143328850  # an Intel package's max_energy_range_uj


def zone(root: Path, dirname: str, name: str, energy_uj: int, max_uj: int | None = MAX_UJ) -> Path:
    path = root / dirname
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_uj is not None:
        (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def powercap(tmp_path: Path) -> Path:
    """Two packages with core/dram sub-zones, the MMIO copy of package 0 and a psys zone, as a
    two-socket Intel server with a platform counter lays them out."""
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)  # the control type: no counter of its own
    zone(root, "intel-rapl:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:0:0", "core", 500_000)
    zone(root, "intel-rapl:0:1", "dram", 200_000)
    zone(root, "intel-rapl:1", "package-1", 3_000_000)
    zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000)
    zone(root, "intel-rapl:2", "psys", 9_000_000)
    return root


def set_uj(path: Path, value: int) -> None:
    (path / "energy_uj").write_text(f"{value}\n")


def test_only_package_zones_count(tmp_path):
    root = powercap(tmp_path)
    assert [z.name for z in rapl.find_zones(root)] == ["package-0", "package-1"]
    source = rapl.RaplSource(root)
    assert source.open() == []
    readings = source.read()
    assert [(r.device, r.name, r.kind) for r in readings] == [
        ("rapl:package-0", "CPU package 0", "cpu"), ("rapl:package-1", "CPU package 1", "cpu")]
    assert all(r.power_w is None and r.memory_used_bytes is None for r in readings)


def test_psys_only_where_no_package(tmp_path):
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "psys", 5)
    assert [z.name for z in rapl.find_zones(root)] == ["psys"]


def test_energy_accumulates_across_a_wraparound(tmp_path):
    root = tmp_path / "powercap"
    package = zone(root, "intel-rapl:0", "package-0", MAX_UJ - 2_000_000)
    source = rapl.RaplSource(root)
    source.open()
    assert source.read()[0].energy_j == 0.0
    set_uj(package, MAX_UJ - 500_000)
    assert source.read()[0].energy_j == pytest.approx(1.5)
    set_uj(package, 1_000_000)  # wrapped: 0.5 J up to the top, then 1 J from zero
    assert source.read()[0].energy_j == pytest.approx(3.0)
    set_uj(package, 4_000_000)
    assert source.read()[0].energy_j == pytest.approx(6.0)


def test_a_missing_range_is_said(tmp_path):
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "package-0", 10, max_uj=None)
    notes = rapl.RaplSource(root).open()
    assert len(notes) == 1 and "max_energy_range_uj" in notes[0]


def test_root_only_counters_are_said_not_zero(tmp_path, monkeypatch):
    root = tmp_path / "powercap"
    zone(root, "intel-rapl:0", "package-0", 10)

    def refused(self):
        raise PermissionError(13, "Permission denied")  # what a non-root user gets since Linux 5.10

    monkeypatch.setattr(rapl.RaplZone, "read_uj", refused)
    with pytest.raises(SensorUnavailable, match="readable by root only.*CPU energy unknown"):
        rapl.RaplSource(root).open()


def test_no_powercap_is_one_sentence(tmp_path):
    with pytest.raises(SensorUnavailable, match=r"does not exist .*CPU energy unknown"):
        rapl.RaplSource(tmp_path / "absent").open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SensorUnavailable, match="no package zone"):
        rapl.RaplSource(tmp_path / "empty").open()


def test_this_machine(capsys):
    """The real /sys/class/powercap: readings that grow, or one sentence why not."""
    source = rapl.RaplSource()
    try:
        source.open()
    except SensorUnavailable as exc:
        assert str(exc).startswith("RAPL") and "unknown" in str(exc)
        pytest.skip(f"(expected on machines without readable RAPL) {exc}")
    first = source.read()
    assert first and all(r.energy_j is not None for r in first)
