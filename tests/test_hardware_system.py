"""OS, CPU and memory probes: parsers on captured /proc/cpuinfo files, probes on this machine."""

from __future__ import annotations

import platform
from types import SimpleNamespace

import pytest

from velollm_core.hardware import system
from velollm_core.hardware.system import (
    arm_cpu_name,
    parse_cpuinfo,
    parse_os_release,
    parse_sysctl_features,
    relevant_cpu_flags,
)


def _cpuinfo(tool_outputs, name: str) -> str:
    return (tool_outputs / "cpuinfo" / name).read_text()


def test_ryzen_cpuinfo_gives_model_cores_and_x86_flags(tool_outputs):
    info = parse_cpuinfo(_cpuinfo(tool_outputs, "rustop_amd-ryzen5-3600.cpuinfo"))
    assert info.model == "AMD Ryzen 5 3600 6-Core Processor"
    assert info.vendor == "AuthenticAMD"
    assert (info.physical_cores, info.logical_cores) == (6, 12)
    assert info.flags == ["sse3", "ssse3", "avx", "avx2", "fma", "f16c", "bmi2"]
    # "cpu MHz" is the current clock of each core; the highest one listed is the best guess left.
    assert info.max_freq_mhz == pytest.approx(
        max(
            float(line.split(":")[1])
            for line in _cpuinfo(tool_outputs, "rustop_amd-ryzen5-3600.cpuinfo").splitlines()
            if line.startswith("cpu MHz")
        )
    )


def test_x86_sme_is_not_arm_sme(tool_outputs):
    # The Ryzen's "sme" is Secure Memory Encryption, not Arm's Scalable Matrix Extension.
    text = _cpuinfo(tool_outputs, "rustop_amd-ryzen5-3600.cpuinfo")
    assert " sme " in text
    assert "sme" not in parse_cpuinfo(text).flags


def test_jetson_aarch64_without_model_name_is_named_from_implementer_and_part(tool_outputs):
    info = parse_cpuinfo(_cpuinfo(tool_outputs, "pytorch-cpuinfo_jetson-tx1_aarch64.cpuinfo"))
    assert info.model == "ARM Cortex-A57 (jetson_tx1)"
    assert info.vendor == "ARM"
    assert info.architecture == "aarch64"
    assert info.logical_cores == 4
    assert info.flags == ["neon"]  # asimd is reported under ggml's name


def test_thunderx_aarch64(tool_outputs):
    info = parse_cpuinfo(_cpuinfo(tool_outputs, "pytorch-cpuinfo_scaleway-thunderx_aarch64.cpuinfo"))
    assert info.model == "Cavium ThunderX 88XX"
    assert info.logical_cores == 6
    assert info.max_freq_mhz is None  # no "cpu MHz" on Arm: unknown, not zero


def test_modern_arm_features_map_to_ggml_names():
    text = "\n\n".join(
        f"processor\t: {n}\nFeatures\t: fp asimd asimdhp asimddp i8mm bf16 sve sve2 sme\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: {part}\n"
        for n, part in enumerate(["0xd05", "0xd05", "0xd0b"])
    )
    info = parse_cpuinfo(text)
    assert info.flags == ["neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme"]
    assert info.model == "ARM Cortex-A55 + ARM Cortex-A76"  # big.LITTLE: each core type once


def test_unknown_arm_ids_are_shown_raw():
    assert arm_cpu_name([("0x99", "0x123")]) == "implementer 0x99 part 0x123"


def test_every_avx512_and_amx_variant_is_kept():
    flags = relevant_cpu_flags(
        [
            "fpu",
            "pni",
            "avx512f",
            "avx512_vnni",
            "avx512bw",
            "amx_tile",
            "amx_int8",
            "avx_vnni",
            "sse4_2",
            "avx512_bf16",
            "sha_ni",
        ]
    )
    assert flags == [
        "sse3",
        "avx_vnni",
        "amx_int8",
        "amx_tile",
        "avx512_bf16",
        "avx512_vnni",
        "avx512bw",
        "avx512f",
    ]


def test_os_release_quotes_and_comments():
    values = parse_os_release(
        '# comment\nNAME="Ubuntu"\nVERSION_ID=\'24.04\'\nPRETTY_NAME="Ubuntu 24.04 LTS"\nbad\n'
    )
    assert values == {"NAME": "Ubuntu", "VERSION_ID": "24.04", "PRETTY_NAME": "Ubuntu 24.04 LTS"}


def test_macos_sysctl_features():
    text = (
        "hw.optional.arm.FEAT_DotProd: 1\nhw.optional.arm.FEAT_I8MM: 0\nhw.optional.neon: 1\n"
        "hw.optional.arm.FEAT_BF16: 1\nhw.optional.floatingpoint: 1\n"
    )
    assert parse_sysctl_features(text) == ["neon", "dotprod", "bf16"]


def test_probes_on_this_machine():
    os_info = system.probe_os()
    assert os_info.system == platform.system()
    assert os_info.machine == platform.machine()
    cpu = system.probe_cpu()
    assert cpu.logical_cores and cpu.logical_cores >= 1
    assert cpu.physical_cores is None or cpu.physical_cores <= cpu.logical_cores
    memory = system.probe_memory()
    assert memory.total_bytes > 0
    assert 0 <= memory.available_bytes <= memory.total_bytes


def test_max_freq_falls_back_to_cpufreq_sysfs(monkeypatch, tmp_path):
    import psutil

    max_freq = tmp_path / "cpuinfo_max_freq"
    max_freq.write_text("3500000\n")  # kHz
    monkeypatch.setattr(psutil, "cpu_freq", lambda: SimpleNamespace(current=1200.0, min=0.0, max=0.0))
    monkeypatch.setattr(system, "CPUFREQ_MAX_PATH", max_freq)
    assert system._max_freq_mhz() == 3500.0


def test_max_freq_unknown_when_nothing_answers(monkeypatch, tmp_path):
    import psutil

    def broken():
        raise OSError("no cpufreq")

    monkeypatch.setattr(psutil, "cpu_freq", broken)
    monkeypatch.setattr(system, "CPUFREQ_MAX_PATH", tmp_path / "missing")
    assert system._max_freq_mhz() is None
