"""Zero-shot cross-lingual evaluation: a task's validation may map languages to files; metrics
per language, their mean, and resource-group means as ``xretrieve evaluate`` groups languages."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trainer_data

from xretrieve.core.errors import InputError
from xretrieve.trainer import Trainer, config_from_dict
from xretrieve.trainer.crosslingual import language_group

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _raw(checkpoint: Path, out: Path, task: dict) -> dict:
    return trainer_data.run_config(
        checkpoint,
        out,
        [task],
        optim={"max_steps": 1, "learning_rate": 0.0},
        evaluation={"eval_every": 1},
    )


def test_language_groups_of_iso_639_1_codes() -> None:
    assert [language_group(x) for x in ("de", "deu", "sw", "hi", "xx")] == [
        "high",
        "high",
        "low",
        "high",
        "unknown",
    ]


def test_validation_per_language(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    task = trainer_data.write_pair_task(tmp_path / "data")
    files = {}
    for seed, lang in enumerate(("en", "de", "sw")):
        records = trainer_data.pair_records(12 + 4 * seed, random.Random(10 + seed))
        files[lang] = str(trainer_data._write_jsonl(tmp_path / f"xnli.{lang}.jsonl", records))
    languages = {**task, "validation": files}
    metrics = Trainer(config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / "a", languages)))
    metrics = metrics.train().history[-1].metrics
    # Each language's score is what a run validating on that file alone gets.
    for lang in files:
        alone = {**task, "validation": files[lang]}
        run = Trainer(config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / lang, alone)))
        assert (
            metrics[f"pairs/{lang}/accuracy"] == run.train().history[-1].metrics["pairs/accuracy"]
        )
    en, de, sw = (metrics[f"pairs/{lang}/accuracy"] for lang in ("en", "de", "sw"))
    assert metrics["pairs/accuracy"] == pytest.approx((en + de + sw) / 3)
    assert metrics["pairs/high/accuracy"] == pytest.approx((en + de) / 2)
    assert metrics["pairs/low/accuracy"] == pytest.approx(sw)
    assert "pairs/medium/accuracy" not in metrics


def test_bad_language_file_is_named(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    task = trainer_data.write_pair_task(tmp_path / "data")
    bad = tmp_path / "xnli.de.jsonl"
    bad.write_text('{"sentence1": "a", "sentence2": "b", "gold_label": "maybe"}\n')
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", {**task, "validation": {"de": str(bad)}})
    with pytest.raises(InputError, match=r"xnli.de.jsonl:1: unknown label 'maybe'"):
        Trainer(config_from_dict(raw)).train()
    raw["tasks"][0]["validation"] = {}
    with pytest.raises(InputError, match="at least one entry"):
        config_from_dict(raw)
