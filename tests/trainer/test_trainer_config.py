"""Training config: TOML/YAML, defaults, relative paths, and clear errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from xretrieve.core.errors import InputError
from xretrieve.core.settings import Backend
from xretrieve.trainer import (
    Precision,
    SamplingStrategy,
    TaskType,
    config_from_dict,
    load_config,
)

TOML = """
base = "models/xlmr"
output_dir = "runs/stilts"
seed = 7

[optim]
max_steps = 100
batch_size = 8
precision = "bf16"

[sampling]
strategy = "temperature"
temperature = 3.0
cap = 1000

[evaluation]
eval_every = 10
metric = "mnli/accuracy"
patience = 2

[[tasks]]
preset = "mnli"
train = "data/mnli_train.jsonl"
validation = "data/mnli_dev.jsonl"

[[tasks]]
name = "captions"
type = "image_text"
train = "data/captions.jsonl"
image_features = "data/images.npy"
fields = { caption = "text" }

[retrieval_eval]
data_dir = "retrieval"
tatoeba = ["de", "fr"]
"""


def test_toml_config_with_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    config = load_config(path)
    assert config.base == tmp_path / "models/xlmr"
    assert config.output_dir == tmp_path / "runs/stilts"
    assert config.seed == 7
    assert config.optim.max_steps == 100 and config.optim.precision is Precision.BF16
    assert config.optim.learning_rate == 2e-5  # default
    assert config.sampling.strategy is SamplingStrategy.TEMPERATURE and config.sampling.cap == 1000
    mnli, captions = config.tasks
    assert mnli.name == "mnli" and mnli.type is TaskType.PAIR_CLASSIFICATION
    assert mnli.train == tmp_path / "data/mnli_train.jsonl"
    assert captions.type is TaskType.IMAGE_TEXT and captions.fields == {"caption": "text"}
    assert captions.image_features == tmp_path / "data/images.npy"
    assert config.retrieval is not None and config.retrieval.tatoeba == ("de", "fr")
    assert config.retrieval.data_dir == tmp_path / "retrieval"
    assert config.to_json()["tasks"][0]["type"] == "pair_classification"


def test_yaml_config_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("tasks:\n  - preset: squad_v2\n    train: /abs/train.json\n")
    config = load_config(path)
    assert config.output_dir == tmp_path / "runs/run"
    assert config.base is None
    assert config.tasks[0].type is TaskType.EXTRACTIVE_QA
    assert config.tasks[0].train == Path("/abs/train.json")
    assert config.optim.batch_size == 32 and config.evaluation.eval_every == 500


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"tasks": [{"preset": "mnli", "train": "x"}], "optimm": {}}, "'optimm'"),
        ({"tasks": [{"preset": "mnli", "train": "x", "lables": []}]}, "'tasks[0].lables'"),
        (
            {"tasks": [{"preset": "mnli", "train": "x"}], "optim": {"max_step": 3}},
            "'optim.max_step'",
        ),
        ({"tasks": []}, "at least one"),
        ({"tasks": [{"preset": "nope", "train": "x"}]}, "unknown preset"),
        ({"tasks": [{"type": "regression", "train": "x"}]}, "must be one of"),
        ({"tasks": [{"preset": "mnli", "type": "tagging", "train": "x"}]}, "pair_classification"),
        ({"tasks": [{"preset": "mnli"}]}, "training data"),
        (
            {"tasks": [{"preset": "image_text", "train": "x", "fields": {"image": "row"}}]},
            "fields.image_id",
        ),
        ({"tasks": [{"preset": "mnli", "train": "x"}] * 2}, "unique"),
        ({"tasks": [{"preset": "mnli", "train": "x"}], "optim": {"batch_size": "8"}}, "integer"),
        (
            {"tasks": [{"preset": "mnli", "train": "x"}], "evaluation": {"metric": "qqp/f1"}},
            "TASK/METRIC",
        ),
        (
            {
                "tasks": [{"preset": "mnli", "train": "x"}],
                "evaluation": {"metric": "mnli/accuracy"},
            },
            "needs a validation file",
        ),
    ],
)
def test_bad_config_names_the_key(raw: dict, message: str) -> None:
    with pytest.raises(InputError, match="config|tasks|must|unique|preset|image|metric") as info:
        config_from_dict(raw)
    assert message in str(info.value)


def test_image_text_gallery_defaults_to_images_npy_beside_the_captions(tmp_path: Path) -> None:
    raw = {"tasks": [{"preset": "image_text", "train": "data/image_text/captions.en.train.jsonl"}]}
    config = config_from_dict(raw, source=tmp_path / "run.toml")
    assert config.tasks[0].image_features == tmp_path / "data/image_text/images.npy"
    assert tmp_path / "data/image_text/image_ids.txt" in config.input_paths()


def test_retrieval_backend_is_a_choice_that_round_trips(tmp_path: Path) -> None:
    import json

    from xretrieve.trainer.config import dump_config

    raw = {
        "tasks": [{"preset": "mnli", "train": "x"}],
        "retrieval_eval": {"data_dir": "d", "tatoeba": ["de"], "backend": "torch"},
    }
    config = config_from_dict(raw)
    assert config.retrieval is not None and config.retrieval.backend is Backend.TORCH
    dumped = json.loads(dump_config(config))
    assert dumped["retrieval"]["backend"] == "torch"
    assert '"backend": "torch"' in dump_config(config)
    raw["retrieval_eval"]["backend"] = dumped["retrieval"]["backend"]
    assert config_from_dict(raw).retrieval == config.retrieval
    raw["retrieval_eval"]["backend"] = "tensorrt"
    with pytest.raises(InputError, match="retrieval_eval.backend.*must be one of ort, torch"):
        config_from_dict(raw)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("tasks = [\n")
    with pytest.raises(InputError, match="invalid TOML"):
        load_config(bad)
    ini = tmp_path / "run.ini"
    ini.write_text("")
    with pytest.raises(InputError, match=".toml, .yaml"):
        load_config(ini)


ROOT = Path(__file__).resolve().parents[2]
TRAINING_PAGE = ROOT / "docs" / "training.md"


def toml_blocks(text: str) -> list[str]:
    """The ``toml`` blocks of markdown text."""
    import re

    return re.findall(r"```toml\n(.*?)```", text, re.S)


def toml_examples(page: Path) -> list[str]:
    """The ``toml`` blocks of a documentation page."""
    return toml_blocks(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", TRAINING_PAGE, ROOT / "docs" / "multimodal.md"],
    ids=lambda p: p.name,
)
def test_documented_configs_parse(page: Path, tmp_path: Path) -> None:
    """Every config example of the page (not the reference, whose values are ``"..."``) loads."""
    examples = [block for block in toml_examples(page) if '"..."' not in block]
    assert examples, f"{page} no longer holds the training config examples this test reads"
    for number, block in enumerate(examples):
        path = tmp_path / f"example-{number}.toml"
        path.write_text(block, encoding="utf-8")
        assert load_config(path).tasks, block


NINE_TASKS_HEADING = "## Example: the nine English intermediate tasks"
NINE_PRESETS = [
    "anli_plus",
    "mnli",
    "qqp",
    "squad",
    "squad_v2",
    "hellaswag",
    "cosmosqa",
    "commonsenseqa",
    "ccg",
]


def nine_task_example() -> str:
    """The first ``toml`` block under docs/training.md's nine-task heading."""
    text = TRAINING_PAGE.read_text(encoding="utf-8")
    start = text.find(f"\n{NINE_TASKS_HEADING}")
    assert start >= 0, f"{TRAINING_PAGE} lost the heading {NINE_TASKS_HEADING!r}"
    section = text[start + 1 :]
    following = section.find("\n## ")
    blocks = toml_blocks(section if following < 0 else section[:following])
    assert blocks, f"{TRAINING_PAGE}: no toml block under {NINE_TASKS_HEADING!r}"
    return blocks[0]


