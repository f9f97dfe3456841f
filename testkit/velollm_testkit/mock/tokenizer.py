"""The mock's tokenizer: one token per word with its leading whitespace, BOS first.

Every wire format counts a prompt with it and every tokenize endpoint answers with it, so a prompt
built from ``/tokenize`` reports exactly the count it was built for.
"""

from __future__ import annotations

import re

from velollm_testkit.mock.wire import BadRequest

BOS_ID, EOS_ID = 1, 2
SPECIAL = ["<unk>", "<s>", "</s>"]
# The words the "model" answers with, in a cycle: common English, each one token with its space.
ANSWER = ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "small", "bird",
          "sings", "in", "the", "old", "oak", "tree", "near", "a", "quiet", "river", "that", "runs", "down", "to",
          "the", "sea"]

_WORD = re.compile(r"\s*\S+|\s+")


def _letters(n: int) -> str:
    out = ""
    while True:
        n, rest = divmod(n, 26)
        out = chr(97 + rest) + out
        if not n:
            return out
        n -= 1


def _index_of_letters(word: str) -> int:
    n = 0
    for char in word:
        n = n * 26 + (ord(char) - 96)
    return n - 1


class Tokenizer:
    """Ids below ``vocab_size`` are fixed (id i is " " plus i written in letters); other words get
    ids above it in the order first seen, so ``tokenize(detokenize(ids)) == ids`` for fixed ids."""

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.ids: dict[str, int] = {piece: i for i, piece in enumerate(SPECIAL)}
        self.pieces: dict[int, str] = dict(enumerate(SPECIAL))
        for word in ANSWER:
            self.id_of(f" {word}")

    def piece(self, token: int) -> str:
        found = self.pieces.get(token)
        if found is not None:
            return found
        if not len(SPECIAL) <= token < self.vocab_size:
            raise BadRequest(f"token id {token} is outside the vocabulary (0-{self.vocab_size - 1})")
        return f" {_letters(token)}"

    def id_of(self, piece: str) -> int:
        token = self.ids.get(piece)
        if token is None:
            word = piece[1:]
            if piece.startswith(" ") and word.isalpha() and word.islower() and word.isascii():
                token = _index_of_letters(word)
            if token is None or not len(SPECIAL) <= token < self.vocab_size or token in self.pieces:
                token = self.vocab_size + len(self.ids)
            self.ids[piece] = token
            self.pieces[token] = piece
        return token

    def spans(self, text: str) -> list[tuple[int, int, int]]:
        """(token id, start, stop) of each word of ``text``: where in the text each token's piece lies."""
        return [(self.id_of(match.group()), match.start(), match.end()) for match in _WORD.finditer(text)]

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        tokens = [self.id_of(piece) for piece in _WORD.findall(text)]
        return [BOS_ID, *tokens] if add_special else tokens

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(self.piece(token) for token in tokens if token not in (BOS_ID, EOS_ID))


def prompt_tokens(tokenizer: Tokenizer, prompt: object, add_special: bool) -> list[int]:
    """A prompt given as text or as token ids (llama-server and OpenAI accept both), one prompt only."""
    if isinstance(prompt, str):
        return tokenizer.tokenize(prompt, add_special)
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        return prompt_tokens(tokenizer, prompt[0], add_special)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        for token in prompt:
            tokenizer.piece(token)  # refuses an id outside the vocabulary
        return list(prompt)
    raise BadRequest("'prompt' must be a string or a list of token ids (one prompt per request)")
