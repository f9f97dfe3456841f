"""Synthetic workloads with exact token counts, as llama-bench names them: ``pp512/tg128@d4096``.

A workload asks for a prompt of ``pp`` tokens, ``tg`` generated tokens and, optionally, ``d`` tokens
of context already in the KV cache. Prompts are built from the model's own tokenizer where the
backend exposes one (llama-server and vLLM ``/tokenize``): random common words, added or removed
until the server counts exactly ``pp`` tokens (its BOS included, as the server's own prompt count
is); the words' own counts are learned once, so the server's count of a prompt usually confirms it
at the first round trip. Where no tokenizer is reachable (Ollama), two probe generations measure tokens per word from the
server's reported prompt counts, and the workload says it was calibrated. Every request gets its
own random words from its first token on, so no request can be answered from another's prefix cache.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

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
T = TypeVar("T")
# Confirm-and-adjust rounds of one prompt before its last word is swapped for others.
CONFIRMATIONS = 8
# Prompts sized at once: tokenize round trips in flight together (the server tokenizes on its HTTP
# threads, so a many-core server answers them side by side; the Backend protocol allows calls from
# several threads).
PREPARE_THREADS = 4


class PromptBuilder:
    """Prompts of an exact token count, from the server's tokenizer or a calibrated words-per-token rate.

    With a tokenizer, each prompt costs about one round trip: which words add exactly one token after a
    space is learned once (``_learn_words``), a prompt is built from those to the count wanted, and the
    server's count of it confirms it (or says by how many words to adjust). Every count is kept by
    text, so no text is sent twice (a depth context's count serves the prompt that extends it).
    """

    def __init__(self, tokenize: Tokenize | None = None) -> None:
        self.tokenize = tokenize
        # tokens = intercept + slope * words, from the calibration probes (tokenizer-less servers).
        self.fit: tuple[float, float] | None = None
        self.method = "tokenizer" if tokenize else "calibrated"
        self.round_trips = 0  # tokenize calls made
        # The server's count of every text asked, by digest: a long prompt's text is not kept twice.
        self._counts: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._learning = threading.Lock()
        self._start_tokens: int | None = None  # a text of one word: BOS (if any) and the word
        self._fillers: tuple[str, ...] = WORDS  # the words a prompt is built from
        self._exact = False  # each filler adds exactly one token after a space: an excess is that many words

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

    def count(self, text: str) -> int:
        """The server's token count of ``text`` (BOS included), asked of the server once per text."""
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        known = self._counts.get(key)
        if known is None:
            tokens = self.tokenize(text) if self.tokenize else None
            if tokens is None:
                raise UserInputError("the server's tokenizer did not answer; cannot size a synthetic prompt")
            known = self._counts[key] = len(tokens)
            with self._lock:
                self.round_trips += 1
        return known

    def _learn_words(self) -> None:
        """Which words add exactly one token after a space: groups of them appended to one word, halved
        where a group adds more (one round trip where every word is one token, as in the vocabularies
        tried; each word alone where many are longer), so a prompt built from them has a count known
        before the server confirms it."""
        with self._learning:
            if self._start_tokens is not None:
                return
            words = list(dict.fromkeys(WORDS))
            start = self.count(words[0])
            fillers: list[str] = []
            groups = [words]
            while groups:
                group = groups.pop()
                added = self.count(" ".join((words[0], *group))) - start
                if added == len(group):
                    fillers += group
                elif (added - len(group)) * math.log2(len(group)) >= len(group):
                    groups += [[word] for word in group]  # many longer words: halving would cost more
                elif len(group) > 1:
                    groups += [group[:len(group) // 2], group[len(group) // 2:]]
            if fillers:
                self._fillers, self._exact = tuple(sorted(fillers, key=words.index)), True
            self._start_tokens = start

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
        self._learn_words()
        fillers = self._fillers
        base = len(words)
        if words:
            have = self.count(" ".join(words))  # a depth context: counted when it was built
        else:
            words.append(rng.choice(fillers))
            have = self._start_tokens or 1
        words += [rng.choice(fillers) for _ in range(max(0 if len(words) > base else 1, n_tokens - have))]
        for _ in range(CONFIRMATIONS):
            text = " ".join(words)
            have = self.count(text)
            if have == n_tokens:
                return text, words
            if have < n_tokens:
                words += [rng.choice(fillers) for _ in range(n_tokens - have)]
                continue
            drop = have - n_tokens if self._exact else max(1, (have - n_tokens) // 2)
            if len(words) - drop <= base:
                break
            del words[-drop:]
        # The last word is what keeps the count off: try the others in its place.
        for word in sorted(WORDS, key=lambda _: rng.random()):
            words[-1] = word
            text = " ".join(words)
            if self.count(text) == n_tokens:
                return text, words
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
    to measure prefix caching). Each prompt has its own seeded words, so they are the same whichever
    order the round trips of several at once finish in."""

    def one(index: int) -> WorkloadPrompt:
        rng = random.Random(f"{seed}:{workload.name}:{index}")
        depth_text = None
        prefix = None
        if workload.depth:
            depth_text, prefix = builder.build(workload.depth, rng)
        text, _ = builder.build(workload.depth + workload.prompt_tokens, rng, prefix)
        return WorkloadPrompt(text, workload.depth + workload.prompt_tokens, depth_text)

    prompts = build_each(builder, one, 1 if shared else count)
    return prompts * count if shared else prompts


def build_each(builder: PromptBuilder, make: Callable[[int], T], count: int) -> list[T]:
    """``make(index)`` for every index below ``count``, in order, with up to PREPARE_THREADS of them
    waiting on the server's tokenizer at once (none where the builder has no tokenizer to wait on)."""
    if builder.tokenize is None or count < 2:
        return [make(index) for index in range(count)]
    pool = ThreadPoolExecutor(PREPARE_THREADS, thread_name_prefix="velollm-prompts")
    try:
        return list(pool.map(make, range(count)))
    finally:  # a failure or Ctrl-C: the prompts not yet started are dropped, not built
        pool.shutdown(wait=True, cancel_futures=True)


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