def test_documented_multitask_example_parses(tmp_path: Path) -> None:
    """docs/training.md's nine-task example (jiant's settings) is a valid config naming the
    nine presets, with data under data/ beside it; its commented image-text task, uncommented,
    is valid too."""
    example = nine_task_example()
    path = tmp_path / "stilts.toml"
    path.write_text(example, encoding="utf-8")
    config = load_config(path)
    assert [task.preset for task in config.tasks] == NINE_PRESETS
    for task in config.tasks:
        for data in [*task.train_files, task.validation]:
            assert data.is_relative_to(tmp_path / "data"), data
    optim, sampling = config.optim, config.sampling
    assert (optim.epochs, optim.batch_size, optim.grad_accum) == (3, 4, 1)
    assert (optim.learning_rate, optim.warmup_ratio, optim.precision) == (
        1e-5,
        0.1,
        Precision.FP32,
    )
    assert optim.head_learning_rate is None  # one learning rate, as jiant
    assert sampling.strategy is SamplingStrategy.PROPORTIONAL and sampling.cap is None
    assert config.max_length == 256 and config.evaluation.eval_batch_size == 8

    commented = example[example.index("# [[tasks]]") :]
    multimodal = "\n".join(line.removeprefix("# ") for line in commented.splitlines())
    path.write_text(example + "\n" + multimodal + "\n", encoding="utf-8")
    captions = load_config(path).tasks[-1]
    assert captions.type is TaskType.IMAGE_TEXT
    assert captions.image_features == tmp_path / "data/image_text/images.npy"


def test_toml_config_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes("\ufeff".encode() + TOML.encode())
    assert load_config(path).seed == 7
