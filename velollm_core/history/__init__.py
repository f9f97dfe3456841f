"""The results history (``velollm history``): every finished benchmark, speculative bench and
verification, kept in a SQLite database beside the JSON files (see ``store``).

``record`` is what commands call once a result is finished; it never fails the command.
"""

from __future__ import annotations

import sys
from typing import Any

_warned = False


def record(result: Any, kind: str = "benchmark", *, label: str | None = None) -> int | None:
    """Store a finished result (a dict, or a pydantic model); its history id, or None when the history
    is switched off or cannot be written (then one warning per process on stderr, never an exception:
    the result file is the artifact, the history a convenience)."""
    global _warned
    try:
        from velollm_core.history.store import History, db_path

        path = db_path()
        if path is None:
            return None
        if hasattr(result, "model_dump"):
            result = result.model_dump(mode="json")
        import socket

        with History(path) as history:
            return history.add(result, kind=kind, label=label, hostname=socket.gethostname()).id
    except Exception as exc:  # noqa: BLE001 - a full disk or a locked, corrupt or foreign file alike
        if not _warned:
            _warned = True
            from velollm_core.history.store import HISTORY_DB_ENV

            print(f"warning: not recorded in the results history: {exc} (set {HISTORY_DB_ENV}=off to stop "
                  "recording, or to another file)", file=sys.stderr)
        return None


__all__ = ["record"]
