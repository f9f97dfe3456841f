"""Example VeloLLM plugin: adds `velollm hello` and resolves the model alias `hello-model`."""

import os
from pathlib import Path

import click

from velollm_core.api import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.option("--name", default="world")
    def hello(name):
        """Say hello, and how many GPUs VeloLLM sees."""
        from velollm_core.api import detect_hardware

        click.echo(f"hello {name}: {len(detect_hardware().gpus)} GPU(s) here")


@hookimpl
def resolve_model(name):
    if name == "hello-model" and os.environ.get("HELLO_MODEL_PATH"):
        return Path(os.environ["HELLO_MODEL_PATH"])
    return None
