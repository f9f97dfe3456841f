"""The ``velollm`` command line: core commands, plus whatever installed plugins register."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from velollm_core import __version__
from velollm_core.errors import UserInputError, VeloError


def print_json(data) -> None:
    """Print one JSON document to stdout, nothing else."""
    click.echo(json.dumps(data, indent=2))


def stdout_console():
    from rich.console import Console

    return Console()


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="velollm")
def cli() -> None:
    """VeloLLM: make local LLM inference faster and measurable."""


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(as_json: bool) -> None:
    """List loaded plugins, the hooks they implement, and plugins that failed to load."""
    from velollm_core import plugins

    listing = plugins.describe_plugins()
    errors = [vars(err) for err in plugins.load_errors]
    if as_json:
        print_json({"plugins": listing, "errors": errors})
        return
    from rich.table import Table

    table = Table(title="VeloLLM plugins")
    for column in ("name", "distribution", "version", "hooks"):
        table.add_column(column)
    for item in listing:
        name = item["name"] + (" (built-in)" if item["builtin"] else "")
        table.add_row(name, item["distribution"] or "", item["version"] or "", ", ".join(item["hooks"]))
    console = stdout_console()
    console.print(table)
    for err in errors:
        console.print(f"[red]failed to load[/red] {err['name']} ({err['distribution']}): {err['error']}")


@cli.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON here.")
def detect_command(as_json: bool, output: Path | None) -> None:
    """Detect OS, CPU, memory and GPUs of every vendor."""
    from velollm_core.files import atomic_write_json
    from velollm_core.hardware.report import detect_hardware, render_hardware

    report = detect_hardware()
    data = report.model_dump(mode="json")
    if output:
        atomic_write_json(output, data)
    if as_json:
        print_json(data)
    else:
        render_hardware(report, stdout_console())
        if output:
            click.echo(f"written to {output}")


def _register_plugin_commands() -> None:
    from velollm_core.plugins import hook, load_errors

    try:
        hook().register_commands(cli=cli)
    except Exception as exc:  # noqa: BLE001 - a plugin's bug must not take the CLI down
        from velollm_core.plugins import PluginLoadError

        load_errors.append(PluginLoadError("register_commands", None, f"{type(exc).__name__}: {exc}"))


def _register_core_commands() -> None:
    from velollm_core.bench.commands import benchmark_command, compare_command
    from velollm_core.speculative.commands import speculative_group
    from velollm_core.tune.commands import optimize_command

    cli.add_command(optimize_command)
    cli.add_command(benchmark_command)
    cli.add_command(compare_command)
    cli.add_command(speculative_group)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line and an exit code, never a traceback."""
    _register_core_commands()
    _register_plugin_commands()
    try:
        cli.main(args=argv, prog_name="velollm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        # click turns Ctrl-C into Abort; either way finished results are already on disk.
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except VeloError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)


__all__ = ["UserInputError", "cli", "main"]
