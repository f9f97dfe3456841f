"""Property-based fuzzing of the nvidia plugin's readers of outside bytes: nvidia-smi's CSV and its
``-q -x`` XML, mutated from the captured real outputs (tests/data/tool-outputs) and this
plugin's own captures (tests/data).

Each parser must answer or fail with ProbeError, one line, within the deadline; anything else (a
KeyError, an OverflowError, a hang) is a crash to fix in the parser. The strategies are the test
kit's (velollm_testkit/fuzz.py). Derandomized: CI sees the same examples every time.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from velollm_testkit.fuzz import (
    FUZZ,
    NASTY,
    draw_seed,
    expect_probe_error,
    one_line,
    text_mutants,
    tool_seeds,
)

from velollm_core.contract.errors import VeloError
from velollm_core.contract.probing.tools import ProbeError

NVIDIA_DATA = Path(__file__).parent / "data"


def csv_mutant(draw, text: str, read: tuple[str, ...]) -> str:
    """Cells replaced by nasty values (mostly in the columns the parser ``read``s), rows cut or
    padded: CSV that still parses as CSV."""
    rows = list(csv.reader(io.StringIO(text)))
    header = [cell.split("[")[0].strip().lower() for cell in rows[0]] if rows else []
    columns = [index for index, key in enumerate(header) if key in read]
    for _ in range(draw(st.integers(1, 4))):
        if not rows:
            break
        # Mostly a GPU's row: the header's mutants are mostly refused as a whole.
        row = draw(st.integers(1, len(rows) - 1) if len(rows) > 1 and draw(st.integers(0, 4)) else
                   st.integers(0, len(rows) - 1))
        kind = draw(st.sampled_from(["cell", "cell", "cell", "drop", "extra", "duplicate"]))
        if kind == "cell" and rows[row]:
            column = draw(st.sampled_from(columns) if columns and draw(st.booleans()) else
                          st.integers(0, len(rows[row]) - 1))
            if column < len(rows[row]):
                rows[row][column] = draw(NASTY)
        elif kind == "drop" and rows[row]:
            rows[row] = rows[row][:-1]
        elif kind == "extra":
            rows[row] = [*rows[row], draw(NASTY)]
        else:
            rows.insert(row, list(rows[row]))
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_nvidia_smi_csv_mutants(tool_outputs, data):
    from velollm_nvidia.smi import FULL_FIELDS, parse_smi_csv

    text = draw_seed(data, tool_seeds(tool_outputs, "nvidia-smi-csv"))
    read = (*FULL_FIELDS, "mig.mode.current")
    mutant = csv_mutant(data.draw, text, read) if data.draw(st.booleans()) else data.draw(text_mutants(text))
    expect_probe_error(parse_smi_csv, mutant)
    expect_probe_error(lambda t: parse_smi_csv(t, FULL_FIELDS), mutant)


# What parse_smi_xml reads: the elements a mutation aims at half of the time.
SMI_XML_READ = {"gpu", "product_name", "uuid", "pci_bus_id", "pci_device_id", "total", "free", "used",
                "current_power_limit", "power_limit", "mem_clock", "current_mig", "driver_version", "cuda_version"}


def xml_mutant(draw, text: str) -> str:
    """Elements emptied, removed, duplicated or given nasty text: XML that still parses as XML."""
    root = ET.fromstring(text)
    elements = list(root.iter())
    focus = [element for element in elements if element.tag in SMI_XML_READ]
    for _ in range(draw(st.integers(1, 4))):
        element = draw(st.sampled_from(focus if focus and draw(st.booleans()) else elements))
        kind = draw(st.sampled_from(["text", "text", "remove", "duplicate", "attribute"]))
        children = list(element)
        if kind == "text":
            element.text = draw(NASTY)
        elif kind == "remove" and children:
            element.remove(draw(st.sampled_from(children)))
        elif kind == "duplicate" and children:
            element.append(draw(st.sampled_from(children)))
        else:
            element.set("id", draw(NASTY))
    return ET.tostring(root, encoding="unicode")


@settings(FUZZ, max_examples=300)
@given(data=st.data())
def test_nvidia_smi_xml_mutants(tool_outputs, data):
    from velollm_nvidia.smi_xml import parse_smi_xml

    seeds = {**tool_seeds(tool_outputs, "nvidia-smi-xml"), **{p.name: p.read_text() for p in NVIDIA_DATA.glob("*.xml")}}
    text = draw_seed(data, seeds)
    mutant = xml_mutant(data.draw, text) if data.draw(st.booleans()) else data.draw(text_mutants(text))
    expect_probe_error(parse_smi_xml, mutant)


# --- what the fuzzer found: each raised something else than its reader's own error before ---------

_HUGE = "9" * 400  # a float's inf: int() of it raised OverflowError


def _nvidia_csv(text: str):
    from velollm_nvidia.smi import parse_smi_csv

    return parse_smi_csv(text)


def _nvidia_xml(text: str):
    from velollm_nvidia.smi_xml import parse_smi_xml

    return parse_smi_xml(text)


FOUND = {
    "nvidia-smi csv: memory of 400 digits": lambda: _nvidia_csv(f"name, memory.total [MiB]\nGPU, {_HUGE}"),
    "nvidia-smi csv: index of 400 digits": lambda: _nvidia_csv(f"index, name\n{_HUGE}, GPU"),
    "nvidia-smi -q -x: memory of 400 digits": lambda: _nvidia_xml(
        f"<nvidia_smi_log><gpu><product_name>G</product_name><fb_memory_usage><total>{_HUGE} MiB</total>"
        "</fb_memory_usage></gpu></nvidia_smi_log>"),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_crashes_found_by_fuzzing_stay_fixed(case):
    try:
        FOUND[case]()
    except (VeloError, ProbeError) as exc:
        one_line(exc)
