"""The embedding loop shared by every backend: tokenise in a background thread, run batches cut
by a token budget (longest first), split a batch that runs out of GPU memory, restore the input
order, and hand finished windows of rows to a sink so that huge inputs stream with bounded memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from xretrieve.core.errors import XRetrieveError
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.encoding.batching import LengthBuckets, plan_batches, restore_order
from xretrieve.encoding.tokenize import TextTokenizer

logger = logging.getLogger(__name__)

# Sentences sorted together; also the unit of streaming. Larger windows pad less, smaller ones
# hold less memory: at most two windows of padded token ids exist at once.
DEFAULT_WINDOW = 16384


class Encoder(Protocol):
    """What the rest of xretrieve needs from a sentence encoder."""

    name: str
    dim: int
    layers: tuple[int, ...]

    def encode(self, texts: Sequence[str], progress: ProgressCallback | None = None) -> np.ndarray:
        """``(n, dim)`` float32 in input order (L2-normalised unless the model says otherwise)."""
        ...

    def encode_layers(
        self, texts: Sequence[str], progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """``(n, n_layers, dim)`` float32 in input order, one vector per exported layer."""
        ...


class EncoderBackend(Protocol):
    """Runs a model on padded batches. ``provider`` names what ran (an ONNX Runtime execution
    provider, or torch with its device and dtype)."""

    provider: str
    dim: int
    n_layers: int

    def run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """int64 ``[batch, seq]`` inputs -> float32 ``embeddings [batch, dim]`` and, for
        multi-layer models, ``layer_embeddings [batch, n_layers, dim]`` (else None)."""
        ...

    def is_out_of_memory(self, error: BaseException) -> bool:
        """Whether ``error`` is the device running out of memory (worth a smaller batch)."""
        ...

    def release_memory(self) -> None:
        """Give cached device memory back after an out-of-memory error."""
        ...


def _memory_words(provider: str) -> tuple[str, str]:
    """What ran out ("GPU memory" or, on the CPU, "memory") and what to do about it."""
    if "cuda" in provider.lower() or "gpu" in provider.lower():
        return (
            "GPU memory",
            "free GPU memory, lower the model's max length, or run with {device='cpu'}",
        )
    return (
        "memory",
        "free memory (other processes, a smaller {batch_tokens}) or lower the max length",
    )


@dataclass(frozen=True)
class EncodeStats:
    """What one encoding run did. ``real_tokens`` counts tokens with special tokens and
    without padding; ``padded_tokens`` what the model computed on."""

    provider: str
    sentences: int
    real_tokens: int
    padded_tokens: int
    truncated: int
    max_length: int
    batches: int
    oom_splits: int
    seconds: float

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_efficiency(self) -> float:
        """Real / padded tokens: 1.0 means no compute was spent on padding."""
        return self.real_tokens / self.padded_tokens if self.padded_tokens else 1.0


Sink = Callable[[int, np.ndarray], None]
"""Receives ``(start, rows)``: the outputs of input rows ``start .. start + len(rows)``."""


@dataclass(frozen=True)
class _Window:
    start: int
    order: np.ndarray
    n_batches: int
    truncated: int


@dataclass(frozen=True)
class _Batch:
    first: int  # position in the window's sorted order of the batch's first row
    input_ids: np.ndarray
    attention_mask: np.ndarray


@dataclass(frozen=True)
class _Failure:
    error: BaseException


_DONE = object()


class SentenceEncoder:
    """Sentence embeddings from a ``EncoderBackend`` and a ``TextTokenizer``; satisfies ``Encoder``.

    ``batch_tokens`` bounds ``batch_size * padded_length`` of each batch; ``window`` is how
    many sentences are length-sorted together (and the streaming unit); ``buckets`` cuts
    batches into length buckets (``plan_batches``; None: the budget alone cuts them)."""

    def __init__(
        self,
        backend: EncoderBackend,
        tokenizer: TextTokenizer,
        *,
        name: str,
        layers: tuple[int, ...],
        batch_tokens: int = 16384,
        window: int = DEFAULT_WINDOW,
        mining_threshold: Mapping[str, Any] | None = None,
        buckets: LengthBuckets | None = None,
    ) -> None:
        if batch_tokens < 1 or window < 1:
            raise XRetrieveError("batch_tokens and window must be positive")
        self.backend = backend
        self.tokenizer = tokenizer
        self.name = name
        self.layers = tuple(layers)
        self.dim = backend.dim
        self.batch_tokens = batch_tokens
        self.window = window
        self.buckets = buckets
        # The model's calibrated margin threshold ({margin, k, threshold, ...}), if it has one.
        self.mining_threshold = mining_threshold
        self.last_stats: EncodeStats | None = None
        # Padded-token size of the smallest batch that ran out of memory: later batches at least
        # this big are split before running instead of failing again.
        self._oom_tokens: int | None = None
        self._oom_splits = 0

    @property
    def provider(self) -> str:
        return self.backend.provider

    def encode(
        self, texts: Sequence[str] | str, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """``(n, dim)`` float32 embeddings of ``texts`` in input order. A single ``str`` is one
        text and gives one ``(dim,)`` vector (as sentence-transformers' ``encode``). Anything
        but a ``str`` or a list of ``str`` raises ``ArgumentError`` naming the bad item."""
        single, items = _texts_argument(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        self._encode_into(out, items, progress, layer_outputs=False)
        return out[0] if single else out

    def encode_layers(
        self, texts: Sequence[str] | str, progress: ProgressCallback | None = None
    ) -> np.ndarray:
        """``(n, n_layers, dim)`` float32, one row per listed layer (``layers`` order); a
        single ``str`` gives ``(n_layers, dim)``. Arguments as ``encode``."""
        single, items = _texts_argument(texts)
        out = np.empty((len(items), self.backend.n_layers, self.dim), dtype=np.float32)
        self._encode_into(out, items, progress, layer_outputs=True)
        return out[0] if single else out

    def _encode_into(
        self,
        out: np.ndarray,
        texts: Sequence[str],
        progress: ProgressCallback | None,
        *,
        layer_outputs: bool,
    ) -> None:
        def sink(start: int, rows: np.ndarray) -> None:
            out[start : start + len(rows)] = rows

        windows = (texts[i : i + self.window] for i in range(0, len(texts), self.window))
        self.encode_stream(
            windows, sink, total=len(texts), progress=progress, layer_outputs=layer_outputs
        )

    def encode_stream(
        self,
        windows: Iterable[Sequence[str]],
        sink: Sink,
        *,
        total: int | None = None,
        progress: ProgressCallback | None = None,
        layer_outputs: bool = False,
    ) -> EncodeStats:
        """Embed consecutive windows of texts (each sorted and batched on its own) and pass each
        window's rows, in input order, to ``sink``. ``windows`` is consumed in a background
        thread that also tokenises and pads, one window ahead of the model; rows are float32
        ``(m, dim)``, or ``(m, n_layers, dim)`` with ``layer_outputs``. Progress: stage
        "embed", done = sentences finished."""
        progress = progress or no_progress
        started = time.perf_counter()
        items: queue.Queue = queue.Queue()
        # Windows the producer may hold beyond the one being run: bounds memory.
        slots = threading.Semaphore(2)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce,
            args=(iter(windows), items, slots, stop),
            name="xretrieve-tokenize",
            daemon=True,
        )
        counts = {"sentences": 0, "real": 0, "padded": 0, "truncated": 0, "batches": 0}
        oom_splits_before = self._oom_splits
        producer.start()
        try:
            progress("embed", 0, total)
            for window, batches in _windows(items):
                n = len(window.order)
                shape = (n, self.backend.n_layers, self.dim) if layer_outputs else (n, self.dim)
                sorted_rows = np.empty(shape, dtype=np.float32)
                for batch in batches:
                    emb, layer_emb = self._run(batch.input_ids, batch.attention_mask)
                    rows = layer_emb if layer_outputs else emb
                    if rows is None:
                        rows = emb[:, None, :]
                    sorted_rows[batch.first : batch.first + len(rows)] = rows
                    counts["sentences"] += len(rows)
                    counts["real"] += int(batch.attention_mask.sum())
                    counts["padded"] += batch.attention_mask.size
                    counts["batches"] += 1
                    progress("embed", counts["sentences"], total)
                counts["truncated"] += window.truncated
                sink(window.start, restore_order(sorted_rows, window.order))
                slots.release()
        finally:
            stop.set()
            slots.release()
            producer.join(timeout=5)
        stats = EncodeStats(
            provider=self.provider,
            sentences=counts["sentences"],
            real_tokens=counts["real"],
            padded_tokens=counts["padded"],
            truncated=counts["truncated"],
            max_length=self.tokenizer.max_length,
            batches=counts["batches"],
            oom_splits=self._oom_splits - oom_splits_before,
            seconds=time.perf_counter() - started,
        )
        self.last_stats = stats
        _log_stats(stats)
        return stats

    def _produce(
        self,
        windows: Iterator[Sequence[str]],
        items: queue.Queue,
        slots: threading.Semaphore,
        stop: threading.Event,
    ) -> None:
        start = 0
        try:
            while True:
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                texts = next(windows, None)
                if texts is None:
                    break
                tokenized = self.tokenizer.tokenize(texts)
                plan = plan_batches(tokenized.lengths, self.batch_tokens, self.buckets)
                items.put(_Window(start, plan.order, len(plan), tokenized.truncated))
                for b in range(len(plan)):
                    if stop.is_set():
                        return
                    rows = [tokenized.ids[i] for i in plan.batch(b)]
                    input_ids, attention_mask = self.tokenizer.pad(rows)
                    items.put(_Batch(int(plan.bounds[b]), input_ids, attention_mask))
                start += len(texts)
        except BaseException as error:  # re-raised in the consuming thread
            items.put(_Failure(error))
            return
        items.put(_DONE)

    def _run(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Run one batch; on out-of-memory, halve it (recursively, down to one sentence)."""
        if (
            self._oom_tokens is not None
            and input_ids.size >= self._oom_tokens
            and len(input_ids) > 1
        ):
            return self._run_halves(input_ids, attention_mask)
        try:
            return self.backend.run(input_ids, attention_mask)
        except Exception as error:
            if not self.backend.is_out_of_memory(error):
                raise
            self.backend.release_memory()
            batch, length = input_ids.shape
            memory, advice = _memory_words(self.provider)
            if batch == 1:
                raise XRetrieveError(
                    f"out of {memory} on a single sentence of {length} tokens "
                    f"({self.provider}); {advice}",
                    arguments=("device", "batch_tokens"),
                ) from error
            self._oom_tokens = min(self._oom_tokens or input_ids.size, input_ids.size)
            logger.warning(
                "out of %s on a batch of %d x %d tokens: retrying in halves", memory, batch, length
            )
            return self._run_halves(input_ids, attention_mask)

    def _run_halves(
        self, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        self._oom_splits += 1
        middle = (len(input_ids) + 1) // 2
        parts = []
        for rows in (slice(0, middle), slice(middle, None)):
            mask = attention_mask[rows]
            # Rows are right-padded: a half needs only its own longest row's columns.
            length = max(1, int(mask.sum(axis=1).max()))
            parts.append(self._run(input_ids[rows, :length], mask[:, :length]))
        emb = np.concatenate([part[0] for part in parts])
        if parts[0][1] is None:
            return emb, None
        return emb, np.concatenate([part[1] for part in parts])


def _texts_argument(texts: Sequence[str] | str) -> tuple[bool, Sequence[str]]:
    """``(single, texts)``: a bare ``str`` is one text; a list (or other sequence) of ``str``
    is kept as it is once every item is checked."""
    from xretrieve.core.arguments import check_texts

    if isinstance(texts, str):
        return True, [texts]
    if isinstance(texts, Sequence) and all(isinstance(text, str) for text in texts):
        return False, texts
    return False, check_texts("texts", texts)


def _windows(items: queue.Queue) -> Iterator[tuple[_Window, Iterator[_Batch]]]:
    """Regroup the producer's flat stream into windows, each with an iterator of its batches."""

    def take() -> object:
        item = items.get()
        if isinstance(item, _Failure):
            raise item.error
        return item

    while True:
        item = take()
        if item is _DONE:
            return
        window: _Window = item  # type: ignore[assignment]
        yield window, (take() for _ in range(window.n_batches))  # type: ignore[misc]


def _log_stats(stats: EncodeStats) -> None:
    logger.info(
        "embedded %d sentences with %s in %.2f s (%.0f sentences/s, padding efficiency %.2f)",
        stats.sentences,
        stats.provider,
        stats.seconds,
        stats.sentences_per_s,
        stats.padding_efficiency,
    )
    if stats.truncated:
        logger.warning(
            "%d of %d sentences were longer than %d tokens and were truncated",
            stats.truncated,
            stats.sentences,
            stats.max_length,
        )
