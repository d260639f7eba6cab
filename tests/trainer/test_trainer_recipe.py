"""Recipe fidelity (pretrained MLM head, epochs, per-step task sampling, QA query length) and the
training step's speed features (length-grouped batches, unpadded batches without a mask)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trainer_data

from xretrieve.core.errors import InputError
from xretrieve.trainer import Trainer, config_from_dict
from xretrieve.trainer.loop import steps_for_epochs
from xretrieve.trainer.sampling import GROUP_FACTOR, TaskSampler, length_grouped

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _raw(checkpoint: Path, out: Path, tasks: list[dict], **optim) -> dict:
    return trainer_data.run_config(checkpoint, out, tasks, optim=optim)


@pytest.fixture(scope="module")
def masked_lm_checkpoint(tiny_xlmr_checkpoint, tmp_path_factory) -> Path:
    """The tiny XLM-R saved as XLMRobertaForMaskedLM: encoder plus a (random) pretrained lm_head."""
    from transformers import AutoConfig, XLMRobertaForMaskedLM

    out = tmp_path_factory.mktemp("tiny-xlmr-mlm")
    torch.manual_seed(7)
    model = XLMRobertaForMaskedLM(AutoConfig.from_pretrained(tiny_xlmr_checkpoint))
    with torch.no_grad():
        model.lm_head.bias.normal_()  # not the fresh head's zeros
    model.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_xlmr_checkpoint / name).is_file():
            shutil.copy(tiny_xlmr_checkpoint / name, out / name)
    return out


def test_mlm_starts_from_the_pretrained_lm_head(masked_lm_checkpoint, tmp_path: Path) -> None:
    """Logits of the trainer's MLM task equal transformers' XLMRobertaForMaskedLM's."""
    from transformers import XLMRobertaForMaskedLM

    task = trainer_data.write_mlm_task(tmp_path / "data")
    raw = _raw(masked_lm_checkpoint, tmp_path / "out", [task], learning_rate=0.0)
    trainer = Trainer(config_from_dict(raw))
    trainer.train()
    mlm = trainer.tasks[0]
    assert mlm.head_info()["initialised_from"] == "pretrained"
    reference = XLMRobertaForMaskedLM.from_pretrained(masked_lm_checkpoint).eval()
    trainer.encoder.eval()
    mlm.head.eval()
    batch = mlm.collate(mlm.eval_features[:4], train=False)
    with torch.no_grad():
        ours = mlm.logits(trainer.encoder, batch)
        theirs = reference(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits[..., : mlm.vocab_size]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_mlm_on_a_checkpoint_without_lm_head_says_so(
    tiny_xlmr_checkpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = trainer_data.write_mlm_task(tmp_path / "data")
    trainer = Trainer(config_from_dict(_raw(tiny_xlmr_checkpoint, tmp_path / "out", [task])))
    with caplog.at_level(logging.WARNING, logger="xretrieve.trainer.tasks.mlm"):
        trainer.train()
    assert "has no pretrained LM head" in caplog.text
    assert trainer.tasks[0].head_info()["initialised_from"] == "fresh"


def test_epochs_set_the_run_length_from_the_data(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    assert steps_for_epochs(1.0, [64, 10], [16, 4], 1) == 4 + 3
    assert steps_for_epochs(2.0, [64, 10], [16, 4], 2) == 7
    assert steps_for_epochs(0.01, [64], [16], 1) == 1
    task = trainer_data.write_pair_task(tmp_path / "data", n_train=64)
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", [task], grad_accum=2)
    del raw["optim"]["max_steps"]
    raw["optim"]["epochs"] = 2
    raw["optim"]["batch_size"] = 16
    result = Trainer(config_from_dict(raw)).train()
    assert result.steps == 4  # 2 epochs x 4 micro-batches / 2 per step
    raw["optim"]["max_steps"] = 10
    with pytest.raises(InputError, match="max_steps or epochs, not both"):
        config_from_dict(raw)


def test_task_sampling_per_optimizer_step(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    data = tmp_path / "data"
    tasks = [trainer_data.write_pair_task(data), trainer_data.write_tag_task(data)]
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", tasks, grad_accum=3, max_steps=6)
    raw["seed"] = 2  # draws both tasks within six steps
    raw["sampling"] = {"strategy": "uniform", "per": "optimizer_step"}
    logs = []
    Trainer(config_from_dict(raw), on_log=logs.append).train()
    previous = {"pairs": 0, "ccg": 0}
    used = set()
    for log in logs:
        step_counts = {name: log.task_counts[name] - previous[name] for name in previous}
        assert sorted(step_counts.values()) == [0, 3], step_counts  # one task per step
        used |= {name for name, n in step_counts.items() if n}
        previous = dict(log.task_counts)
    assert used == {"pairs", "ccg"}


def test_length_grouped_batches_keep_every_example_and_cut_padding() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    order = rng.permutation(1000)
    batch = 8
    grouped = length_grouped(order, lengths, batch, np.random.default_rng(1))
    assert sorted(grouped.tolist()) == list(range(1000))

    def padding(sequence: np.ndarray) -> int:
        batches = [sequence[i : i + batch] for i in range(0, len(sequence), batch)]
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    assert padding(grouped) < padding(order) / 5
    # Each batch is a run of one group's longest-first order.
    group = GROUP_FACTOR * batch
    first_group = set(order[:group].tolist())
    assert set(grouped[:group].tolist()) == first_group
    for start in range(0, group, batch):
        values = lengths[grouped[start : start + batch]]
        assert (np.diff(values) <= 0).all()


def test_length_grouped_sampler_resumes_exactly() -> None:
    lengths = [np.arange(50) % 7, np.arange(30) % 5]
    sampler = TaskSampler([50, 30], [4, 4], np.array([0.5, 0.5]), 3, lengths)
    for _ in range(9):
        sampler.next()
    state = sampler.state_dict()
    rest = [sampler.next() for _ in range(20)]
    again = TaskSampler([50, 30], [4, 4], np.array([0.5, 0.5]), 3, lengths)
    again.load_state_dict(state)
    replay = [again.next() for _ in range(20)]
    assert all(
        a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(rest, replay, strict=True)
    )


def test_unpadded_batch_encodes_without_a_mask_to_the_same_states(tiny_xlmr_checkpoint) -> None:
    from transformers import AutoModel

    from xretrieve.trainer.tasks.base import NO_PADDING, encode

    model = AutoModel.from_pretrained(tiny_xlmr_checkpoint).eval()
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 9, 10, 2]])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        NO_PADDING: torch.tensor(True),
    }
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        torch.testing.assert_close(encode(model, batch), expected)


