"""Tiny random Hugging Face checkpoints (XLM-R and BERT style) with real fast tokenizers, built in
tests so that nothing is downloaded. Shared by the exporter, engine, trainer and evaluation tests."""

from __future__ import annotations

import string
from pathlib import Path

# Characters of several scripts, so that multilingual test text tokenizes without <unk> floods.
_ALPHABET = (
    string.ascii_lowercase
    + string.ascii_uppercase
    + string.digits
    + ".,;:!?'\"()-"
    + "äöüßéèêàâçñ"
    + "абвгдежзийклмнопрстуфхцчшщъыьэюя"
    + "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年"
    + "αβγδεζηθικλμνξοπρστυφχψω"
)
_WORDS = (
    "the of and to in is was for on that with as by at from this be are it an not or have "
    "der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als auch "
    "le la les de des et un une est en du que qui dans pour pas sur au "
    "cat dog house tree water city river book car sun moon day night small big red green"
).split()


def _xlmr_tokenizer(max_length: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    pieces = [(token, 0.0) for token in specials]
    pieces.append(("▁", -2.0))
    pieces += [(f"▁{word}", -5.0 - 0.01 * i) for i, word in enumerate(_WORDS)]
    pieces += [(char, -8.0 - 0.001 * i) for i, char in enumerate(_ALPHABET)]
    pieces += [(f"▁{char}", -9.0 - 0.001 * i) for i, char in enumerate(_ALPHABET)]
    pieces.append(("<mask>", 0.0))
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=3, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=max_length,
    )


def _bert_tokenizer(max_length: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(_ALPHABET.lower()))
    vocab_list = specials + _WORDS + chars + [f"##{char}" for char in chars]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        unk_token="[UNK]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def make_tiny_checkpoint(
    out_dir: Path,
    arch: str = "xlm-roberta",
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    max_length: int = 128,
    seed: int = 0,
) -> Path:
    """Write a random-initialised encoder checkpoint (config.json, model.safetensors, tokenizer
    files) to ``out_dir``: ``arch`` is "xlm-roberta" or "bert". Returns ``out_dir``."""
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(seed)
    out_dir = Path(out_dir)
    if arch == "xlm-roberta":
        tokenizer = _xlmr_tokenizer(max_length)
        config = XLMRobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max_length + 2,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            type_vocab_size=1,
        )
        model = XLMRobertaModel(config)
    elif arch == "bert":
        tokenizer = _bert_tokenizer(max_length)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=max_length,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = BertModel(config)
    else:
        raise ValueError(f"unknown arch {arch!r}")
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


SAMPLE_SENTENCES = [
    "The cat sat on the mat.",
    "Der Hund läuft in den Park und spielt mit dem Ball.",
    "le chat est sur la table",
    "Кошка спит на диване.",
    "我们在中国的大城市",
    "a",
    "",
    "An unusually long sentence " * 8,
]


def edit_weights(checkpoint: Path, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> None:
    """Rewrite ``checkpoint/model.safetensors`` without the tensors ``drop`` and with a small
    extra tensor under each name of ``add`` (a damaged or mismatched checkpoint)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = Path(checkpoint) / "model.safetensors"
    tensors = load_file(str(path))
    for name in drop:
        del tensors[name]
    for name in add:
        tensors[name] = torch.zeros(3)
    save_file(tensors, str(path), metadata={"format": "pt"})
