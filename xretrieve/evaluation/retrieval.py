"""BUCC 2018 and Tatoeba over a data directory, per language: what ``xretrieve bucc`` and
``xretrieve tatoeba`` run, and the Python API ``xretrieve.evaluate_bucc`` /
``xretrieve.evaluate_tatoeba``.

Every language's files are read (and, with ``emb_dir``, its embedding files looked up) before
any encoding, and every missing or bad file is reported at once. The scoring itself is
``xretrieve.evaluation.bucc.evaluate_bucc`` and ``xretrieve.evaluation.tatoeba.evaluate_tatoeba`` on embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from xretrieve.core.arguments import (
    check_model,
    check_optional_str,
    check_path,
    check_progress,
    check_texts,
)
from xretrieve.core.errors import ArgumentError, InputError, XRetrieveError
from xretrieve.core.progress import ProgressCallback
from xretrieve.evaluation.tatoeba import TatoebaResult
from xretrieve.formats import BuccSplit, Corpus
from xretrieve.mining.gold import BuccResult
from xretrieve.mining.margin import Margin, Mode
from xretrieve.mining.sources import TextEncoder

BUCC_LANGUAGES = ("de", "fr", "ru", "zh")
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def evaluate_bucc(
    data_dir: Path | str,
    langs: Sequence[str] = BUCC_LANGUAGES,
    *,
    model: str | Path | TextEncoder | None = "default",
    emb_dir: Path | str | None = None,
    tune_split: str = "training",
    eval_split: str = "test",
    k: int = 4,
    margin: Margin | str = Margin.RATIO,
    mode: Mode | str = Mode.MAX,
    device: str = "auto",
    text_prefix: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, BuccResult]:
    """BUCC 2018 per language of ``DIR/bucc2018/{xx}-en.{split}.*``: threshold tuned on
    ``tune_split``'s gold, precision/recall/F1 (percent) on ``eval_split``.

    Embeddings come from ``model`` (a name for ``load_encoder`` or a loaded encoder) or, when
    ``emb_dir`` is given, from ``.npy`` files mirroring ``data_dir`` (then ``model`` must be
    None). Raises ``XRetrieveError`` listing every language whose files are missing or bad, and
    ``ArgumentError`` naming a bad argument, before any reading."""
    from xretrieve.evaluation.bucc import score_bucc as score_languages
    from xretrieve.formats import bucc_paths, read_bucc_split
    from xretrieve.mining.api import mining_config
    from xretrieve.mining.sources import embed_pair, embedding_source

    config = mining_config(k, margin, mode, device)
    data_dir, langs, model, emb_dir = _common_arguments(
        data_dir, langs, model, emb_dir, text_prefix, progress
    )
    tune_split = _split_name("tune_split", tune_split)
    eval_split = _split_name("eval_split", eval_split)
    _check_layout_folder(data_dir / "bucc2018", "bucc2018/{xx}-en.{split}.{xx,en,gold}")
    units = [(lang, split) for lang in langs for split in dict.fromkeys((tune_split, eval_split))]
    _check_files_exist(
        path for lang, split in units for path in bucc_paths(data_dir, lang, split)[:2]
    )
    read = _read_all(units, lambda unit: read_bucc_split(data_dir, *unit))
    splits = {lang: (read[(lang, tune_split)], read[(lang, eval_split)]) for lang in langs}
    source = embedding_source(
        _model_or_directory(model, emb_dir),
        Path(emb_dir) if emb_dir is not None else None,
        data_dir,
        text_prefix=text_prefix,
        progress=progress,
    )
    if emb_dir is not None:
        _check_embedding_files(Path(emb_dir), data_dir, _bucc_corpora(splits))
    results = {}
    for lang, (tune, evaluation) in splits.items():
        tune_src, tune_tgt = embed_pair(source, tune.src, tune.tgt, progress)
        eval_src, eval_tgt = embed_pair(source, evaluation.src, evaluation.tgt, progress)
        results[lang] = score_languages(
            tune, tune_src, tune_tgt, evaluation, eval_src, eval_tgt, config, progress=progress
        )
    return results


def evaluate_tatoeba(
    data_dir: Path | str,
    langs: Sequence[str],
    *,
    model: str | Path | TextEncoder | None = "default",
    emb_dir: Path | str | None = None,
    device: str = "auto",
    text_prefix: str | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, TatoebaResult]:
    """Tatoeba top-1 accuracy (percent, both directions) per language of
    ``DIR/tatoeba/tatoeba.{xxx}-eng.*``; ``model`` and ``emb_dir`` as in ``evaluate_bucc``.
    Raises ``XRetrieveError`` listing every language whose files are missing or bad, and
    ``ArgumentError`` naming a bad argument, before any reading."""
    from xretrieve.evaluation.tatoeba import score_tatoeba as score_pair
    from xretrieve.formats import read_tatoeba, tatoeba_paths
    from xretrieve.mining.api import check_search_device
    from xretrieve.mining.sources import embed_pair, embedding_source

    device = check_search_device(device)
    data_dir, langs, model, emb_dir = _common_arguments(
        data_dir, langs, model, emb_dir, text_prefix, progress
    )
    _check_layout_folder(data_dir / "tatoeba", "tatoeba/tatoeba.{xxx}-eng.{xxx,eng}")
    _check_files_exist(path for lang in langs for path in tatoeba_paths(data_dir, lang))
    pairs = _read_all(langs, lambda lang: read_tatoeba(data_dir, lang))
    source = embedding_source(
        _model_or_directory(model, emb_dir),
        Path(emb_dir) if emb_dir is not None else None,
        data_dir,
        text_prefix=text_prefix,
        progress=progress,
    )
    if emb_dir is not None:
        corpora = [corpus for pair in pairs.values() for corpus in (pair.src, pair.eng)]
        _check_embedding_files(Path(emb_dir), data_dir, corpora)
    results = {}
    for lang, pair in pairs.items():
        xx_emb, en_emb = embed_pair(source, pair.src, pair.eng, progress)
        results[lang] = score_pair(xx_emb, en_emb, device=device, progress=progress)
    return results


def _common_arguments(
    data_dir: object,
    langs: object,
    model: object,
    emb_dir: object,
    text_prefix: object,
    progress: object,
) -> tuple[Path, list[str], str | Path | TextEncoder | None, Path | None]:
    """The checked ``data_dir``, ``langs``, ``model`` and ``emb_dir`` of both evaluations;
    ``ArgumentError`` naming the first bad one (``text_prefix`` and ``progress`` too)."""
    check_optional_str("text_prefix", text_prefix)
    check_progress(progress)
    return (
        check_path("data_dir", data_dir),
        _languages(langs),
        check_model("model", model),
        None if emb_dir is None else check_path("emb_dir", emb_dir),
    )


def _languages(langs: object) -> list[str]:
    """Language codes from a list of str or one comma-separated str ("de,fr")."""
    codes = langs.split(",") if isinstance(langs, str) else check_texts("langs", langs)
    names = [lang.strip() for lang in codes if lang.strip()]
    if not names:
        raise ArgumentError("langs", "names no language (give e.g. ['de', 'fr'] or 'de,fr')")
    return names


def _split_name(name: str, split: object) -> str:
    if not isinstance(split, str) or not split.strip():
        raise ArgumentError(name, f"must be a split name such as 'test', not {split!r}")
    return split


def _model_or_directory(
    model: str | Path | TextEncoder | None, emb_dir: Path | str | None
) -> str | Path | TextEncoder | None:
    """With ``emb_dir`` the API's default ``model="default"`` steps aside; anything else given
    with it is an error (``embedding_source``)."""
    return None if emb_dir is not None and model == "default" else model


def _check_layout_folder(folder: Path, layout: str) -> None:
    if not folder.is_dir():
        raise InputError(folder, f"no such directory: the data directory must hold {layout}")


def _check_files_exist(paths: Iterable[Path]) -> None:
    """Every data file exists; all the missing ones are reported together."""
    _raise_all([InputError(path, "file not found") for path in paths if not path.is_file()])


def _read_all(units: list[K], read: Callable[[K], T]) -> dict[K, T]:
    """``read(unit)`` for every unit (a language, or a language and split); the failures of all
    of them are raised together."""
    done: dict[K, T] = {}
    failures: list[XRetrieveError] = []
    for unit in units:
        try:
            done[unit] = read(unit)
        except InputError as error:
            failures.append(error)
    _raise_all(failures)
    return done


def _raise_all(failures: list[XRetrieveError]) -> None:
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise XRetrieveError(
            f"{len(failures)} problems with the input, nothing was scored: "
            + "; ".join(str(error) for error in failures)
        )


def _bucc_corpora(splits: dict[str, tuple[BuccSplit, BuccSplit]]) -> list[Corpus]:
    return [
        corpus for pair in splits.values() for split in pair for corpus in (split.src, split.tgt)
    ]


def _check_embedding_files(emb_dir: Path, data_dir: Path, corpora: list[Corpus]) -> None:
    """Every corpus has its ``.npy`` under ``emb_dir`` (their contents are checked on reading)."""
    from xretrieve.formats import embedding_path

    paths = dict.fromkeys(embedding_path(emb_dir, data_dir, c.path) for c in corpora)
    _raise_all(
        [InputError(path, "embeddings file not found") for path in paths if not path.is_file()]
    )


__all__ = ["BUCC_LANGUAGES", "evaluate_bucc", "evaluate_tatoeba"]