def test_qa_questions_cut_to_max_query_length(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    from xretrieve.trainer.tasks import build_task
    from xretrieve.trainer.tasks.base import TextSettings

    task = trainer_data.write_qa_task(tmp_path / "data")
    records = (Path(task["train"])).read_text().splitlines()
    import json

    long = json.loads(records[0])
    long["question"] = " ".join(["the cat"] * 40)  # 80 words, one token each
    Path(task["train"]).write_text("\n".join([json.dumps(long)] + records[1:]) + "\n")
    raw = _raw(tiny_xlmr_checkpoint, tmp_path / "out", [{**task, "max_query_length": 10}])
    raw["max_length"] = 64
    config = config_from_dict(raw)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_xlmr_checkpoint)
    text = TextSettings(tokenizer, 64, tokenizer.pad_token_id, False, 32, 0.1, len(tokenizer))
    built = build_task(config.tasks[0], text)
    first = built.train_features[0]
    encoded = tokenizer(
        "the cat the cat the cat the cat the cat", long["context"], return_attention_mask=False
    )
    # <s>, the 10 question tokens, </s></s>, then the context: the question ended at 10 tokens.
    assert first["input_ids"][:16] == encoded["input_ids"][:16]
    assert first["input_ids"][11] == tokenizer.sep_token_id
    assert len(tokenizer(" ".join(["the cat"] * 5), add_special_tokens=False)["input_ids"]) == 10


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"weight_map": {"lm_head.bias": ', "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"weight_map": ["model.safetensors"]}', "'weight_map' must map tensor names"),
    ],
)
def test_a_broken_weight_index_is_an_error_naming_it(tmp_path: Path, text: str, message: str):
    from xretrieve.trainer.tasks.mlm import read_pretrained_lm_head

    index = tmp_path / "model.safetensors.index.json"
    index.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        read_pretrained_lm_head(tmp_path)
    assert info.value.path == index
