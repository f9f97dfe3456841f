"""systemd units: read ``Environment=`` settings, escape values, and write VeloLLM's drop-in with a backup.

One parser serves both readers of systemd files: a plugin reading a service's current configuration
and ``velollm optimize --apply`` merging a new proposal into its previous drop-in.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from velollm_core.contract.errors import UserInputError
from velollm_core.contract.files import atomic_write_text, looks_like_ours

DEFAULT_SYSTEMD_DIR = Path("/etc/systemd/system")
SYSTEMD_DIR_ENV = "VELOLLM_SYSTEMD_DIR"
DROPIN_NAME = "velollm.conf"

_C_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "s": " ",
              "\\": "\\", '"': '"', "'": "'"}


def systemd_dir() -> Path:
    """The system unit directory: ``/etc/systemd/system``, or ``$VELOLLM_SYSTEMD_DIR`` (tests, chroots)."""
    override = os.environ.get(SYSTEMD_DIR_ENV)
    return Path(override) if override else DEFAULT_SYSTEMD_DIR


def dropin_dir(unit: str, root: Path | None = None) -> Path:
    return (root or systemd_dir()) / f"{unit}.service.d"


def dropin_path(unit: str, root: Path | None = None) -> Path:
    """Where VeloLLM's drop-in for ``unit`` lives."""
    return dropin_dir(unit, root) / DROPIN_NAME


def _unescape(text: str, i: int) -> tuple[str, int]:
    """Decode the C escape starting after the backslash at ``text[i]``; return (char, next index)."""
    if i >= len(text):
        return "\\", i
    ch = text[i]
    if ch in _C_ESCAPES:
        return _C_ESCAPES[ch], i + 1
    widths = {"x": 2, "u": 4, "U": 8}
    if ch in widths:
        digits = text[i + 1 : i + 1 + widths[ch]]
        try:
            return chr(int(digits, 16)), i + 1 + widths[ch]
        except ValueError:
            return ch, i + 1
    if ch in "01234567":
        digits = text[i : i + 3]
        try:
            return chr(int(digits, 8)), i + 3
        except ValueError:
            return ch, i + 1
    return ch, i + 1


def split_words(value: str) -> list[str]:
    """Split an ``Environment=`` value into words as systemd does: quotes group, C escapes decode."""
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote: str | None = None
    i = 0
    while i < len(value):
        ch = value[i]
        if quote is None and ch.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
            i += 1
            continue
        in_word = True
        if ch == "\\":
            decoded, i = _unescape(value, i + 1)
            current.append(decoded)
            continue
        if quote is None and ch in "\"'":
            quote = ch
        elif ch == quote:
            quote = None
        else:
            current.append(ch)
        i += 1
    if in_word:
        words.append("".join(current))
    # Environment= expands specifiers; "%%" is the only one a value may need, the others stay as typed.
    return [word.replace("%%", "%") for word in words]


def escape_value(value: str) -> str:
    """Escape ``value`` for a double-quoted ``Environment="KEY=value"`` word."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "%":
            out.append("%%")  # systemd would expand %h, %u, ... otherwise
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            # A lone surrogate (read from a "\\ud800" escape) has no UTF-8 form: kept as the escape it was.
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


@dataclass
class UnitEnvironment:
    """The environment a unit's files give its service, and which file set each variable."""

    values: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    unset: set[str] = field(default_factory=set)
    files: list[Path] = field(default_factory=list)
    environment_files: list[str] = field(default_factory=list)

    def effective(self) -> dict[str, str]:
        """Variables the service really gets: ``UnsetEnvironment=`` applies after every assignment."""
        return {key: value for key, value in self.values.items() if key not in self.unset}


def _logical_lines(text: str):
    """Lines with backslash continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse_unit_text(text: str, env: UnitEnvironment, source: Path) -> None:
    """Apply the ``[Service]`` environment settings of one unit file or drop-in to ``env``."""
    section = None
    for line in _logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != "Service" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        value = value.strip()
        if key == "Environment":
            if not value:  # an empty assignment resets the list built so far
                env.values.clear()
                env.sources.clear()
                continue
            for word in split_words(value):
                name, sep, assigned = word.partition("=")
                if sep and name:
                    env.values[name] = assigned
                    env.sources[name] = source
        elif key == "UnsetEnvironment":
            if not value:
                env.unset.clear()
                continue
            env.unset.update(word.partition("=")[0] for word in split_words(value))
        elif key == "EnvironmentFile" and value:
            env.environment_files.append(value)


def read_unit_environment(unit: str, root: Path | None = None) -> UnitEnvironment:
    """The environment of ``<root>/<unit>.service`` and its ``.service.d/*.conf`` drop-ins, in systemd's order."""
    base = root or systemd_dir()
    env = UnitEnvironment()
    candidates = [base / f"{unit}.service"]
    directory = dropin_dir(unit, base)
    if directory.is_dir():
        # systemd applies drop-ins in lexical order of their file names; later ones win.
        candidates += sorted(directory.glob("*.conf"), key=lambda p: p.name)
    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        env.files.append(path)
        parse_unit_text(text, env, path)
    return env


def unit_installed(unit: str, root: Path | None = None) -> bool:
    """Whether ``unit`` has a unit file or a drop-in directory under ``root``."""
    base = root or systemd_dir()
    return (base / f"{unit}.service").exists() or dropin_dir(unit, base).is_dir()


def read_dropin(path: Path) -> UnitEnvironment:
    """The settings of one drop-in file alone (empty when it does not exist)."""
    env = UnitEnvironment()
    if path.is_file():
        env.files.append(path)
        parse_unit_text(path.read_text(encoding="utf-8", errors="replace"), env, path)
    return env


# What a refused drop-in's message suggests instead.
_FIX = "remove it, or write the settings with --format systemd --output FILE and install them yourself"


def check_dropin(path: Path) -> None:
    """Refuse (UserInputError) a drop-in path that --apply did not make: a symbolic link (writing would
    replace whatever it points to) or a file whose content VeloLLM did not write."""
    _refuse_link(path)
    if path.exists() and (not path.is_file() or not looks_like_ours(path)):
        raise UserInputError(f"{path} exists and is not a VeloLLM file; --apply replaces only its own: {_FIX}")


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise UserInputError(f"{path} is a symbolic link (to {os.readlink(path)}); --apply writes only a file "
                             f"it made: {_FIX}")


def write_dropin(path: Path, text: str) -> Path | None:
    """Write the drop-in atomically, first copying an existing one to ``<name>.bak``; return the backup.

    Neither is written through a link: a drop-in that is one is refused (``check_dropin``, which
    ``optimize --apply`` calls first, also refuses a file VeloLLM did not write), and the backup is a new
    file renamed over whatever ``<name>.bak`` was, a link included.
    """
    _refuse_link(path)
    backup = None
    if path.exists():
        # ".bak" does not end in ".conf", so systemd never reads the backup as a drop-in.
        backup = path.with_name(path.name + ".bak")
        fd, tmp = tempfile.mkstemp(prefix=f".{backup.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(path.read_bytes())
            shutil.copystat(path, tmp)
            os.replace(tmp, backup)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    atomic_write_text(path, text)
    return backup
