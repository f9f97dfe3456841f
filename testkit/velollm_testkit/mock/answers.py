"""What the mock "model" answers beyond its fixed words: thinking before the answer (``--reasoning-tokens``),
JSON that follows a requested schema, a tool call whose arguments follow the tool's parameters, and
the prompt tokens of attached images. Each wire format reads the request's own fields (``think``,
``format``, ``images`` for Ollama; ``response_format``, ``tools``, ``image_url``,
``chat_template_kwargs`` for OpenAI chat; ``json_schema`` for llama-server) into ``Features`` and
writes the ``script`` in its own events; ``plan_request`` plans a llama-server or OpenAI-style request whole.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from velollm_testkit.mock.config import MockConfig
from velollm_testkit.mock.wire import BadRequest, Plan, check_context, output_cap, output_length

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMAGE_TOKEN = 3  # the id every image's prompt tokens carry (a special id of the mock's vocabulary)
_THOUGHT = (" Let", " me", " think", " about", " this", " step", " by", " step", ".")
# A JSON text is streamed in pieces of this many characters, one "token" each.
PIECE_CHARS = 4


@dataclass
class Features:
    """What a request asks of the answer, in the mock's terms."""

    reasoning: bool = False  # the format separates thinking from the answer, and it is not switched off
    schema: dict[str, Any] | None = None
    tool: dict[str, Any] | None = None  # the first tool's function definition
    images: int = 0


def schema_instance(schema: Any) -> Any:
    """A small value that follows ``schema`` (objects with every property, one item per array)."""
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return schema_instance(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {name: schema_instance(sub) for name, sub in properties.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        return [schema_instance(schema.get("items", {})) for _ in range(count)]
    if kind == "string":
        return "m" * max(int(schema.get("minLength", 4) or 0), 1)
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    return None


def pieces(text: str) -> list[str]:
    return [text[i:i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)] or [""]


def png_count(images: Any, where: str) -> int:
    """How many images ``images`` holds (base64 PNGs); anything else is refused as the server would."""
    if images is None:
        return 0
    if not isinstance(images, list):
        raise BadRequest(f"'{where}' must be a list of base64-encoded images")
    for image in images:
        try:
            data = base64.b64decode(image, validate=True) if isinstance(image, str) else b""
        except (binascii.Error, ValueError):
            data = b""
        if not data.startswith(PNG_MAGIC):
            raise BadRequest(f"'{where}' holds something that is not a base64-encoded PNG image")
    return len(images)


def chat_images(messages: Any) -> int:
    """Images in OpenAI chat content parts (``image_url`` data URIs)."""
    found: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = (part.get("image_url") or {}).get("url", "") if isinstance(part.get("image_url"), dict) else ""
                prefix, _, data = url.partition(",")
                if not prefix.startswith("data:image/"):
                    raise BadRequest("the mock takes images as data: URIs only (it fetches nothing)")
                found.append(data)
    return png_count(found, "image_url")


def first_tool(tools: Any) -> dict[str, Any] | None:
    if tools is None:
        return None
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        raise BadRequest("'tools' must be a non-empty list of tool definitions")
    function = tools[0].get("function", tools[0])
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest("each tool needs a function with a name")
    return function


def apply(plan: Plan, features: Features, config: MockConfig, ignore_eos: bool, cap: int) -> Plan:
    """``plan`` with its script and prompt as ``features`` ask; unchanged for a plain request. Images
    add their prompt tokens before the answer's length is planned (call it before ``output_length``'s
    result is final: the planner re-plans the length from the grown prompt). ``cap``: the most tokens
    the request may generate (a JSON answer ends at its end unless the request forces a length)."""
    if features.images:
        plan.prompt = plan.prompt + [IMAGE_TOKEN] * (features.images * config.image_tokens)
    thinking = config.reasoning_tokens if features.reasoning else 0
    if not (thinking or features.schema is not None or features.tool is not None):
        return plan
    script: list[tuple[str, str]] = [("reasoning", _THOUGHT[i % len(_THOUGHT)]) for i in range(thinking)]
    structured: list[tuple[str, str]] = []
    if features.tool is not None:
        arguments = json.dumps(schema_instance(features.tool.get("parameters") or {"type": "object"}))
        structured = [("tool", piece) for piece in pieces(arguments)]
        plan.tool_name = features.tool["name"]
    elif features.schema is not None:
        structured = [("answer", piece) for piece in pieces(json.dumps(schema_instance(features.schema)))]
    script += structured
    if structured and not ignore_eos:  # the model ends its JSON there, unless the limit comes first
        plan.n_out, plan.stop = (len(script), "eos") if len(script) < cap else (cap, "limit")
    while len(script) < plan.n_out:  # a plain answer, or a fixed length past the JSON
        script.append(("answer", " mock"))
    plan.script = script[:plan.n_out]
    return plan


@dataclass
class Scripted:
    """The text a scripted generation has emitted so far, by kind (for non-streamed answers)."""

    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool: list[str] = field(default_factory=list)


def plan_request(config: MockConfig, prompt: list[int], body: dict[str, Any], limit: int | None, features: Features,
                 min_tokens: int = 0) -> Plan:
    """The plan of a llama-server ``/completion`` or OpenAI-style request, whose bodies share ``ignore_eos``,
    ``cache_prompt`` (on unless false) and ``stream`` (off unless asked): ``prompt`` checked against the
    context, the output length under ``limit`` (at least ``min_tokens``), the answer ``features`` ask."""
    check_context(config, len(prompt))
    ignore_eos = bool(body.get("ignore_eos"))
    n_out, stop = output_length(config, len(prompt), limit, ignore_eos, min_tokens)
    plan = Plan(prompt, n_out, stop, body.get("cache_prompt", True) is not False, bool(body.get("stream", False)))
    return apply(plan, features, config, ignore_eos, output_cap(config, len(prompt), limit))


def emitted(plan: Plan, count: int) -> Scripted:
    done = Scripted()
    for kind, piece in (plan.script or [])[:count]:
        getattr(done, kind).append(piece)
    return done
