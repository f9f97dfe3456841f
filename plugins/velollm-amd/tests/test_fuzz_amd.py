"""Property-based fuzzing of the amd plugin's readers of outside bytes: amd-smi's and rocm-smi's JSON,
mutated from the captured real outputs (tests/data/tool-outputs).

Each parser must answer or fail with ProbeError, one line, within the deadline; anything else (a
KeyError, an OverflowError, a hang) is a crash to fix in the parser. The strategies are the test
kit's (velollm_testkit/fuzz.py). Derandomized: CI sees the same examples every time.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from velollm_testkit.fuzz import FUZZ, draw_seed, expect_probe_error, json_text_mutant, one_line, tool_seeds

from velollm_core.contract.errors import VeloError
from velollm_core.contract.probing.tools import ProbeError

# The keys the AMD parsers read: the nodes a JSON mutation aims at half of the time.
AMD_READ = frozenset({"gpu_data", "gpu", "asic", "market_name", "device_id", "board", "product_name", "bus", "bdf",
                      "vram", "size", "size_mb", "max_bandwidth", "bit_width", "limit", "socket_power", "max_power",
                      "driver", "version", "value", "unit", "uuid", "system", "Card Series", "Card series",
                      "Device Name", "Device ID", "Card SKU", "VRAM Total Memory (B)",
                      "VRAM Total Used Memory (B)", "Unique ID", "PCI Bus", "Driver version"})


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_amd_parser_mutants(tool_outputs, data):
    from velollm_amd.parsers import parse_amd_smi_list, parse_amd_smi_static, parse_rocm_smi

    parsers = {"amd-smi": (parse_amd_smi_static, parse_amd_smi_list), "rocm-smi": (parse_rocm_smi,)}
    folder = data.draw(st.sampled_from(sorted(parsers)))
    mutant = json_text_mutant(data, draw_seed(data, tool_seeds(tool_outputs, folder)), AMD_READ)
    for parse in parsers[folder]:
        expect_probe_error(parse, mutant)


# --- what the fuzzer found: each raised something else than its reader's own error before ---------


def _amd(parser: str, text: str):
    from velollm_amd import parsers

    return getattr(parsers, parser)(text)


FOUND = {
    "amd-smi: asic not an object": lambda: _amd("parse_amd_smi_static", '[{"gpu": 0, "asic": true}]'),
    "amd-smi: unit not a string": lambda: _amd("parse_amd_smi_static",
                                               '[{"gpu": 0, "vram": {"size": {"value": 1, "unit": [1]}}}]'),
    "amd-smi: size 1e999": lambda: _amd("parse_amd_smi_static", '[{"gpu": 0, "vram": {"size": 1e999}}]'),
    "rocm-smi: size 1e999": lambda: _amd("parse_rocm_smi", '{"card0": {"VRAM Total Memory (B)": 1e999}}'),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_crashes_found_by_fuzzing_stay_fixed(case):
    try:
        FOUND[case]()
    except (VeloError, ProbeError) as exc:
        one_line(exc)
