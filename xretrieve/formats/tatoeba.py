"""The Tatoeba layout of XTREME: ``DIR/tatoeba/tatoeba.{xxx}-eng.{xxx|eng}``, aligned by line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xretrieve.core.errors import InputError
from xretrieve.formats.corpus import Corpus, read_text_corpus


@dataclass(frozen=True)
class TatoebaPair:
    """Line ``i`` of ``src`` (language ``lang``) translates line ``i`` of ``eng``."""

    lang: str
    src: Corpus
    eng: Corpus


def tatoeba_paths(data_dir: Path | str, lang: str) -> tuple[Path, Path]:
    """``(xxx file, eng file)`` of ``DIR/tatoeba/tatoeba.{lang}-eng.*``."""
    base = Path(data_dir) / "tatoeba"
    return base / f"tatoeba.{lang}-eng.{lang}", base / f"tatoeba.{lang}-eng.eng"


def read_tatoeba(data_dir: Path | str, lang: str) -> TatoebaPair:
    """Read both plain-text sides; raises ``InputError`` when their line counts differ."""
    src_path, eng_path = tatoeba_paths(data_dir, lang)
    src = read_text_corpus(src_path)
    eng = read_text_corpus(eng_path)
    if len(src) != len(eng):
        raise InputError(
            eng_path, f"has {len(eng)} lines but {src_path} has {len(src)}; they must align"
        )
    return TatoebaPair(lang=lang, src=src, eng=eng)
