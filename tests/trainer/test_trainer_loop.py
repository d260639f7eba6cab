"""The training loop end to end on a tiny random XLM-R: every task type learns, multi-task runs
write metrics and checkpoints that reload and export, resume is exact, Ctrl-C saves, early
stopping and keep-best work, and the CLI runs a config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trainer_data
from tiny_models import edit_weights

import exporters
from xretrieve.core.errors import InputError
from xretrieve.trainer import Trainer, config_from_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Enough steps and a learning rate high enough for every task type to learn.
LEARNING = {
    "max_length": 48,
    "optim": {"max_steps": 40, "batch_size": 16, "learning_rate": 3e-3, "warmup_ratio": 0.0},
}


def _config(checkpoint: Path, out: Path, tasks: list[dict], **overrides):
    raw = trainer_data.run_config(checkpoint, out, tasks, **LEARNING)
    return config_from_dict(trainer_data.with_overrides(raw, overrides))


@pytest.mark.parametrize("kind", sorted(trainer_data.WRITERS))
def test_loss_goes_down_for_every_task_type(
    kind: str, tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    task = trainer_data.WRITERS[kind](tmp_path / "data")
    losses: list[float] = []
    records = []
    # Comparing the choices needs attention across the pair: a few more steps.
    steps = 60 if kind == "multiple_choice" else 40
    config = _config(tiny_xlmr_checkpoint, tmp_path / "out", [task], optim={"max_steps": steps})
    result = Trainer(
        config, on_log=lambda log: losses.append(log.loss), on_eval=records.append
    ).train()
    assert result.steps == steps and len(losses) == steps
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.9 * first, (kind, losses)
    # The final step is always evaluated and saved.
    assert records[-1].step == steps and records[-1].checkpoint == f"checkpoint-{steps}"
    assert all(0.0 <= value for value in records[-1].metrics.values())


def test_multitask_run_writes_metrics_and_reloadable_checkpoints(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModel

    from xretrieve.trainer.checkpoint import load_heads
    from xretrieve.trainer.tasks import TextSettings, build_task

    data = tmp_path / "data"
    tasks = [writer(data) for writer in trainer_data.WRITERS.values()]
    tasks.append(trainer_data.write_qa_task(data / "v2", v2=True))
    config = _config(
        tiny_xlmr_checkpoint,
        tmp_path / "out",
        tasks,
        optim={"max_steps": 12, "grad_accum": 2},
        sampling={"strategy": "uniform"},
        evaluation={"eval_every": 6, "keep_last": 5},
    )
    trainer = Trainer(config)
    result = trainer.train()
    lines = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [6, 12]
    expected = {
        "pairs/accuracy",
        "choice/accuracy",
        "squad/f1",
        "squad/exact_match",
        "ccg/accuracy",
        "image_text/recall_at_1",
        "mlm/accuracy",
        "mlm/perplexity",
        "squad_v2/f1",
        "squad_v2/has_ans_f1",
        "squad_v2/no_ans_exact_match",
    }
    assert expected <= set(lines[-1]["metrics"])
    mains = [
        "pairs/accuracy",
        "choice/accuracy",
        "squad/f1",
        "ccg/accuracy",
        "image_text/recall_at_1",
        "mlm/accuracy",
        "squad_v2/f1",
    ]
    assert lines[-1]["score"] == pytest.approx(np.mean([lines[-1]["metrics"][m] for m in mains]))
    summary = json.loads((tmp_path / "out/train_summary.json").read_text())
    assert summary["steps"] == 12 and summary["best_checkpoint"] == str(result.best_checkpoint)

    checkpoint = tmp_path / "out/checkpoint-12"
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "heads.safetensors",
        "heads.json",
        "projection.safetensors",
        "projection.json",
        "trainer_state.pt",
        "train_config.json",
    ):
        assert (checkpoint / name).is_file(), name
    reloaded = AutoModel.from_pretrained(checkpoint, use_safetensors=True)
    for (name, a), (_, b) in zip(
        reloaded.state_dict().items(), trainer.encoder.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # Heads reload into freshly built tasks.
    hf = reloaded.config
    text = TextSettings(
        trainer.tokenizer, 48, hf.pad_token_id, False, hf.hidden_size, 0.1, hf.vocab_size
    )
    fresh = [build_task(task, text) for task in config.tasks]
    load_heads(checkpoint, fresh)
    for old, new in zip(trainer.tasks, fresh, strict=True):
        for (name, a), (_, b) in zip(
            old.head.state_dict().items(), new.head.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), (old.name, name)
    heads_info = json.loads((checkpoint / "heads.json").read_text())
    assert heads_info["tasks"]["pairs"]["labels"] == ["entailment", "neutral", "contradiction"]
    projection = json.loads((checkpoint / "projection.json").read_text())
    assert projection == {
        "in_dim": 32,
        "out_dim": 12,
        "pooling": "mean",
        "layer": -1,
        "normalize": True,
        "task": "image_text",
    }
    weights = load_file(str(checkpoint / "projection.safetensors"))
    assert torch.equal(weights["weight"], trainer.tasks[4].head.projection.weight.detach())


def test_checkpoint_exports_with_the_toolkit_exporter(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    task = trainer_data.write_pair_task(tmp_path / "data")
    config = _config(tiny_xlmr_checkpoint, tmp_path / "out", [task], optim={"max_steps": 2})
    result = Trainer(config).train()
    manifest = exporters.export_checkpoint(
        result.last_checkpoint,
        tmp_path / "export",
        exporters.ExportConfig(dtype="fp32", optimize=False),
    )
    assert (tmp_path / "export/model.onnx").is_file()
    assert manifest.dim == 32


def test_image_text_projection_exports_to_the_same_embeddings(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    """The exporter attaches the trained projection: its ONNX embeddings equal the trainer's
    normalised caption embeddings (same masked mean pooling, same projection)."""
    import onnxruntime

    task = trainer_data.write_image_text_task(tmp_path / "data")
    trainer = Trainer(
        _config(tiny_xlmr_checkpoint, tmp_path / "out", [task], optim={"max_steps": 6})
    )
    result = trainer.train()
    export_dir = tmp_path / "export"
    exporters.export_checkpoint(
        result.last_checkpoint,
        export_dir,
        exporters.ExportConfig(dtype="fp32", optimize=False, projection=True),
    )
    image_task = trainer.tasks[0]
    features = image_task.eval_features[:5]
    batch = image_task.collate(features, train=False)
    trainer.encoder.eval()
    image_task.head.eval()
    with torch.no_grad():
        expected = image_task.text_embeddings(trainer.encoder, batch).numpy()
    session = onnxruntime.InferenceSession(
        str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (actual,) = session.run(
        ["embeddings"],
        {
            "input_ids": batch["input_ids"].numpy(),
            "attention_mask": batch["attention_mask"].numpy(),
        },
    )
    assert actual.shape == (5, 12)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_cpu_runs_with_one_seed_are_identical(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tasks = [trainer_data.write_qa_task(data), trainer_data.write_image_text_task(data)]
    overrides = {"optim": {"max_steps": 5}}
    first = Trainer(_config(tiny_xlmr_checkpoint, tmp_path / "a", tasks, **overrides))
    first.train()
    second = Trainer(_config(tiny_xlmr_checkpoint, tmp_path / "b", tasks, **overrides))
    second.train()
    expected, actual = _parameters(first), _parameters(second)
    assert all(torch.equal(expected[name], actual[name]) for name in expected)


def _parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    params = {f"encoder.{k}": v.detach().clone() for k, v in trainer.encoder.state_dict().items()}
    for task in trainer.tasks:
        params.update(
            {f"{task.name}.{k}": v.detach().clone() for k, v in task.head.state_dict().items()}
        )
    return params


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    tasks = [trainer_data.write_pair_task(data), trainer_data.write_mlm_task(data)]
    overrides = {
        "optim": {"max_steps": 12, "grad_accum": 2, "batch_size": 8, "warmup_ratio": 0.25},
        "evaluation": {"eval_every": 4},
    }
    straight = Trainer(_config(tiny_xlmr_checkpoint, tmp_path / "straight", tasks, **overrides))
    straight.train()

    def interrupt_at_six(stage: str, done: int, total: int | None) -> None:
        if done == 6:
            raise KeyboardInterrupt

    config = _config(tiny_xlmr_checkpoint, tmp_path / "stopped", tasks, **overrides)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, progress=interrupt_at_six).train()
    assert (tmp_path / "stopped/checkpoint-6/trainer_state.pt").is_file()
    resumed = Trainer(config)
    result = resumed.train(resume=True)
    assert result.steps == 12
    expected, actual = _parameters(straight), _parameters(resumed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    # The metrics of the resumed run's last evaluation equal the uninterrupted run's.
    assert straight.history[-1].metrics == resumed.history[-1].metrics


def test_ctrl_c_before_an_evaluation_is_due_evaluates_that_step_on_resume(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    """Ctrl-C after step 8 and before its evaluation (the progress callback runs in between):
    the resumed run evaluates step 8 first, so its history and best checkpoint are those of an
    uninterrupted run, not one evaluation short."""
    task = trainer_data.write_pair_task(tmp_path / "data")
    overrides = {
        "optim": {"max_steps": 12, "batch_size": 8},
        "evaluation": {"eval_every": 4, "keep_last": 1},
    }
    straight = Trainer(_config(tiny_xlmr_checkpoint, tmp_path / "straight", [task], **overrides))
    expected = straight.train()

    def interrupt_at_eight(stage: str, done: int, total: int | None) -> None:
        if done == 8:
            raise KeyboardInterrupt

    config = _config(tiny_xlmr_checkpoint, tmp_path / "stopped", [task], **overrides)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, progress=interrupt_at_eight).train()
    result = Trainer(config).train(resume=True)
    lines = (tmp_path / "stopped/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [4, 8, 12]
    assert [r.step for r in result.history] == [8, 12]
    # The record of step 8, written after the resume, averages steps 5-8 (run before the
    # interrupt: the checkpoint carries their loss), as the uninterrupted run's does.
    straight_lines = (tmp_path / "straight/metrics.jsonl").read_text().splitlines()
    want = [json.loads(line)["train_loss"] for line in straight_lines]
    got = [json.loads(line)["train_loss"] for line in lines]
    assert None not in got
    assert got == pytest.approx(want, rel=1e-5)
    assert result.best_score == expected.best_score
    assert result.best_checkpoint.name == expected.best_checkpoint.name


def test_early_stopping_and_keep_best(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    task = trainer_data.write_pair_task(tmp_path / "data")
    config = _config(
        tiny_xlmr_checkpoint,
        tmp_path / "out",
        [task],
        optim={"max_steps": 40, "learning_rate": 0.0},  # a frozen model never improves
        evaluation={"eval_every": 3, "patience": 2, "keep_last": 1, "metric": "pairs/accuracy"},
    )
    result = Trainer(config).train()
    assert result.stopped_early and result.steps == 9
    assert result.best_checkpoint == tmp_path / "out/checkpoint-3"
    remaining = sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*"))
    assert remaining == ["checkpoint-3", "checkpoint-9"]


def test_bad_base_and_bad_image_rows(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    shutil.copytree(tiny_xlmr_checkpoint, remote)
    config_json = json.loads((remote / "config.json").read_text())
    config_json["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config_json))
    task = trainer_data.write_pair_task(tmp_path / "data")
    with pytest.raises(InputError, match="auto_map"):
        Trainer(_config(remote, tmp_path / "out", [task])).train()
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_xlmr_checkpoint, damaged)
    edit_weights(damaged, drop=("embeddings.word_embeddings.weight",), add=("stray.weight",))
    with pytest.raises(InputError, match="missing embeddings.word_embeddings.weight") as info:
        Trainer(_config(damaged, tmp_path / "out", [task])).train()
    assert "unexpected stray.weight" in str(info.value)
    image_task = trainer_data.write_image_text_task(tmp_path / "images", n_images=4)
    np.save(tmp_path / "images/images.npy", np.zeros((2, 12), dtype=np.float32))
    with pytest.raises(InputError, match="has 2 rows but .*image_ids.txt lists 4 ids") as info:
        Trainer(_config(tiny_xlmr_checkpoint, tmp_path / "out", [image_task])).train()
    assert info.value.path == tmp_path / "images/images.npy"
    (tmp_path / "images/image_ids.txt").write_text("img0\nimg1\n")
    with pytest.raises(InputError, match="unknown image id 'img2'") as info:
        Trainer(_config(tiny_xlmr_checkpoint, tmp_path / "out", [image_task])).train()
    assert info.value.path == Path(image_task["train"]) and info.value.line == 7


def test_cli_trains_from_a_toml_config(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from xretrieve.cli.app import app

    task = trainer_data.write_tag_task(tmp_path / "data")
    config = tmp_path / "run.toml"
    config.write_text(
        f'base = "{tiny_xlmr_checkpoint}"\noutput_dir = "out"\nmax_length = 32\n'
        "[optim]\nmax_steps = 4\nbatch_size = 8\n"
        f'[[tasks]]\npreset = "ccg"\ntrain = "{task["train"]}"\nvalidation = "{task["validation"]}"\n'
    )
    result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 4 and summary["last_checkpoint"] == str(
        tmp_path / "out/checkpoint-4"
    )
    assert "ccg/accuracy" in summary["last_metrics"]
    # Resuming a finished run does no more steps.
    again = CliRunner().invoke(app, ["train", str(config), "--no-progress", "--resume"])
    assert again.exit_code == 0 and json.loads(again.stdout)["steps"] == 4
    config.write_text(config.read_text().replace("max_steps", "max_stepz"))
    bad = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert bad.exit_code == 2 and "optim.max_stepz" in bad.stderr


def test_retrieval_eval_of_each_saved_checkpoint(
    tiny_xlmr_checkpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tatoeba and BUCC scores of every saved checkpoint, through the toolkit's own export
    (ONNX Runtime backend) and evaluation functions."""
    import xretrieve

    monkeypatch.setenv("XRETRIEVE_CACHE", str(tmp_path / "cache"))
    retrieval = tmp_path / "retrieval"
    (retrieval / "tatoeba").mkdir(parents=True)
    pairs = [
        ("der Hund", "the dog"),
        ("die Katze", "the cat"),
        ("das Haus", "the house"),
        ("der Baum", "the tree"),
        ("die Stadt", "the city"),
    ]
    (retrieval / "tatoeba/tatoeba.de-eng.de").write_text("".join(f"{de}\n" for de, _ in pairs))
    (retrieval / "tatoeba/tatoeba.de-eng.eng").write_text("".join(f"{en}\n" for _, en in pairs))
    shutil.copytree(
        Path(xretrieve.__file__).parent / "sample_data/bucc2018", retrieval / "bucc2018"
    )
    task = trainer_data.write_pair_task(tmp_path / "data")
    config = _config(
        tiny_xlmr_checkpoint,
        tmp_path / "out",
        [task],
        optim={"max_steps": 4},
        evaluation={"eval_every": 2, "save_every": 4, "keep_best": False},
        retrieval_eval={
            "data_dir": str(retrieval),
            "tatoeba": ["de"],
            "bucc": ["de"],
            "bucc_tune_split": "sample",
            "bucc_eval_split": "sample",
        },
    )
    records = Trainer(config).train().history
    # Step 2 is evaluated but not saved (no retrieval); step 4 is saved and scored.
    assert "tatoeba/de/accuracy_en2xx" not in records[0].metrics
    assert not any(key.endswith("/accuracy") for key in records[-1].metrics if "tatoeba" in key)
    metrics = records[-1].metrics
    assert records[-1].checkpoint == "checkpoint-4"
    for key in ("tatoeba/de/accuracy_xx2en", "tatoeba/de/accuracy_en2xx", "bucc/de/f1"):
        assert 0.0 <= metrics[key] <= 100.0, key
    assert metrics["tatoeba/de/accuracy_xx2en"] * 5 / 100 == pytest.approx(
        round(metrics["tatoeba/de/accuracy_xx2en"] * 5 / 100)
    )


