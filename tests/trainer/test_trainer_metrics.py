"""Hand-checked metrics (``xretrieve.evaluation.metrics``, shared with ``xtreme score``) and the
pure pieces of the trainer: SQuAD EM/F1 (with unanswerable questions), QA span decoding, multiple-choice accuracy, InfoNCE, MLM masking, task sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xretrieve.evaluation.metrics import (
    SQUAD_NORMALIZER,
    QaQuestion,
    accuracy,
    normalize_answer,
    qa_scores,
)
from xretrieve.trainer.config import SamplingStrategy
from xretrieve.trainer.readers import QAExample
from xretrieve.trainer.sampling import TaskSampler, task_probabilities
from xretrieve.trainer.tasks.image_text import contrastive_loss
from xretrieve.trainer.tasks.mlm import mask_tokens
from xretrieve.trainer.tasks.qa import predict_answers


def test_normalize_answer_like_the_official_script() -> None:
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"


def test_squad_scores_hand_checked_with_unanswerable() -> None:
    golds = {
        "q1": ["the red cat", "cat"],  # prediction "Cat" -> EM 1, F1 1
        "q2": ["big brown dog"],  # prediction "brown dog house": overlap 2, P=2/3 R=2/3 -> F1 2/3
        "q3": [],  # unanswerable, predicted "" -> 1, 1
        "q4": [],  # unanswerable, predicted "dog" -> 0, 0
        "q5": ["river"],  # predicted "" -> 0, 0
    }
    predictions = {"q1": "Cat", "q2": "brown dog house", "q3": "", "q4": "dog", "q5": ""}
    questions = [QaQuestion(qid, tuple(answers)) for qid, answers in golds.items()]
    scores = qa_scores(questions, predictions, SQUAD_NORMALIZER, unanswerable=True).as_dict()
    assert scores["exact_match"] == pytest.approx(100 * 2 / 5)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1) / 5)
    assert scores["has_ans_exact_match"] == pytest.approx(100 / 3)
    assert scores["has_ans_f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert scores["no_ans_exact_match"] == pytest.approx(50.0)
    # A missing prediction scores zero; v1.1-only data has no breakdown.
    v1 = qa_scores([QaQuestion("a", ("x",)), QaQuestion("b", ("y",))], {"a": "x"}, SQUAD_NORMALIZER)
    assert v1.as_dict() == {"exact_match": 50.0, "f1": 50.0} and v1.unanswered == 1


def test_predict_answers_picks_best_span_or_null() -> None:
    context = "the red cat sat"
    # tokens: 0=<s>, 1=question, 2=</s>, 3="the", 4="red", 5="cat", 6="sat"
    offsets = [None, None, None, (0, 3), (4, 7), (8, 11), (12, 15)]
    examples = [QAExample("a", "q", context, (("cat", 8),)), QAExample("b", "q", context, ())]
    start = np.array([0.0, 9, 9, 0, 1, 5, 0])
    end = np.array([0.0, 9, 9, 0, 0, 1, 6])  # best: start 5 + end 6 = 11 ("cat sat")
    windows = [({"example": 0, "offsets": offsets}, start, end)]
    # Question b: the null score (first token) beats every span.
    null_start = np.array([20.0, 0, 0, 1, 3, 1, 1])
    windows.append(({"example": 1, "offsets": offsets}, null_start, null_start))
    assert predict_answers(examples, windows, 30, True) == {"a": "cat sat", "b": ""}
    # Spans longer than max_answer_length are skipped; without v2, the best span always wins.
    assert predict_answers(examples, windows, 1, False) == {"a": "cat", "b": "red"}


def test_accuracy_of_ids_and_of_labels() -> None:
    assert accuracy(np.array([1, 2, 1, 0]), np.array([1, 2, 0, 3])) == 50.0
    assert accuracy(("B-PER", "O", "O"), ["B-PER", "O", "I-PER"]) == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        accuracy(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        accuracy([1, 2], [1])


def test_multiple_choice_accuracy_with_uneven_choice_counts(tiny_xlmr_checkpoint) -> None:
    """Scores of padding choices are -inf, so argmax and softmax ignore them."""
    from xretrieve.trainer import config_from_dict
    from xretrieve.trainer.loop import load_encoder_and_tokenizer
    from xretrieve.trainer.readers import ChoiceExample, TaskData
    from xretrieve.trainer.tasks import RunContext, TextSettings
    from xretrieve.trainer.tasks.multiple_choice import MultipleChoiceTask

    encoder, tokenizer = load_encoder_and_tokenizer(tiny_xlmr_checkpoint)
    text = TextSettings(
        tokenizer, 32, tokenizer.pad_token_id, False, 32, 0.0, encoder.config.vocab_size
    )
    config = config_from_dict({"tasks": [{"type": "multiple_choice", "train": "x"}]}).tasks[0]
    examples = (
        ChoiceExample("the cat", "", ("cat", "dog"), 0),
        ChoiceExample("the dog", "", ("cat", "dog", "sun"), 2),
    )
    task = MultipleChoiceTask(config, text, TaskData(examples), TaskData(examples))

    class Fixed(torch.nn.Module):
        """Scores choice j of each example as j (via the first hidden unit)."""

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return hidden_states[:, 0, :1]

    class Encoder(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            n = input_ids.shape[0]
            hidden = torch.zeros(n, input_ids.shape[1], 32)
            hidden[:, 0, 0] = torch.arange(n) % 3  # choice index within its example
            return type("Out", (), {"last_hidden_state": hidden})

    task.head = Fixed()
    batch = task.collate(task.eval_features, train=False)
    scores = task.scores(Encoder(), batch)
    assert scores.shape == (2, 3) and math.isinf(scores[0, 2])
    # Argmax is the last real choice: example 0 -> 1 (wrong), example 1 -> 2 (right).
    run = RunContext(torch.device("cpu"), 8, lambda: torch.autocast("cpu", enabled=False))
    assert task.evaluate(Encoder(), run) == {"accuracy": 50.0}


def test_contrastive_loss_matches_brute_force_and_handles_shared_images() -> None:
    torch.manual_seed(0)
    text = torch.nn.functional.normalize(torch.randn(4, 5), dim=-1)
    images = torch.nn.functional.normalize(torch.randn(3, 5), dim=-1)
    positives = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    scale = torch.tensor(math.log(10.0))
    loss = contrastive_loss(text, images, positives, scale)
    logits = 10.0 * text @ images.T
    t2i = [-(torch.log_softmax(logits[i], 0)[positives[i]].exp().sum().log()) for i in range(4)]
    i2t = [
        -(torch.log_softmax(logits[:, j], 0)[positives[:, j]].exp().sum().log()) for j in range(3)
    ]
    expected = (torch.stack(t2i).mean() + torch.stack(i2t).mean()) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mask_tokens_rates_and_specials() -> None:
    ids = torch.randint(10, 100, (64, 64))
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = True
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(
        ids, special, mask_id=3, vocab_size=100, probability=0.15, generator=generator
    )
    chosen = labels != -100
    assert not chosen[:, 0].any()
    assert torch.equal(labels[chosen], ids[chosen])
    rate = chosen.float().mean().item()
    assert 0.12 < rate < 0.18
    masked = (inputs == 3) & chosen
    assert 0.7 < masked.sum().item() / chosen.sum().item() < 0.9
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_task_probabilities() -> None:
    sizes = [100, 400]
    assert task_probabilities(sizes, SamplingStrategy.PROPORTIONAL) == pytest.approx([0.2, 0.8])
    assert task_probabilities(sizes, SamplingStrategy.UNIFORM) == pytest.approx([0.5, 0.5])
    assert task_probabilities(sizes, SamplingStrategy.TEMPERATURE, 2.0) == pytest.approx(
        [1 / 3, 2 / 3]
    )
    assert task_probabilities(sizes, SamplingStrategy.PROPORTIONAL, cap=100) == pytest.approx(
        [0.5, 0.5]
    )
    with pytest.raises(ValueError):
        task_probabilities([0, 3], SamplingStrategy.UNIFORM)


def test_sampler_covers_each_epoch_and_resumes_exactly() -> None:
    probabilities = task_probabilities([10, 7], SamplingStrategy.PROPORTIONAL)
    sampler = TaskSampler([10, 7], [4, 3], probabilities, seed=1)
    seen: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(6):
        task, rows = sampler.next()
        seen[task] += rows.tolist()
    state = sampler.state_dict()
    rest = [sampler.next() for _ in range(20)]
    again = TaskSampler([10, 7], [4, 3], probabilities, seed=1)
    again.load_state_dict(state)
    replay = [again.next() for _ in range(20)]
    for (task_a, rows_a), (task_b, rows_b) in zip(rest, replay, strict=True):
        assert task_a == task_b and np.array_equal(rows_a, rows_b)
    for task, size in ((0, 10), (1, 7)):
        full = seen[task][: size * (len(seen[task]) // size)]
        for epoch in range(len(full) // size):
            assert sorted(full[epoch * size : (epoch + 1) * size]) == list(range(size))
    with pytest.raises(ValueError, match="data changed"):
        TaskSampler([11, 7], [4, 3], probabilities, seed=1).load_state_dict(state)
