"""The Python API from the top package: ``load_encoder``, ``mine``, ``mine_embeddings``,
``evaluate_bucc``, ``evaluate_tatoeba``, and the documented example (README.md's "Python API",
repeated in docs/python-api.md) run on a tiny model."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mining_fixtures import unit_rows, write_planted_split, write_planted_tatoeba
from typer.testing import CliRunner

import xretrieve
from xretrieve.cli.app import app
from xretrieve.core.errors import XRetrieveError
from xretrieve.mining.api import DEFAULT_RATIO_THRESHOLD
from xretrieve.mining.margin import Margin, MiningConfig, Mode

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
API_PAGE = ROOT / "docs" / "python-api.md"


class TableEncoder:
    """Looks texts up in a table; records every call."""

    name = "table"

    def __init__(self, table: dict[str, np.ndarray], mining_threshold=None) -> None:
        self.table = table
        self.dim = next(iter(table.values())).shape[0]
        self.calls: list[list[str]] = []
        self.mining_threshold = mining_threshold

    def encode(self, texts, progress=None) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.table[text] for text in texts]).astype(np.float32)


def brute_force_ratio_max(src: np.ndarray, tgt: np.ndarray, k: int):
    """Ratio margin + max mode by hand: full similarity matrix, sequential greedy."""
    sims = unit_rows(src) @ unit_rows(tgt).T
    k_fwd, k_bwd = min(k, tgt.shape[0]), min(k, src.shape[0])
    fwd_mean = np.sort(sims, axis=1)[:, ::-1][:, :k_fwd].mean(axis=1)
    bwd_mean = np.sort(sims, axis=0)[::-1][:k_bwd].mean(axis=0)
    ratio = sims / ((fwd_mean[:, None] + bwd_mean[None, :]) / 2)
    edges = []
    for i in range(src.shape[0]):
        cand = np.argsort(-sims[i])[:k_fwd]
        j = cand[np.argmax(ratio[i, cand])]
        edges.append((ratio[i, j], i, j))
    for j in range(tgt.shape[0]):
        cand = np.argsort(-sims[:, j])[:k_bwd]
        i = cand[np.argmax(ratio[cand, j])]
        edges.append((ratio[i, j], i, j))
    taken_src, taken_tgt, kept = set(), set(), []
    for position in sorted(range(len(edges)), key=lambda p: -edges[p][0]):
        score, i, j = edges[position]
        if i not in taken_src and j not in taken_tgt:
            taken_src.add(i)
            taken_tgt.add(j)
            kept.append((int(i), int(j), float(score)))
    return kept


@pytest.fixture()
def planted():
    rng = np.random.default_rng(7)
    base = unit_rows(rng.standard_normal((12, 16)))
    src = np.concatenate([base, unit_rows(rng.standard_normal((6, 16)))])
    tgt = np.concatenate(
        [
            unit_rows(base + 0.2 * rng.standard_normal(base.shape)),
            unit_rows(rng.standard_normal((5, 16))),
        ]
    )
    src_texts = [f"quelle {i}" for i in range(len(src))]
    tgt_texts = [f"target {i}" for i in range(len(tgt))]
    return src_texts, tgt_texts, src, tgt


def test_mine_embeddings_equals_brute_force(planted) -> None:
    _, _, src, tgt = planted
    pairs = xretrieve.mine_embeddings(src, tgt, k=3, threshold=0.0, device="cpu")
    expected = brute_force_ratio_max(src, tgt, 3)
    got = list(zip(pairs.src_index.tolist(), pairs.tgt_index.tolist(), strict=True))
    assert got == [(i, j) for i, j, _ in expected]
    np.testing.assert_allclose(pairs.score, [s for _, _, s in expected], rtol=1e-5)
    # The default threshold of the ratio margin without a model: 1.05.
    default = xretrieve.mine_embeddings(src, tgt, k=3, device="cpu")
    assert len(default) == int((pairs.score >= DEFAULT_RATIO_THRESHOLD).sum()) > 0
    assert np.all(default.score >= DEFAULT_RATIO_THRESHOLD)


def test_mine_texts_maps_back_to_input_rows_and_embeds_each_text_once(planted) -> None:
    src_texts, tgt_texts, src, tgt = planted
    table = dict(zip(src_texts, src, strict=True)) | dict(zip(tgt_texts, tgt, strict=True))
    encoder = TableEncoder(table)
    # A repeated source sentence: embedded once, pairs point at its first occurrence.
    src_input = [*src_texts, src_texts[0]]
    pairs = xretrieve.mine(src_input, tgt_texts, model=encoder, k=3, device="cpu")
    assert [len(call) for call in encoder.calls] == [len(src_texts), len(tgt_texts)]
    reference = xretrieve.mine_embeddings(src, tgt, k=3, device="cpu")
    np.testing.assert_array_equal(pairs.src_index, reference.src_index)
    np.testing.assert_array_equal(pairs.tgt_index, reference.tgt_index)
    rows = pairs.to_rows(src_input, tgt_texts)
    assert rows[0] == (
        float(pairs.score[0]),
        src_input[pairs.src_index[0]],
        tgt_texts[pairs.tgt_index[0]],
    )
    # Planted pairs are row i <-> row i among the first 12; all of them are mined.
    planted_pairs = [
        (s, t) for s, t in zip(pairs.src_index, pairs.tgt_index, strict=True) if s < 12
    ]
    assert len(planted_pairs) == 12 and all(s == t for s, t in planted_pairs)


def test_mine_uses_the_models_calibrated_threshold(planted) -> None:
    src_texts, tgt_texts, src, tgt = planted
    table = dict(zip(src_texts, src, strict=True)) | dict(zip(tgt_texts, tgt, strict=True))
    everything = xretrieve.mine(
        src_texts, tgt_texts, model=TableEncoder(table), k=3, threshold=0.0, device="cpu"
    )
    cut = float(np.median(everything.score))
    calibrated = {"margin": "ratio", "k": 3, "threshold": cut}
    pairs = xretrieve.mine(
        src_texts, tgt_texts, model=TableEncoder(table, calibrated), k=3, device="cpu"
    )
    assert len(pairs) == int((everything.score >= cut).sum())
    # Calibrated for another k: the generic default applies.
    other_k = xretrieve.mine(
        src_texts, tgt_texts, model=TableEncoder(table, calibrated), k=4, device="cpu"
    )
    assert np.all(other_k.score >= DEFAULT_RATIO_THRESHOLD)


def test_enums_or_strings_and_bad_values(planted) -> None:
    _, _, src, tgt = planted
    by_enum = xretrieve.mine_embeddings(src, tgt, margin=Margin.DISTANCE, mode=Mode.INTERSECT)
    by_name = xretrieve.mine_embeddings(src, tgt, margin="distance", mode="intersect")
    np.testing.assert_array_equal(by_enum.src_index, by_name.src_index)
    # No default threshold for the distance margin: every intersecting pair is kept.
    everything = xretrieve.mine_embeddings(
        src, tgt, margin="distance", mode="intersect", threshold=-10.0
    )
    assert len(by_name) == len(everything) > 0
    with pytest.raises(XRetrieveError, match="margin must be one of ratio, distance, absolute"):
        xretrieve.mine_embeddings(src, tgt, margin="cosine")
    with pytest.raises(XRetrieveError, match="dimension 16, tgt_emb 8"):
        xretrieve.mine_embeddings(src, tgt[:, :8])
    with pytest.raises(XRetrieveError, match="finite"):
        xretrieve.mine_embeddings(src, tgt, threshold=float("nan"))


def test_evaluate_bucc_and_tatoeba_return_what_the_cli_prints(tmp_path: Path) -> None:
    for seed, lang in enumerate(("de", "fr")):
        write_planted_split(tmp_path / "data", tmp_path / "emb", "training", lang=lang, seed=seed)
        write_planted_split(tmp_path / "data", tmp_path / "emb", "test", lang=lang, seed=9 + seed)
    results = xretrieve.evaluate_bucc(
        tmp_path / "data", ["de", "fr"], emb_dir=tmp_path / "emb", device="cpu"
    )
    assert isinstance(results["de"], xretrieve.BuccResult)
    cli = CliRunner().invoke(
        app,
        ["bucc", "--no-progress", "--device", "cpu", "--data-dir", str(tmp_path / "data"),
         "--langs", "de,fr", "--emb-dir", str(tmp_path / "emb"), "--json"],
    )  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout) == {
        lang: dataclasses.asdict(result) for lang, result in results.items()
    }
    write_planted_tatoeba(tmp_path / "data", tmp_path / "emb", "deu")
    tatoeba = xretrieve.evaluate_tatoeba(
        tmp_path / "data", ["deu"], emb_dir=tmp_path / "emb", device="cpu"
    )
    assert tatoeba["deu"] == xretrieve.TatoebaResult(100.0, 100.0, tatoeba["deu"].n)


def test_import_is_lazy() -> None:
    code = (
        "import sys, xretrieve; xretrieve.__version__; "
        "print(sorted(m for m in ('torch', 'faiss', 'onnxruntime', 'transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
    assert set(xretrieve.__all__) <= set(dir(xretrieve))


def python_example(page: Path, heading: str) -> str:
    """The first ``python`` block after ``heading`` on ``page``; fails naming the page when the
    example has moved."""
    text = page.read_text(encoding="utf-8")
    assert heading in text, f"{page} has no {heading!r} section: where did the example go?"
    found = re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S)
    assert found, f"{page}'s {heading!r} section holds no python example"
    return found.group(1)


def readme_example() -> str:
    return python_example(README, "## Python API")


def test_the_api_page_shows_the_readme_example() -> None:
    assert python_example(API_PAGE, "# Python API") == readme_example()


def test_readme_example_runs_on_a_tiny_model(tiny_xlmr_checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    code = readme_example()
    assert '"default"' in code
    code = code.replace('"default"', repr(str(tiny_xlmr_checkpoint)))
    namespace: dict = {}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code, "README.md", "exec"), namespace)
    vectors = namespace["vectors"]
    assert vectors.dtype == np.float32 and vectors.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    pairs = namespace["pairs"]
    assert isinstance(pairs, xretrieve.MinedPairs)
    assert output.getvalue().count("\n") == len(pairs)


def test_mining_config_is_the_configs_type() -> None:
    assert xretrieve.MiningConfig is MiningConfig


# ---- arguments are checked, and a bad one is named (issue 17 item 9) -------------------------


def test_mine_embeddings_refuses_non_finite_rows(planted, tmp_path) -> None:
    """A NaN or infinite row used to be dropped silently and the other pairs returned; the CLI
    refuses the same data. Both sides, arrays and memory maps."""
    from xretrieve.core.errors import ArgumentError

    _, _, src, tgt = planted
    bad_src = src.copy()
    bad_src[3, 5] = np.nan
    with pytest.raises(ArgumentError, match="src_emb row 3 holds NaN or infinite") as caught:
        xretrieve.mine_embeddings(bad_src, tgt, device="cpu")
    assert caught.value.argument == "src_emb"
    bad_tgt = tgt.astype(np.float16)
    bad_tgt[7, 0] = np.inf
    np.save(tmp_path / "tgt.npy", bad_tgt)
    mapped = np.load(tmp_path / "tgt.npy", mmap_mode="r")
    with pytest.raises(ArgumentError, match="tgt_emb row 7 holds NaN or infinite"):
        xretrieve.mine_embeddings(src, mapped, device="cpu")


@pytest.mark.parametrize("side", ["src_texts", "tgt_texts"])
def test_mine_refuses_a_bare_string(planted, side) -> None:
    """``mine("Der Hund", "The dog")`` mined single characters."""
    from xretrieve.core.errors import ArgumentError

    src_texts, tgt_texts, src, tgt = planted
    encoder = TableEncoder(dict(zip(src_texts, src, strict=True)))
    texts = {"src_texts": ["quelle 0"], "tgt_texts": ["quelle 1"]}
    texts[side] = "Der Hund"
    with pytest.raises(ArgumentError, match=f"{side} must be a list of sentences, not one str"):
        xretrieve.mine(texts["src_texts"], texts["tgt_texts"], model=encoder)
    assert encoder.calls == []


BAD_MINING_ARGUMENTS = [
    ({"k": 0}, "k must be an integer >= 1, not 0"),
    ({"k": 2.5}, "k must be an integer >= 1, not 2.5"),
    ({"k": True}, "k must be an integer >= 1, not True"),
    ({"k": "4"}, "k must be an integer >= 1, not '4'"),
    ({"threshold": "1.0"}, "threshold must be a finite number or None, not '1.0'"),
    ({"threshold": float("inf")}, "threshold must be a finite number, not inf"),
    ({"margin": 3}, "unknown margin 3; margin must be one of ratio, distance, absolute"),
    (
        {"mode": "both"},
        "unknown mode 'both'; mode must be one of forward, backward, intersect, max",
    ),
    ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N, not 'gpu'"),
    ({"device": 0}, "device must be auto, cpu, cuda or cuda:N, not 0"),
    ({"gpu_memory": "1GB"}, "gpu_memory must be an integer >= 1, not '1GB'"),
    ({"gpu_memory": 0}, "gpu_memory must be an integer >= 1, not 0"),
    ({"progress": "yes"}, "progress must be a callable or None, not str"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_MINING_ARGUMENTS)
def test_mine_embeddings_names_a_bad_argument(planted, kwargs, message) -> None:
    from xretrieve.core.errors import ArgumentError

    _, _, src, tgt = planted
    with pytest.raises(ArgumentError, match=re.escape(message)):
        xretrieve.mine_embeddings(src, tgt, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        *BAD_MINING_ARGUMENTS,
        ({"src_texts": ["fine", b"bytes"]}, "src_texts[1] must be a str, not bytes"),
        ({"tgt_texts": [None]}, "tgt_texts[0] must be a str, not NoneType"),
        ({"tgt_texts": [1, 2]}, "tgt_texts[0] must be a str, not int"),
        ({"src_texts": []}, "src_texts must hold at least one sentence"),
        ({"src_texts": 7}, "src_texts must be a list of str, not int"),
        ({"model": 5}, "model must be a model name or folder"),
        ({"text_prefix": 1}, "text_prefix must be a str or None, not int"),
    ],
)
def test_mine_names_a_bad_argument_before_any_work(planted, kwargs, message) -> None:
    from xretrieve.core.errors import ArgumentError

    src_texts, tgt_texts, src, tgt = planted
    encoder = TableEncoder(dict(zip(src_texts, src, strict=True)))
    arguments = {"src_texts": src_texts, "tgt_texts": tgt_texts, "model": encoder} | kwargs
    with pytest.raises(ArgumentError, match=re.escape(message)):
        xretrieve.mine(**arguments)
    assert encoder.calls == []  # nothing was embedded


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_tokens": 0}, "batch_tokens must be an integer >= 1, not 0"),
        ({"batch_tokens": 2.5}, "batch_tokens must be an integer >= 1, not 2.5"),
        ({"window": None}, "window must be an integer >= 1, not None"),
        ({"layers": "-1"}, "layers must be a non-empty list of integers, not '-1'"),
        ({"layers": [-1, 1.5]}, "layers[1] must be an integer"),
        ({"dtype": "int8"}, "dtype must be one of auto, fp16, fp32, not 'int8'"),
        ({"pooling": "median"}, "unknown pooling 'median'; pooling must be one of mean, cls, max"),
        ({"text_prefix": b"query: "}, "text_prefix must be a str or None, not bytes"),
        ({"projection": "yes"}, "projection must be True or False, not 'yes'"),
        ({"model": 3}, "model must be a model name or folder (str or pathlib.Path) or None"),
        ({"progress": 1}, "progress must be a callable or None, not int"),
    ],
)
def test_load_encoder_names_a_bad_argument(kwargs, message, tmp_path, monkeypatch) -> None:
    from xretrieve.core.errors import ArgumentError

    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    arguments = {"model": str(tmp_path / "no-such-model")} | kwargs
    with pytest.raises(ArgumentError, match=re.escape(message)):
        xretrieve.load_encoder(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_dir": 5}, "data_dir must be a path (str or pathlib.Path), not int"),
        ({"langs": ["de", 1]}, "langs[1] must be a str, not int"),
        ({"langs": []}, "langs names no language"),
        ({"k": 0}, "k must be an integer >= 1, not 0"),
        ({"tune_split": None}, "tune_split must be a split name such as 'test', not None"),
        ({"model": 2}, "model must be a model name or folder"),
        ({"emb_dir": 1.5}, "emb_dir must be a path (str or pathlib.Path), not float"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N, not 'tpu'"),
    ],
)
def test_evaluate_bucc_names_a_bad_argument(kwargs, message, tmp_path) -> None:
    from xretrieve.core.errors import ArgumentError

    arguments = {"data_dir": tmp_path, "langs": ["de"], "model": None} | kwargs
    with pytest.raises(ArgumentError, match=re.escape(message)):
        xretrieve.evaluate_bucc(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"langs": "deu"}, None),  # one comma-separated string is fine (the CLI's form)
        ({"langs": [b"deu"]}, "langs[0] must be a str, not bytes"),
        ({"device": None}, "device must be auto, cpu, cuda or cuda:N, not None"),
        ({"text_prefix": 3}, "text_prefix must be a str or None, not int"),
    ],
)
def test_evaluate_tatoeba_names_a_bad_argument(kwargs, message, tmp_path) -> None:
    from xretrieve.core.errors import ArgumentError, InputError

    write_planted_tatoeba(tmp_path / "data", tmp_path / "emb", "deu")
    arguments = {"data_dir": tmp_path / "data", "langs": ["deu"], "emb_dir": tmp_path / "emb"}
    arguments |= {"device": "cpu"} | kwargs
    if message is None:
        assert xretrieve.evaluate_tatoeba(**arguments)["deu"].n > 0
        return
    with pytest.raises(ArgumentError, match=re.escape(message)):
        xretrieve.evaluate_tatoeba(**arguments)
    assert not issubclass(InputError, ArgumentError)


def test_argument_error_is_an_xretrieve_error_and_pickles() -> None:
    import pickle

    from xretrieve.core.errors import ArgumentError

    error = ArgumentError("k", "must be an integer >= 1, not 0")
    assert isinstance(error, XRetrieveError) and str(error) == "k must be an integer >= 1, not 0"
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ArgumentError and str(again) == str(error)
    assert (again.argument, again.detail) == ("k", "must be an integer >= 1, not 0")
    assert xretrieve.ArgumentError is ArgumentError
