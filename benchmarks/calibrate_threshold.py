"""Calibrate the default model's ratio-margin threshold on held-out German-English data.

The held-out data is written by hand for xretrieve (MIT) and shares no sentence with the bundled
sample (``xretrieve/sample_data``), which the quick start is scored on:

- ``benchmarks/calibration/pairs.tsv``: 150 German<TAB>English translation pairs;
- ``de_only.txt`` / ``en_only.txt``: 75 sentences per side with no translation on the other.

``--build`` turns them into the BUCC layout ``benchmarks/calibration/bucc2018/de-en.heldout.*``
(sentences shuffled with ``random.Random(2019)``, ids in file order), deterministically. The
threshold is then chosen as ``xretrieve bucc`` chooses one: mine the held-out split with the
default model (k = 4, ratio margin, max mode) and take the F1-optimal threshold against its gold
(``xretrieve.mining.gold.tune_threshold``). The script also scores the bundled sample with the old fixed
1.05 and with the calibrated threshold, and prints one JSON document. The value goes into
``DEFAULT_MINING_THRESHOLD`` in ``exporters/model_settings.py`` by hand.

    python benchmarks/calibrate_threshold.py --build
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent / "calibration"
SPLIT = "heldout"


def build(folder: Path = HERE) -> None:
    """Write ``folder/bucc2018/de-en.heldout.{de,en,gold}`` from the hand-written lists."""
    pairs = [
        tuple(line.split("\t"))
        for line in (folder / "pairs.tsv").read_text(encoding="utf-8").splitlines()
    ]
    de = [de for de, _ in pairs] + (folder / "de_only.txt").read_text(encoding="utf-8").splitlines()
    en = [en for _, en in pairs] + (folder / "en_only.txt").read_text(encoding="utf-8").splitlines()
    if len(set(de)) != len(de) or len(set(en)) != len(en):
        raise SystemExit("a sentence occurs twice")
    rng = random.Random(2019)
    de_order, en_order = rng.sample(range(len(de)), len(de)), rng.sample(range(len(en)), len(en))
    de_id = {row: f"de-h{pos + 1:05d}" for pos, row in enumerate(de_order)}
    en_id = {row: f"en-h{pos + 1:05d}" for pos, row in enumerate(en_order)}
    out = folder / "bucc2018"
    out.mkdir(exist_ok=True)
    stem = out / f"de-en.{SPLIT}"
    lines = "".join(f"{de_id[row]}\t{de[row]}\n" for row in de_order)
    stem.with_name(stem.name + ".de").write_text(lines, encoding="utf-8")
    lines = "".join(f"{en_id[row]}\t{en[row]}\n" for row in en_order)
    stem.with_name(stem.name + ".en").write_text(lines, encoding="utf-8")
    gold = "".join(f"{de_id[i]}\t{en_id[i]}\n" for i in range(len(pairs)))
    stem.with_name(stem.name + ".gold").write_text(gold, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true", help="rebuild the BUCC files first")
    args = parser.parse_args()
    if args.build:
        build()

    from xretrieve.encoding import load_encoder
    from xretrieve.formats import read_bucc_split
    from xretrieve.mining.api import DEFAULT_RATIO_THRESHOLD
    from xretrieve.mining.bitext import sample_data_dir
    from xretrieve.mining.corpus import id_candidates, mine_corpora
    from xretrieve.mining.gold import gold_mask, precision_recall_f1, tune_threshold
    from xretrieve.mining.margin import MiningConfig
    from xretrieve.mining.sources import EncoderSource, embed_pair

    config = MiningConfig(k=4)
    source = EncoderSource(load_encoder("default", device="cpu"))
    heldout = read_bucc_split(HERE, "de", SPLIT)
    threshold, heldout_f1 = tune_threshold(
        heldout, *embed_pair(source, heldout.src, heldout.tgt), config
    )
    sample = read_bucc_split(sample_data_dir(), "de", "sample")
    mining = mine_corpora(
        sample.src, sample.tgt, *embed_pair(source, sample.src, sample.tgt), config
    )
    candidates = id_candidates(mining, sample.src, sample.tgt)
    correct = gold_mask(candidates, sample.gold, sample.src, sample.tgt)

    def scores(cut: float) -> dict[str, float]:
        precision, recall, f1, extracted = precision_recall_f1(
            candidates.score, correct, len(sample.gold), cut
        )
        return {"threshold": cut, "precision": precision, "recall": recall, "f1": f1}

    report = {
        "heldout": {
            "pairs": len(heldout.gold),
            "src_sentences": len(heldout.src),
            "tgt_sentences": len(heldout.tgt),
            "threshold": threshold,
            "f1": heldout_f1,
        },
        "sample_before": scores(DEFAULT_RATIO_THRESHOLD),
        "sample_after": scores(threshold),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
