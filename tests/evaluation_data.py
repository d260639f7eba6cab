"""Generated evaluation data and a fake encoder whose embeddings are controlled.

A synthetic sentence is ``"c<concept> <lang> <variant>"``: ``FakeEncoder`` maps it to the
concept's fixed random vector plus noise seeded by the whole text, so translations (same
concept) are near each other and the noise level sets how hard retrieval is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DIM = 16


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha1("\0".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def concept_vector(concept: str) -> np.ndarray:
    return _rng("concept", concept).standard_normal(DIM)


class FakeEncoder:
    """Satisfies the ``Encoder`` protocol; counts calls and texts.

    Layer ``l`` of ``layers`` has noise ``noise * (1 + 0.3 * |l - best_layer|)``, so a layer sweep
    has a best layer. Texts not in the synthetic format get a random vector."""

    def __init__(
        self,
        name: str = "fake",
        layers: Sequence[int] = (2,),
        noise: float = 0.8,
        best_layer: int = 2,
        dim: int = DIM,
    ) -> None:
        self.name = name
        self.layers = tuple(layers)
        self.noise = noise
        self.best_layer = best_layer
        self.dim = dim
        self.calls = 0
        self.texts_encoded = 0
        self.seen: list[str] = []

    def _vector(self, text: str, layer: int) -> np.ndarray:
        concept = text.split(" ")[0] if text.startswith("c") else text
        base = concept_vector(concept)[: self.dim]
        if self.dim > DIM:
            base = np.resize(base, self.dim)
        sigma = self.noise * (1.0 + 0.3 * abs(layer - self.best_layer))
        vector = base + sigma * _rng("noise", self.name, text).standard_normal(self.dim)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def encode_layers(self, texts: Sequence[str], progress=None) -> np.ndarray:
        self.calls += 1
        self.texts_encoded += len(texts)
        self.seen.extend(texts)
        out = np.empty((len(texts), len(self.layers), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for j, layer in enumerate(self.layers):
                out[i, j] = self._vector(text, layer)
        return out

    def encode(self, texts: Sequence[str], progress=None) -> np.ndarray:
        return self.encode_layers(texts, progress)[:, 0]


def write_tatoeba(data_dir: Path, lang: str, n: int, offset: int = 0) -> None:
    base = Path(data_dir) / "tatoeba"
    base.mkdir(parents=True, exist_ok=True)
    xx = [f"c{offset + i} {lang} t" for i in range(n)]
    en = [f"c{offset + i} eng t" for i in range(n)]
    (base / f"tatoeba.{lang}-eng.{lang}").write_text("\n".join(xx) + "\n", encoding="utf-8")
    (base / f"tatoeba.{lang}-eng.eng").write_text("\n".join(en) + "\n", encoding="utf-8")


def write_bucc_split(
    data_dir: Path, lang: str, split: str, n_pairs: int, n_noise: int, offset: int = 0
) -> None:
    """``n_pairs`` gold translations among ``n_noise`` unrelated sentences per side, plus one
    duplicated sentence under two ids on the {lang} side."""
    base = Path(data_dir) / "bucc2018"
    base.mkdir(parents=True, exist_ok=True)
    rng = _rng("bucc", lang, split)
    src, tgt, gold = [], [], []
    for i in range(n_pairs):
        concept = f"c{offset + i}"
        src.append((f"{lang}-{split}-{i:06d}", f"{concept} {lang} b"))
        tgt.append((f"en-{split}-{i:06d}", f"{concept} en b"))
        gold.append((src[-1][0], tgt[-1][0]))
    for j in range(n_noise):
        src.append((f"{lang}-{split}-n{j:06d}", f"cx{lang}{split}{j} {lang} b"))
        tgt.append((f"en-{split}-n{j:06d}", f"cy{lang}{split}{j} en b"))
    src.append((f"{lang}-{split}-dup", src[0][1]))  # the same text under a second id
    src = [src[i] for i in rng.permutation(len(src))]
    tgt = [tgt[i] for i in rng.permutation(len(tgt))]
    stem = base / f"{lang}-en.{split}"
    Path(f"{stem}.{lang}").write_text("".join(f"{i}\t{t}\n" for i, t in src), encoding="utf-8")
    Path(f"{stem}.en").write_text("".join(f"{i}\t{t}\n" for i, t in tgt), encoding="utf-8")
    Path(f"{stem}.gold").write_text("".join(f"{s}\t{t}\n" for s, t in gold), encoding="utf-8")


def write_image_text(data_dir: Path, langs: Sequence[str], n_images: int, dim: int = DIM) -> None:
    """Image features at the concept vectors, two captions per image per language."""
    base = Path(data_dir) / "image_text"
    base.mkdir(parents=True, exist_ok=True)
    ids = [f"img{i}" for i in range(n_images)]
    features = np.stack([np.resize(concept_vector(f"cimg{i}"), dim) for i in range(n_images)])
    np.save(base / "images.npy", features.astype(np.float32))
    (base / "image_ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    for lang in langs:
        lines = [
            json.dumps({"image_id": ids[i], "caption": f"cimg{i} {lang} v{v}"})
            for i in range(n_images)
            for v in range(2)
        ]
        (base / f"captions.{lang}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_dataset(
    data_dir: Path,
    bucc_langs: Sequence[str] = ("de", "fr"),
    tatoeba_langs: Sequence[str] = ("deu", "swh", "jav"),
    n_tatoeba: int = 60,
    n_pairs: int = 40,
    n_noise: int = 40,
) -> Path:
    """BUCC ``training`` and ``test`` splits and Tatoeba files; English sides share concepts across
    languages (Tatoeba English of each language starts at concept 0), so dedup is exercised."""
    for lang in bucc_langs:
        write_bucc_split(data_dir, lang, "training", n_pairs, n_noise, offset=1000)
        write_bucc_split(data_dir, lang, "test", n_pairs, n_noise, offset=2000)
    for lang in tatoeba_langs:
        write_tatoeba(data_dir, lang, n_tatoeba)
    return Path(data_dir)
