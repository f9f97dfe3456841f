"""The ``velollm`` command line: core commands, plus whatever installed plugins register."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from velollm_core import __version__
from velollm_core.contract.errors import VeloError
from velollm_core.contract.output import print_error, print_json, safe_streams, stdout_console

# Core commands imported only when run: `velollm --help` and `velollm detect` stay fast.
LAZY_COMMANDS = {
    "benchmark": ("velollm_core.bench.commands", "benchmark_command",
                  "Benchmark a local runtime with standard suites and honest statistics."),
    "compare": ("velollm_core.bench.commands", "compare_command",
                "Compare results (files or ids): B, C... against A; or --baseline."),
    "history": ("velollm_core.history.commands", "history_group",
                "The results history: list, filter, import, export."),
    "optimize": ("velollm_core.tune.commands", "optimize_command",
                 "Propose (and verify) a better configuration for a runtime."),
    "report": ("velollm_core.report.commands", "report_command",
               "Results as one offline HTML page, or CSV, markdown, JSONL."),
    "schema": ("velollm_core.history.schemas", "schema_command",
               "Print the JSON Schema of a result kind (benchmark, speculative, verify, detect)."),
    "share": ("velollm_core.history.share", "share_command",
              "One result as a markdown bundle to paste: summary, hardware, JSON; scrubbed."),
    "speculative": ("velollm_core.speculative.commands", "speculative_group",
                    "Speculative decoding: check a pair, compare vanilla vs speculative, find pairs."),
}


def help_width(max_width: int | None) -> int:
    """click's help width rule (terminal columns - 2, at most max_width - 2, at least 50), without shutil.

    click asks ``shutil.get_terminal_size``, and importing shutil (bz2, lzma, fnmatch with it) costs a
    tenth of ``velollm --help``; this is the same rule over ``os.get_terminal_size``.
    """
    import os

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(min(columns, max_width or 80) - 2, 50)


class VeloContext(click.Context):
    def make_formatter(self):
        width = self.terminal_width
        if width is None and click.formatting.FORCED_WIDTH is None:  # CliRunner forces a width
            width = help_width(self.max_content_width)
        return self.formatter_class(width=width, max_width=self.max_content_width)


class VeloGroup(click.Group):
    """The ``velollm`` group: core commands imported on first use, plugin commands only when needed.

    ``velollm --help`` lists the plugins' commands from the plugin index, importing no plugin while
    nothing changed; running a name that is no core command loads the plugins' commands. Core names
    are reserved: a plugin adds commands, it cannot replace one.
    """

    context_class = VeloContext

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._plugin_commands: dict[str, click.Command] | None = None  # once the plugins registered theirs
        self._plugin_listing: dict[str, click.Command] | None = None  # for --help: real or from the index
        self._reserved: set[str] | None = None  # core names, while plugins register

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if self._reserved is not None and name in self._reserved:
            raise ValueError(f"'{name}' is a core command: a plugin cannot replace it")
        super().add_command(cmd, name)

    def load_plugin_commands(self) -> dict[str, click.Command]:
        """Call every plugin's ``register_commands``, each alone; failures go to ``plugins.load_errors``."""
        if self._plugin_commands is not None:
            return self._plugin_commands
        from velollm_core.contract import plugin_index, plugins

        self._plugin_commands = {}
        self._reserved = {*self.commands, *LAZY_COMMANDS}
        before = dict(self.commands)
        try:
            # Each plugin alone: one that raises (or claims a core name) is a load error, not the CLI's end.
            plugins.call_each("register_commands", cli=self, on_error=lambda plugin_name, exc: plugins.record_error(
                plugin_name, f"register_commands: {plugins.describe_error(exc)}"))
            for name, command in self.commands.items():
                if before.get(name) is not command:
                    self._plugin_commands[name] = command
        finally:
            self._reserved = None
        self._plugin_listing = self._plugin_commands
        # A plugin that failed to load is keyed by its module's file too (plugins.failed_files): the edit
        # or install that fixes it makes the listing stale, and until then --help does not import a
        # broken (or hanging) plugin at every call.
        files = [*plugins.plugin_files(), *plugins.failed_files,
                 *filter(None, map(_source_file, self._plugin_commands.values()))]
        described = {name: _help_attributes(command) for name, command in self._plugin_commands.items()}
        plugin_index.store_commands(plugin_index.selection(), described, files)
        return self._plugin_commands

    def _listing(self) -> dict[str, click.Command]:
        """The plugins' commands for ``--help``: placeholders from the index, else the real ones."""
        if self._plugin_listing is None:
            from velollm_core.contract import plugin_index

            cached = plugin_index.cached_commands(plugin_index.selection())
            try:
                self._plugin_listing = {name: click.Command(name, **attrs) for name, attrs in (cached or {}).items()}
            except (TypeError, ValueError):  # not what this version wrote: ask the plugins
                cached = None
            if cached is None:
                return self.load_plugin_commands()
        return self._plugin_listing

    def list_commands(self, ctx):
        return sorted({*self.commands, *LAZY_COMMANDS, *self._listing()})

    def get_command(self, ctx, name):
        if name not in self.commands and name in LAZY_COMMANDS:
            import importlib

            module, attr, _ = LAZY_COMMANDS[name]
            self.add_command(getattr(importlib.import_module(module), attr), name)
        if name not in self.commands:
            self.load_plugin_commands()
        return self.commands.get(name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                command = self.commands[name]
            elif name in LAZY_COMMANDS:  # described without importing it
                command = click.Command(name, short_help=LAZY_COMMANDS[name][2])
            else:
                command = self._listing()[name]
            if not command.hidden:
                rows.append((name, command))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in rows])


