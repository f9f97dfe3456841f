"""Find llama.cpp's programs, or build them from the llama.cpp tree vendored in the PyPI sdist of
``llama-cpp-python`` into a cache directory keyed by version and options."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from velollm_core.api import UserInputError, VeloError
from velollm_llamacpp import sdist

# The llama.cpp tree we build is the one this llama-cpp-python release vendors (pinned for repeatability).
LLAMA_CPP_PYTHON_VERSION = sdist.VERSION
PROGRAMS = ("llama-server", "llama-bench", "llama-cli", "llama-quantize", "llama-speculative-simple",
            "llama-batched-bench")
# llama-quantize derives the F16 test target from the bundled model (speculative tests and pairs);
# llama-batched-bench measures the engine alone at N sequences (a load level's engine ceiling). A cached
# build missing one of them builds only that one: cmake reuses the libraries already compiled.
DEFAULT_TARGETS = ("llama-server", "llama-bench", "llama-quantize", "llama-batched-bench")
EXACT_TARGETS = ("llama-server", "llama-bench")  # the batch-invariant build, for speculative bench
DIR_ENV = "VELOLLM_LLAMACPP_DIR"
SDIST_ENV = "VELOLLM_LLAMACPP_SDIST"  # a local sdist .tar.gz or an unpacked llama.cpp tree (offline)


def cache_root() -> Path:
    from velollm_core.api import cache_dir

    return cache_dir() / "llama.cpp"


# Bumped whenever the build options change, so an old build is never mistaken for the current one.
BUILD_RECIPE = 3
BUILD_INFO = "velollm-build.json"  # what a build is: recorded beside its build/
SOURCE_INFO = "velollm-source.json"  # where its tree came from


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


def _fetch_sdist(workdir: Path, log: Callable[[str], None], progress: Callable[[str, int], None]) -> Path:
    """The pinned sdist: ``$VELOLLM_LLAMACPP_SDIST`` (offline machines), or downloaded from the package
    index and checked against its pinned sha256."""
    from velollm_llamacpp import sdist

    local = os.environ.get(SDIST_ENV)
    if local:
        path = Path(local).expanduser()
        if not path.exists():
            raise UserInputError(f"${SDIST_ENV} names {path}, which does not exist")
        if path.is_file():
            sdist.check_sha256(path, origin=f"${SDIST_ENV}")
        return path
    return sdist.download(workdir, log=log, progress=progress)


def _source_record(archive: Path) -> dict:
    """Where a tree came from; the commit only when the file is the pinned sdist (a directory is anything,
    unless it carries the record of the sdist it was cut from, as benchmarks/gpu/0_prepare.sh writes)."""
    carried = _read_json(archive / SOURCE_INFO) if archive.is_dir() else {}
    if carried:
        return {**carried, "source": str(archive)}
    pinned = archive.is_file()
    return {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION if pinned else None,
        "llama_cpp_commit": sdist.LLAMA_CPP_COMMIT if pinned else None,
        "sdist_sha256": sdist.SHA256 if pinned else None,
        "source": archive.name if pinned else str(archive),
    }


def _extract_llama_cpp(source: Path, dest: Path) -> None:
    """Put the vendored llama.cpp tree of ``source`` (sdist or directory) at ``dest``."""
    if source.is_dir():
        tree = source / "vendor" / "llama.cpp" if (source / "vendor" / "llama.cpp").is_dir() else source
        shutil.copytree(tree, dest, symlinks=True)
        return
    marker = "vendor/llama.cpp/"
    try:
        with tarfile.open(source) as archive:
            members = []
            for member in archive.getmembers():
                # "<top>/vendor/llama.cpp/..." only: the sdist's .git/modules/vendor/llama.cpp/ holds
                # the submodule's git objects (38 MB), not its tree.
                _, _, inside = member.name.partition("/")
                rest = inside[len(marker):] if inside.startswith(marker) else ""
                if rest:
                    member.name = rest
                    members.append(member)
            if not members:
                raise VeloError(f"{source} holds no vendor/llama.cpp tree")
            # The "data" filter refuses absolute paths, links out of ``dest`` and device files.
            archive.extractall(dest, members=members, filter="data" if hasattr(tarfile, "data_filter") else None)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise VeloError(f"could not unpack {source}: {exc}; delete it and run `velollm llamacpp install` again")


def source_tree(root: Path, log: Callable[[str], None], progress: Callable[[str, int], None]) -> Path:
    """The unpacked llama.cpp tree under ``root`` (downloaded and unpacked when missing)."""
    src = root / "src"
    if not (src / "CMakeLists.txt").is_file():
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            archive = _fetch_sdist(Path(tmp), log, progress)
            log(f"unpacking llama.cpp from {archive.name}")
            staging = Path(tmp) / "src"
            _extract_llama_cpp(archive, staging)
            if src.exists():
                shutil.rmtree(src)
            staging.rename(src)
            (root / SOURCE_INFO).write_text(json.dumps(_source_record(archive), indent=2) + "\n")
    return src


def cmake_configure_args(cuda: bool, exact: bool = False) -> list[str]:
    """The options of our build; the web UI is off (its download needs the internet)."""
    args = [
        "-DCMAKE_BUILD_TYPE=Release",
        # The sdist carries no git metadata for the vendored tree: name its commit ourselves, so
        # `llama-server --version` and every result say which llama.cpp this is.
        f"-DLLAMA_BUILD_COMMIT={sdist.LLAMA_CPP_COMMIT[:7]}",
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
    import collections

    tail: collections.deque[str] = collections.deque(maxlen=200)
    with log_file.open("a", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    errors="replace")
        except OSError as exc:
            raise VeloError(f"cannot run {cmd[0]}: {exc}") from None
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip())
                on_line(line.rstrip())
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.wait() != 0:
            raise VeloError(f"llama.cpp build step failed ({' '.join(cmd[:3])} exited {proc.returncode}): "
                            f"{first_error(tail)}; full log: {log_file}")


def first_error(lines: Iterable[str]) -> str:
    """The line of a compiler or cmake log that says what went wrong (the first 'error'), else the last."""
    lines = [line for line in lines if line.strip()]
    for line in lines:
        if re.search(r"\berror\b|CMake Error|No such file", line, re.IGNORECASE):
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


def _read_json(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def info_for_binary(binary: Path) -> dict:
    """The build record of the cached build a program belongs to ({} for programs built elsewhere)."""
    return _read_json(binary.resolve().parent.parent.parent / BUILD_INFO)


def configure(
    *, cuda: bool = False, exact: bool = False, log: Callable[[str], None] = print,
    progress: Callable[[str, int], None] | None = None, root: Path | None = None,
) -> Path:
    """Fetch, unpack and configure the tree of one variant (no compile); return its build directory."""
    if exact and cuda:
        raise UserInputError("the exact (batch-invariant) build is a CPU build; drop --cuda")
    _check_toolchain(cuda)
    root = root or cache_root() / build_key(cuda, exact)
    report = progress or (lambda target, pct: None)
    src = source_tree(root, log, report)
    build_dir = root / "build"
    if not (build_dir / "CMakeCache.txt").is_file():
        log("configuring with cmake")
        _run_logged(["cmake", "-S", str(src), "-B", str(build_dir), *cmake_configure_args(cuda, exact)],
                    root / "build.log", lambda line: None)
    return build_dir


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
    root = cache_root() / build_key(cuda, exact)
    bin_dir = root / "build" / "bin"
    todo = [t for t in targets if not (bin_dir / t).is_file()]
    if not todo:
        return bin_dir
    report = progress or (lambda target, pct: None)
    build_dir = configure(cuda=cuda, exact=exact, log=log, progress=report)
    jobs = jobs or os.cpu_count() or 2
    label = ", ".join(todo)
    log(f"building {label} with {jobs} jobs (the first build takes minutes; log: {root / 'build.log'})")

    def on_line(line: str) -> None:
        match = _PERCENT.match(line)
        if match:
            report(label, int(match.group(1)))

    # One cmake invocation for every target: the shared libraries are built once, in parallel.
    target_args = [arg for target in todo for arg in ("--target", target)]
    _run_logged(["cmake", "--build", str(build_dir), *target_args, "-j", str(jobs)], root / "build.log", on_line)
    report(label, 100)
    record = {
        **_read_json(root / SOURCE_INFO),
        "variant": build_key(cuda, exact),
        "cmake_args": cmake_configure_args(cuda, exact),
    }
    (root / BUILD_INFO).write_text(json.dumps(record, indent=2) + "\n")
    return bin_dir
