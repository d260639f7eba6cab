"""The Trainer: the state of one training run (encoder, heads, optimizer, scheduler, sampler,
RNGs, keep-best bookkeeping) and the loop that advances it.

Each optimizer step draws ``grad_accum`` micro-batches, each from a task chosen by the sampler,
and sums their (task-weighted) losses; then clips, steps AdamW and the linear schedule. Every
``eval_every`` steps each task with validation data is scored; every ``save_every`` steps (and at
each new best) a checkpoint is written. Ctrl-C, and SIGTERM (a scheduler's pre-emption), save a
resumable checkpoint of the last completed step before the KeyboardInterrupt (``Terminated`` for
SIGTERM) propagates. Before anything is loaded the output folder goes through the shared output
guard (writable, none of the run's inputs, new, empty or an earlier run's); a fresh run refuses
an earlier run's folder unless told to overwrite it; a resumed run must have the config of the
run that wrote the checkpoint, and the checkpoint's files must be those that were saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xretrieve.core.errors import InputError
from xretrieve.core.interrupts import sigterm_as_interrupt
from xretrieve.core.progress import ProgressCallback, no_progress
from xretrieve.trainer.checkpoint import (
    STATE_FILE,
    TRAINING_RUN_OUTPUT,
    check_same_run,
    checkpoint_dir,
    config_fingerprint,
    latest_resumable,
    load_heads,
    load_trainer_state,
    prune_checkpoints,
    remove_run,
    run_artifacts,
    save_checkpoint,
    transformers_bars_off,
    verify_checkpoint,
)
from xretrieve.trainer.config import Precision, SamplingUnit, TrainConfig, dump_config
from xretrieve.trainer.sampling import TaskSampler, task_probabilities

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "train_summary.json"


@dataclass(frozen=True)
class StepLog:
    """Reported every ``log_every`` steps: mean loss over those steps, learning rate, and
    throughput in real (non-padding) tokens per second of training, and in padded tokens (what
    the device computed on)."""

    step: int
    max_steps: int
    loss: float
    learning_rate: float
    tokens_per_second: float
    task_counts: dict[str, int]
    padded_tokens_per_second: float = 0.0


@dataclass
class _Window:
    """What a logging window accumulates; the loss stays a device tensor until it is logged.
    ``recorded_loss`` and ``recorded_steps``: the part of it already counted in a metrics
    record's ``train_loss`` (an evaluation inside the window)."""

    loss: Any
    task_counts: dict[str, int]
    started: float
    tokens: int = 0
    padded_tokens: int = 0
    steps: int = 0
    recorded_loss: float = 0.0
    recorded_steps: int = 0

    @classmethod
    def start(cls, device: Any, tasks: list[Any], counts: dict[str, int] | None = None) -> _Window:
        import torch

        return cls(
            loss=torch.zeros((), device=device),
            task_counts=counts if counts is not None else {task.name: 0 for task in tasks},
            started=time.perf_counter(),
        )


@dataclass
class _RunState:
    """Bookkeeping across windows: the summed per-step train loss and the steps since the last
    metrics record, the last checkpoint."""

    start: float
    last_checkpoint: Path | None
    loss_sum: float = 0.0
    loss_steps: int = 0
    stopped_early: bool = False


@dataclass(frozen=True)
class EvalRecord:
    """One line of metrics.jsonl: flat ``TASK/METRIC`` values (and retrieval ``tatoeba/...``).
    ``train_loss``: the mean training loss of the steps since the previous record (every record
    follows a step, so the loop never writes None);
    ``sampling_probabilities``: each task's probability of being drawn; ``task_draws``: the
    micro-batches each task has given since the run's first step (resumes included)."""

    step: int
    metrics: dict[str, float]
    score: float | None
    best_score: float | None
    is_best: bool
    checkpoint: str | None
    train_loss: float | None
    elapsed_s: float
    sampling_probabilities: dict[str, float] = field(default_factory=dict)
    task_draws: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    steps: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best_score: float | None
    stopped_early: bool
    history: tuple[EvalRecord, ...] = field(default_factory=tuple)


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def steps_for_epochs(
    epochs: float, sizes: list[int], batch_sizes: list[int], grad_accum: int
) -> int:
    """Optimizer steps of ``epochs`` passes: one pass is ``sum_i ceil(n_i / batch_i)``
    micro-batches (every task's training set once; with proportional sampling each task is then
    seen about once per epoch), ``grad_accum`` micro-batches a step, rounded up."""
    micro = sum(math.ceil(n / b) for n, b in zip(sizes, batch_sizes, strict=True))
    return max(1, math.ceil(epochs * micro / grad_accum))


