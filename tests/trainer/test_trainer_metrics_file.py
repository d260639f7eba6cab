"""metrics.jsonl: every record's ``train_loss`` is the mean loss of the steps since the previous
record (never null, whatever ``log_every`` is), and every record carries each task's sampling
probability and the micro-batches each task has given so far (resumes included)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import trainer_data

from xretrieve.trainer import Trainer, config_from_dict
from xretrieve.trainer.config import SamplingStrategy
from xretrieve.trainer.sampling import TaskSampler, task_probabilities

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(checkpoint: Path, out: Path, tasks: list[dict], log_every: int, **evaluation):
    return config_from_dict(
        {
            "base": str(checkpoint),
            "output_dir": str(out),
            "max_length": 32,
            "seed": 0,
            "tasks": tasks,
            "optim": {"max_steps": 6, "batch_size": 8, "learning_rate": 1e-3},
            "sampling": {"strategy": "temperature", "temperature": 2.0},
            "evaluation": {"eval_every": 2, "log_every": log_every, **evaluation},
        }
    )


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _tasks(data: Path) -> list[dict]:
    return [trainer_data.write_pair_task(data, n_train=40), trainer_data.write_tag_task(data)]


def test_train_loss_covers_the_steps_since_the_last_record(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    """With log_every 5 and eval_every 2, the evaluation at step 2 came before any logging window
    had closed: its train_loss was null, and later records averaged whole logging windows
    rather than the steps since the previous record."""
    tasks = _tasks(tmp_path / "data")
    step_losses: list[float] = []
    Trainer(
        _config(tiny_xlmr_checkpoint, tmp_path / "every-step", tasks, log_every=1),
        on_log=lambda log: step_losses.append(log.loss),
    ).train()
    Trainer(_config(tiny_xlmr_checkpoint, tmp_path / "windows", tasks, log_every=5)).train()
    expected = [np.mean(step_losses[i : i + 2]) for i in (0, 2, 4)]
    for out in ("every-step", "windows"):
        records = _records(tmp_path / out)
        assert [r["step"] for r in records] == [2, 4, 6]
        assert all(r["train_loss"] is not None for r in records), records
        got = [r["train_loss"] for r in records]
        assert got == pytest.approx(expected, rel=1e-5), out


def test_records_carry_sampling_probabilities_and_draws_across_a_resume(
    tiny_xlmr_checkpoint, tmp_path: Path
) -> None:
    tasks = _tasks(tmp_path / "data")
    config = _config(tiny_xlmr_checkpoint, tmp_path / "out", tasks, log_every=1)
    trainer = Trainer(config)
    trainer.train()
    records = _records(tmp_path / "out")
    sizes = [len(task.train_features) for task in trainer.tasks]
    probabilities = task_probabilities(sizes, SamplingStrategy.TEMPERATURE, 2.0)
    for record in records:
        got = record["sampling"]["probabilities"]
        assert list(got) == ["pairs", "ccg"]
        assert list(got.values()) == pytest.approx(list(probabilities))
        # one micro-batch per step (grad_accum 1): the draws add up to the step
        assert sum(record["sampling"]["draws"].values()) == record["step"]
    draws = [record["sampling"]["draws"] for record in records]
    assert all(a[t] <= b[t] for a, b in zip(draws[:-1], draws[1:], strict=True) for t in a)

    (tmp_path / "out" / "metrics.jsonl").rename(tmp_path / "first.jsonl")
    Trainer(config).train(resume=tmp_path / "out" / "checkpoint-4")
    after = _records(tmp_path / "out")
    assert [r["step"] for r in after] == [6]
    assert after[0]["sampling"]["draws"] == records[-1]["sampling"]["draws"]
    assert after[0]["train_loss"] == pytest.approx(records[-1]["train_loss"], rel=1e-5)


def test_draws_follow_from_the_sampler_state() -> None:
    sampler = TaskSampler([10, 3], [4, 2], np.array([0.5, 0.5]), seed=1)
    taken = [0, 0]
    for _ in range(23):
        task = sampler.draw_task()
        sampler.take(task)
        taken[task] += 1
        assert sampler.draws() == taken
    assert taken[0] > math.ceil(10 / 4) and taken[1] > math.ceil(3 / 2)  # past an epoch