def _help_attributes(command: click.Command) -> dict:
    """What ``--help`` shows of a command, as keyword arguments of ``click.Command``."""
    return {"help": command.help, "short_help": command.short_help, "hidden": command.hidden,
            "deprecated": command.deprecated}


def _source_file(command: click.Command) -> str | None:
    module = sys.modules.get(getattr(command.callback, "__module__", None) or "")
    return getattr(module, "__file__", None)


@click.group(cls=VeloGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="velollm")
def cli() -> None:
    """VeloLLM: make local LLM inference faster and measurable."""


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins_command(as_json: bool) -> None:
    """List loaded plugins, the hooks they implement, and plugins that failed to load."""
    from velollm_core.contract import backends, plugins

    cli.load_plugin_commands()  # so that a plugin failing to register its commands is listed too
    listing = backends.describe_plugins()
    errors = [err.to_dict() for err in plugins.load_errors]
    if as_json:
        print_json({"plugins": listing, "errors": errors})
        return
    from velollm_core.tables import fitting

    console = stdout_console()
    console.print(fitting(console, lambda: _plugins_table(listing, narrow=False),
                          lambda: _plugins_table(listing, narrow=True)))
    for err in errors:
        console.print(f"[red]failed to load[/red] {err['name']} ({err['distribution']}): {err['error']}")


def _plugins_table(listing: list[dict], narrow: bool):
    """Name, distribution, version and hooks; ``narrow``: version and "built-in" under the distribution."""
    from rich.table import Table

    table = Table(title="VeloLLM plugins")
    table.add_column("name", no_wrap=True)
    table.add_column("distribution", no_wrap=not narrow)
    if not narrow:
        table.add_column("version", no_wrap=True)
    table.add_column("hooks", min_width=20)  # a list that wraps
    for item in listing:
        hooks = ", ".join(item["hooks"])
        distribution, version = item["distribution"] or "", item["version"] or ""
        if narrow:
            built_in = "\n(built-in)" if item["builtin"] else ""
            table.add_row(item["name"], f"{distribution} {version}".strip() + built_in, hooks)
        else:
            table.add_row(item["name"] + (" (built-in)" if item["builtin"] else ""), distribution, version, hooks)
    return table


@cli.command("detect")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON here.")
@click.option("--force", is_flag=True, help="Replace --output even when it is not a VeloLLM file.")
def detect_command(as_json: bool, output: Path | None, force: bool) -> None:
    """Detect OS, CPU, memory and GPUs of every vendor."""
    from velollm_core.hardware import report as hardware

    out = None
    if output:
        from velollm_core.contract.files import prepare_output

        out = prepare_output(output, force=force)  # the --output policy of every command, before any probe
    # --json is what scripts call in loops: its data is built without pydantic where possible.
    report = None if as_json else hardware.detect_hardware()
    data = hardware.detect_hardware_data() if report is None else report.model_dump(mode="json")
    if out is not None:
        with out:
            out.write_json(data)
    if report is None:
        print_json(data)
    else:
        hardware.render_hardware(report, stdout_console())
        if output:
            click.echo(f"written to {output}")


def _usable_standard_streams() -> None:
    """Standard streams every command can write to, whatever the process was started with.

    A closed descriptor (``2>&-``) leaves ``sys.stderr`` None, and the next file opened would take its
    number: it is opened on the null device instead, so messages vanish rather than fail the run or
    land in a result file. A stdout whose encoding cannot hold every character (``PYTHONIOENCODING=
    latin-1``) prints ``?`` for those it cannot, rather than ending the command.
    """
    import codecs
    import os

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: ``fd`` itself
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            # The process's own stream for the rest of its life: nothing to close.
            stream = open(fd, "r" if fd == 0 else "w", encoding="utf-8", errors="backslashreplace",  # noqa: SIM115
                          closefd=False)
            setattr(sys, name, stream)
    stdout = sys.stdout
    encoding = codecs.lookup(getattr(stdout, "encoding", None) or "utf-8").name
    if not encoding.startswith("utf") and getattr(stdout, "errors", None) == "strict":
        try:
            stdout.reconfigure(errors="replace")
        except (AttributeError, ValueError):
            pass  # a stream that cannot be reconfigured (a test's capture) is left as it is


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line and an exit code, never a traceback; nothing written to
    stdout or stderr reaches the terminal as a control sequence (``output.safe_streams``)."""
    _usable_standard_streams()
    with safe_streams():
        _main(argv)


def _main(argv: list[str] | None) -> None:
    from velollm_core.contract import interrupt

    interrupt.install()
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
        click.echo("Interrupted." if code == 130 else f"Terminated by {interrupt.signal_name(code)}.", err=True)
        sys.exit(code)
    except VeloError as exc:
        print_error(exc)  # its text may quote a server or a file: made safe for the terminal
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(1)


__all__ = ["cli", "main"]
