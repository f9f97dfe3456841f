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


# Core commands imported only when run: `velollm --help` and `velollm detect` stay fast.
LAZY_COMMANDS = {
    "benchmark": ("velollm_core.bench.commands", "benchmark_command",
                  "Benchmark a local runtime with standard suites and honest statistics."),
    "compare": ("velollm_core.bench.commands", "compare_command",
                "Compare two result files: ratio of medians (B/A) and whether it exceeds noise."),
    "estimate": ("velollm_core.tune.estimate_command", "estimate_command",
                 "Estimate the memory a model needs: weights, KV cache, compute buffers."),
    "optimize": ("velollm_core.tune.commands", "optimize_command",
                 "Propose (and verify) a better configuration for a runtime."),
    "speculative": ("velollm_core.speculative.commands", "speculative_group",
                    "Speculative decoding: check a pair, compare vanilla vs speculative, find pairs."),
}


class VeloGroup(click.Group):
    """A click group that imports core commands on first use."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_COMMANDS:
            import importlib

            module, attr, _ = LAZY_COMMANDS[name]
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, name)
        return command

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS and name not in self.commands:
                rows.append((name, LAZY_COMMANDS[name][2]))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=VeloGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="velollm")
def cli() -> None:
    """VeloLLM: make local LLM inference faster and measurable."""


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(as_json: bool) -> None:
    """List loaded plugins, the hooks they implement, and plugins that failed to load."""
    from velollm_core import plugins

    listing = plugins.describe_plugins()
    errors = [err.to_dict() for err in plugins.load_errors]
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line and an exit code, never a traceback."""
    from velollm_core import interrupt

    interrupt.install()
    _register_plugin_commands()
    try:
        cli.main(args=argv, prog_name="velollm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns Ctrl-C (and our SIGTERM/SIGHUP) into Abort; finished results are already on disk.
        code = interrupt.exit_code(exc)
        click.echo("Interrupted." if code == 130 else f"{interrupt.describe(exc).capitalize()}.", err=True)
        sys.exit(code)
    except VeloError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)


__all__ = ["UserInputError", "cli", "main"]
