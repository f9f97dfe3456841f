"""Find llama.cpp's programs, or build them from the llama.cpp tree vendored in the PyPI sdist of
``llama-cpp-python`` into a cache directory keyed by version and options."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from velollm_core.errors import UserInputError, VeloError

# The llama.cpp tree we build is the one this llama-cpp-python release vendors (pinned for repeatability).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
PROGRAMS = ("llama-server", "llama-bench", "llama-cli", "llama-quantize", "llama-speculative-simple")
DEFAULT_TARGETS = ("llama-server", "llama-bench")
EXACT_TARGETS = ("llama-server", "llama-bench")  # the batch-invariant build, for speculative bench
DIR_ENV = "VELOLLM_LLAMACPP_DIR"
SDIST_ENV = "VELOLLM_LLAMACPP_SDIST"  # a local sdist .tar.gz or an unpacked llama.cpp tree (offline)


def cache_root() -> Path:
    from platformdirs import user_cache_path

    return Path(os.environ.get("VELOLLM_CACHE_DIR") or user_cache_path("velollm")) / "llama.cpp"


# Bumped whenever the build options change, so an old build is never mistaken for the current one.
BUILD_RECIPE = 2


def build_key(cuda: bool, exact: bool = False) -> str:
    variant = ("cuda" if cuda else "cpu") + ("-exact" if exact else "")
    return f"{LLAMA_CPP_PYTHON_VERSION}-{variant}-r{BUILD_RECIPE}"


def build_bin_dir(cuda: bool, exact: bool = False) -> Path:
    return cache_root() / build_key(cuda, exact) / "build" / "bin"


def _search_dirs(exact: bool = False) -> list[Path]:
    if exact:
        # Only our own exact build is known to be batch-invariant.
        return [build_bin_dir(False, exact=True)]
    dirs = []
    if os.environ.get(DIR_ENV):
        root = Path(os.environ[DIR_ENV]).expanduser()
        dirs += [root, root / "bin", root / "build" / "bin"]
    dirs += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    # Our own builds, CUDA first: a machine that has one wants it.
    dirs += [build_bin_dir(True), build_bin_dir(False)]
    return dirs


def find_programs(exact: bool = False) -> dict[str, Path]:
    """Every llama.cpp program found, first match per name: VELOLLM_LLAMACPP_DIR, PATH, our cache
    (``exact``: only the batch-invariant build)."""
    found: dict[str, Path] = {}
    for directory in _search_dirs(exact):
        for name in PROGRAMS:
            candidate = directory / name
            if name not in found and candidate.is_file() and os.access(candidate, os.X_OK):
                found[name] = candidate
    return found


def find_program(name: str, exact: bool = False) -> Path:
    """The path of one program, or a UserInputError saying how to get it."""
    path = find_programs(exact).get(name)
    if path is None and exact:
        raise UserInputError(
            "the batch-invariant llama.cpp build is missing; run `velollm llamacpp install --exact` "
            "(a CPU build without llamafile's sgemm, about 15 minutes on 2 cores) or pass --fast-kernels"
        )
    if path is None:
        raise UserInputError(
            f"{name} not found (looked in ${DIR_ENV}, PATH and {cache_root()}); "
            "run `velollm llamacpp install` to build it"
        )
    return path


def _check_toolchain(cuda: bool) -> None:
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(cc) for cc in ("c++", "g++", "clang++")):
        missing.append("a C++ compiler (g++ or clang++)")
    if cuda and shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        missing.append("nvcc (the CUDA toolkit)")
    if missing:
        raise VeloError(f"cannot build llama.cpp: missing {', '.join(missing)}")


def _fetch_sdist(workdir: Path, log: Callable[[str], None]) -> Path:
    local = os.environ.get(SDIST_ENV)
    if local:
        return Path(local).expanduser()
    log(f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist from PyPI (about 75 MB)")
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--no-build-isolation",
        f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(workdir),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    archives = list(workdir.glob("llama_cpp_python-*.tar.gz"))
    if proc.returncode != 0 or not archives:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise VeloError(f"could not download the llama-cpp-python sdist: {tail[0]}")
    return archives[0]


def _extract_llama_cpp(source: Path, dest: Path) -> None:
    """Put the vendored llama.cpp tree of ``source`` (sdist or directory) at ``dest``."""
    if source.is_dir():
        tree = source / "vendor" / "llama.cpp" if (source / "vendor" / "llama.cpp").is_dir() else source
        shutil.copytree(tree, dest, symlinks=True)
        return
    marker = "/vendor/llama.cpp/"
    with tarfile.open(source) as archive:
        members = []
        for member in archive.getmembers():
            _, sep, rest = member.name.partition(marker)
            if sep and rest:
                member.name = rest
                members.append(member)
        if not members:
            raise VeloError(f"{source} holds no vendor/llama.cpp tree")
        archive.extractall(dest, members=members, filter="tar" if hasattr(tarfile, "tar_filter") else None)


def cmake_configure_args(cuda: bool, exact: bool = False) -> list[str]:
    """The options of our build; the web UI is off (its download needs the internet)."""
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DBUILD_SHARED_LIBS=OFF",
    ]
    if cuda:
        args.append("-DGGML_CUDA=ON")
    if exact:
        # llamafile's sgemm takes over matrix products of more than one token (F16, Q8_0, Q4_0
        # weights, the attention's F16 KV): a batch then sums in another order than one token does.
        args.append("-DGGML_LLAMAFILE=OFF")
    if platform.machine().lower() in ("x86_64", "amd64"):
        # -march=native turns on AMX where the CPU advertises it, and ggml's AMX kernels crash
        # (SIGSEGV while loading the model) in the VMs we run on. GCC keeps explicit -mno-* flags
        # over -march=native, so this drops only AMX; AVX2/AVX-512 paths stay native.
        no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
        args += [f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}"]
    return args


_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _run_logged(cmd: list[str], log_file: Path, on_line: Callable[[str], None]) -> None:
    with log_file.open("a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                on_line(line.rstrip())
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            raise VeloError(f"llama.cpp build step failed ({cmd[0]} exited {proc.returncode}); see {log_file}")


def build(
    *,
    cuda: bool = False,
    targets: Iterable[str] = DEFAULT_TARGETS,
    log: Callable[[str], None] = print,
    progress: Callable[[str, int], None] | None = None,
    jobs: int | None = None,
    exact: bool = False,
) -> Path:
    """Build ``targets`` into the cache (reusing what is there) and return the bin directory."""
    targets = list(targets)
    unknown = [t for t in targets if t not in PROGRAMS]
    if unknown:
        raise UserInputError(f"unknown llama.cpp program {', '.join(unknown)}; known: {', '.join(PROGRAMS)}")
    if exact and cuda:
        raise UserInputError("the exact (batch-invariant) build is a CPU build; drop --cuda")
    root = cache_root() / build_key(cuda, exact)
    bin_dir = root / "build" / "bin"
    todo = [t for t in targets if not (bin_dir / t).is_file()]
    if not todo:
        return bin_dir
    _check_toolchain(cuda)
    root.mkdir(parents=True, exist_ok=True)
    src = root / "src"
    if not (src / "CMakeLists.txt").is_file():
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            sdist = _fetch_sdist(Path(tmp), log)
            log(f"unpacking llama.cpp from {sdist.name}")
            staging = Path(tmp) / "src"
            _extract_llama_cpp(sdist, staging)
            if src.exists():
                shutil.rmtree(src)
            staging.rename(src)
    log_file = root / "build.log"
    report = progress or (lambda target, pct: None)
    if not (root / "build" / "CMakeCache.txt").is_file():
        log("configuring with cmake")
        _run_logged(["cmake", "-S", str(src), "-B", str(root / "build"), *cmake_configure_args(cuda, exact)],
                    log_file, lambda line: None)
    jobs = jobs or os.cpu_count() or 2
    for target in todo:
        log(f"building {target} with {jobs} jobs (the first build takes minutes; log: {log_file})")

        def on_line(line: str, target: str = target) -> None:
            match = _PERCENT.match(line)
            if match:
                report(target, int(match.group(1)))

        _run_logged(["cmake", "--build", str(root / "build"), "--target", target, "-j", str(jobs)],
                    log_file, on_line)
        report(target, 100)
    return bin_dir
