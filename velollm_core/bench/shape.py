"""What a workload of reasoning models and agents adds to every request: the thinking switch, a JSON
Schema the answer must follow, tools the model may call, generated images, and conversations of
several turns. Each comes from a ``velollm benchmark`` flag and is checked here, before anything
starts: a file of the wrong shape is one sentence and exit 2.

The request carries these in runtime-neutral terms (``GenerationRequest.think``, ``json_schema``,
``tools``, ``images``, ``history``); each backend plugin writes them in its own wire format.
"""

from __future__ import annotations

import base64
import functools
import random
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from velollm_core.contract.errors import UserInputError

# A schema or tools file is a few kilobytes; a larger one is a mistake (a dataset given by accident).
MAX_SPEC_BYTES = 1 << 20
MAX_IMAGES = 64
MAX_IMAGE_SIDE = 4096
DEFAULT_IMAGE_SIDE = 256
MAX_TURNS = 1000
MAX_THINK_TIME_S = 3600.0
# The follow-up user messages of a multi-turn conversation, taken in turn: short, so each turn's
# prompt grows mostly by the model's own answers (as an agent's does).
FOLLOW_UPS = (
    "Go on, in more detail.",
    "Now give a concrete example.",
    "What could go wrong with that?",
    "Summarize what we have so far in two sentences.",
    "Which part of this matters most in practice, and why?",
)


@dataclass
class RequestShape:
    """The ``--think``, ``--json-schema``, ``--tools``, ``--images`` and ``--turns`` of one benchmark."""

    think: bool | None = None
    json_schema: dict[str, Any] | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # base64 PNGs
    image_size: tuple[int, int] | None = None
    turns: int = 1
    think_time_s: float = 0.0

    @property
    def ends_itself(self) -> bool:
        """Whether an answer is complete where the model stops (a JSON document, a tool call): a fixed
        output length would pad it past its end with text that no schema or tool accepts."""
        return self.json_schema is not None or bool(self.tools)

    def settings(self) -> dict[str, Any]:
        """What the result's ``settings`` records of it (no image bytes, the schema and tools whole)."""
        recorded: dict[str, Any] = {}
        if self.think is not None:
            recorded["think"] = self.think
        if self.json_schema is not None:
            recorded["json_schema"] = self.json_schema
        if self.tools:
            recorded["tools"] = [tool["function"]["name"] for tool in self.tools]
        if self.images and self.image_size:
            recorded["images"] = {"count": len(self.images), "width": self.image_size[0],
                                  "height": self.image_size[1]}
        if self.turns > 1:
            recorded["turns"] = self.turns
            recorded["think_time_s"] = self.think_time_s
        return recorded

    def request_fields(self) -> dict[str, Any]:
        """The GenerationRequest fields every request of the plan gets."""
        return {"think": self.think, "json_schema": self.json_schema, "tools": list(self.tools),
                "images": list(self.images)}


def workload_settings(plan: Any) -> dict[str, Any]:
    """What the result's ``settings`` records of the plan's shape and trace (nothing when unused)."""
    recorded = plan.shape.settings()
    if plan.trace is not None:
        recorded["trace"] = {"name": plan.trace.name, "requests": len(plan.trace.records),
                             "time_scale": plan.profile.time_scale}
    return recorded


def _read_json(path: Path, flag: str) -> Any:
    from velollm_core.contract import jsontext

    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise UserInputError(f"{flag} {path} is over 1 MiB: not a schema or tools file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{flag} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{flag} {path} cannot be read as UTF-8 text ({exc})") from None
    try:
        return jsontext.loads(text)
    except ValueError as exc:
        raise UserInputError(f"{flag} {path} is not JSON ({exc})") from None


def check_schema(schema: Any, where: str) -> dict[str, Any]:
    """``schema`` when it is a JSON Schema (an object the jsonschema library's meta-schema accepts)."""
    from jsonschema import exceptions, validators

    if not isinstance(schema, dict):
        raise UserInputError(f"{where} is not a JSON Schema: a schema is a JSON object, not {type(schema).__name__}")
    try:
        validators.validator_for(schema, default=validators.Draft202012Validator).check_schema(schema)
    except exceptions.SchemaError as exc:
        at = "/".join(str(part) for part in exc.path) or "the top level"
        raise UserInputError(f"{where} is not a valid JSON Schema: at {at}, {exc.message}") from None
    return schema