def linear_schedule(warmup_steps: int, max_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: 0 -> 1 over the warm-up, then 1 -> 0 at ``max_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (max_steps - step) / max(1, max_steps - warmup_steps))

    return factor


def load_encoder_and_tokenizer(source: Path) -> tuple[Any, Any]:
    """A local Hugging Face checkpoint: safetensors weights only, no remote code."""
    with transformers_bars_off():
        return _load_encoder_and_tokenizer(source)


def _load_encoder_and_tokenizer(source: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from exporters.checkpoint import check_loaded_weights, check_weights

    source = Path(source)
    if not (source / "config.json").is_file():
        raise InputError(source, "not a Hugging Face checkpoint folder (no config.json)")
    hf_config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    if getattr(hf_config, "auto_map", None):
        raise InputError(
            source / "config.json", "checkpoints needing custom code (auto_map) are refused"
        )
    # Refuses pickle-only (pytorch_model.bin) and corrupt, truncated or empty weights with a
    # message naming the file, as export does, before transformers fails with a traceback.
    check_weights(source)
    encoder, info = AutoModel.from_pretrained(
        source, use_safetensors=True, trust_remote_code=False, output_loading_info=True
    )
    check_loaded_weights(source, info["missing_keys"], info["unexpected_keys"])
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(source, "the trainer needs a fast tokenizer (tokenizer.json)")
    return encoder, tokenizer


def text_settings(encoder: Any, tokenizer: Any, max_length: int) -> Any:
    """The ``TextSettings`` featurisation and heads need, from a loaded encoder and tokenizer."""
    from xretrieve.trainer.tasks import TextSettings

    hf = encoder.config
    return TextSettings(
        tokenizer=tokenizer,
        max_length=max_length,
        pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        use_token_types=getattr(hf, "type_vocab_size", 0) > 1,
        hidden_size=int(hf.hidden_size),
        dropout=float(getattr(hf, "hidden_dropout_prob", 0.1)),
        vocab_size=int(hf.vocab_size),
        layer_norm_eps=float(getattr(hf, "layer_norm_eps", 1e-5)),
    )


def torch_device(device: str) -> Any:
    """``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a
    ``torch.device``."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_precision(wanted: Precision, device: Any) -> Precision:
    """The autocast precision on ``device``: AUTO is bf16 on a GPU that has it (else fp16),
    fp32 on the CPU, where any other choice falls back to fp32 (logged)."""
    import torch

    if device.type != "cuda":
        if wanted not in (Precision.AUTO, Precision.FP32):
            logger.warning("%s autocast needs a GPU; running in fp32 on CPU", wanted.value)
        return Precision.FP32
    if wanted is Precision.AUTO:
        return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP16
    return wanted


def autocast_for(precision: Precision) -> contextlib.AbstractContextManager[Any]:
    """The CUDA autocast context of ``precision`` (none for fp32)."""
    import torch

    if precision is Precision.BF16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision is Precision.FP16:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class Trainer:
    """One training run. Library code: reports through ``progress`` ("train", step, max_steps),
    ``on_log`` and ``on_eval`` callbacks, and writes ``metrics.jsonl`` in the output folder."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        device: str = "auto",
        progress: ProgressCallback | None = None,
        on_log: Callable[[StepLog], None] | None = None,
        on_eval: Callable[[EvalRecord], None] | None = None,
    ) -> None:
        self.config = config
        self.device_name = device
        self.progress = progress or no_progress
        self.on_log = on_log
        self.on_eval = on_eval
        self.output_dir = Path(config.output_dir)
        self.history: list[EvalRecord] = []

    # ----- set-up -------------------------------------------------------------------------------
    def _setup(self, resume_from: Path | None) -> None:
        """Device and seed, model and task heads, optimizer and schedule, sampler, then the
        run's counters (from ``resume_from``'s trainer state when resuming)."""

        self.device = torch_device(self.device_name)
        set_seed(self.config.seed)
        state = None
        if resume_from is not None:  # a damaged or foreign checkpoint is refused before loading
            verify_checkpoint(resume_from)
            state = load_trainer_state(resume_from)
            check_same_run(resume_from, state, self.config.to_json())
        self._load_model(resume_from)
        self.precision = self._precision()
        self.optimizer = self._optimizer()
        sizes = [len(task.train_features) for task in self.tasks]
        batch_sizes = [
            task.config.batch_size or self.config.optim.batch_size for task in self.tasks
        ]
        self._schedule(sizes, batch_sizes)
        self._sampler(sizes, batch_sizes)
        self.step = 0
        self.best_score: float | None = None
        self.best_checkpoint: Path | None = None
        self.bad_evals = 0
        # True from the end of a step until its evaluation (if due) is done: a run interrupted
        # in between evaluates that step first when it resumes, as the uninterrupted run did.
        self.pending_evaluation = False
        # The train loss summed since the last metrics record and its step count, carried over
        # a resume (the record after it averages the steps before the interrupt as well); while
        # the loop runs, ``_books`` (its open window and run state) holds the live figures.
        self._restored_loss: tuple[float, int] = (0.0, 0)
        self._books: tuple[_Window, _RunState] | None = None
        if state is not None:
            self._load_state(resume_from, state)
        self._resume_point = self._snapshot()

    def _load_model(self, resume_from: Path | None) -> None:
        """Encoder, tokenizer and text prefix of the source checkpoint, and the tasks' heads
        (the checkpoint's own when resuming), all on ``self.device``."""
        from exporters.model_settings import read_model_settings
        from xretrieve.trainer.tasks import build_task

        config = self.config
        source = resume_from or config.base
        if source is None:
            from xretrieve.encoding.default_model import default_checkpoint

            source = default_checkpoint()
        self.encoder, self.tokenizer = load_encoder_and_tokenizer(source)
        self.text_prefix = read_model_settings(source).text_prefix
        check_model_fits(config, self.encoder.config, Path(source))
        text = text_settings(self.encoder, self.tokenizer, config.max_length)
        self.tasks = [build_task(task, text) for task in config.tasks]
        if resume_from is not None:
            load_heads(resume_from, self.tasks)
        else:
            for task in self.tasks:
                task.init_from_checkpoint(Path(source))
        self.encoder.to(self.device)
        for task in self.tasks:
            task.to(self.device)

    def _schedule(self, sizes: list[int], batch_sizes: list[int]) -> None:
        """``max_steps`` (from ``epochs`` when given), the warm-up + linear-decay scheduler and
        the fp16 grad scaler."""
        import torch

        config = self.config
        optim = config.optim
        self.max_steps = optim.max_steps
        if optim.epochs is not None:
            capped = [min(n, config.sampling.cap or n) for n in sizes]
            self.max_steps = steps_for_epochs(optim.epochs, capped, batch_sizes, optim.grad_accum)
            logger.info("%g epochs = %d optimizer steps", optim.epochs, self.max_steps)
        warmup = optim.warmup_steps
        if warmup is None:
            warmup = int(math.ceil(optim.warmup_ratio * self.max_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, linear_schedule(warmup, self.max_steps)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision is Precision.FP16)

    def _sampler(self, sizes: list[int], batch_sizes: list[int]) -> None:
        """The task sampler, and the (optionally compiled) module the steps run."""
        import torch

        config = self.config
        probabilities = task_probabilities(
            sizes, config.sampling.strategy, config.sampling.temperature, config.sampling.cap
        )
        lengths = None
        if config.sampling.group_by_length:
            lengths = [
                np.array([task.feature_length(f) for f in task.train_features])
                for task in self.tasks
            ]
        self.sampler = TaskSampler(sizes, batch_sizes, probabilities, config.seed, lengths)
        self.step_encoder = self.encoder
        if config.compile:
            # One compiled module shares the parameters; dynamic shapes, as batch lengths vary.
            self.step_encoder = torch.compile(self.encoder, dynamic=True)
        logger.info(
            "tasks: %s",
            ", ".join(
                f"{t.name} ({n} train, p={p:.3f})"
                for t, n, p in zip(self.tasks, sizes, probabilities, strict=True)
            ),
        )

    def _precision(self) -> Precision:
        return resolve_precision(self.config.optim.precision, self.device)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_for(self.precision)

    def _optimizer(self) -> Any:
        """AdamW; biases and normalisation weights get no weight decay; heads may have their own
        learning rate."""
        import torch

        optim = self.config.optim
        head_lr = optim.head_learning_rate or optim.learning_rate
        groups: dict[tuple[float, float], list[Any]] = {}
        named = [(name, p, optim.learning_rate) for name, p in self.encoder.named_parameters()]
        for task in self.tasks:
            named += [(name, p, head_lr) for name, p in task.head.named_parameters()]
        for name, parameter, lr in named:
            if not parameter.requires_grad:
                continue
            no_decay = parameter.ndim < 2 or "norm" in name.lower()
            groups.setdefault((lr, 0.0 if no_decay else optim.weight_decay), []).append(parameter)
        param_groups = [
            {"params": params, "lr": lr, "weight_decay": decay}
            for (lr, decay), params in groups.items()
        ]
        return torch.optim.AdamW(
            param_groups,
            lr=optim.learning_rate,
            betas=optim.betas,
            eps=optim.eps,
            fused=True,
        )

    # ----- state --------------------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        """RNG and sampler state at the end of the last completed step (what resume needs)."""
        import torch

        numpy_state = np.random.get_state(legacy=False)
        snapshot = {
            "python_rng": random.getstate(),
            "numpy_rng": {
                **numpy_state,
                "state": {
                    "key": numpy_state["state"]["key"].tolist(),
                    "pos": numpy_state["state"]["pos"],
                },
            },
            "torch_rng": torch.get_rng_state(),
            "sampler": self.sampler.state_dict(),
        }
        if torch.cuda.is_available():
            snapshot["cuda_rng"] = torch.cuda.get_rng_state_all()
        return snapshot

    def _state(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "config_hash": config_fingerprint(self.config.to_json()),
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_score": self.best_score,
            "best_checkpoint": None if self.best_checkpoint is None else self.best_checkpoint.name,
            "bad_evals": self.bad_evals,
            "pending_evaluation": self.pending_evaluation,
            "loss_since_record": list(self._loss_since_record()),
            **self._resume_point,
        }

    def _loss_since_record(self) -> tuple[float, int]:
        """The summed train loss and step count since the last metrics record, the open
        window's share included (a host synchronisation: called when saving)."""
        if self._books is None:
            return self._restored_loss
        window, run = self._books
        open_loss = float(window.loss) - window.recorded_loss
        return run.loss_sum + open_loss, run.loss_steps + window.steps - window.recorded_steps

    def _load_state(self, checkpoint: Path, state: dict[str, Any]) -> None:
        try:
            self._restore(state)
        except (KeyError, TypeError, AttributeError) as error:
            raise InputError(
                checkpoint / STATE_FILE, f"not a trainer state this xretrieve can resume: {error!r}"
            ) from None

    def _restore(self, state: dict[str, Any]) -> None:
        import torch

        self.step = int(state["step"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as error:
            raise InputError(
                None,
                f"the checkpoint's optimizer state does not fit this run's model/tasks: {error}",
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.best_score = state["best_score"]
        best = state["best_checkpoint"]
        self.best_checkpoint = None if best is None else self.output_dir / best
        self.bad_evals = int(state["bad_evals"])
        self.pending_evaluation = bool(state.get("pending_evaluation", False))
        loss_sum, loss_steps = state.get("loss_since_record", (0.0, 0))
        self._restored_loss = (float(loss_sum), int(loss_steps))
        try:
            self.sampler.load_state_dict(state["sampler"])
        except ValueError as error:
            raise InputError(None, str(error)) from None
        random.setstate(_to_tuple(state["python_rng"]))
        numpy_state = dict(state["numpy_rng"])
        numpy_state["state"] = {
            "key": np.asarray(numpy_state["state"]["key"], dtype=np.uint32),
            "pos": numpy_state["state"]["pos"],
        }
        np.random.set_state(numpy_state)
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def save(self) -> Path:
        """Write ``checkpoint-STEP`` with the state of the last completed step."""
        path = checkpoint_dir(self.output_dir, self.step)
        save_checkpoint(
            path,
            self.encoder,
            self.tokenizer,
            self.tasks,
            self._state(),
            dump_config(self.config),
            text_prefix=self.text_prefix,
        )
        logger.info("saved %s", path)
        return path

    # ----- loop ---------------------------------------------------------------------------------
    def train(self, resume: Path | bool = False, overwrite: bool = False) -> TrainResult:
        """Run to ``max_steps`` (or early stop). ``resume``: True = the newest resumable checkpoint
        in the output folder (a fresh start if there is none), a Path = that checkpoint; either
        must come from a run with this config. Without ``resume`` the output folder must be empty
        (or absent) unless ``overwrite``, which deletes the previous run's checkpoints and
        metrics. SIGTERM is handled like Ctrl-C while this runs (``Terminated`` propagates)."""
        resume_from: Path | None = None
        if resume is True:
            resume_from = latest_resumable(self.output_dir)
        elif isinstance(resume, Path | str) and resume is not False:
            resume_from = Path(resume)
        self._check_output_dir(resume_from)
        replace = resume is False and self._claim_output_dir(overwrite)
        if self.config.retrieval is not None:
            from xretrieve.trainer.retrieval_check import check_retrieval_data

            check_retrieval_data(self.config.retrieval)
        with sigterm_as_interrupt():
            self._setup(resume_from)
            if replace:  # only once the model and every data file have loaded
                logger.warning("overwriting the previous run in %s", self.output_dir)
                remove_run(self.output_dir)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if resume_from is not None:
                logger.info("resuming from %s at step %d", resume_from, self.step)
            self._drop_records_after(self.step)
            try:
                return self._loop(resume_from)
            except KeyboardInterrupt:
                # Parameters are those of the last completed step unless the interrupt landed
                # inside the optimizer update itself; partial accumulated gradients are dropped.
                self.optimizer.zero_grad(set_to_none=True)
                path = self.save()
                logger.warning("interrupted: saved resumable checkpoint %s", path)
                raise

    def _check_output_dir(self, resume_from: Path | None) -> None:
        """The shared output guard, before anything is loaded: ``output_dir`` is writable, is
        none of the run's inputs (``TrainConfig.input_paths``, a checkpoint resumed from another
        folder), holds none and lies inside none of their folders, and is new, empty or an
        earlier run's (``TRAINING_RUN_OUTPUT``)."""
        from xretrieve.core.outputs import check_output_path

        inputs = self.config.input_paths()
        own = resume_from is not None and _resolved(resume_from).parent == _resolved(
            self.output_dir
        )
        if resume_from is not None and not own:
            inputs.append(resume_from)
        check_output_path(
            self.output_dir,
            directory=True,
            option="output_dir",
            inputs=inputs,
            owner=TRAINING_RUN_OUTPUT,
        )

    def _claim_output_dir(self, overwrite: bool) -> bool:
        """A fresh run needs an empty output folder: never mix two runs' checkpoints and
        metrics (a later ``--resume`` would pick the other run's checkpoint). True: the folder
        holds an earlier run (``_check_output_dir`` let only that through) and ``overwrite`` was
        given (the caller removes what that run wrote)."""
        folder = self.output_dir
        if not folder.is_dir():
            return False
        entries = sorted(child.name for child in folder.iterdir())
        if not entries:
            return False
        if overwrite:
            return True
        artifacts = [path.name for path in run_artifacts(folder)] or entries
        shown = ", ".join(artifacts[:3]) + (", ..." if len(artifacts) > 3 else "")
        raise InputError(
            folder,
            f"output_dir is not empty ({shown}); pass {{resume=True}} to continue the run in "
            "it, {overwrite=True} to replace it, or choose another output_dir",
            arguments=("resume", "overwrite"),
        )

    def _drop_records_after(self, step: int) -> None:
        """Evaluations logged after the resumed checkpoint (a run that crashed later) would be
        repeated by the resumed run: keep metrics.jsonl a single history."""
        from xretrieve.core.files import atomic_write

        path = self.output_dir / METRICS_FILE
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        kept = [line for line in lines if _record_step(line) <= step]
        if len(kept) != len(lines):
            with atomic_write(path) as handle:
                handle.write("".join(line + "\n" for line in kept))

    def _loop(self, resume_from: Path | None) -> TrainResult:
        config = self.config
        evaluation = config.evaluation
        self.encoder.train()
        for task in self.tasks:
            task.head.train()
        self._parameters = [p for group in self.optimizer.param_groups for p in group["params"]]
        window = _Window.start(self.device, self.tasks)
        loss_sum, loss_steps = self._restored_loss
        run = _RunState(
            start=time.perf_counter(),
            last_checkpoint=resume_from,
            loss_sum=loss_sum,
            loss_steps=loss_steps,
        )
        self._books = (window, run)
        self.progress("train", self.step, self.max_steps)
        stop = False
        if self.pending_evaluation:  # interrupted after this step, before its evaluation
            stop = self._evaluate_and_save(run, window, self.step == self.max_steps)
        while self.step < self.max_steps and not stop:
            self._train_step(window)
            self.step += 1
            self._resume_point = self._snapshot()
            self.pending_evaluation = True
            self.progress("train", self.step, self.max_steps)
            last = self.step == self.max_steps
            if window.steps == evaluation.log_every or last:
                self._log(window, run)
                window = _Window.start(self.device, self.tasks, window.task_counts)
                self._books = (window, run)
            paused_at = time.perf_counter()  # evaluation and saving do not count as training time
            stop = self._evaluate_and_save(run, window, last)
            window.started += time.perf_counter() - paused_at
        result = TrainResult(
            output_dir=self.output_dir,
            steps=self.step,
            last_checkpoint=run.last_checkpoint,
            best_checkpoint=self.best_checkpoint,
            best_score=self.best_score,
            stopped_early=run.stopped_early,
            history=tuple(self.history),
        )
        self._write_summary(result)
        return result

    def _train_step(self, window: _Window) -> None:
        """One optimizer step over ``grad_accum`` micro-batches. Nothing here waits for the
        device: the loss is summed on the device, tokens are counted on the host before the
        copy, and batches are copied asynchronously from pinned memory."""
        import torch

        from xretrieve.trainer.tasks.base import to_device

        optim = self.config.optim
        per_step = self.config.sampling.per is SamplingUnit.OPTIMIZER_STEP
        step_task = self.sampler.draw_task() if per_step else -1
        for _ in range(optim.grad_accum):
            index = step_task if per_step else self.sampler.draw_task()
            task = self.tasks[index]
            host_batch = task.collate(
                [task.train_features[i] for i in self.sampler.take(index)], train=True
            )
            mask = host_batch["attention_mask"]
            window.tokens += int(mask.numpy().sum())  # a host tensor: numpy reads it in place
            window.padded_tokens += mask.numel()
            batch = to_device(host_batch, self.device)
            with self.autocast():
                loss = task.loss(self.step_encoder, batch)
            scaled = loss * (task.config.loss_weight / optim.grad_accum)
            self.scaler.scale(scaled).backward()
            window.loss += loss.detach() / optim.grad_accum
            window.task_counts[task.name] += 1
        if optim.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._parameters, optim.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        window.steps += 1

    def _log(self, window: _Window, run: _RunState) -> None:
        """The one host synchronisation of a logging window: the summed loss."""
        summed = float(window.loss)
        mean_loss = summed / window.steps
        self._count_train_loss(window, run, summed)
        elapsed = max(time.perf_counter() - window.started, 1e-9)
        if self.on_log is not None:
            self.on_log(
                StepLog(
                    step=self.step,
                    max_steps=self.max_steps,
                    loss=mean_loss,
                    learning_rate=self.scheduler.get_last_lr()[0],
                    tokens_per_second=window.tokens / elapsed,
                    task_counts=dict(window.task_counts),
                    padded_tokens_per_second=window.padded_tokens / elapsed,
                )
            )

    def _take_train_loss(self, window: _Window, run: _RunState) -> float | None:
        """The mean train loss of the steps since the last metrics record, for the record about
        to be written (taken before the checkpoint of this step is saved, whose state then
        carries nothing over); None only if no step ran since (never, in the loop)."""
        if window.steps > window.recorded_steps:
            self._count_train_loss(window, run, float(window.loss))
        train_loss = run.loss_sum / run.loss_steps if run.loss_steps else None
        run.loss_sum, run.loss_steps = 0.0, 0
        return train_loss

    @staticmethod
    def _count_train_loss(window: _Window, run: _RunState, summed: float) -> None:
        """Add the window's loss not yet counted (``summed`` is its total so far) to the loss
        since the last metrics record."""
        run.loss_sum += summed - window.recorded_loss
        run.loss_steps += window.steps - window.recorded_steps
        window.recorded_loss, window.recorded_steps = summed, window.steps

    def _evaluate_and_save(self, run: _RunState, window: _Window, last: bool) -> bool:
        """Evaluate, save, score retrieval and prune as due after this step; True = stop early.
        A metrics record's ``train_loss`` covers every step since the previous record, those of
        the logging window still open included (read from the device here: evaluating is a
        synchronisation anyway)."""
        config = self.config
        evaluation = config.evaluation
        save_every = evaluation.save_every or evaluation.eval_every
        do_eval = self.step % evaluation.eval_every == 0 or last
        do_save = self.step % save_every == 0 or last
        metrics: dict[str, float] = {}
        score, is_best = None, False
        if do_eval:
            metrics = self.evaluate()
            score = self._score(metrics)
            is_best = self._update_best(score)
            do_save = do_save or (is_best and evaluation.keep_best)
        self.pending_evaluation = False
        records = do_eval or (do_save and config.retrieval is not None)
        train_loss = self._take_train_loss(window, run) if records else None
        saved: Path | None = None
        if do_save:
            if is_best and evaluation.keep_best:
                # Set before saving: the best pointer is part of the saved trainer state.
                self.best_checkpoint = checkpoint_dir(self.output_dir, self.step)
            saved = run.last_checkpoint = self.save()
            if config.retrieval is not None:
                from xretrieve.trainer.retrieval_check import evaluate_retrieval

                metrics.update(evaluate_retrieval(saved, config.retrieval))
            keep = [self.best_checkpoint] if evaluation.keep_best and self.best_checkpoint else []
            prune_checkpoints(self.output_dir, evaluation.keep_last, keep)
        if records:
            names = [task.name for task in self.tasks]
            self._record(
                EvalRecord(
                    step=self.step,
                    metrics=metrics,
                    score=score,
                    best_score=self.best_score,
                    is_best=is_best,
                    checkpoint=None if saved is None else saved.name,
                    train_loss=train_loss,
                    elapsed_s=time.perf_counter() - run.start,
                    sampling_probabilities=dict(
                        zip(names, map(float, self.sampler.probabilities), strict=True)
                    ),
                    task_draws=dict(zip(names, self.sampler.draws(), strict=True)),
                )
            )
        if do_eval and evaluation.patience is not None and self.bad_evals >= evaluation.patience:
            run.stopped_early = True
            if saved is None:
                run.last_checkpoint = self.save()
            logger.info("early stopping at step %d", self.step)
            return True
        return False

    def evaluate(self) -> dict[str, float]:
        """Every task's validation metrics as ``TASK/METRIC`` -> value (percent); a task with
        per-language validation files adds ``TASK/LANG/METRIC`` and ``TASK/GROUP/METRIC``
        (``crosslingual.evaluate_languages``), ``TASK/METRIC`` being the mean over languages."""
        import torch

        from xretrieve.trainer.tasks import RunContext

        run = RunContext(self.device, self.config.evaluation.eval_batch_size, self.autocast)
        metrics: dict[str, float] = {}
        self.encoder.eval()
        try:
            with torch.no_grad():
                for task in self.tasks:
                    task.head.eval()
                    if task.languages:
                        from xretrieve.trainer.crosslingual import evaluate_languages

                        metrics.update(evaluate_languages(task, self.encoder, run))
                    elif task.has_validation:
                        for name, value in task.evaluate(self.encoder, run).items():
                            metrics[f"{task.name}/{name}"] = float(value)
        finally:
            self.encoder.train()
            for task in self.tasks:
                task.head.train()
        return metrics

    def _score(self, metrics: dict[str, float]) -> float | None:
        wanted = self.config.evaluation.metric
        if wanted == "mean":
            mains = [
                metrics[f"{task.name}/{task.main_metric}"]
                for task in self.tasks
                if f"{task.name}/{task.main_metric}" in metrics
            ]
            return float(np.mean(mains)) if mains else None
        if wanted not in metrics:
            raise InputError(
                None,
                f"evaluation.metric '{wanted}' is not among the metrics: {', '.join(sorted(metrics))}",
            )
        return metrics[wanted]

    def _update_best(self, score: float | None) -> bool:
        if score is None:
            return False
        greater = self.config.evaluation.greater_is_better
        better = self.best_score is None or (
            score > self.best_score if greater else score < self.best_score
        )
        if better:
            self.best_score = score
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        return better

    def _record(self, record: EvalRecord) -> None:
        self.history.append(record)
        line = json.dumps(
            {
                "step": record.step,
                "train_loss": record.train_loss,
                "score": record.score,
                "best_score": record.best_score,
                "is_best": record.is_best,
                "checkpoint": record.checkpoint,
                "elapsed_s": round(record.elapsed_s, 3),
                "sampling": {
                    "probabilities": record.sampling_probabilities,
                    "draws": record.task_draws,
                },
                "metrics": record.metrics,
            }
        )
        with open(self.output_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.on_eval is not None:
            self.on_eval(record)

    def _write_summary(self, result: TrainResult) -> None:
        from xretrieve.core.files import atomic_write

        summary = {
            "steps": result.steps,
            "last_checkpoint": None
            if result.last_checkpoint is None
            else str(result.last_checkpoint),
            "best_checkpoint": None
            if result.best_checkpoint is None
            else str(result.best_checkpoint),
            "best_score": result.best_score,
            "metric": self.config.evaluation.metric,
            "stopped_early": result.stopped_early,
        }
        with atomic_write(self.output_dir / SUMMARY_FILE) as handle:
            json.dump(summary, handle, indent=2)


def check_model_fits(config: TrainConfig, hf_config: Any, source: Path) -> None:
    """Refuse, before any data is read or a step is run, a ``max_length`` (top level or a
    task's) beyond the positions the encoder has (a longer batch would fail in the middle of the
    run), and retrieval ``layers`` beyond its layers."""
    from xretrieve.core.positions import usable_positions

    positions = getattr(hf_config, "max_position_embeddings", None)
    usable = usable_positions(
        getattr(hf_config, "model_type", None), positions, getattr(hf_config, "pad_token_id", None)
    )
    if usable is not None:
        wanted = [("max_length", config.max_length)] + [
            (f"tasks '{task.name}' max_length", task.max_length)
            for task in config.tasks
            if task.max_length is not None
        ]
        too_long = [f"{key} = {value}" for key, value in wanted if value > usable]
        if too_long:
            raise InputError(
                source / "config.json",
                f"the model has {usable} usable positions (max_position_embeddings = "
                f"{positions}), the training config asks for {', '.join(too_long)}: lower "
                f"max_length to at most {usable}",
            )
    if config.retrieval is not None and config.retrieval.layers:
        from exporters import resolve_layers
        from xretrieve.core.errors import XRetrieveError

        try:
            resolve_layers(config.retrieval.layers, int(hf_config.num_hidden_layers))
        except XRetrieveError as error:
            raise InputError(source / "config.json", f"retrieval_eval.layers: {error}") from None


def _resolved(path: Path) -> Path:
    with contextlib.suppress(OSError, RuntimeError):
        return Path(path).resolve()
    return Path(path).absolute()


def _to_tuple(value: Any) -> Any:
    """torch.save keeps tuples, but be tolerant of lists from other serialisers."""
    if isinstance(value, list):
        return tuple(_to_tuple(item) for item in value)
    return value


def train(
    config: TrainConfig,
    *,
    resume: Path | bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: ProgressCallback | None = None,
    on_log: Callable[[StepLog], None] | None = None,
    on_eval: Callable[[EvalRecord], None] | None = None,
) -> TrainResult:
    """Run a whole training job from a config (see Trainer)."""
    trainer = Trainer(config, device=device, progress=progress, on_log=on_log, on_eval=on_eval)
    return trainer.train(resume=resume, overwrite=overwrite)


def _record_step(line: str) -> float:
    """The step of one metrics.jsonl line; infinity for a line that is no record (blank, or
    torn by a crash while it was appended), so that it is dropped with the later records."""
    try:
        record = json.loads(line)
        return float(record["step"])
    except (ValueError, TypeError, KeyError):
        return math.inf
