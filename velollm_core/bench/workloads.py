"""Synthetic workloads with exact token counts, as llama-bench names them: ``pp512/tg128@d4096``.

A workload asks for a prompt of ``pp`` tokens, ``tg`` generated tokens and, optionally, ``d`` tokens
of context already in the KV cache. Prompts are built from the model's own tokenizer where the
backend exposes one (llama-server and vLLM ``/tokenize``): random common words, added or removed
until the server counts exactly ``pp`` tokens (its BOS included, as the server's own prompt count
is). Where no tokenizer is reachable (Ollama), two probe generations measure tokens per word from the
server's reported prompt counts, and the workload says it was calibrated. Every request gets its
own random words from its first token on, so no request can be answered from another's prefix cache.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from velollm_core.contract.errors import UserInputError

_SPEC = re.compile(r"^(?:pp(?P<pp>\d+))?(?:/?tg(?P<tg>\d+))?(?:@d(?P<d>\d+))?$")
# A prompt needs some tokens even for a pure generation test (llama-bench's tg128 starts from BOS).
MIN_PROMPT_TOKENS = 8
MAX_TOKENS = 1_000_000
# Counts are exact where a tokenizer is used; a calibrated prompt may miss by this share (flagged).
MISMATCH_SHARE = 0.01

# Short, common words: nearly all are one token in every BPE/SentencePiece vocabulary, so a count
# converges in one or two corrections.
_WORD_TEXT = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community
name president team minute idea kid body information back parent face others level office door
health person art war history party result change morning reason research girl guy moment air
teacher force education foot boy age policy music market sense nation plan college interest death
experience effect use class control care field development role effort rate heart drug show leader
light voice wife police mind price report decision son view relationship town road arm difference
value building action model season society tax director position player record paper space ground
form event official matter center couple site project activity star table need court oil situation
cost industry figure street image phone data picture practice piece land product doctor wall patient
worker news test movie north love support technology step baby computer type attention film tree
source organization hair window evidence population truth song bank answer blue green red small large
old new good high long great little own other right big different early young important few public
bad same able last late hard major better economic strong possible whole free military true federal
"""
WORDS = tuple(_WORD_TEXT.split())


@dataclass(frozen=True)
class Workload:
    """``pp`` prompt tokens, ``tg`` generated tokens, at ``depth`` tokens already in context."""

    prompt_tokens: int
    output_tokens: int
    depth: int = 0

    @property
    def name(self) -> str:
        text = f"pp{self.prompt_tokens}/tg{self.output_tokens}"
        return f"{text}@d{self.depth}" if self.depth else text

    @property
    def context_tokens(self) -> int:
        """Tokens a slot must hold: depth, prompt and answer."""
        return self.depth + self.prompt_tokens + self.output_tokens


def parse_workload(text: str) -> Workload:
    """'pp512/tg128', 'pp512', 'tg128', 'pp512/tg128@d4096' -> Workload; anything else is refused."""
    match = _SPEC.match(text.strip().lower())
    if not match or not (match["pp"] or match["tg"]):
        raise UserInputError(f"--workload {text!r} is not of the form ppN/tgM[@dD] (e.g. pp512/tg128, "
                             "tg128, pp512/tg128@d4096)")
    pp = int(match["pp"]) if match["pp"] else MIN_PROMPT_TOKENS
    tg = int(match["tg"]) if match["tg"] else 1
    depth = int(match["d"] or 0)
    if pp < 2 or tg < 1 or max(pp, tg, depth) > MAX_TOKENS:
        raise UserInputError(f"--workload {text!r}: the prompt needs at least 2 tokens (BOS and one more), "
                             f"the answer at least 1, and no count may exceed {MAX_TOKENS:,}")
    return Workload(pp, tg, depth)


Tokenize = Callable[[str], "list[int] | None"]


