"""Data formats (IO only): sentence files, BUCC 2018 and Tatoeba layouts, precomputed embeddings.

Every reader validates its input and raises :class:`xretrieve.core.errors.InputError` naming the file
and, where it applies, the 1-based line.
"""

from xretrieve.formats.bucc import BuccSplit, bucc_paths, read_bucc_gold, read_bucc_split
from xretrieve.formats.corpus import (
    Corpus,
    distinct_texts,
    read_bucc_corpus,
    read_corpus,
    read_lines,
    read_text_corpus,
)
from xretrieve.formats.embeddings import embedding_path, read_embeddings
from xretrieve.formats.tatoeba import TatoebaPair, read_tatoeba, tatoeba_paths

__all__ = [
    "BuccSplit",
    "Corpus",
    "TatoebaPair",
    "bucc_paths",
    "distinct_texts",
    "embedding_path",
    "read_bucc_corpus",
    "read_bucc_gold",
    "read_bucc_split",
    "read_corpus",
    "read_embeddings",
    "read_lines",
    "read_tatoeba",
    "read_text_corpus",
    "tatoeba_paths",
]
