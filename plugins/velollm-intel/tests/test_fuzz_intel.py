"""Property-based fuzzing of the intel plugin's readers of outside bytes: xpu-smi's JSON and box-drawn
tables, mutated from the captured real outputs (tests/data/tool-outputs).

Each parser must answer or fail with ProbeError, one line, within the deadline; anything else (a
KeyError, an OverflowError, a hang) is a crash to fix in the parser. The strategies are the test
kit's (velollm_testkit/fuzz.py). Derandomized: CI sees the same examples every time.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from velollm_intel import plugin as xpu
from velollm_testkit.fuzz import (
    FUZZ,
    NASTY,
    draw_seed,
    expect_probe_error,
    json_text_mutant,
    one_line,
    text_mutants,
    tool_seeds,
)

from velollm_core.contract.errors import VeloError
from velollm_core.contract.probing.tools import ProbeError

# The keys the xpu-smi parsers read: the nodes a JSON mutation aims at half of the time.
XPU_READ = frozenset({"device_list", "device_id", "device_name", "pci_device_id", "pci_vendor_id", "uuid",
                      "driver_version", "kernel_version", "pci_bdf_address", "memory_physical_size_byte",
                      "memory_physical_size", "memory_free_size_byte", "error"})


def table_mutant(draw, text: str) -> str:
    """Values of ``| Label: value |`` rows of a box-drawn table replaced by nasty text."""
    lines = text.splitlines()
    rows = [index for index, line in enumerate(lines) if ": " in line]
    for _ in range(draw(st.integers(1, 4))):
        if not rows:
            break
        index = draw(st.sampled_from(rows))
        label, _, rest = lines[index].partition(": ")
        lines[index] = f"{label}: {draw(NASTY)} |" if rest else label
    return "\n".join(lines)


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_xpu_smi_parser_mutants(tool_outputs, data):
    text = draw_seed(data, tool_seeds(tool_outputs, "xpu-smi"))
    if text.lstrip().startswith("{"):
        mutant = json_text_mutant(data, text, XPU_READ)
        for parse in (xpu.parse_xpu_discovery_json, xpu.parse_xpu_device_json):
            found = expect_probe_error(parse, mutant)
            for props in found if isinstance(found, list) else [found] if found else []:
                xpu.gpu_from_xpu(props)
    else:
        mutant = table_mutant(data.draw, text) if data.draw(st.booleans()) else data.draw(text_mutants(text))
        for props in expect_probe_error(xpu.parse_xpu_table, mutant) or []:
            xpu.gpu_from_xpu(props)
        expect_probe_error(xpu.parse_xpu_device_text, mutant)


# --- what the fuzzer found: each raised something else than its reader's own error before ---------

_HUGE = "9" * 400  # a float's inf: int() of it raised OverflowError

FOUND = {
    "xpu-smi: device id of 400 digits": lambda: xpu.gpu_from_xpu({"device_id": _HUGE}),
    "xpu-smi: memory of 400 digits": lambda: xpu.gpu_from_xpu({"memory_physical_size_byte": _HUGE}),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_crashes_found_by_fuzzing_stay_fixed(case):
    try:
        FOUND[case]()
    except (VeloError, ProbeError) as exc:
        one_line(exc)
