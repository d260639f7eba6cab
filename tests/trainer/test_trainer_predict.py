"""Prediction and validation with XTREME's metrics: tagging validated by seqeval's chunk F1 over
whole sentences (long ones in windows, every word tagged), QA validation normalised as MLQA for
an MLQA language, a fine-tuned checkpoint's ``Predictor`` scoring as the trainer's validation
did, and a checkpoint's saved task config read back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from xretrieve.core.errors import InputError
from xretrieve.evaluation.metrics import AnswerNormalization, accuracy, span_f1
from xretrieve.trainer import Trainer, config_from_dict
from xretrieve.trainer.config import TaskConfig, TaskType, TrainConfig, task_config_from_json
from xretrieve.trainer.readers import QAExample, TagExample, TaskData
from xretrieve.trainer.tasks import RunContext
from xretrieve.trainer.tasks.qa import ExtractiveQATask
from xretrieve.trainer.tasks.tagging import TaggingTask

TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


def _text(checkpoint: Path, max_length: int):
    from xretrieve.trainer.loop import load_encoder_and_tokenizer, text_settings

    encoder, tokenizer = load_encoder_and_tokenizer(checkpoint)
    return encoder.eval(), text_settings(encoder, tokenizer, max_length)


def _run() -> RunContext:
    return RunContext(torch.device("cpu"), 4, lambda: torch.autocast("cpu", enabled=False))


def _tag_config(**values) -> TaskConfig:
    return TaskConfig(name="ner", type=TaskType.TAGGING, train_files=(Path("x"),), **values)


def test_tagging_validation_is_seqeval_f1_over_every_word_of_long_sentences(
    tiny_xlmr_checkpoint,
) -> None:
    encoder, text = _text(tiny_xlmr_checkpoint, max_length=8)
    words = tuple(f"word{i}" for i in range(20))  # far beyond 8 sub-tokens
    long = TagExample(words, tuple(TAGS[i % 5] for i in range(20)))
    short = TagExample(("Anna", "in", "Bonn"), ("B-PER", "O", "B-LOC"))
    data = TaskData((long, short), labels=TAGS)
    task = TaggingTask(_tag_config(preset="panx"), text, data, data)
    # Every word of the long sentence is trained on, in consecutive windows.
    labelled = [sum(t != -100 for t in f["tags"]) for f in task.train_features if f["example"] == 0]
    assert len(labelled) > 1 and sum(labelled) == 20
    task.head.eval()
    with torch.no_grad():
        predicted = task.predict(encoder, _run())
        metrics = task.evaluate(encoder, _run())
    assert [len(tags) for tags in predicted] == [20, 3]
    gold = [list(long.tags), list(short.tags)]
    assert metrics == {
        **span_f1(gold, predicted).as_dict(),
        "accuracy": accuracy(sum(gold, []), sum(predicted, [])),
    }
    assert task.main_metric == "f1"
    ccg = TaggingTask(_tag_config(preset="ccg"), text, data, data)
    ccg.head.eval()
    with torch.no_grad():
        assert set(ccg.evaluate(encoder, _run())) == {"accuracy"}
    assert ccg.main_metric == "accuracy"


def test_qa_validation_normalises_mlqa_answers_per_language(tiny_xlmr_checkpoint) -> None:
    _, text = _text(tiny_xlmr_checkpoint, max_length=48)
    context = "el gato come."
    example = QAExample("q1", "¿qué?", context, (("el gato", 0),))
    data = TaskData((example,))
    scores = {}
    for kind in AnswerNormalization:
        config = TaskConfig(
            name="mlqa",
            type=TaskType.EXTRACTIVE_QA,
            train_files=(Path("x"),),
            answer_normalization=kind,
            language="es",
        )
        task = ExtractiveQATask(config, text, data, data)
        task.predict = lambda encoder, run: {"q1": "gato"}  # MLQA's Spanish drops "el"
        scores[kind] = task.evaluate(None, _run())["exact_match"]
    assert scores == {AnswerNormalization.SQUAD: 0.0, AnswerNormalization.MLQA: 100.0}


def test_mlqa_normalisation_needs_an_mlqa_validation_language() -> None:
    entry = {
        "name": "qa",
        "preset": "squad",
        "train": "train.json",
        "answer_normalization": "mlqa",
        "validation": {"es": "dev-es.json", "fi": "dev-fi.json"},
    }
    with pytest.raises(InputError, match="answer_normalization.*languages? fi"):
        config_from_dict({"tasks": [entry]})
    entry["validation"] = {"es": "dev-es.json", "de": "dev-de.json"}
    config = config_from_dict({"tasks": [entry]})
    assert config.tasks[0].answer_normalization is AnswerNormalization.MLQA


def test_saved_task_configs_read_back() -> None:
    task = TaskConfig(
        name="mlqa",
        type=TaskType.EXTRACTIVE_QA,
        train_files=(Path("/d/train.json"),),
        validation_languages={"de": Path("/d/de.json")},
        preset="squad",
        fields={"id": "id", "answers": ("answers", "alt")},
        labels=None,
        max_length=64,
        answer_normalization=AnswerNormalization.MLQA,
        language="en",
    )
    saved = TrainConfig(tasks=(task,)).to_json()["tasks"][0]
    assert task_config_from_json(saved) == task
    with pytest.raises(InputError, match="lacks type"):
        task_config_from_json({"name": "x", "train_files": []})


def test_a_fine_tuned_checkpoint_predicts_as_its_validation_scored(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    from xretrieve.trainer.predict import Predictor
    from xretrieve.trainer.readers import read_task_file

    lines = []
    for i in range(24):
        lines += [f"Anna\t{'B-PER' if i % 2 else 'O'}", "in\tO", f"Bonn{i}\tB-LOC", ""]
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = config_from_dict(
        {
            "base": str(tiny_xlmr_checkpoint),
            "output_dir": str(tmp_path / "out"),
            "max_length": 32,
            "tasks": [
                {"name": "ner", "preset": "panx", "train": str(train), "validation": str(train)}
            ],
            "optim": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3},
            "evaluation": {"eval_every": 3, "eval_batch_size": 4, "metric": "ner/f1"},
        }
    )
    result = Trainer(config).train()
    best = next(r for r in result.history if r.checkpoint == result.best_checkpoint.name)
    predictor = Predictor(result.best_checkpoint, "ner", device="cpu", batch_size=4)
    data = read_task_file(config.tasks[0], train, predictor.labels, None)
    metrics = predictor.evaluate(data, train)
    assert metrics == {key.split("/", 1)[1]: value for key, value in best.metrics.items()}
    tags = predictor.predict(data, train)
    assert len(tags) == 24 and all(len(sentence) == 3 for sentence in tags)
    with pytest.raises(InputError, match="has no task 'pos'"):
        Predictor(result.best_checkpoint, "pos")


def test_runs_saved_before_answer_normalization_keep_their_identity() -> None:
    """A checkpoint's config hash from before the setting existed still matches (resume works);
    the setting at MLQA is a different run."""
    import copy

    from xretrieve.trainer.checkpoint import config_fingerprint

    entry = {"name": "qa", "preset": "squad", "train": "train.json"}
    current = config_from_dict({"tasks": [entry]}).to_json()
    older = copy.deepcopy(current)
    del older["tasks"][0]["answer_normalization"]
    assert config_fingerprint(older) == config_fingerprint(current)
    mlqa = config_from_dict(
        {"tasks": [{**entry, "answer_normalization": "mlqa", "language": "de"}]}
    ).to_json()
    assert config_fingerprint(mlqa) != config_fingerprint(
        {**current, "tasks": [{**current["tasks"][0], "language": "de"}]}
    )


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("train_config.json", "[]", "expected a JSON object, found an array"),
        ("heads.json", '{"ner": ', "not valid JSON"),
        ("heads.json", None, "not found: a fine-tuned checkpoint"),
    ],
)
def test_a_checkpoints_task_records_are_read_as_json_objects(
    tmp_path: Path, name: str, text: str | None, message: str
) -> None:
    from xretrieve.trainer.predict import checkpoint_tasks

    (tmp_path / "train_config.json").write_text("{}")
    (tmp_path / "heads.json").write_text("{}")
    if text is None:
        (tmp_path / name).unlink()
    else:
        (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=message) as info:
        checkpoint_tasks(tmp_path)
    assert info.value.path == tmp_path / name
