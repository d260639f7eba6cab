"""The training step never reads a tensor back to the host (on a GPU each read is a device
synchronisation that stalls the queue): checked on CPU by intercepting every tensor -> Python
scalar conversion during the step, for every task type, padded and unpadded batches alike."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
import trainer_data
from torch.utils._python_dispatch import TorchDispatchMode

from xretrieve.trainer import Trainer, config_from_dict
from xretrieve.trainer.tasks.base import NO_PADDING, encode

READS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.is_nonzero.default,
    torch.ops.aten.item.default,
}


class HostReads(TorchDispatchMode):
    """Records where any tensor value was turned into a Python number (``.item()``, ``bool()``,
    ``int()``, ``if tensor:``)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READS:
            frames = traceback.extract_stack()[-8:-1]
            self.sites.append(" <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames))
        return func(*args, **(kwargs or {}))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_no_host_reads_in_the_training_step(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    tasks = [write(tmp_path / "data") for write in trainer_data.WRITERS.values()]
    raw = trainer_data.run_config(
        tiny_xlmr_checkpoint,
        tmp_path / "out",
        tasks,
        optim={"max_steps": 12, "grad_accum": 2},
        sampling={"strategy": "uniform"},
        evaluation={"log_every": 6},
    )
    config = config_from_dict(raw)
    trainer = Trainer(config)
    mode = HostReads()
    step = trainer._train_step
    counts: list[dict[str, int]] = []

    def watched(window) -> None:
        with mode:
            step(window)
        counts.append(dict(window.task_counts))

    trainer._train_step = watched  # type: ignore[method-assign]
    trainer.train()
    assert len(counts) == 12
    assert all(n > 0 for n in counts[-1].values()), counts[-1]  # every task type was stepped
    assert mode.sites == [], mode.sites[:5]


@pytest.mark.parametrize("fixture", ["tiny_xlmr_checkpoint", "tiny_bert_checkpoint"])
def test_encode_masks_padding_exactly_as_the_2d_mask(fixture: str, request) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(request.getfixturevalue(fixture)).eval()
    ids = torch.tensor([[0, 5, 6, 7, 8, 2], [0, 9, 2, 1, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        padded = encode(
            model, {"input_ids": ids, "attention_mask": mask, NO_PADDING: torch.tensor(False)}
        )
        full = ids[:, :3].clone()
        unpadded = encode(
            model,
            {
                "input_ids": full,
                "attention_mask": torch.ones_like(full),
                NO_PADDING: torch.tensor(True),
            },
        )
        reference = model(input_ids=full, attention_mask=torch.ones_like(full)).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(padded[real], expected[real])
    torch.testing.assert_close(unpadded, reference)


@pytest.mark.slow
def test_compiled_step_computes_the_plain_step(tiny_xlmr_checkpoint, tmp_path: Path) -> None:
    """``compile = true``: the first step's loss (before any update) equals the plain module's,
    and training runs to the end (about 5 minutes of compilation on two CPU cores)."""
    task = trainer_data.write_pair_task(tmp_path / "data")
    losses: dict[bool, list[float]] = {False: [], True: []}
    for compiled in (False, True):
        raw = trainer_data.run_config(
            tiny_xlmr_checkpoint,
            tmp_path / f"out-{compiled}",
            [task],
            compile=compiled,
            optim={"max_steps": 3},
        )
        config = config_from_dict(raw)
        trainer = Trainer(config, on_log=lambda log, c=compiled: losses[c].append(log.loss))
        assert trainer.train().steps == 3
        assert (trainer.step_encoder is not trainer.encoder) is compiled
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-4)
