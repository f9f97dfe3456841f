"""`velollm detect` on a machine without NVIDIA: the probe answers without importing pynvml."""

from __future__ import annotations

import sys

import pytest
from velollm_nvidia import plugin


def test_nothing_nvidia_here_leaves_pynvml_unimported(monkeypatch, fake_tools):
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(plugin, "nvml_library_loadable", lambda: False)
    messages: list[str] = []
    assert plugin.detect_nvidia_gpus(messages.append, hardware_seen=lambda: False) == []
    assert messages == [] and "pynvml" not in sys.modules


@pytest.mark.parametrize("loadable, seen", [(True, False), (False, True)])
def test_any_sign_of_nvidia_asks_pynvml(monkeypatch, fake_tools, loadable, seen):
    pytest.importorskip("pynvml")
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(plugin, "nvml_library_loadable", lambda: loadable)
    plugin.detect_nvidia_gpus(lambda message: None, hardware_seen=lambda: seen)
    assert "pynvml" in sys.modules


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the dlopen check is Linux only")
def test_library_check_agrees_with_pynvml():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        found = False
    except pynvml.NVMLError:
        found = True
    else:
        found = True
        pynvml.nvmlShutdown()
    assert plugin.nvml_library_loadable() is found