def load_json_schema(path: Path) -> dict[str, Any]:
    """``--json-schema FILE``: a JSON Schema, or OpenAI's wrapper ``{"name", "schema"}`` around one."""
    data = _read_json(path, "--json-schema")
    if isinstance(data, dict) and isinstance(data.get("schema"), dict) and "name" in data:
        data = data["schema"]
    return check_schema(data, f"--json-schema {path}")


def load_tools(path: Path) -> list[dict[str, Any]]:
    """``--tools FILE.json``: a list of OpenAI tool definitions ``{"type": "function", "function":
    {"name", "description", "parameters"}}`` (a bare ``{"name", "parameters"}`` is wrapped)."""
    data = _read_json(path, "--tools")
    if isinstance(data, dict) and isinstance(data.get("tools"), list):
        data = data["tools"]
    if not isinstance(data, list) or not data:
        raise UserInputError(f"--tools {path} must hold a non-empty JSON list of OpenAI tool definitions "
                             '([{"type": "function", "function": {"name": ..., "parameters": {...}}}])')
    tools = []
    names: set[str] = set()
    for number, tool in enumerate(data, 1):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else tool
        where = f"--tools {path} tool {number}"
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function["name"]):
            raise UserInputError(f"{where} is not an OpenAI tool definition: it needs a function name of "
                                 "letters, digits, _ or - (at most 64)")
        if function["name"] in names:
            raise UserInputError(f"{where} repeats the name {function['name']!r}")
        names.add(function["name"])
        parameters = function.get("parameters", {"type": "object", "properties": {}})
        check_schema(parameters, f"{where} ({function['name']}) parameters")
        entry = {"name": function["name"], "parameters": parameters}
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        tools.append({"type": "function", "function": entry})
    return tools


def parse_images(text: str) -> tuple[int, int, int]:
    """``--images N[:WxH]`` -> (count, width, height); 256x256 when no size is given."""
    match = re.fullmatch(r"\s*(\d+)\s*(?::\s*(\d+)\s*[xX]\s*(\d+)\s*)?", text)
    if not match:
        raise UserInputError(f"--images {text!r} is not of the form N or N:WxH (e.g. 1, 2:512x512)")
    count = int(match[1])
    width, height = (int(match[2]), int(match[3])) if match[2] else (DEFAULT_IMAGE_SIDE, DEFAULT_IMAGE_SIDE)
    if not 1 <= count <= MAX_IMAGES:
        raise UserInputError(f"--images {text!r}: give 1 to {MAX_IMAGES} images per request")
    if not (1 <= width <= MAX_IMAGE_SIDE and 1 <= height <= MAX_IMAGE_SIDE):
        raise UserInputError(f"--images {text!r}: each side must be 1 to {MAX_IMAGE_SIDE} pixels")
    return count, width, height