class PromptBuilder:
    """Prompts of an exact token count, from the server's tokenizer or a calibrated words-per-token rate."""

    def __init__(self, tokenize: Tokenize | None = None) -> None:
        self.tokenize = tokenize
        # tokens = intercept + slope * words, from the calibration probes (tokenizer-less servers).
        self.fit: tuple[float, float] | None = None
        self.method = "tokenizer" if tokenize else "calibrated"

    def calibrate(self, count: Callable[[str], int | None], rng: random.Random) -> None:
        """Fit tokens per word from the server's reported prompt counts of two probe prompts."""
        sizes = (32, 256)
        counts = []
        for size in sizes:
            reported = count(" ".join(rng.choice(WORDS) for _ in range(size)))
            if not isinstance(reported, int) or reported < 1:
                raise UserInputError("the server reports no prompt token count, so a synthetic workload cannot "
                                     "be sized for it; use --suite instead")
            counts.append(reported)
        slope = (counts[1] - counts[0]) / (sizes[1] - sizes[0])
        if slope <= 0:
            raise UserInputError(f"the server's prompt counts ({counts[0]} for {sizes[0]} words, {counts[1]} for "
                                 f"{sizes[1]}) do not grow with the prompt; it may be caching: use --suite")
        self.fit = (counts[0] - slope * sizes[0], slope)

    def _count(self, words: list[str]) -> int:
        tokens = self.tokenize(" ".join(words)) if self.tokenize else None
        if tokens is None:
            raise UserInputError("the server's tokenizer did not answer; cannot size a synthetic prompt")
        return len(tokens)

    def build(self, n_tokens: int, rng: random.Random, prefix: list[str] | None = None) -> tuple[str, list[str]]:
        """A prompt of ``n_tokens`` server tokens (BOS included): its text and its words.

        ``prefix`` words stay at the front (a depth context the prompt extends).
        """
        words = list(prefix or [])
        if self.tokenize is None:
            if self.fit is None:
                raise RuntimeError("calibrate() first")  # a programming error, not the user's
            intercept, slope = self.fit
            want = max(1, round((n_tokens - intercept) / slope))
            words += [rng.choice(WORDS) for _ in range(max(0, want - len(words)))]
            return " ".join(words), words
        base = len(words)
        words += [rng.choice(WORDS) for _ in range(max(1, n_tokens - 1 - base))]
        have = self._count(words)
        for _ in range(40):
            if have == n_tokens:
                return " ".join(words), words
            if have < n_tokens:
                words += [rng.choice(WORDS) for _ in range(n_tokens - have)]
            elif len(words) > base + 1:
                del words[-max(1, (have - n_tokens) // 2):]  # most words are one token, some two or more
            else:
                break
            have = self._count(words)
        # The last word is what keeps the count off: try the others in its place.
        for word in sorted(WORDS, key=lambda _: rng.random()):
            words[-1] = word
            if self._count(words) == n_tokens:
                return " ".join(words), words
        raise UserInputError(f"could not build a prompt of exactly {n_tokens} tokens with this tokenizer; "
                             "try a different pp count")


@dataclass
class WorkloadPrompt:
    """One request's prompt (and the depth context to prime first, if any)."""

    text: str
    tokens: int  # as built: exact with a tokenizer, the calibrated estimate otherwise
    depth_text: str | None = None


def build_prompts(workload: Workload, builder: PromptBuilder, count: int, seed: int,
                  shared: bool = False) -> list[WorkloadPrompt]:
    """``count`` prompts for ``workload``, each unique from its first word (``shared``: all the same,
    to measure prefix caching)."""
    prompts: list[WorkloadPrompt] = []
    for index in range(1 if shared else count):
        rng = random.Random(f"{seed}:{workload.name}:{index}")
        depth_text = None
        prefix = None
        if workload.depth:
            depth_text, prefix = builder.build(workload.depth, rng)
        text, _ = builder.build(workload.depth + workload.prompt_tokens, rng, prefix)
        prompts.append(WorkloadPrompt(text, workload.depth + workload.prompt_tokens, depth_text))
    return prompts * count if shared else prompts


def prompt_check(requested: int, reported: list[int]) -> dict[str, object]:
    """Requested vs the server's reported prompt counts; ``mismatch`` where the median is >1% off."""
    from velollm_core.contract.stats import percentile

    if not reported:
        return {"requested": requested, "reported_median": None, "mismatch": None}
    median = percentile(reported, 50)
    return {"requested": requested, "reported_median": median,
            "mismatch": abs(median - requested) > MISMATCH_SHARE * requested}


@dataclass(frozen=True)
class Dataset:
    """The user's own prompts (``--dataset FILE``), sent with the chat template where the endpoint has one."""

    name: str
    prompts: tuple[str, ...]
    max_tokens: int
    # Per prompt, the later user turns of its conversation (ShareGPT, OpenAI messages): what --turns sends
    # after the first; empty where the record has one turn.
    follow_ups: tuple[tuple[str, ...], ...] = ()
    # The seeded shuffle of each seed asked for, made once: a request then picks its prompt in O(1).
    _orders: dict[int, list[int]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def _position(self, index: int, seed: int) -> int:
        order = self._orders.get(seed)
        if order is None:
            order = list(range(len(self.prompts)))
            random.Random(seed).shuffle(order)
            self._orders[seed] = order
        return order[index % len(order)]

    def prompt(self, index: int, seed: int) -> str:
        """The ``index``-th prompt of a seeded shuffle (the dataset repeats when requests outnumber it)."""
        return self.prompts[self._position(index, seed)]

    def later_turns(self, index: int, seed: int) -> tuple[str, ...]:
        """The user turns after the ``index``-th prompt in its conversation (none for a single prompt)."""
        position = self._position(index, seed)
        return self.follow_ups[position] if position < len(self.follow_ups) else ()


_TURN_KEYS = ("value", "content", "text")


def _user_turns(turns: object) -> list[str]:
    """The texts of the user's turns of a conversation (OpenAI ``messages`` or ShareGPT ``conversations``)."""
    if not isinstance(turns, list):
        return []
    found = []
    for turn in turns:
        if isinstance(turn, dict) and str(turn.get("from", turn.get("role", ""))).lower() in ("human", "user"):
            text = next((turn[key] for key in _TURN_KEYS if isinstance(turn.get(key), str)), None)
            if text:
                found.append(text)
    return found


def _first_user_turn(turns: object) -> str | None:
    return next(iter(_user_turns(turns)), None)


def dataset_later_turns(record: object) -> tuple[str, ...]:
    """The user turns after the first of a conversation record (none for a single prompt)."""
    if not isinstance(record, dict):
        return ()
    turns = _user_turns(record.get("messages")) or _user_turns(record.get("conversations"))
    return tuple(turns[1:])


def dataset_prompt(record: object) -> str | None:
    """The prompt of one record: ``{"prompt"}``/``{"text"}``, OpenAI ``{"messages"}`` or ShareGPT
    ``{"conversations": [{"from": "human", "value"}]}`` (the first user turn); None otherwise."""
    if isinstance(record, str):
        return record or None
    if not isinstance(record, dict):
        return None
    for key in ("prompt", "text", "question", "input"):
        if isinstance(record.get(key), str) and record[key]:
            return record[key]
    return _first_user_turn(record.get("messages")) or _first_user_turn(record.get("conversations"))


MAX_DATASET_BYTES = 1 << 30
_READ_BYTES = 1 << 20


def _binary_size(count: int) -> str:
    """1073741824 -> '1 GiB', 65536 -> '64 KiB'."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} bytes"


def _read_dataset_text(path, limit: int) -> str:
    """The file's UTF-8 text, refused once more than ``limit`` bytes were read: a pipe or a device
    (``/dev/zero``, ``<(cat ...)``) has no size to check first, and a NUL byte is no text at all."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: list[str] = []
    read = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_BYTES):
            read += len(chunk)
            if read > limit:
                raise UserInputError(f"--dataset {path} is over {_binary_size(limit)}; cut it to the prompts "
                                     "you want to send")
            if b"\0" in chunk:
                raise UserInputError(f"--dataset {path} holds NUL bytes: it is not a text file of prompts "
                                     "(JSONL or JSON)")
            parts.append(decoder.decode(chunk))
    parts.append(decoder.decode(b"", final=True))
    return "".join(parts)


def _dataset_records(path, text: str) -> list[tuple[str, object]]:
    """(where, record) pairs of a JSON array (``record N``) or of JSONL (``line N``)."""
    from velollm_core.contract import jsontext

    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = jsontext.loads(stripped)
        except ValueError as exc:
            raise UserInputError(f"--dataset {path} is not valid JSON ({exc})") from None
        return [(f"record {number}", record) for number, record in enumerate(records, 1)] \
            if isinstance(records, list) else []
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                lines.append((f"line {number}", jsontext.loads(line)))
            except jsontext.JSONTooDeep as exc:
                raise UserInputError(f"--dataset {path} line {number} is {exc}: not a prompt record") from None
            except ValueError:
                raise UserInputError(f"--dataset {path} line {number} is not JSON: {line[:60]!r}") from None
    return lines


def load_dataset(path, max_tokens: int) -> Dataset:
    """Prompts from a JSONL file (one record a line) or a JSON array (ShareGPT dumps); a file that
    yields none, a line that is not JSON, or a prompt that is not text (a lone surrogate such as
    ``\\ud800``, which no server can be sent) is a UserInputError naming the line."""
    from pathlib import Path

    path = Path(path)
    try:
        if path.stat().st_size > MAX_DATASET_BYTES:  # a regular file says its size: refused unread
            raise UserInputError(f"--dataset {path} is over {_binary_size(MAX_DATASET_BYTES)}; cut it to the "
                                 "prompts you want to send")
        text = _read_dataset_text(path, MAX_DATASET_BYTES)
    except FileNotFoundError:
        raise UserInputError(f"--dataset {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"--dataset {path} cannot be read as UTF-8 text ({exc})") from None
    prompts = []
    follow_ups = []
    for where, record in _dataset_records(path, text):
        prompt = dataset_prompt(record)
        if not prompt:
            continue
        later = dataset_later_turns(record)
        for turn in (prompt, *later):
            try:
                turn.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise UserInputError(f"--dataset {path} {where}: its prompt holds a lone surrogate "
                                     f"({turn[exc.start]!r} at character {exc.start}), which is not text a "
                                     "server can be sent") from None
        prompts.append(prompt)
        follow_ups.append(later)
    if not prompts:
        raise UserInputError(f"--dataset {path} holds no prompt: expected JSONL records with \"prompt\", "
                             "\"messages\" or ShareGPT \"conversations\"")
    return Dataset(path.stem, tuple(prompts), max_tokens, tuple(follow_ups) if any(follow_ups) else ())
