"""Evidence a stranger can check: the data the tests and the docs rest on is in the repository and says
where it came from."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL_OUTPUTS = REPO / "tests" / "data" / "tool-outputs"


def test_every_captured_tool_output_is_in_the_repository_with_its_source():
    readme = (TOOL_OUTPUTS / "README.md").read_text()
    captures = sorted(path.relative_to(TOOL_OUTPUTS).as_posix() for path in TOOL_OUTPUTS.rglob("*")
                      if path.is_file() and path.name != "README.md")
    assert len(captures) >= 24
    unnamed = [capture for capture in captures if capture not in readme and Path(capture).name not in readme]
    assert unnamed == []