def test_bert_checkpoint_with_token_types(tiny_bert_checkpoint, tmp_path: Path) -> None:
    """A BERT-style encoder (token type embeddings, WordPiece) trains on pair, choice, QA and
    tagging tasks together and its checkpoint reloads."""
    from transformers import AutoModel

    data = tmp_path / "data"
    tasks = [
        trainer_data.write_pair_task(data),
        trainer_data.write_choice_task(data),
        trainer_data.write_qa_task(data, v2=True),
        trainer_data.write_tag_task(data),
    ]
    config = _config(tiny_bert_checkpoint, tmp_path / "out", tasks, optim={"max_steps": 4})
    trainer = Trainer(config)
    result = trainer.train()
    assert {"pairs/accuracy", "choice/accuracy", "squad_v2/f1", "ccg/accuracy"} <= set(
        result.history[-1].metrics
    )
    assert trainer.tasks[0].train_features[0]["token_type_ids"][-1] == 1
    reloaded = AutoModel.from_pretrained(result.last_checkpoint)
    assert reloaded.config.type_vocab_size == 2


@pytest.mark.gpu
def test_bf16_multitask_on_gpu(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tasks = [writer(data) for writer in trainer_data.WRITERS.values()]
    losses: list[float] = []
    config = _config(
        tiny_xlmr_checkpoint, tmp_path / "out", tasks, optim={"max_steps": 30, "precision": "auto"}
    )
    trainer = Trainer(config, device="cuda", on_log=lambda log: losses.append(log.loss))
    result = trainer.train()
    assert trainer.precision.value in ("bf16", "fp16")
    assert all(np.isfinite(losses)) and result.steps == 30
    assert (
        next(trainer.encoder.parameters()).dtype == torch.float32
    )  # autocast, fp32 master weights


def test_resume_from_an_older_checkpoint_keeps_one_history(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    task = trainer_data.write_pair_task(tmp_path / "data")
    config = _config(
        tiny_xlmr_checkpoint,
        tmp_path / "out",
        [task],
        optim={"max_steps": 8},
        evaluation={"eval_every": 2, "keep_last": 10},
    )
    first = Trainer(config)
    first.train()
    again = Trainer(config)
    result = again.train(resume=tmp_path / "out/checkpoint-4")
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 4, 6, 8]
    assert result.steps == 8
    for name, value in _parameters(first).items():
        assert torch.equal(value, _parameters(again)[name]), name


def test_resume_after_a_crash_that_tore_the_last_metrics_record(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    """A run killed while appending to metrics.jsonl leaves a torn last line; resuming drops it
    with the later records (a raw JSONDecodeError before) and keeps one history."""
    task = trainer_data.write_pair_task(tmp_path / "data")
    config = _config(
        tiny_xlmr_checkpoint,
        tmp_path / "out",
        [task],
        optim={"max_steps": 6},
        evaluation={"eval_every": 2, "keep_last": 10},
    )
    Trainer(config).train()
    metrics = tmp_path / "out/metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 8, "train_lo', encoding="utf-8")
    result = Trainer(config).train(resume=tmp_path / "out/checkpoint-4")
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [2, 4, 6] and result.steps == 6
