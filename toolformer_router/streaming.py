"""Text answers as they are decoded: `TextStream` turns one answer's token ids into text deltas, and cuts the answer
at the caller's stop sequences.

The deltas concatenate to exactly the answer's final text (`answer_text`): leading whitespace is dropped, and
what might still change is held back — trailing whitespace (the answer is stripped), an unfinished UTF-8
character, and a tail that could be the start of a stop sequence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from transformers import PreTrainedTokenizerBase

from .errors import InvalidQueryError

logger = logging.getLogger(__name__)

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 256


def check_stop(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """`stop` as a tuple of non-empty strings (OpenAI's limits: at most 4, each bounded); `InvalidQueryError`
    otherwise."""
    if stop is None:
        return ()
    if isinstance(stop, (bytes, dict)) or not isinstance(stop, (str, Iterable)):
        raise InvalidQueryError(f"stop must be a string or a list of strings, got {type(stop).__name__}")
    sequences = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(sequences) > MAX_STOP_SEQUENCES:
        raise InvalidQueryError(f"stop: at most {MAX_STOP_SEQUENCES} sequences, got {len(sequences)}")
    for sequence in sequences:
        if not isinstance(sequence, str) or not sequence or len(sequence) > MAX_STOP_CHARS:
            raise InvalidQueryError(f"stop: each sequence must be a non-empty string of at most {MAX_STOP_CHARS} "
                             f"characters, got {sequence!r:.80}")
    return sequences


def _stop_index(text: str, stop: Sequence[str]) -> int | None:
    """Where the first stop sequence in `text` begins, or None."""
    found = [index for index in (text.find(sequence) for sequence in stop) if index >= 0]
    return min(found) if found else None


def answer_text(raw: str, stop: Sequence[str] = ()) -> str:
    """The text answer of a decoded output: cut at the first stop sequence, stripped."""
    text = raw.lstrip()
    cut = _stop_index(text, stop)
    return (text if cut is None else text[:cut]).rstrip()


class TextStream:
    """One request's text answer, fed token ids as they are decoded; `emit` receives each new stable piece.

    `feed` returns False once a stop sequence appeared (the answer may end there) or the consumer went away
    (`cancel`). A request may be decoded again (a batch served a second time): `start` begins a new pass, and only
    text beyond what was already emitted is emitted again.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: Sequence[str] = (),
                 emit: Callable[[str], None] | None = None):
        self.tokenizer, self.stop, self.emit = tokenizer, tuple(stop), emit
        self.token_ids: list[int] = []
        self.sent = ""
        self.cancelled = False

    def start(self) -> None:
        """A new decoding pass of this answer begins."""
        self.token_ids = []

    def cancel(self) -> None:
        """The consumer stopped reading: the answer ends at its next token."""
        self.cancelled = True

    def feed(self, token_ids: list[int]) -> bool:
        """Take the answer's next tokens; False when decoding of this answer should end."""
        self.token_ids += token_ids
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=False).lstrip()
        cut = _stop_index(text, self.stop)
        if cut is not None:
            self._send(text[:cut].rstrip())
            return False
        self._send(self._stable(text))
        return not self.cancelled

    def _stable(self, text: str) -> str:
        """The part of `text` that later tokens cannot change: without trailing whitespace, an unfinished
        character or a tail that may grow into a stop sequence (each cut may expose another)."""
        while True:
            before = text
            text = text.rstrip().removesuffix("\ufffd")
            for sequence in self.stop:
                held = next((n for n in range(min(len(sequence) - 1, len(text)), 0, -1)
                             if text.endswith(sequence[:n])), 0)
                text = text[: len(text) - held]
            if text == before:
                return text

    def close(self, final_text: str) -> None:
        """The answer is complete: emit what is left of `final_text`."""
        self._send(final_text)

    def _send(self, text: str) -> None:
        if len(text) <= len(self.sent):
            return
        if not text.startswith(self.sent):  # a second pass decoded differently: the sent text stands
            logger.warning("a streamed answer changed after it was sent; the rest is not streamed")
            return
        delta, self.sent = text[len(self.sent):], text
        if self.emit is not None:
            self.emit(delta)
