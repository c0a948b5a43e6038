"""Quantized vs float twin on a 500k-event synthetic background: AUC / TPR table, s/epoch, EBOPs (JSON).

Trains ``adc-dnn-ae`` and ``axol1tl-vae`` (quantized + float twin) on 500k background events and
evaluates on an independent 500k-event background and 50k events per signal. The last line is
JSON; ``tpr_1e-4_rel_diff`` is (TPR_q - TPR_f) / TPR_f at FPR 1e-4 for the easiest signal, and
both readings of the "within 10 %" target are reported (symmetric, and quantized no worse than float).
Quantized model and float twin are trained independently (same seed), so part of the difference is
the seed-to-seed spread of autoencoders; use ``trigger-ml train --seeds k`` + ``evaluate`` to measure it.

    python benchmarks/bench_models.py [--events 500000] [--epochs 15] [--out bench_out/models]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from trigger_ml.data.synth import SIGNALS, generate_file
from trigger_ml.evaluate import evaluate_artifact
from trigger_ml.train import train

ZOO = Path(__file__).resolve().parents[1] / "models"


def main() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--signal-events", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("bench_out/models"))
    ap.add_argument("--models", default="adc-dnn-ae,axol1tl-vae")
    a = ap.parse_args()
    d = a.out / "data"
    d.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, sample, seed, n in [("train", "background", 101, a.events), ("test", "background", 102, a.events)] + \
            [(s, s, 103 + i, a.signal_events) for i, s in enumerate(SIGNALS)]:
        p = d / f"{name}.h5"
        files[name] = p if p.exists() else generate_file(p, n, sample, seed)
    res: dict = {"events_train": a.events, "events_test_background": a.events, "models": {}}
    for m in a.models.split(","):
        run = train(ZOO / f"{m}.yaml", files["train"], a.out / m, epochs=a.epochs, force=True, log=print)
        man = json.loads((run / "manifest.json").read_text())
        ev = evaluate_artifact(run, [files[s] for s in SIGNALS], files["test"], target_rate_khz=10.0)
        table = {s: {k: {"auc": v[k]["auc"], "tpr_1e-4": v[k]["tpr_at_fpr_1e-4"]["tpr"],
                         "tpr_1e-5": v[k]["tpr_at_fpr_1e-5"]["tpr"], "tpr_10khz": v[k]["tpr_at_rate"]["tpr"]}
                     for k in ("quantized", "float")} for s, v in ev["signals"].items()}
        easiest = max(table, key=lambda s: table[s]["float"]["auc"])
        tq, tf = table[easiest]["quantized"]["tpr_1e-4"], table[easiest]["float"]["tpr_1e-4"]
        res["models"][m] = {
            "table": table, "easiest_signal": easiest,
            "tpr_1e-4_rel_diff": (tq - tf) / tf if tf else None,  # signed: > 0 means quantized is better
            "seconds_per_epoch": {k: man["figures"][k]["seconds_per_epoch"] for k in ("quantized", "float")},
            "epochs": {k: man["figures"][k]["epochs"] for k in ("quantized", "float")},
            "ebops": man["figures"]["quantized"]["ebops"],
        }
    diffs = [v["tpr_1e-4_rel_diff"] for v in res["models"].values()]
    res["within_10pct_symmetric"] = all(d is not None and abs(d) <= 0.10 for d in diffs)
    res["no_worse_than_10pct"] = all(d is not None and d >= -0.10 for d in diffs)
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