def make_png(width: int, height: int, seed: int) -> bytes:
    """A PNG of ``width`` x ``height``: seeded colour bands and noise, so no two images compress alike
    and a vision encoder sees real pixels (generated here: nothing is downloaded)."""
    rng = random.Random(seed)
    base = [rng.randrange(256) for _ in range(3)]
    rows = []
    for y in range(height):
        band = (y * 7 // max(height, 1)) * 31
        row = bytearray([0])  # filter type: none
        for x in range(width):
            noise = rng.randrange(32)
            row += bytes(((base[0] + band + noise) % 256, (base[1] + x * 255 // max(width, 1)) % 256,
                          (base[2] + noise * 3) % 256))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
            + chunk(b"IEND", b""))


def generated_images(count: int, width: int, height: int, seed: int) -> list[str]:
    return [base64.b64encode(make_png(width, height, seed + index)).decode("ascii") for index in range(count)]


def shape_from_flags(think: str | None, json_schema: Path | None, tools: Path | None, images: str | None,
                     turns: int, think_time: float | None, seed: int) -> RequestShape:
    """The RequestShape of ``velollm benchmark``'s flags; bad input is a UserInputError."""
    shape = RequestShape(think=None if think is None else think == "on", turns=turns)
    if json_schema is not None:
        shape.json_schema = load_json_schema(json_schema)
    if tools is not None:
        shape.tools = load_tools(tools)
    if shape.json_schema is not None and shape.tools:
        raise UserInputError("--json-schema and --tools ask for two kinds of answer; give one of them")
    if images is not None:
        count, width, height = parse_images(images)
        shape.images = generated_images(count, width, height, seed)
        shape.image_size = (width, height)
    if think_time is not None:
        if turns < 2:
            raise UserInputError("--think-time is the pause between the turns of a conversation: give --turns 2 or more")
        shape.think_time_s = think_time
    return shape


def check_jobs(shape: RequestShape, replay: Any, *, workloads: bool, profile: str | None) -> None:
    """Refuse flags that cannot go together: chat-shaped requests with raw synthetic prompts, a trace
    with another load profile, conversations at open-loop rates."""
    chat = [flag for flag, given in (("--turns", shape.turns > 1), ("--tools", bool(shape.tools)),
                                     ("--images", bool(shape.images))) if given]
    if chat and (workloads or replay is not None):
        raise UserInputError(f"{chat[0]} sends chat messages, while --workload and --trace send raw prompts of "
                             "exact token counts; use it with --suite or --dataset")
    if replay is not None and profile is not None:
        raise UserInputError("--trace replays its own arrivals: give it without --profile")
    # Imported here: profiles imports the plan, which imports this module.
    from velollm_core.bench.profiles import OpenLoop, profile_named

    if shape.turns > 1 and profile is not None and isinstance(profile_named(profile), OpenLoop):
        raise UserInputError("--turns runs conversations, each turn after the previous answer: use --profile "
                             "sequential or concurrent (--concurrency counts conversations)")


def workload_flags(command):
    """The flags of this module on ``command``; it receives them together as ``shape`` (a RequestShape)."""
    options = [
        click.option("--think", type=click.Choice(["on", "off"]),
                     help="Reasoning on or off where the runtime has the switch (default: the model's own)."),
        click.option("--json-schema", "json_schema", type=click.Path(dir_okay=False, path_type=Path),
                     help="Structured output: every answer must follow this JSON Schema; validity is reported."),
        click.option("--tools", type=click.Path(dir_okay=False, path_type=Path),
                     help="OpenAI tool definitions (JSON list): time to complete the call's arguments, validity."),
        click.option("--images", metavar="N[:WxH]", help="Send N generated images (default 256x256) with each prompt."),
        click.option("--turns", type=click.IntRange(1, MAX_TURNS), default=1, show_default=True,
                     help="Turns per conversation: each turn's prompt is the history plus a new user message."),
        click.option("--think-time", "think_time", type=click.FloatRange(0, MAX_THINK_TIME_S), metavar="S",
                     help="Seconds between the turns of a conversation (an agent's tool time)."),
        click.option("--trace", type=click.Path(dir_okay=False, path_type=Path),
                     help="Replay a JSONL trace (timestamp ms, input_length, output_length), open loop."),
        click.option("--time-scale", "time_scale", type=float, default=1.0, show_default=True,
                     help="Multiply the trace's gaps between arrivals (0.5: twice as fast)."),
    ]

    @functools.wraps(command)
    def wrapper(*args, think=None, json_schema=None, tools=None, images=None, turns=1, think_time=None,
                trace=None, time_scale=1.0, **kwargs):
        from velollm_core.bench.trace import TraceReplay, check_time_scale, load_trace

        kwargs["shape"] = shape_from_flags(think, json_schema, tools, images, turns, think_time, kwargs.get("seed", 42))
        check_time_scale(time_scale)
        kwargs["replay"] = TraceReplay(load_trace(trace), time_scale) if trace is not None else None
        check_jobs(kwargs["shape"], kwargs["replay"], workloads=bool(kwargs.get("workloads")),
                   profile=kwargs.get("profile"))
        return command(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
