"""``velollm llamacpp install`` and ``velollm llamacpp where``."""

from __future__ import annotations

import click


@click.group("llamacpp")
def llamacpp_group() -> None:
    """Find or build llama.cpp's programs (llama-server, llama-bench, ...)."""


@llamacpp_group.command("install")
@click.option("--cuda", is_flag=True, help="CUDA build (needs nvcc).")
@click.option(
    "--target", "targets", multiple=True,
    help="Program to build (repeatable); default llama-server, llama-bench, llama-quantize and "
         "llama-batched-bench.",
)
@click.option("--force-build", is_flag=True, help="Build into the cache even when a program is on PATH.")
@click.option("--exact", is_flag=True,
              help="Also build the batch-invariant llama-server that `velollm speculative bench` uses.")
@click.option("--configure-only", is_flag=True,
              help="Download, unpack and configure the llama.cpp tree, compile nothing (checks the cold path).")
def install_command(cuda: bool, targets: tuple[str, ...], force_build: bool, exact: bool,
                    configure_only: bool) -> None:
    """Use llama.cpp programs found on PATH / $VELOLLM_LLAMACPP_DIR, or build the missing ones."""
    from velollm_core.api import stderr_console
    from velollm_llamacpp import install

    console = stderr_console()
    if configure_only:
        build_dir = install.configure(cuda=cuda, exact=exact, log=console.print)
        console.print(f"configured llama.cpp {install.sdist.LLAMA_CPP_COMMIT[:7]} "
                      f"(llama-cpp-python {install.LLAMA_CPP_PYTHON_VERSION}) in {build_dir}")
        return
    wanted = list(targets) or list(install.DEFAULT_TARGETS)
    found = install.find_programs()
    builds = []  # (exact, targets) still to build
    if force_build or cuda or not all(name in found for name in wanted):
        builds.append((False, wanted))
    else:
        for name in wanted:
            console.print(f"{name}: {found[name]} (already present)")
    if exact:
        exact_found = install.find_programs(exact=True)
        missing = [name for name in install.EXACT_TARGETS if name not in exact_found]
        for name in install.EXACT_TARGETS:
            if name in exact_found:
                console.print(f"exact {name}: {exact_found[name]} (already present)")
        if missing:
            builds.append((True, missing))
    if not builds:
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, int] = {}

        def on_progress(target: str, pct: int) -> None:
            if target not in tasks:
                what = "downloading the sdist" if target == "download" else f"building {target}"
                tasks[target] = progress.add_task(what, total=100)
            progress.update(tasks[target], completed=pct)

        for exact_build, build_targets in builds:
            bin_dir = install.build(cuda=cuda and not exact_build, targets=build_targets, exact=exact_build,
                                    log=progress.console.print, progress=on_progress)
            console.print(f"llama.cpp programs{' (exact build)' if exact_build else ''} are in {bin_dir}")


@llamacpp_group.command("where")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def where_command(as_json: bool) -> None:
    """Print where each llama.cpp program was found, and its version."""
    from velollm_core.api import print_json
    from velollm_llamacpp import install
    from velollm_llamacpp.server import server_version

    found = install.find_programs()
    server = found.get("llama-server")
    data = {
        "programs": {name: str(found[name]) if name in found else None for name in install.PROGRAMS},
        "llama_server_version": server_version(server) if server else None,
        "cache": str(install.cache_root()),
        "pinned_llama_cpp_python": install.LLAMA_CPP_PYTHON_VERSION,
    }
    if as_json:
        print_json(data)
        return
    for name, path in data["programs"].items():
        click.echo(f"{name:26} {path or 'not found'}")
    click.echo(f"{'version':26} {data['llama_server_version'] or '-'}")
    click.echo(f"{'build cache':26} {data['cache']}")
    if not found:
        raise SystemExit(1)
