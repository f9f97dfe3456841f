"""``velollm optimize``: ask the plugins for configuration proposals, show, render, write or apply them."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from velollm_core.contract.errors import UserInputError, VeloError
from velollm_core.contract.formats import FormatChoice, config_formats
from velollm_core.tune import systemd
from velollm_core.tune.render import format_for_path, render, render_systemd, restart_commands

if TYPE_CHECKING:  # the models import pydantic: kept off the CLI's start-up path
    from velollm_core.contract.schemas import ConfigProposal, HardwareReport


def load_hardware(path: Path | None) -> HardwareReport:
    """The hardware report from a ``velollm detect --output`` file, or detected now."""
    from velollm_core.contract.schemas import HardwareReport

    if path is None:
        from velollm_core.hardware.report import detect_hardware

        return detect_hardware()
    try:
        return HardwareReport.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path} is not a hardware report from `velollm detect --output`: "
                             f"{str(exc).splitlines()[0]}") from None


def gather_proposals(hardware: HardwareReport, model: str | None, backend: str | None,
                     concurrency: int | None = None) -> list[ConfigProposal]:
    """Every plugin's proposals for ``backend`` (all runtimes when None), for ``concurrency`` requests at once."""
    from velollm_core.contract.plugins import hook
    from velollm_core.contract.schemas import ConfigProposal

    arguments = {"hardware": hardware, "model": model, "backend": backend, "concurrency": concurrency}
    proposals: list[ConfigProposal] = []
    # Each plugin is called alone so that one plugin's bug costs only its own proposal.
    for impl in hook().propose_config.get_hookimpls():
        try:
            answer = impl.function(**{name: arguments[name] for name in impl.argnames})
            items = [item if isinstance(item, ConfigProposal) else ConfigProposal.model_validate(item)
                     for item in answer or []]
        except VeloError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported, never a traceback
            click.echo(f"warning: plugin {impl.plugin_name} failed to propose a configuration: "
                       f"{type(exc).__name__}: {exc}", err=True)
            continue
        proposals.extend(items)
    if backend is not None:
        proposals = [p for p in proposals if p.runtime == backend]
        if not proposals:
            raise UserInputError(
                f"no installed plugin proposes a configuration for {backend!r} (see `velollm plugins`)"
            )
    return proposals


def print_table(proposals: list[ConfigProposal]) -> None:
    """Current -> proposed with the reason for each change, one table per runtime."""
    from velollm_core.contract.output import stdout_console
    from velollm_core.tune.render import print_proposals

    print_proposals(proposals, stdout_console())


def _check_can_apply() -> None:
    if sys.platform != "linux" and not os.environ.get(systemd.SYSTEMD_DIR_ENV):
        raise UserInputError(
            "--apply writes a systemd drop-in and works on Linux only; on this system use "
            "--format launchctl or --format powershell and run what it prints"
        )


def apply_proposal(proposal: ConfigProposal, dry_run: bool) -> Path | None:
    """Write the proposal into the unit's VeloLLM drop-in (merged with what it held); return its path."""
    _check_can_apply()
    unit = proposal.systemd_unit
    if not unit:
        raise UserInputError(f"--apply configures systemd services; {proposal.runtime} is not one")
    if not systemd.unit_installed(unit):
        raise UserInputError(
            f"{unit}.service is not installed in {systemd.systemd_dir()}: --apply configures the "
            f"systemd service; for a server started by hand use --format shell"
        )
    path = systemd.dropin_path(unit)
    systemd.check_dropin(path)  # before reading it: a link's target is neither read nor shown
    previous = systemd.read_dropin(path)
    text = render_systemd(proposal, kept=previous.values, kept_unset=previous.unset)
    if not proposal.changes:
        click.echo(f"{proposal.runtime}: nothing to change; {path} left as it is.", err=True)
        return None
    if dry_run:
        click.echo(f"dry run: would write {path}:", err=True)
        click.echo(text, nl=False)
        return None
    try:
        backup = systemd.write_dropin(path, text)
    except PermissionError:
        raise UserInputError(
            f"cannot write {path}: permission denied. Run it with sudo, or write the file with "
            f"--format systemd --output FILE and copy it there with sudo"
        ) from None
    except OSError as exc:
        raise VeloError(f"cannot write {path}: {exc.strerror or exc}") from None
    click.echo(f"written {path}" + (f" (previous version kept as {backup})" if backup else ""), err=True)
    click.echo(f"Restart the service to use it: {restart_commands(unit)}", err=True)
    return path


def _benchmark_commands(runtime: str, model: str, before: str, after: str) -> tuple[str, str, str]:
    base = ["velollm", "benchmark", "--backend", runtime, "--model", model, "--output"]
    return (
        shlex.join([*base, before]),
        shlex.join([*base, after]),
        shlex.join(["velollm", "compare", before, after]),
    )


