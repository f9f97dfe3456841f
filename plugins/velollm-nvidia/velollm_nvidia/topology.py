"""How NVIDIA GPUs of one machine reach each other: NVML's topology and NVLink calls, else the matrix
``nvidia-smi topo -m`` prints. Each pair becomes a ``GpuLink`` named by the cards' PCI bus ids."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from velollm_core.api import DEFAULT_TIMEOUT_S, OptionalCalls, ProbeError, normalize_pci_bus_id, run_tool

if TYPE_CHECKING:
    from velollm_core.api import GpuInfo, GpuLink

# The matrix's words for a PCIe path (its legend), as the core's neutral link kinds. SOC is what drivers
# before NODE existed printed for a path across CPU sockets.
MATRIX_KINDS = {"PIX": "pcie-switch", "PXB": "pcie-switches", "PHB": "host-bridge", "NODE": "numa-node",
                "SYS": "cross-numa", "SOC": "cross-numa"}
# nvmlGpuTopologyLevel_t: the deepest common ancestor of two GPUs, and the matrix's word for it.
NVML_LEVELS = {0: ("board", None), 10: ("pcie-switch", "PIX"), 20: ("pcie-switches", "PXB"),
               30: ("host-bridge", "PHB"), 40: ("numa-node", "NODE"), 50: ("cross-numa", "SYS")}
NVLINK_MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS of current drivers (H100: 18 links); older cards have fewer
_NVLINK = re.compile(r"^NV(\d+)$")
# nvidia-smi underlines the matrix's header with terminal escapes, even when its output goes to a file.
_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_GPU_NAME = re.compile(r"^GPU(\d+)$")


def matrix_label_kind(label: str) -> tuple[str, int | None] | None:
    """``"NV4"`` -> ``("bridge", 4)``, ``"PHB"`` -> ``("host-bridge", None)``; None for a word it does not know."""
    nvlink = _NVLINK.match(label)
    if nvlink:
        return "bridge", int(nvlink.group(1))
    kind = MATRIX_KINDS.get(label)
    return (kind, None) if kind else None


def is_cell(word: str) -> bool:
    """Whether ``word`` is a matrix cell (``X``, ``NV4``, ``PHB``) rather than a column name."""
    return word == "X" or matrix_label_kind(word) is not None


def parse_topo_matrix(text: str) -> dict[tuple[int, int], str]:
    """``{(i, j): label}`` for each pair of GPUs (i < j) in ``nvidia-smi topo -m`` output.

    Read by the header's column names, so NIC columns and the affinity columns after them are skipped
    whatever their number; cells are split on whitespace (the tool pads with tabs, pasted copies with
    spaces), and an empty affinity cell only shortens the row after the GPU columns. The terminal escapes
    nvidia-smi wraps the header in (underline) are dropped first.
    """
    rows = [line.split() for line in _ESCAPE.sub("", text).splitlines() if line.split()]
    # The header's first word is GPU0 and its second a column name; GPU0's own row has a cell there (X).
    header = next((words for words in rows if words[0] == "GPU0" and (len(words) == 1 or not is_cell(words[1]))), None)
    if header is None:
        raise ProbeError("nvidia-smi topo -m printed no GPU matrix")
    gpu_columns = {position: int(match.group(1)) for position, name in enumerate(header)
                   if (match := _GPU_NAME.match(name))}
    pairs: dict[tuple[int, int], str] = {}
    for cells in rows:
        row = _GPU_NAME.match(cells[0])
        if row is None or cells is header:
            continue
        this = int(row.group(1))
        for position, other in gpu_columns.items():
            if position + 1 < len(cells) and other != this:
                pairs[tuple(sorted((this, other)))] = cells[position + 1]
    return pairs


def links_from_matrix(pairs: dict[tuple[int, int], str], bus_ids: dict[int, str]) -> list[GpuLink]:
    """GpuLinks for the pairs whose both GPUs have a bus id (``bus_ids``: nvidia-smi index -> bus id)."""
    from velollm_core.api import GpuLink

    links = []
    for (first, second), label in sorted(pairs.items()):
        known = matrix_label_kind(label)
        if known is None or first not in bus_ids or second not in bus_ids:
            continue
        kind, bridge_links = known
        links.append(GpuLink(pci_bus_ids=[bus_ids[first], bus_ids[second]], kind=kind, label=label,
                             bridge_links=bridge_links, source="nvidia-smi"))
    return links


def _nvlink_peers(nvml: OptionalCalls, handle: Any) -> dict[str, int]:
    """Active NVLinks of one GPU per peer bus id (a bonded pair counts each of its links)."""
    enabled = nvml.constant("NVML_FEATURE_ENABLED", 1)
    peers: dict[str, int] = {}
    for link in range(NVLINK_MAX_LINKS):
        if nvml.get("nvmlDeviceGetNvLinkState", handle, link) != enabled:
            continue
        remote = (nvml.get("nvmlDeviceGetNvLinkRemotePciInfo_v2", handle, link)
                  or nvml.get("nvmlDeviceGetNvLinkRemotePciInfo", handle, link))
        bus_id = getattr(remote, "busId", None)
        if bus_id is not None:
            text = bus_id.decode(errors="replace") if isinstance(bus_id, bytes) else str(bus_id)
            peer = normalize_pci_bus_id(text)
            if peer:
                peers[peer] = peers.get(peer, 0) + 1
    return peers


def nvml_links(module: ModuleType, bus_ids: list[str], warn: Callable[[str], None]) -> list[GpuLink]:
    """One GpuLink per pair of the GPUs NVML opens whose bus id is in ``bus_ids``: NVLink where a bonded
    set joins them, else their deepest common PCIe ancestor. Raises the binding's error if NVML cannot start."""
    from velollm_core.api import GpuLink

    nvml = OptionalCalls(module, "NVMLError")
    module.nvmlInit()
    try:
        handles: dict[str, Any] = {}
        for index in range(module.nvmlDeviceGetCount()):
            handle = nvml.get("nvmlDeviceGetHandleByIndex", index)
            pci = nvml.get("nvmlDeviceGetPciInfo", handle) if handle is not None else None
            raw = getattr(pci, "busId", None)
            bus_id = normalize_pci_bus_id(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
            if bus_id in bus_ids:
                handles[bus_id] = handle
        links = []
        ordered = sorted(handles)
        for position, first in enumerate(ordered):
            nvlinks = _nvlink_peers(nvml, handles[first])
            for second in ordered[position + 1:]:
                if nvlinks.get(second):
                    count = nvlinks[second]
                    links.append(GpuLink(pci_bus_ids=[first, second], kind="bridge", label=f"NV{count}",
                                         bridge_links=count, source="nvml"))
                    continue
                level = nvml.get("nvmlDeviceGetTopologyCommonAncestor", handles[first], handles[second])
                known = NVML_LEVELS.get(int(level)) if level is not None else None
                if known is None:
                    warn(f"NVML gave no topology for GPUs {first} and {second}")
                    continue
                kind, label = known
                links.append(GpuLink(pci_bus_ids=[first, second], kind=kind, label=label, source="nvml"))
        return links
    finally:
        nvml.get("nvmlShutdown")


def nvidia_bus_ids(gpus: list[GpuInfo]) -> dict[int, str]:
    """nvidia-smi's index -> PCI bus id of the NVIDIA cards (bus order where a record has no index)."""
    nvidia = [gpu for gpu in gpus if gpu.vendor == "nvidia" and gpu.pci_bus_id]
    if all(gpu.index is not None for gpu in nvidia):
        return {gpu.index: gpu.pci_bus_id for gpu in nvidia}
    return dict(enumerate(sorted(gpu.pci_bus_id for gpu in nvidia)))


def detect_links(gpus: list[GpuInfo], warn: Callable[[str], None], timeout: float = DEFAULT_TIMEOUT_S) -> list[GpuLink]:
    """Links between the NVIDIA cards among ``gpus``: NVML, else ``nvidia-smi topo -m``; never raises."""
    import shutil

    bus_ids = nvidia_bus_ids(gpus)
    if len(bus_ids) < 2:
        return []
    why_not_nvml = "nvidia-ml-py is not installed"
    try:
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            return nvml_links(pynvml, list(bus_ids.values()), warn)
        except Exception as exc:  # noqa: BLE001 - any NVML failure leaves nvidia-smi a chance
            why_not_nvml = f"NVML failed: {type(exc).__name__}: {exc}"
    if shutil.which("nvidia-smi") is None:
        warn(f"GPU links unknown: {why_not_nvml}, and nvidia-smi is not on PATH")
        return []
    try:
        return links_from_matrix(parse_topo_matrix(run_tool(["nvidia-smi", "topo", "-m"], timeout=timeout)), bus_ids)
    except ProbeError as exc:
        warn(f"GPU links unknown: {exc}")
    return []
