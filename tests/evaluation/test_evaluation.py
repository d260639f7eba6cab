"""xretrieve.evaluation with a fake encoder: cache, dedup, resume, errors, reports, bootstrap."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from evaluation_data import FakeEncoder, make_dataset, write_image_text
from tiny_models import make_tiny_checkpoint

from xretrieve.core.errors import ArgumentError, InputError, XRetrieveError
from xretrieve.encoding.layers import LayerSpec
from xretrieve.evaluation import (
    JOSHI_CLASSES,
    EvaluationConfig,
    LayerEmbeddingCache,
    ResultsLog,
    ScoringSettings,
    evaluate,
    load_resource_groups,
)
from xretrieve.evaluation.bootstrap import (
    bootstrap_means,
    f1_samples,
    percentile_interval,
    poisson_weights,
)
from xretrieve.evaluation.bucc import score_bucc
from xretrieve.evaluation.image_text import image_text_recall
from xretrieve.evaluation.resources import DEFAULT_GROUPS
from xretrieve.evaluation.store import EmbeddingStore, text_key
from xretrieve.evaluation.tatoeba import score_tatoeba
from xretrieve.formats import read_bucc_split, read_tatoeba
from xretrieve.mining.margin import MiningConfig
from xretrieve.mining.sources import EncoderSource, embed_pair

SCORING = ScoringSettings(resamples=200, device="cpu", mining=MiningConfig(device="cpu"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ckpts")
    return (
        make_tiny_checkpoint(root / "base", "xlm-roberta", seed=0),
        make_tiny_checkpoint(root / "tuned", "xlm-roberta", seed=1),
    )


class Factory:
    """Encoder factory handing out FakeEncoders (less noise for the 'tuned' checkpoint)."""

    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.encoders: list[FakeEncoder] = []
        self.fail_after_calls = fail_after_calls

    def __call__(self, model: str, layers: tuple[int, ...] | None) -> FakeEncoder:
        noise = 0.5 if Path(model).name == "tuned" else 0.8
        encoder = FakeEncoder(name=Path(model).name, layers=layers or (2,), noise=noise)
        if self.fail_after_calls is not None:
            limit, inner = self.fail_after_calls, encoder.encode_layers

            def failing(texts, progress=None):
                if sum(e.calls for e in self.encoders) >= limit:
                    raise KeyboardInterrupt
                return inner(texts, progress)

            encoder.encode_layers = failing  # type: ignore[method-assign]
        self.encoders.append(encoder)
        return encoder

    @property
    def calls(self) -> int:
        return sum(e.calls for e in self.encoders)

    @property
    def texts(self) -> int:
        return sum(e.texts_encoded for e in self.encoders)


def _config(
    tmp_path: Path, checkpoints, data: Path, out: str = "out", **kwargs
) -> EvaluationConfig:
    base, tuned = checkpoints
    values = dict(
        models=(str(tuned),),
        baseline=str(base),
        data_dir=data,
        out_dir=tmp_path / out,
        cache_root=tmp_path / "cache",
        device="cpu",
        scoring=SCORING,
        plots=False,
    )
    values.update(kwargs)
    return EvaluationConfig(**values)


def _primary(rows, checkpoint: str, task: str, metric: str) -> dict[str, float]:
    return {
        r.lang: r.value
        for r in rows
        if r.checkpoint == checkpoint and r.task == task and r.metric == metric
    }


def test_numbers_equal_bucc_and_tatoeba_scoring(tmp_path: Path, checkpoints) -> None:
    data = make_dataset(tmp_path / "data")
    summary = evaluate(_config(tmp_path, checkpoints, data), encoder_factory=Factory())
    assert not summary.failures
    source = EncoderSource(FakeEncoder(name="tuned", layers=(2,), noise=0.5))
    for lang in ("de", "fr"):
        tune = read_bucc_split(data, lang, "training")
        evaluation = read_bucc_split(data, lang, "test")
        result = score_bucc(
            tune,
            *embed_pair(source, tune.src, tune.tgt),
            evaluation,
            *embed_pair(source, evaluation.src, evaluation.tgt),
            MiningConfig(device="cpu"),
        )
        rows = {r.metric: r for r in summary.rows if r.checkpoint == "tuned" and r.lang == lang}
        assert rows["f1"].value == pytest.approx(result.f1, abs=1e-9)
        assert rows["precision"].value == pytest.approx(result.precision, abs=1e-9)
        assert rows["recall"].value == pytest.approx(result.recall, abs=1e-9)
        assert rows["threshold"].value == pytest.approx(result.threshold, abs=1e-9)
        assert rows["tune_f1"].value == pytest.approx(result.tune_f1, abs=1e-9)
    for lang in ("deu", "swh", "jav"):
        pair = read_tatoeba(data, lang)
        result = score_tatoeba(*embed_pair(source, pair.src, pair.eng), device="cpu")
        got = {
            r.metric: r.value for r in summary.rows if r.checkpoint == "tuned" and r.lang == lang
        }
        assert got["accuracy_en2xx"] == pytest.approx(result.accuracy_en2xx, abs=1e-9)
        assert got["accuracy_xx2en"] == pytest.approx(result.accuracy_xx2en, abs=1e-9)
    leaderboard = (tmp_path / "out" / "leaderboard.md").read_text()
    f1_de = _primary(summary.rows, "tuned", "bucc", "f1")["de"]
    assert f"{f1_de:.2f}" in leaderboard
    # Files and stable keys.
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert list(json.loads(lines[0])) == [
        "checkpoint", "checkpoint_hash", "layer", "task", "lang", "metric", "value", "ci_low",
        "ci_high", "n", "error", "settings", "store_id", "data_hash",
    ]  # fmt: skip
    csv_lines = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(csv_lines) == len(lines) + 1


def test_cache_hit_on_second_run_and_added_language_costs_only_new_texts(
    tmp_path: Path, checkpoints
) -> None:
    data = make_dataset(tmp_path / "data", tatoeba_langs=("deu", "swh"))
    first = Factory()
    summary = evaluate(_config(tmp_path, checkpoints, data), encoder_factory=first)
    assert first.calls > 0 and summary.encoded_texts == first.texts
    # Each distinct text once per checkpoint: Tatoeba's English sides (same concepts for every
    # language) and BUCC's duplicate are shared.
    for encoder in first.encoders:
        assert len(encoder.seen) == len(set(encoder.seen))

    again = Factory()
    summary = evaluate(_config(tmp_path, checkpoints, data), encoder_factory=again)
    assert again.calls == 0 and summary.encoded_texts == 0 and summary.scored_units == 0
    assert again.encoders == []  # the model is never even loaded

    # Same cache, new output directory: everything is rescored, nothing re-encoded.
    fresh = Factory()
    evaluate(_config(tmp_path, checkpoints, data, out="out2"), encoder_factory=fresh)
    assert fresh.calls == 0
    assert (tmp_path / "out" / "results.jsonl").read_text() == (
        tmp_path / "out2" / "results.jsonl"
    ).read_text()

    make_dataset(tmp_path / "data", tatoeba_langs=("deu", "swh", "jav"))
    added = Factory()
    summary = evaluate(_config(tmp_path, checkpoints, data), encoder_factory=added)
    jav = set(read_tatoeba(data, "jav").src.texts)
    assert summary.scored_units == 2  # jav for both checkpoints
    assert {text for e in added.encoders for text in e.seen} == jav  # English side was cached


def test_resumed_run_equals_uninterrupted(tmp_path: Path, checkpoints) -> None:
    data = make_dataset(tmp_path / "data")
    evaluate(_config(tmp_path, checkpoints, data, out="full", cache_root=tmp_path / "c1"),
             encoder_factory=Factory())  # fmt: skip

    config = _config(tmp_path, checkpoints, data, out="resumed", cache_root=tmp_path / "c2")
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, encoder_factory=Factory(fail_after_calls=3))
    partial = ResultsLog(tmp_path / "resumed" / "results.jsonl").read()
    assert 0 < len({r.unit for r in partial}) < 10
    # A torn last line, as left by a kill during a write, is ignored and cut off.
    with (tmp_path / "resumed" / "results.jsonl").open("a") as handle:
        handle.write('{"checkpoint": "tu')
    factory = Factory()
    summary = evaluate(config, encoder_factory=factory)
    assert summary.skipped_units == len({r.unit for r in partial})
    assert (tmp_path / "full" / "results.jsonl").read_text() == (
        tmp_path / "resumed" / "results.jsonl"
    ).read_text()
    assert (tmp_path / "full" / "leaderboard.md").read_text() == (
        tmp_path / "resumed" / "leaderboard.md"
    ).read_text()


def _scoring(k: int) -> ScoringSettings:
    return ScoringSettings(resamples=200, device="cpu", mining=MiningConfig(k=k, device="cpu"))


@pytest.mark.parametrize("run_json", ["deleted", "corrupt"])
def test_changed_k_never_reuses_rows_scored_with_another_k(
    tmp_path: Path, checkpoints, run_json: str
) -> None:
    data = make_dataset(tmp_path / "data")
    config = _config(tmp_path, checkpoints, data, tasks=("bucc",), scoring=_scoring(1))
    evaluate(config, encoder_factory=Factory())
    run = tmp_path / "out" / "run.json"
    with pytest.raises(XRetrieveError, match="other settings"):
        evaluate(replace(config, scoring=_scoring(8)), encoder_factory=Factory())
    if run_json == "deleted":
        run.unlink()
    else:
        run.write_text("{not json")
    summary = evaluate(replace(config, scoring=_scoring(8)), encoder_factory=Factory())
    assert summary.skipped_units == 0 and summary.scored_units > 0
    fresh = evaluate(
        replace(config, scoring=_scoring(8), out_dir=tmp_path / "fresh"), encoder_factory=Factory()
    )

    def values(rows):
        return sorted((r.checkpoint, r.lang, r.metric, r.value) for r in rows)

    assert values(summary.rows) == values(fresh.rows)
    assert json.loads(run.read_text())["mining"]["k"] == 8


def test_a_failed_run_does_not_pin_the_settings_of_the_next(tmp_path: Path, checkpoints) -> None:
    data = make_dataset(tmp_path / "data")
    bad = _config(tmp_path, checkpoints, data, models=(str(tmp_path / "no-such-model"),))
    with pytest.raises(InputError, match="no-such-model"):
        evaluate(bad, encoder_factory=Factory())
    assert not (tmp_path / "out" / "run.json").exists()
    corrected = _config(tmp_path, checkpoints, data, tasks=("bucc",), scoring=_scoring(2))
    summary = evaluate(corrected, encoder_factory=Factory())
    assert summary.scored_units > 0 and not summary.failures


def test_bad_or_missing_language_data_fails_only_that_language(tmp_path: Path, checkpoints) -> None:
    data = make_dataset(tmp_path / "data")
    (data / "tatoeba" / "tatoeba.swh-eng.eng").unlink()
    (data / "bucc2018" / "fr-en.test.gold").write_text("no-such-id\tx\n")
    summary = evaluate(_config(tmp_path, checkpoints, data), encoder_factory=Factory())
    failed = {(r.task, r.lang) for r in summary.failures}
    assert failed == {("tatoeba", "swh"), ("bucc", "fr")}
    messages = " ".join(r.error or "" for r in summary.failures)
    assert "tatoeba.swh-eng.eng" in messages and "fr-en.test.gold" in messages
    finished = {(r.task, r.lang) for r in summary.rows if r.metric != "error"}
    assert finished == {("bucc", "de"), ("tatoeba", "deu"), ("tatoeba", "jav")}
    assert "## Failed units" in (tmp_path / "out" / "leaderboard.md").read_text()

    # Fixing the data and re-running scores only the failed units; error rows disappear.
    make_dataset(tmp_path / "data")
    summary = evaluate(_config(tmp_path, checkpoints, data), encoder_factory=Factory())
    assert summary.scored_units == 4 and not summary.failures


def test_layer_sweep_reports_and_plots(tmp_path: Path, checkpoints) -> None:
    data = make_dataset(tmp_path / "data", bucc_langs=("de",), tatoeba_langs=("deu", "swh"))
    factory = Factory()
    summary = evaluate(
        _config(tmp_path, checkpoints, data, layers=LayerSpec(every=True), plots=True),
        encoder_factory=factory,
    )
    assert {r.layer for r in summary.rows} == {1, 2}
    assert all(e.layers == (1, 2) for e in factory.encoders)
    # One encoder call per (task, language): both layers come from the same pass.
    assert factory.calls == 2 * 3
    board = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "## Layer sweep" in board and "## By resource group" in board
    plots = sorted(p.name for p in (tmp_path / "out" / "plots").iterdir())
    assert "per_language_tatoeba.png" in plots and "layers_tatoeba.png" in plots
    assert "groups_tatoeba.png" in plots
    for name in plots:
        assert (tmp_path / "out" / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    groups = (tmp_path / "out" / "groups.csv").read_text().splitlines()
    assert groups[0].startswith("checkpoint,checkpoint_hash,layer,task,group")
    assert any(",tatoeba,low,gain," in line for line in groups)


def test_image_text_task_with_fake_encoder(tmp_path: Path, checkpoints) -> None:
    data = tmp_path / "data"
    write_image_text(data, ["de", "ja"], n_images=30)
    summary = evaluate(
        _config(tmp_path, checkpoints, data, tasks=("image-text",)), encoder_factory=Factory()
    )
    assert not summary.failures
    r1 = _primary(summary.rows, "tuned", "image-text", "t2i_r1")
    r10 = _primary(summary.rows, "tuned", "image-text", "t2i_r10")
    assert set(r1) == {"de", "ja"}
    assert all(0 < r1[lang] <= r10[lang] <= 100 for lang in r1)


def test_image_text_dimension_mismatch_is_a_clear_error(tmp_path: Path, checkpoints) -> None:
    data = tmp_path / "data"
    write_image_text(data, ["de"], n_images=10, dim=24)
    summary = evaluate(
        _config(tmp_path, checkpoints, data, tasks=("image-text",)), encoder_factory=Factory()
    )
    assert summary.failures and "projection" in (summary.failures[0].error or "")


def test_image_text_recall_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((20, 8)).astype(np.float32)
    owners = np.repeat(np.arange(20), 2)
    captions = images[owners] + 1.2 * rng.standard_normal((40, 8)).astype(np.float32)
    result = image_text_recall(captions, images, owners, (1, 5), device="cpu")
    c = captions / np.linalg.norm(captions, axis=1, keepdims=True)
    im = images / np.linalg.norm(images, axis=1, keepdims=True)
    sims = c @ im.T
    for k, got in zip((1, 5), result.text_to_image, strict=True):
        top = np.argsort(-sims, axis=1)[:, :k]
        assert got == pytest.approx(100 * np.mean([owners[i] in top[i] for i in range(40)]))
    for k, got in zip((1, 5), result.image_to_text, strict=True):
        top = np.argsort(-sims.T, axis=1)[:, :k]
        expected = np.mean([np.any(owners[top[j]] == j) for j in range(20)])
        assert got == pytest.approx(100 * expected)


def test_bootstrap_interval_contains_estimate_and_shrinks() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for n in (100, 400, 1600):
        hits = (rng.random(n) < 0.7).astype(float)
        samples = bootstrap_means(hits, 1000, seed=3)
        low, high = percentile_interval(samples)
        assert low <= hits.mean() <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.3)  # ~ 1 / sqrt(n)

    f1_widths = []
    for m in (50, 800):
        rows = np.arange(m)
        tp = (rng.random(m) < 0.6).astype(int)
        fp = 1 - tp
        fn = (rng.random(m) < 0.2).astype(int)
        samples = f1_samples(rows, tp, fp, fn, 1000, seed=5)
        point = 200 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
        low, high = percentile_interval(samples)
        assert low <= point <= high
        f1_widths.append(high - low)
    assert f1_widths[0] > 2 * f1_widths[1]


def test_poisson_weights_are_paired_across_subsets() -> None:
    full = poisson_weights(np.arange(1000), 300, seed=9)
    subset = poisson_weights(np.array([3, 500, 999]), 300, seed=9)
    assert np.array_equal(full[:, [3, 500, 999]], subset)
    assert full.mean() == pytest.approx(1.0, abs=0.01) and full.var() == pytest.approx(
        1.0, abs=0.02
    )
    blocked = np.vstack(
        [
            poisson_weights(np.arange(5), 100, 9),
            poisson_weights(np.arange(5), 200, 9, first_resample=100),
        ]
    )
    assert np.array_equal(blocked, full[:, :5])


def test_resource_groups_table_and_override(tmp_path: Path) -> None:
    tatoeba36 = (
        "afr ara ben bul cmn deu ell est eus fin fra heb hin hun ind ita jav jpn kat kaz kor mal "
        "mar nld pes por rus spa swh tam tel tgl tha tur urd vie"
    ).split()
    assert len(tatoeba36) == 36
    assert set(tatoeba36) | {"de", "fr", "ru", "zh"} <= set(JOSHI_CLASSES)
    assert DEFAULT_GROUPS["swh"] == "low" and DEFAULT_GROUPS["afr"] == "medium"
    assert DEFAULT_GROUPS["de"] == "high"
    (tmp_path / "g.json").write_text(json.dumps({"swh": "medium", "xyz": "tiny"}))
    groups = load_resource_groups(tmp_path / "g.json")
    assert groups["swh"] == "medium" and groups["xyz"] == "tiny" and groups["de"] == "high"
    (tmp_path / "g.tsv").write_text("# lang\tgroup\nde\tlow\n")
    assert load_resource_groups(tmp_path / "g.tsv")["de"] == "low"
    (tmp_path / "bad.tsv").write_text("de low\n")
    with pytest.raises(Exception, match="bad.tsv:1"):
        load_resource_groups(tmp_path / "bad.tsv")


def test_store_ignores_a_shard_without_keys(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "s")
    keys = [text_key(t) for t in ("a", "b")]
    store.add(keys, np.eye(2, 3, dtype=np.float32))
    np.save(tmp_path / "s" / "shard-orphan.npy", np.ones((1, 3), dtype=np.float32))
    reopened = EmbeddingStore(tmp_path / "s")
    assert len(reopened) == 2
    assert np.array_equal(reopened.get(keys[::-1]), np.eye(2, 3, dtype=np.float32)[::-1])


def test_layer_cache_embeds_distinct_texts_once(tmp_path: Path) -> None:
    encoder = FakeEncoder(layers=(1, 2))
    cache = LayerEmbeddingCache(tmp_path, "m", encoder, (1, 2), chunk=3)
    texts = ["c1 de x", "c2 de x", "c1 de x", "c3 de x", "c4 de x"]
    one = cache.embed(texts, 1)
    two = cache.embed(texts, 2)
    assert encoder.texts_encoded == 4 and encoder.calls == 2  # chunks of 3 distinct texts
    assert np.array_equal(one[0], one[2])
    assert np.array_equal(two, FakeEncoder(layers=(2,)).encode(texts))
    shutil.rmtree(tmp_path / "m" / "layer2")
    again = LayerEmbeddingCache(tmp_path, "m", encoder, (1, 2))
    assert again.ensure(texts) == 4  # a layer lost: re-encoded for all layers in one pass


def test_result_rows_never_write_nan_or_infinity() -> None:
    from xretrieve.evaluation.results import ResultRow, row_to_json

    row = ResultRow("m", "h", 2, "bucc", "de", "f1", float("nan"), ci_low=float("-inf"), n=3)

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    payload = json.loads(row_to_json(row), parse_constant=refuse)
    assert payload["value"] is None and payload["ci_low"] is None and payload["n"] == 3


def _damage_npy(path: Path, value: float) -> None:
    """Overwrite the first stored float of a .npy file in place (its header stays valid)."""
    array = np.load(path, mmap_mode="r+")
    array[0, 0] = value
    array.flush()
    del array


@pytest.mark.parametrize("value", [float("nan"), 123.0])
def test_a_damaged_embedding_shard_is_recomputed_with_a_warning(
    tmp_path: Path, value: float, caplog: pytest.LogCaptureFixture
) -> None:
    texts = ["c1 de x", "c2 de x", "c3 de x"]
    encoder = FakeEncoder(layers=(2,))
    expected = LayerEmbeddingCache(tmp_path, "m", encoder, (2,)).embed(texts, 2)
    (shard,) = (tmp_path / "m" / "layer2").glob("shard-*.npy")
    _damage_npy(shard, value)
    again = FakeEncoder(layers=(2,))
    with caplog.at_level("WARNING"):
        got = LayerEmbeddingCache(tmp_path, "m", again, (2,)).embed(texts, 2)
    assert again.texts_encoded == 3
    assert np.array_equal(got, expected)
    assert "is damaged" in caplog.text and shard.name in caplog.text
    assert not shard.exists()  # the damaged shard is gone; its replacement is checked again
    third = FakeEncoder(layers=(2,))
    assert np.array_equal(LayerEmbeddingCache(tmp_path, "m", third, (2,)).embed(texts, 2), got)
    assert third.texts_encoded == 0


def test_a_touched_but_intact_shard_is_kept(tmp_path: Path) -> None:
    import os

    texts = ["c1 de x", "c2 de x"]
    LayerEmbeddingCache(tmp_path, "m", FakeEncoder(layers=(2,)), (2,)).embed(texts, 2)
    (shard,) = (tmp_path / "m" / "layer2").glob("shard-*.npy")
    os.utime(shard, ns=(10**18, 10**18))
    again = FakeEncoder(layers=(2,))
    LayerEmbeddingCache(tmp_path, "m", again, (2,)).embed(texts, 2)
    assert again.texts_encoded == 0
    record = json.loads(shard.with_suffix(".sha256").read_text())
    assert record["files"][shard.name]["mtime_ns"] == 10**18  # refreshed: not hashed again


def test_a_resumed_run_scores_again_the_units_whose_data_changed(
    tmp_path: Path, checkpoints
) -> None:
    data = make_dataset(tmp_path / "data")
    config = _config(tmp_path, checkpoints, data, tasks=("tatoeba",))
    first = evaluate(config, encoder_factory=Factory())
    assert first.scored_units == 6 and not first.failures  # 2 models x deu, swh, jav
    rows = ResultsLog(tmp_path / "out" / "results.jsonl").read()
    assert len({r.data_hash for r in rows}) == 3 and None not in {r.data_hash for r in rows}
    _rotate(data, "jav")

    resumed = evaluate(config, encoder_factory=Factory())
    assert resumed.scored_units == 2 and resumed.skipped_units == 4
    fresh = evaluate(replace(config, out_dir=tmp_path / "fresh"), encoder_factory=Factory())

    def values(rows):
        return sorted((r.checkpoint, r.lang, r.metric, r.value, r.n) for r in rows)

    assert values(resumed.rows) == values(fresh.rows)
    assert evaluate(config, encoder_factory=Factory()).scored_units == 0


def _rotate(data: Path, lang: str) -> None:
    """The same line count and sizes, other text: a change only the hashes see."""
    for side in (lang, "eng"):
        path = data / "tatoeba" / f"tatoeba.{lang}-eng.{side}"
        lines = path.read_text(encoding="utf-8").splitlines()
        path.write_text("\n".join(lines[30:] + lines[:30]) + "\n", encoding="utf-8")
        assert path.stat().st_size == len("".join(f"{line}\n" for line in lines).encode())


def test_units_scored_before_an_interrupt_are_scored_again_once_their_data_changed(
    tmp_path: Path, checkpoints
) -> None:
    """The data's hashes used to be written only at the end of a run: after SIGTERM, a change
    of a data file and a rerun, the units scored before the interrupt kept their old scores."""
    data = make_dataset(tmp_path / "data")
    config = _config(tmp_path, checkpoints, data, tasks=("tatoeba",))
    with pytest.raises(KeyboardInterrupt):
        evaluate(config, encoder_factory=Factory(fail_after_calls=2))
    scored = {r.lang for r in ResultsLog(tmp_path / "out" / "results.jsonl").read()}
    assert scored and len(scored) < 3
    changed = sorted(scored)[0]
    _rotate(data, changed)
    resumed = evaluate(config, encoder_factory=Factory())
    assert resumed.skipped_units == len(scored) - 1
    fresh = evaluate(replace(config, out_dir=tmp_path / "fresh"), encoder_factory=Factory())

    def values(rows):
        return sorted((r.checkpoint, r.lang, r.metric, r.value, r.n) for r in rows)

    assert values(resumed.rows) == values(fresh.rows)
    kept = ResultsLog(tmp_path / "out" / "results.jsonl").read()
    assert values(kept) == values(fresh.rows)  # the rows of the old data are gone


def test_config_parses_backend_and_device_and_refuses_unknown_ones(tmp_path: Path) -> None:
    from xretrieve.core.settings import Backend, Device

    config = EvaluationConfig(("m",), tmp_path, tmp_path / "out", backend="torch", device="cpu")
    assert config.backend is Backend.TORCH and config.device is Device.CPU
    with pytest.raises(ArgumentError, match="unknown device 'cuda:1'; device must be one of auto"):
        EvaluationConfig(("m",), tmp_path, tmp_path / "out", device="cuda:1")
    with pytest.raises(
        ArgumentError, match="unknown backend 'onnx'; backend must be one of ort, torch"
    ):
        EvaluationConfig(("m",), tmp_path, tmp_path / "out", backend="onnx")