def _apply_instructions(proposal: ConfigProposal) -> str:
    if proposal.systemd_unit and sys.platform == "linux":
        return (f"velollm optimize --backend {proposal.runtime} --apply "
                f"(with sudo), then {restart_commands(proposal.systemd_unit)}")
    fmt = {"darwin": "launchctl", "win32": "powershell"}.get(sys.platform, "shell")
    return f"run what `velollm optimize --backend {proposal.runtime} --format {fmt}` prints, then restart it"


def _interactive() -> bool:
    """Whether someone can answer a prompt (not a pipe, not CI)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _verify_by_plugin(proposal: ConfigProposal, model: str, hardware: HardwareReport, report_path: Path) -> bool:
    """A runtime VeloLLM starts itself (llama-server) is verified by its backend: defaults, proposal and
    each change measured interleaved (``Backend.verify_config``, where the backend declares it); False
    when its backend does not."""
    from velollm_core.contract import backends
    from velollm_core.contract.files import atomic_write_json

    backend = backends.get(proposal.runtime)
    if backend is None or not backend.capabilities.verify_config:
        return False
    report = backend.verify_config(proposal=proposal, model=model, hardware=hardware,
                                   progress=lambda line: click.echo(line, err=True))
    if report is None:
        return False
    from velollm_core.contract.output import stdout_console
    from velollm_core.tune.verify import render_verify_report

    render_verify_report(report, stdout_console())
    from velollm_core.history import record

    document = report.to_json()
    atomic_write_json(report_path, document)
    history_id = record(document, kind="verify")
    click.echo(f"measurements written to {report_path}"
               + (f" (results history #{history_id})" if history_id is not None else ""), err=True)
    return True


def verify(proposal: ConfigProposal, model: str | None, hardware: HardwareReport, applied: bool) -> None:
    """Benchmark with the current settings, have the server restarted with the proposal, benchmark again."""
    from velollm_core.bench.commands import known_backends

    if not model:
        raise UserInputError("--verify benchmarks a model: pass --model")
    if proposal.runtime not in known_backends():
        raise UserInputError(f"--verify needs a benchmark backend named {proposal.runtime!r}")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if _verify_by_plugin(proposal, model, hardware, Path(f"velollm-optimize-{stamp}-verify.json")):
        return
    before = f"velollm-optimize-{stamp}-before.json"
    after = f"velollm-optimize-{stamp}-after.json"
    first, second, compare = _benchmark_commands(proposal.runtime, model, before, after)
    apply_step = (f"restart it: {restart_commands(proposal.systemd_unit)}" if applied and proposal.systemd_unit
                  else _apply_instructions(proposal))
    interactive = _interactive()
    if applied:
        click.echo("The running server keeps its current settings until it restarts: measuring those first.",
                   err=True)
    click.echo(f"Measuring {proposal.runtime} with the current settings ({before})...", err=True)
    _run_benchmark(proposal.runtime, model, hardware, Path(before))
    if not interactive:
        click.echo(
            f"Measured the current settings (results in {before}, as `{first}` would).\n"
            "To finish the verification:\n"
            f"  1. {apply_step}\n  2. {second}\n  3. {compare}",
            err=True,
        )
        return
    click.echo(f"Now {apply_step}.", err=True)
    click.prompt("Press Enter once the server runs with the new settings", default="", show_default=False,
                 err=True)
    click.echo(f"Measuring with the proposed settings ({after})...", err=True)
    _run_benchmark(proposal.runtime, model, hardware, Path(after))
    from velollm_core.bench.render import render_comparison
    from velollm_core.contract.output import stdout_console
    from velollm_core.history.compare import compare_results, load_result

    rows = compare_results(load_result(Path(before)), load_result(Path(after)))
    render_comparison(rows, stdout_console(), "current", "proposed")


def tune_for_load(proposal: ConfigProposal, model: str | None, hardware: HardwareReport, concurrency: int,
                  workload_text: str, budget_s: float) -> None:
    """``--for-concurrency N --verify``: the backend's flags searched at N streams, each change measured."""
    from velollm_core.bench.workloads import parse_workload
    from velollm_core.contract import backends
    from velollm_core.contract.files import atomic_write_json
    from velollm_core.contract.output import stdout_console
    from velollm_core.tune.load import render_load_report, search_for_load

    if not model:
        raise UserInputError("--verify benchmarks a model: pass --model")
    workload = parse_workload(workload_text)
    backend = backends.get(proposal.runtime)
    if backend is None or not backend.capabilities.tune_for_load:
        raise UserInputError(f"--for-concurrency --verify needs a backend that tunes for a load; "
                             f"{proposal.runtime} does not (see `velollm plugins`)")
    tuning = backend.tune_for_load(proposal, model, concurrency, workload)
    report = search_for_load(tuning, runtime=proposal.runtime, hardware=hardware, concurrency=concurrency,
                             workload=workload, budget_s=budget_s, progress=lambda line: click.echo(line, err=True))
    render_load_report(report, stdout_console())
    path = Path(f"velollm-optimize-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-load.json")
    atomic_write_json(path, report.to_json())
    click.echo(f"measurements written to {path}", err=True)


