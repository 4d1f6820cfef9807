"""Prompt → CLIP token batches, with ComfyUI's weights, embeddings and 77-token chunking.

The BPE is transformers' `CLIPTokenizer` over the vocabulary shipped in `clip_tokenizer/`
(OpenAI's CLIP BPE, shared by CLIP-L, OpenCLIP-H and OpenCLIP-bigG); nothing is downloaded.

`EncoderTokenizer.tokenize_with_weights(text)` returns ComfyUI's token structure: a list of
batches, each `max_length` (77) long, of `(token, weight)` pairs — `token` is an int id, or a
1-D tensor (one textual-inversion vector) to be used as that position's input embedding.
How a prompt becomes batches:

1. `weighted_segments` splits it into `(segment, weight)` runs (prompt.py).
2. Each segment is cut before every `embedding:` that follows whitespace (or starts it); a
   piece starting with `embedding:NAME` becomes NAME's vectors, the rest of that piece is text.
3. Each text piece is run through the BPE *as a whole* (start/end tokens dropped); every piece
   or embedding is one group.
4. Groups fill batches of start + 75 + end. A group that does not fit in what is left of the
   current batch moves to a new batch whole (the current one is closed with the end token and
   padded), unless it is 8 or more tokens long: then it fills the current batch and continues
   in the next one.
5. The last batch gets the end token and padding. Padding is the end token for CLIP-L (SD1,
   SDXL's clip-l) and 0 for OpenCLIP (SD2's clip-h, SDXL's clip-g). An empty prompt is one batch
   `[start, end, pad, ...]`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from comfyserve.text import embeddings
from comfyserve.text.prompt import weighted_segments

log = logging.getLogger(__name__)

TOKENIZER_DIR = Path(__file__).resolve().parent / "clip_tokenizer"

MAX_LENGTH = 77
# Groups at least this long may be split across two batches; shorter ones move whole.
MAX_WORD_LENGTH = 8
EMBEDDING_IDENTIFIER = "embedding:"
_EMBEDDING_SPLIT = re.compile(r"(?<=\s)" + re.escape(EMBEDDING_IDENTIFIER))

_hf_lock = threading.Lock()


@lru_cache(maxsize=1)
def _load_bpe() -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True)


def bpe() -> Any:
    """The shared transformers CLIPTokenizer (loaded on first use)."""
    with _hf_lock:
        return _load_bpe()


class EncoderTokenizer:
    """ComfyUI's SDTokenizer for one CLIP encoder (`clip_l`, `clip_h` or `clip_g`)."""

    def __init__(self, embedding_key: str, embedding_size: int, pad_with_end: bool,
                 max_length: int = MAX_LENGTH, embedding_directories: Sequence[Path | str] | None = None,
                 min_length: int | None = None, min_padding: int | None = None,
                 disable_weights: bool = False) -> None:
        self.embedding_key = embedding_key
        self.embedding_size = embedding_size
        self.pad_with_end = pad_with_end
        self.max_length = max_length
        self.min_length = min_length
        self.min_padding = min_padding
        self.disable_weights = disable_weights
        self._embedding_directories = list(embedding_directories) if embedding_directories is not None else None
        self._special: tuple[int, int] | None = None

    # Special tokens come from the BPE itself, as ComfyUI reads them (tokenizing "").
    def _special_tokens(self) -> tuple[int, int]:
        if self._special is None:
            empty = bpe()("")["input_ids"]
            self._special = (int(empty[0]), int(empty[1]))
        return self._special

    @property
    def start_token(self) -> int:
        return self._special_tokens()[0]

    @property
    def end_token(self) -> int:
        return self._special_tokens()[1]

    @property
    def pad_token(self) -> int:
        return self.end_token if self.pad_with_end else 0

    @property
    def embedding_directories(self) -> list[Path | str]:
        if self._embedding_directories is not None:
            return self._embedding_directories
        return list(embeddings.embedding_directories())

    def text_tokens(self, text: str) -> list[int]:
        """BPE ids of `text` without the start/end tokens."""
        return [int(t) for t in bpe()(text)["input_ids"][1:-1]]

    def _try_embedding(self, name: str) -> tuple[Any, str, str]:
        # (vectors or None, the name as written, text left over after it)
        words = name.split()
        if not words:
            return None, "", ""
        name, leftover = words[0], " ".join(words[1:])
        directories = self.embedding_directories
        vectors = embeddings.load_embedding(name, directories, self.embedding_size, self.embedding_key)
        if vectors is None:
            stripped = name.strip(",")
            if len(stripped) < len(name):
                vectors = embeddings.load_embedding(stripped, directories, self.embedding_size, self.embedding_key)
                return vectors, name, f"{name[len(stripped):]} {leftover}"
        return vectors, name, leftover

    def _groups(self, text: str, disable_weights: bool) -> list[list[tuple[Any, float]]]:
        groups: list[list[tuple[Any, float]]] = []
        for segment, weight in weighted_segments(text, disable_weights):
            parts = _EMBEDDING_SPLIT.split(segment)
            pieces = [parts[0]] + [EMBEDDING_IDENTIFIER + p for p in parts[1:]]
            for piece in pieces:
                if piece == "":
                    continue
                if piece.startswith(EMBEDDING_IDENTIFIER):
                    vectors, name, leftover = self._try_embedding(piece[len(EMBEDDING_IDENTIFIER):].strip("\n"))
                    if vectors is None:
                        log.warning("warning, embedding:%s does not exist, ignoring", name)
                    elif vectors.ndim == 1:
                        groups.append([(vectors, weight)])
                    else:
                        flat = vectors.reshape(-1, vectors.shape[-1])
                        groups.append([(flat[i], weight) for i in range(flat.shape[0])])
                    if leftover == "":
                        continue
                    piece = leftover
                groups.append([(t, weight) for t in self.text_tokens(piece)])
        return groups

    def _pad(self, batch: list[tuple[Any, float, int]], amount: int) -> None:
        batch.extend([(self.pad_token, 1.0, 0)] * max(amount, 0))

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False,
                              tokenizer_options: dict[str, Any] | None = None, **kwargs: Any) -> list[list[tuple]]:
        """ComfyUI's token batches for `text` (see the module docstring)."""
        options = tokenizer_options or {}
        min_length = kwargs.get("min_length", options.get(f"{self.embedding_key}_min_length", self.min_length))
        min_padding = options.get(f"{self.embedding_key}_min_padding", self.min_padding)
        disable_weights = kwargs.get("disable_weights", self.disable_weights)
        start, end = self.start_token, self.end_token

        batch: list[tuple[Any, float, int]] = [(start, 1.0, 0)]
        batches = [batch]
        room = self.max_length - 1  # the end token always closes a batch
        for index, group in enumerate(self._groups(text, disable_weights)):
            word_id = index + 1
            splittable = len(group) >= MAX_WORD_LENGTH
            while group:
                if len(group) + len(batch) > room:
                    remaining = room - len(batch)
                    if splittable:
                        batch.extend((t, w, word_id) for t, w in group[:remaining])
                        batch.append((end, 1.0, 0))
                        group = group[remaining:]
                    else:
                        batch.append((end, 1.0, 0))
                        self._pad(batch, remaining)
                    batch = [(start, 1.0, 0)]
                    batches.append(batch)
                else:
                    batch.extend((t, w, word_id) for t, w in group)
                    group = []

        batch.append((end, 1.0, 0))
        if min_padding is not None:
            self._pad(batch, min_padding)
        if len(batch) < self.max_length:
            self._pad(batch, self.max_length - len(batch))
        if min_length is not None and len(batch) < min_length:
            self._pad(batch, min_length - len(batch))

        if return_word_ids:
            return [list(b) for b in batches]
        return [[(t, w) for t, w, _ in b] for b in batches]

    def untokenize(self, token_weight_pair: Sequence[tuple]) -> list[tuple[tuple, str]]:
        inverse = {v: k for k, v in bpe().get_vocab().items()}
        return [(pair, inverse.get(pair[0], "")) for pair in token_weight_pair]


class FamilyTokenizer:
    """The tokenizers of one model family: `tokenize_with_weights` gives ComfyUI's dict
    (`{"l": ...}` for SD1, `{"h": ...}` SD2, `{"g": ..., "l": ...}` SDXL, `{"g": ...}` refiner).

    Each encoder's tokenizer is also an attribute (`clip_l`, `clip_h`, `clip_g`), as in ComfyUI.
    """

    def __init__(self, tokenizers: dict[str, EncoderTokenizer]) -> None:
        # name ("clip_l") -> tokenizer, in ComfyUI's output order
        self.tokenizers = tokenizers
        for name, tokenizer in tokenizers.items():
            setattr(self, name, tokenizer)

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs: Any) -> dict[str, list]:
        return {name.removeprefix("clip_"): tok.tokenize_with_weights(text, return_word_ids, **kwargs)
                for name, tok in self.tokenizers.items()}

    def untokenize(self, token_weight_pair: Sequence[tuple]) -> list[tuple[tuple, str]]:
        return next(iter(self.tokenizers.values())).untokenize(token_weight_pair)

    def state_dict(self) -> dict:
        return {}
