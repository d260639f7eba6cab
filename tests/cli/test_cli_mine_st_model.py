"""``xretrieve mine --model DIR`` of a sentence-transformers folder mines what
sentence-transformers' own embeddings of the same texts mine (``--src-emb``/``--tgt-emb``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from st_models import ST_CASES, make_st_folder, spread_dense_layer, st_encode
from typer.testing import CliRunner

from xretrieve.cli.app import app

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()
WORDS = (
    "der die und den von zu das mit sich des auf für ist im dem nicht ein eine als auch "
    "cat dog house tree water city river book car sun moon day night small big red green"
).split()


def _texts(n_pairs: int = 24, n_extra: int = 8, seed: int = 0) -> tuple[list[str], list[str]]:
    """Source sentences and their targets (the same words, one of them changed, in shuffled
    order), with unpaired sentences on both sides: planted pairs any encoder finds."""
    rng = np.random.default_rng(seed)

    def sentence() -> list[str]:
        return list(rng.choice(WORDS, size=int(rng.integers(5, 9))))

    src = [sentence() for _ in range(n_pairs)]
    tgt = []
    for words in src:
        changed = list(words)
        changed[int(rng.integers(len(changed)))] = str(rng.choice(WORDS))
        tgt.append(changed)
    src += [sentence() for _ in range(n_extra)]
    tgt += [sentence() for _ in range(n_extra)]
    order = rng.permutation(len(tgt))
    return [" ".join(words) for words in src], [" ".join(tgt[i]) for i in order]


def _mine(tmp_path: Path, name: str, *args: str) -> list[list[str]]:
    out = tmp_path / f"{name}.tsv"
    result = runner.invoke(
        app,
        ["mine", "--no-progress", "--device", "cpu", "--src-file", str(tmp_path / "src.txt"),
         "--tgt-file", str(tmp_path / "tgt.txt"), "--out", str(out), *args],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return [line.split("\t") for line in out.read_text(encoding="utf-8").splitlines()]


def test_labse_shaped_folder_mines_as_its_sentence_transformers_embeddings(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    src, tgt = _texts()
    folder = spread_dense_layer(make_st_folder(tmp_path / "labse", **ST_CASES["labse"]), src + tgt)
    (tmp_path / "src.txt").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "tgt.txt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    np.save(tmp_path / "src.npy", st_encode(folder, src))
    np.save(tmp_path / "tgt.npy", st_encode(folder, tgt))
    reference = _mine(
        tmp_path, "reference", "--src-emb", str(tmp_path / "src.npy"),
        "--tgt-emb", str(tmp_path / "tgt.npy"),
    )  # fmt: skip
    mined = _mine(tmp_path, "model", "--model", str(folder))
    assert len(reference) >= 12
    assert [row[1:] for row in mined] == [row[1:] for row in reference]
    np.testing.assert_allclose(
        [float(row[0]) for row in mined], [float(row[0]) for row in reference], atol=1e-4
    )
