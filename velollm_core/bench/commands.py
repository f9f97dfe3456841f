"""Placeholder while the engine is being written (this session)."""
import click


@click.command("benchmark")
def benchmark_command() -> None:
    """Benchmark a runtime (being written)."""
    raise click.ClickException("not written yet")


@click.command("compare")
def compare_command() -> None:
    """Compare two results (being written)."""
    raise click.ClickException("not written yet")
