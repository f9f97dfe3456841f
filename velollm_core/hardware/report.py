"""The hardware report: system probes plus every plugin's GPUs, merged to one record per device."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from velollm_core.contract.probing.pci import normalize_pci_bus_id
from velollm_core.hardware.system import (
    cpu_facts,
    memory_facts,
    os_facts,
    probe_cpu,
    probe_memory,
    probe_os,
)

if TYPE_CHECKING:  # pydantic loads only where a model is needed: detect --json usually does without
    from rich.console import Console

    from velollm_core.contract.schemas import GpuInfo, GpuLink, HardwareReport

GENERIC_SOURCE = "pci"
GPU_HOOKS = {"detect_gpu", "detect_gpu_links"}


def _merge_group(group: list[GpuInfo]) -> GpuInfo:
    """One record for one device: the first vendor record, gaps filled from the others."""
    vendor_records = [record for record in group if record.source != GENERIC_SOURCE]
    generic = [record for record in group if record.source == GENERIC_SOURCE]
    ordered = vendor_records + generic
    if len(ordered) == 1:
        return ordered[0]
    data: dict[str, Any] = ordered[0].to_dict()
    for other in ordered[1:]:
        for key, value in other.to_dict().items():
            # Only gaps: the winner's own facts (name, memory, source) are never overwritten.
            if data.get(key) is None and value is not None:
                data[key] = value
    return ordered[0].replace(**data)


def merge_gpus(records: Iterable[GpuInfo]) -> list[GpuInfo]:
    """One record per physical GPU by normalized PCI bus id; a vendor record beats the generic one.

    Records with a bus id come first, ordered by bus id (the order nvidia-smi numbers GPUs in);
    records without one (Apple's integrated GPU) follow in the order they came.
    """
    by_bus: dict[str, list[GpuInfo]] = {}
    loose: list[GpuInfo] = []
    for record in records:
        bus_id = normalize_pci_bus_id(record.pci_bus_id)
        if bus_id != record.pci_bus_id:
            record = record.replace(pci_bus_id=bus_id)
        if bus_id is None:
            loose.append(record)
        else:
            by_bus.setdefault(bus_id, []).append(record)
    return [_merge_group(by_bus[bus_id]) for bus_id in sorted(by_bus)] + loose


def _as_gpu(item: Any) -> GpuInfo:
    from velollm_core.contract.schemas.gpu import GpuInfo

    if isinstance(item, GpuInfo):
        return item
    if not isinstance(item, dict):
        raise TypeError(f"a GPU record is a GpuInfo or a dict, not {type(item).__name__}")
    return GpuInfo.from_dict(item)


def _plugin_label(plugin_name: str) -> str:
    # Built-ins register under their module path; "pci" reads better in a warning.
    return plugin_name.rsplit(".", 1)[-1]


def collect_gpus(warnings: list[str]) -> list[GpuInfo]:
    """Every plugin's ``detect_gpu`` answer, each plugin called alone so one bug costs one vendor."""
    from velollm_core.contract import plugins

    plugins.load_plugins(hooks=GPU_HOOKS)
    for error in plugins.load_errors:
        warnings.append(f"plugin {error.name} was not loaded: {error.error}")
    records: list[GpuInfo] = []
    for plugin_name, detect_gpu in plugins.implementations("detect_gpu"):
        label = _plugin_label(plugin_name)

        def warn(message: str, _label: str = label) -> None:
            warnings.append(f"{_label}: {message}")

        try:
            answer = detect_gpu(warn=warn) or []
            records.extend(_as_gpu(item) for item in answer)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug must not hide the other GPUs
            warn(f"detect_gpu failed: {type(exc).__name__}: {exc}")
    return records


def _as_link(item: Any) -> GpuLink:
    from velollm_core.contract.schemas.gpu import GpuLink

    if isinstance(item, GpuLink):
        return item
    if not isinstance(item, dict):
        raise TypeError(f"a GPU link is a GpuLink or a dict, not {type(item).__name__}")
    return GpuLink.from_dict(item)


def collect_links(gpus: list[GpuInfo], warnings: list[str]) -> list[GpuLink]:
    """Every plugin's ``detect_gpu_links`` answer for these merged GPUs, each plugin called alone."""
    from velollm_core.contract import plugins

    plugins.load_plugins(hooks=GPU_HOOKS)
    links: list[GpuLink] = []
    for plugin_name, detect_gpu_links in plugins.implementations("detect_gpu_links"):
        label = _plugin_label(plugin_name)

        def warn(message: str, _label: str = label) -> None:
            warnings.append(f"{_label}: {message}")

        try:
            links.extend(_as_link(item) for item in detect_gpu_links(gpus=list(gpus), warn=warn) or [])
        except Exception as exc:  # noqa: BLE001 - a plugin's bug costs its links, not the report
            warn(f"detect_gpu_links failed: {type(exc).__name__}: {exc}")
    return links


def merge_links(links: Iterable[GpuLink], gpus: list[GpuInfo]) -> list[GpuLink]:
    """One link per pair of the report's GPUs (the fastest where answers differ), in the GPUs' order."""
    order = {gpu.pci_bus_id: index for index, gpu in enumerate(gpus) if gpu.pci_bus_id}
    best: dict[tuple[str, ...], GpuLink] = {}
    for link in links:
        ids = [normalize_pci_bus_id(bus_id) for bus_id in link.pci_bus_ids]
        if not all(bus_id in order for bus_id in ids) or ids[0] == ids[1]:
            continue  # a card the report does not hold (hidden, or another plugin's spelling failed)
        if ids != link.pci_bus_ids:
            link = type(link)(**{**link.to_dict(), "pci_bus_ids": ids})
        pair = tuple(link.pci_bus_ids)
        if pair not in best or link.speed_rank < best[pair].speed_rank:
            best[pair] = link
    return sorted(best.values(), key=lambda link: sorted(order[bus_id] for bus_id in link.pci_bus_ids))


def _gather(
    os_probe: Callable[[], Any], cpu_probe: Callable[[], Any], memory_probe: Callable[[], Any]
) -> tuple[dict[str, Any], bool]:
    """The report's parts from these probes, and whether every probe answered (no fallback used).

    Each probe runs in its own guard: an exception becomes a warning line and a fallback value.
    """
    import platform

    warnings: list[str] = []
    failed: list[str] = []

    def guarded(label: str, probe: Callable[[], Any], fallback: Any) -> Any:
        try:
            return probe()
        except Exception as exc:  # noqa: BLE001 - a broken probe must cost one fact, not the report
            warnings.append(f"{label}: probe failed: {type(exc).__name__}: {exc}")
            failed.append(label)
            return fallback

    parts = {
        "os": guarded(
            "os", os_probe, {"system": platform.system() or "unknown", "release": "unknown", "machine": "unknown"}
        ),
        "cpu": guarded("cpu", cpu_probe, {}),
        "memory": guarded("memory", memory_probe, {"total_bytes": 0, "available_bytes": 0, "used_bytes": 0}),
    }
    gpus = parts["gpus"] = guarded("gpu", lambda: merge_gpus(collect_gpus(warnings)), [])
    parts["links"] = (guarded("gpu links", lambda: merge_links(collect_links(gpus, warnings), gpus), [])
                      if len(gpus) > 1 else [])
    parts["warnings"] = warnings
    return parts, not failed


def detect_hardware() -> HardwareReport:
    """OS, CPU, memory and merged GPUs of this machine; failures become ``warnings``, never errors."""
    from velollm_core.contract.schemas import HardwareReport

    parts, _ = _gather(probe_os, probe_cpu, probe_memory)
    return HardwareReport(**parts)


def detect_hardware_data() -> dict[str, Any]:
    """``detect_hardware().model_dump(mode="json")``: what ``velollm detect --json`` prints.

    The usual case, every probe answered, is built without pydantic: the core's ``*_facts`` probes
    return complete fields in the models' order and GPU records are dataclasses (a test holds both
    to the models' dump). Only a fallback value goes through the models.
    """
    parts, complete = _gather(os_facts, cpu_facts, memory_facts)
    if complete:
        from velollm_core.contract.schemas import SCHEMA_VERSIONS

        gpus = [gpu.to_dict() for gpu in parts["gpus"]]
        links = [link.to_dict() for link in parts["links"]]
        return {"schema_version": SCHEMA_VERSIONS["detect"], **parts, "gpus": gpus, "links": links}
    from velollm_core.contract.schemas import HardwareReport

    return HardwareReport.model_validate(parts).model_dump(mode="json")


# --- rendering ------------------------------------------------------------------------------------


def _gib(value: int | None) -> str:
    return f"{value / 2**30:.1f} GiB" if value is not None else "-"


def _gpu_memory(gpu: GpuInfo) -> str:
    return _gib(gpu.memory_total_bytes) + (" (unified)" if gpu.unified_memory else "")


def _gpu_bandwidth(gpu: GpuInfo) -> str:
    return f"{gpu.bandwidth_gbps:.0f} GB/s" if gpu.bandwidth_gbps else "-"


def _gpu_pcie(gpu: GpuInfo) -> str:
    """``Gen4 x16``: the generation the link trains to under load (an idle card reads lower), its width."""
    generation = gpu.pcie_max_generation or gpu.pcie_generation
    width = gpu.pcie_width or gpu.pcie_max_width
    if not generation and not width:
        return "-"
    return " ".join(part for part in (f"Gen{generation}" if generation else "", f"x{width}" if width else "") if part)


# What each kind of link means to a reader, in words that fit the links table at 80 columns.
LINK_WORDS = {
    "bridge": "direct GPU bridge",
    "board": "same board",
    "pcie-switch": "one PCIe switch",
    "pcie-switches": "several PCIe switches",
    "host-bridge": "through the CPU's host bridge",
    "numa-node": "host bridges of one NUMA node",
    "cross-numa": "across CPU sockets (NUMA)",
}


def _links_table(report: HardwareReport):
    """One line per pair of GPUs: the report's GPU numbers, the link in words, the tool's own label."""
    from rich.markup import escape
    from rich.table import Table

    number = {gpu.pci_bus_id: str(index) for index, gpu in enumerate(report.gpus) if gpu.pci_bus_id}
    table = Table(title="GPU links")
    table.add_column("GPUs", no_wrap=True)
    table.add_column("link")
    table.add_column("label", no_wrap=True)
    table.add_column("source", no_wrap=True)
    for link in report.links:
        words = LINK_WORDS[link.kind] + (f", {link.bridge_links} links" if link.bridge_links else "")
        table.add_row(" - ".join(number.get(bus_id, "?") for bus_id in link.pci_bus_ids), words,
                      escape(link.label or "-"), escape(link.source))
    return table


def _gpu_table(gpus: list[GpuInfo]):
    """Every fact in its own column, one line per GPU."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="GPUs")
    for column in ("#", "vendor", "name", "memory", "free", "bandwidth", "driver", "PCI bus", "PCIe", "source"):
        table.add_column(column, no_wrap=True)
    for number, gpu in enumerate(gpus):
        table.add_row(str(number), gpu.vendor, escape(gpu.name), _gpu_memory(gpu), _gib(gpu.memory_free_bytes),
                      _gpu_bandwidth(gpu), gpu.driver_version or "-", gpu.pci_bus_id or "-", _gpu_pcie(gpu),
                      gpu.source)
    return table


def _gpu_table_narrow(gpus: list[GpuInfo]):
    """Vendor and source under the name, free memory under the total: three columns fewer."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="GPUs", show_lines=len(gpus) > 1)  # rows of several lines: keep GPUs apart
    table.add_column("#", no_wrap=True)
    table.add_column("name")
    for column in ("memory", "bandwidth", "driver", "PCI bus"):
        table.add_column(column, no_wrap=True)
    for number, gpu in enumerate(gpus):
        table.add_row(
            str(number),
            f"{escape(gpu.name)}\n[dim]{gpu.vendor} · {escape(gpu.source)}[/dim]",
            "\n".join([_gib(gpu.memory_total_bytes), *(["[dim]unified[/dim]"] if gpu.unified_memory else []),
                       *([f"[dim]{_gib(gpu.memory_free_bytes)} free[/dim]"] if gpu.memory_free_bytes else [])]),
            _gpu_bandwidth(gpu),
            gpu.driver_version or "-",
            "\n".join([gpu.pci_bus_id or "-", *([f"[dim]{_gpu_pcie(gpu)}[/dim]"] if _gpu_pcie(gpu) != "-" else [])]),
        )
    return table


def render_hardware(report: HardwareReport, console: Console) -> None:
    """Print the report as readable tables: system, GPUs, warnings."""
    from rich.markup import escape
    from rich.table import Table

    system = Table(title="System", show_header=False)
    system.add_column("what", style="bold")
    system.add_column("value")
    os_info, cpu, memory = report.os, report.cpu, report.memory
    system.add_row(
        "OS", " ".join(p for p in (os_info.distribution, f"({os_info.system} {os_info.release})") if p)
    )
    system.add_row("Architecture", os_info.machine)
    system.add_row("CPU", cpu.model or "unknown")
    cores = f"{cpu.physical_cores or '?'} physical / {cpu.logical_cores or '?'} logical"
    system.add_row("Cores", cores)
    system.add_row("Max clock", f"{cpu.max_freq_mhz:.0f} MHz" if cpu.max_freq_mhz else "-")
    system.add_row("ISA flags", ", ".join(cpu.flags) or "-")
    system.add_row("Memory", f"{_gib(memory.total_bytes)} total, {_gib(memory.available_bytes)} available")
    if memory.swap_total_bytes:
        system.add_row("Swap", f"{_gib(memory.swap_total_bytes)} total, {_gib(memory.swap_used_bytes)} used")
    console.print(system)

    if report.gpus:
        from velollm_core.tables import fitting

        console.print(fitting(console, lambda: _gpu_table(report.gpus), lambda: _gpu_table_narrow(report.gpus)))
        if report.links:
            console.print(fitting(console, lambda: _links_table(report)))
    else:
        console.print("No GPU found: inference runs on the CPU.")
    for warning in report.warnings:
        # Tool output such as "[N/A]" would read as rich markup without escaping.
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
