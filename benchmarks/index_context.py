"""What contexts beyond the previous stage would save on a grouped RVQ's indices: the held-out
cross-entropy of the model's own (rate-biased) symbols under tables conditioned on candidate
contexts, fitted on training photos.

    python -m benchmarks.index_context --train ../shared/data/train [--model rvq] [--photos 12]

Tables are counted per stage and channel group on the first ``--photos`` training photos and
scored on the held-out four (whole photos), smoothed alike (0.02 per entry), so the columns
compare contexts, not table precision; bpp is ideal code length over pixels, cumulative over
stages. Candidates cross today's context (the previous stage's index at the position, in C
clusters as `IndexEntropyModel.fit` makes them) with integer features the decoder has when a
group is decoded after the previous group and after the whole previous stage:

* ``group``: whether the previous group's index at this stage is *active* (not the stage and
  group's most common code, the "nothing to add" code of an ECVQ codebook);
* ``nb``: how many of the four neighbours were active at the previous stage (0, 1, 2+).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import aecodec
from aecodec.entropy import _cluster_rows
from aecodec.train import TrainConfig, _latents, load_folder

from .kodak_roundtrip import save

OUT = Path(__file__).parent / "results" / "index_context.json"
SMOOTH = 0.02
REPORTED_STAGES = (1, 3, 6, 9, 11)

Feature = Callable[[dict, int, int], np.ndarray]


def features(symbols: np.ndarray, mode: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position context features of one image's symbols (S, G, h, w)."""
    active = symbols != mode[:, :, None, None]
    pad = np.pad(active, ((0, 0), (0, 0), (1, 1), (1, 1)))
    around = pad[..., :-2, 1:-1].astype(np.int64) + pad[..., 2:, 1:-1] + pad[..., 1:-1, :-2] + pad[..., 1:-1, 2:]
    nb = np.zeros_like(around)
    nb[1:] = np.minimum(around[:-1], 2)  # the previous stage's, decoded before this one
    group = np.zeros(active.shape, dtype=np.int64)
    group[:, 1:] = active[:, :-1]  # the previous group's, decoded before this one
    return {"group": group, "nb": nb}


CANDIDATES: list[tuple[int, tuple[str, ...]]] = [
    (16, ()), (1, ()), (4, ()), (8, ("group",)), (16, ("group",)), (16, ("nb",)),
    (4, ("group", "nb")), (8, ("group", "nb")), (16, ("group", "nb")),
]
CLASSES = {"group": 2, "nb": 3}


def cross_entropy(train: list[np.ndarray], held: list[np.ndarray], clusters: int, names: tuple[str, ...],
                  train_f: list[dict], held_f: list[dict]) -> np.ndarray:
    """Bits (S,) of the held-out symbols, per stage, under tables fitted on the training ones."""
    stages, groups = train[0].shape[:2]
    k = 1 + int(max(s.max() for s in train + held))
    bits = np.zeros(stages)
    for s in range(stages):
        for g in range(groups):
            xt = np.concatenate([x[s, g].ravel() for x in train])
            xh = np.concatenate([x[s, g].ravel() for x in held])
            if s and clusters > 1:
                pt = np.concatenate([x[s - 1, g].ravel() for x in train])
                ph = np.concatenate([x[s - 1, g].ravel() for x in held])
                cmap = _cluster_rows(np.bincount(pt * k + xt, minlength=k * k).reshape(k, k), clusters, 0)
                ct, ch = cmap[pt].astype(np.int64), cmap[ph].astype(np.int64)
            else:
                ct, ch = np.zeros_like(xt), np.zeros_like(xh)
            width = clusters
            for name in names:
                ct = ct * CLASSES[name] + np.concatenate([f[name][s, g].ravel() for f in train_f])
                ch = ch * CLASSES[name] + np.concatenate([f[name][s, g].ravel() for f in held_f])
                width *= CLASSES[name]
            counts = np.bincount(ct * k + xt, minlength=width * k).reshape(width, k) + SMOOTH
            p = counts / counts.sum(1, keepdims=True)
            bits[s] += -np.log2(p[ch, xh]).sum()
    return bits


def run(train_dir: Path, model: str, photos: int) -> dict:
    torch.set_num_threads(1)
    net = aecodec.load(model).model
    images = load_folder(train_dir)
    held_imgs = images[-TrainConfig.val_count :]
    levels = net.bottleneck.levels
    symbols = lambda imgs: [net.symbols(lat, levels)[:, 0] for lat in _latents(net, imgs, torch.device("cpu"))]
    train, held = symbols(images[:photos]), symbols(held_imgs)
    stages, groups = train[0].shape[:2]
    mode = np.array([[np.bincount(np.concatenate([x[s, g].ravel() for x in train])).argmax()
                      for g in range(groups)] for s in range(stages)])
    train_f = [features(x, mode) for x in train]
    held_f = [features(x, mode) for x in held]
    pixels = sum(img.shape[1] * img.shape[2] for img in held_imgs)
    rows = []
    for clusters, names in CANDIDATES:
        cum = np.cumsum(cross_entropy(train, held, clusters, names, train_f, held_f)) / pixels
        tables = clusters * int(np.prod([CLASSES[n] for n in names]))
        rows.append({"context": " x ".join([f"previous stage ({clusters})", *names]), "tables": tables,
                     "bpp": [float(cum[n - 1]) for n in REPORTED_STAGES if n <= stages]})
    base = rows[0]["bpp"]
    for r in rows:
        r["saving"] = [1 - b / a for a, b in zip(base, r["bpp"])]
    return {"model": model, "photos": photos, "stages": [n for n in REPORTED_STAGES if n <= stages], "rows": rows}


def markdown(result: dict) -> str:
    head = " | ".join(f"{n} stages" for n in result["stages"])
    lines = [f"Held-out cross-entropy of `{result['model']}`'s indices (tables fitted on {result['photos']} "
             "training photos), cumulative bpp and saving against today's context:", "",
             f"| context | tables per stage and group | {head} |", "|---|---|" + "---|" * len(result["stages"])]
    for r in result["rows"]:
        cells = " | ".join(f"{b:.4f} ({100 * -s:+.1f}%)" for b, s in zip(r["bpp"], r["saving"]))
        lines.append(f"| {r['context']} | {r['tables']} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--model", default="rvq")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    save(args.out, run(args.train, args.model, args.photos), markdown)