def _run_benchmark(runtime: str, model: str, hardware: HardwareReport, output: Path) -> None:
    from velollm_core.bench.plan import BenchmarkPlan
    from velollm_core.bench.runner import run_benchmark_suites
    from velollm_core.bench.suites import get_suites

    plan = BenchmarkPlan(backend=runtime, model=model, suites=get_suites([]))

    def on_run(label: str, record) -> None:
        speed = f" {record.decode_tokens_per_s:.1f} tok/s" if record and record.decode_tokens_per_s else ""
        click.echo(f"  {label}{speed}", err=True)

    from velollm_core.history import record as record_in_history

    result = run_benchmark_suites(plan, hardware=hardware, output=output, on_run=on_run)
    record_in_history(result, label=f"optimize --verify: {output.stem.rsplit('-', 1)[-1]}")  # 'before' or 'after'


def _write_output(out, text: str) -> None:
    with out:
        out.write_text(text)
    click.echo(f"written to {out.path}", err=True)


@click.command("optimize")
@click.option("--backend", help="Runtime to configure (e.g. ollama); all installed when omitted.")
@click.option("--model", help="Model the settings are sized for (name or GGUF path).")
@click.option("--dry-run", is_flag=True, help="Print only: write nothing, even with --output or --apply.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rendered settings here (format from --format or the file suffix).")
@click.option("--format", "fmt", type=FormatChoice(config_formats),
              help="Print or write the settings in this form (plugins may add forms).")
@click.option("--verify", "verify_", is_flag=True,
              help="Benchmark before and after the change and report the measured ratio per suite.")
@click.option("--apply", "apply_", is_flag=True,
              help="Linux: write the proposal as the service's systemd drop-in (keeps a .bak backup).")
@click.option("--hardware", "hardware_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use a report from `velollm detect --output` instead of detecting this machine.")
@click.option("--force", is_flag=True, help="Replace --output even when it is not a file VeloLLM wrote.")
@click.option("--for-concurrency", "for_concurrency", type=click.IntRange(1, 4096),
              help="Size the settings for N requests at once; with --verify, search the server's flags at N "
                   "streams, each change measured A/B at that load.")
@click.option("--workload", "load_workload", default="pp512/tg128", show_default=True, metavar="ppN/tgM",
              help="The requests --for-concurrency --verify measures.")
@click.option("--budget", "budget_s", type=click.FloatRange(10, 86400), default=1800, show_default=True,
              help="Seconds --for-concurrency --verify may spend; steps after the first that it cannot afford "
                   "are named, not run.")
def optimize_command(
    backend: str | None,
    model: str | None,
    dry_run: bool,
    output: Path | None,
    fmt: str | None,
    verify_: bool,
    apply_: bool,
    hardware_file: Path | None,
    force: bool,
    for_concurrency: int | None = None,
    load_workload: str = "pp512/tg128",
    budget_s: float = 1800,
) -> None:
    """Propose runtime settings for this machine, each with its reason; print, write or apply them."""
    from velollm_core.contract.files import prepare_output

    # Checked before any work: never over the model, a device, or a file that is not ours.
    out = None if dry_run else prepare_output(output, force=force, protect=(model or "", hardware_file or ""))
    hardware = load_hardware(hardware_file)
    for warning in hardware.warnings:
        click.echo(f"warning: {warning}", err=True)
    if for_concurrency and verify_:
        from velollm_core.bench.workloads import parse_workload

        parse_workload(load_workload)  # a malformed --workload is refused before anything is measured
    proposals = gather_proposals(hardware, model, backend, for_concurrency)
    if (apply_ or verify_) and len(proposals) != 1:
        names = ", ".join(p.runtime for p in proposals) or "none"
        raise UserInputError(f"--apply and --verify work on one runtime (here: {names}): pass --backend")

    if output is not None and fmt is None:
        fmt = format_for_path(output)
    text = render(proposals, fmt) if fmt else None
    if text is None:
        print_table(proposals)
    elif (output is None and not apply_) or (output is not None and dry_run):
        click.echo(text, nl=False)
    if output is not None:
        if dry_run:
            click.echo(f"dry run: not writing {output}", err=True)
        else:
            _write_output(out, text or "")

    applied = None
    if apply_:
        applied = apply_proposal(proposals[0], dry_run)
    if verify_:
        if dry_run:
            proposal = proposals[0]
            first, second, compare = _benchmark_commands(proposal.runtime, model or "MODEL",
                                                         "before.json", "after.json")
            click.echo(f"dry run: --verify would run\n  {first}\n  then: {_apply_instructions(proposal)}\n"
                       f"  {second}\n  {compare}", err=True)
            return
        if for_concurrency:
            tune_for_load(proposals[0], model, hardware, for_concurrency, load_workload, budget_s)
            return
        verify(proposals[0], model, hardware, applied is not None)
