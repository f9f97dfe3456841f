"""``python -m velollm_core`` runs the CLI."""

from velollm_core.cli import main

main()
