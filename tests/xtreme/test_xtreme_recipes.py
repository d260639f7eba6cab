"""Phase 3's recipes: the presets hold their sources' values, a TOML file overrides them key by
key (kind-wide tables first, then a task's; an extra task's table overrides its own recipe
class), and every mistake names the key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from exporters.config import Pooling
from xretrieve.core.errors import ArgumentError, InputError
from xretrieve.core.settings import Backend
from xretrieve.xtreme.recipes import (
    FINE_TUNED_TASKS,
    PRESETS,
    FineTuneRecipe,
    RetrievalRecipe,
    default_settings,
    load_settings,
    xtreme_layer,
)


def test_presets_follow_their_sources() -> None:
    jiant = PRESETS["jiant"]
    epochs = {name: jiant[name].epochs for name in FINE_TUNED_TASKS}
    # d_write_configs.sh: XNLI 2, PAWS-X 5, UD-POS and PAN-X 10, QA 2
    assert epochs == {
        "xnli": 2, "pawsx": 5, "udpos": 10, "panx": 10, "xquad": 2, "mlqa": 2, "tydiqa": 2,
    }  # fmt: skip
    assert {jiant[name].learning_rate for name in FINE_TUNED_TASKS} == {1e-5}
    assert (jiant["xnli"].batch_size * jiant["xnli"].grad_accum, jiant["xnli"].max_length) == (
        32,
        256,
    )
    assert (jiant["mlqa"].batch_size * jiant["mlqa"].grad_accum, jiant["mlqa"].max_length) == (
        16,
        384,
    )
    xtreme = PRESETS["xtreme"]
    assert (xtreme["xnli"].learning_rate, xtreme["xnli"].epochs, xtreme["xnli"].max_length) == (
        3e-5,
        5,
        128,
    )
    assert xtreme["tydiqa"].select_on_dev is False and xtreme["tydiqa"].warmup_steps == 500
    assert jiant["tatoeba"] == RetrievalRecipe() == xtreme["bucc2018"]


def test_xtreme_layer_is_run_tatoebas_choice() -> None:
    # LAYER=13 of the last 24 (XLM-R large), LAYER=7 of the last 12 (mBERT): hidden states 14, 8
    assert (xtreme_layer(24), xtreme_layer(12), xtreme_layer(2), xtreme_layer(6)) == (14, 8, 1, 3)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipes.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass(frozen=True)
class ImageRecipe:
    """An extra task's recipe class."""

    anything: int = 0
    rate: float = 0.5

    def __post_init__(self) -> None:
        if self.rate > 1:
            raise ArgumentError("rate", f"must be at most 1, not {self.rate!r}")


def test_a_config_file_overrides_kind_then_task(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        'preset = "xtreme"\nseed = 7\n[fine_tuning]\nepochs = 1\nmax_eval_examples = "none"\n'
        "[xnli]\nlearning_rate = 1e-4\nbatch_size = 16\n[retrieval]\nlayer = 0\n"
        '[tatoeba]\npooling = "cls"\nbackend = "torch"\n[image]\nanything = 1\n',
    )
    settings = load_settings(path, extra={"image": ImageRecipe()})
    assert (settings.preset, settings.seed) == ("xtreme", 7)
    xnli = settings.recipe("xnli")
    assert isinstance(xnli, FineTuneRecipe)
    assert (xnli.epochs, xnli.learning_rate, xnli.batch_size, xnli.max_eval_examples) == (
        1.0,
        1e-4,
        16,
        None,
    )
    assert settings.recipe("pawsx").learning_rate == PRESETS["xtreme"]["pawsx"].learning_rate
    assert settings.recipe("tatoeba") == RetrievalRecipe(0, Pooling.CLS, Backend.TORCH)
    assert settings.recipe("bucc2018") == RetrievalRecipe(layer=0)
    assert settings.recipe("image") == ImageRecipe(anything=1)
    assert load_settings(None) == default_settings("jiant")
    no_file = load_settings(None, extra={"image": ImageRecipe()})
    assert no_file.recipe("image") == ImageRecipe()
    assert no_file.recipe("xnli") == PRESETS["jiant"]["xnli"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[image]\nanythin = 1\n", "unknown key 'image.anythin' \\(a ImageRecipe has: anything"),
        ("[image]\nanything = 1.5\n", "'image.anything' must be an integer"),
        ("[image]\nrate = 2.0\n", "'image': rate must be at most 1, not 2.0"),
        ("[imag]\nanything = 1\n", "unknown config key.*imag .*known: .*image"),
    ],
)
def test_an_extra_task_table_is_checked_against_its_recipe_class(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(InputError, match=message) as info:
        load_settings(_config(tmp_path, text), extra={"image": ImageRecipe()})
    assert info.value.path == tmp_path / "recipes.toml"


def test_the_xflickrco_table_overrides_the_image_text_recipe(tmp_path: Path) -> None:
    from xretrieve.xtreme.image_text import MAIN_METRIC, ImageTextRecipe
    from xretrieve.xtreme.targets import EXTRA_TARGETS, extra_recipes

    text = '[xflickrco]\nepochs = 2\nbackend = "ort"\npatience = 3\n'
    settings = load_settings(_config(tmp_path, text), extra_recipes())
    assert settings.recipe("xflickrco") == ImageTextRecipe(epochs=2.0, backend="ort", patience=3)
    assert EXTRA_TARGETS["xflickrco"].main_metric == MAIN_METRIC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[xnli]\nlearning_rte = 1e-5\n", "unknown key 'xnli.learning_rte'"),
        ("[xnli]\nepochs = 'two'\n", "'xnli.epochs' must be a number"),
        ("[xnli]\nbatch_size = 2.5\n", "'xnli.batch_size' must be an integer"),
        ("[fine_tuning]\nlearning_rate = 0\n", "'fine_tuning.learning_rate' must be a positive"),
        ("[tatoeba]\npooling = 'median'\n", "'tatoeba.pooling' must be one of mean, cls, max"),
        ("[pawsx]\nselect_on_dev = 1\n", "'pawsx.select_on_dev' must be true or false"),
        ("preset = 'mine'\n", "'preset' must be one of jiant, xtreme"),
        ("[xnlii]\nepochs = 1\n", "unknown config key.*xnlii"),
        ("xnli = 3\n", "'xnli' must be a table"),
        ("[xnli\n", "invalid TOML"),
    ],
)
def test_config_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_settings(_config(tmp_path, text))
