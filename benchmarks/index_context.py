"""What contexts beyond the previous stage would save on a grouped RVQ's indices: the held-out
cross-entropy of the model's own (rate-biased) symbols under tables conditioned on candidate
contexts, fitted on training photos.

    python -m benchmarks.index_context --train ../shared/data/train [--model denoise] [--photos 12]

The model must be an ECVQ residual VQ (``ResidualVQ``): ``denoise`` carries the previous default
rvq's encoder and index tables (the default ``rvq`` is now the lattice quantizer, whose
contexts are built in, see ``PlaneTables``).

Tables are counted per stage and channel group on the first ``--photos`` training photos and
scored on the held-out four (whole photos), smoothed alike (0.02 per entry), so the columns
compare contexts, not table precision; bpp is ideal code length over pixels, cumulative over
stages. Candidates cross today's context (the previous stage's index at the position, in C
clusters as `IndexEntropyModel.fit` makes them) with integer features the decoder has when a
group is decoded after the previous group and after the whole previous stage:

* ``group``: whether the previous group's index at this stage is *active* (not the stage and
  group's most common code, the "nothing to add" code of an ECVQ codebook);
* ``nb``: how many of the four neighbours were active at the previous stage (0, 1, 2+);
* ``energy``: how much the previous stage added around the position, an integer activity:
  each code's energy in quarter steps of its stage (round(4 |c|^2 / step^2), a table the
  decoder could hold), summed over the 8 neighbours in the group and the 3x3 windows of the
  groups either side, in 8 classes at the training photos' octiles per stage and group.

A *joint* row clusters (previous index, feature classes) pairs into its tables, as
``IndexEntropyModel.fit`` clusters previous indices, instead of crossing the two.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import aecodec
from aecodec.bottlenecks.vae import BIT_VALUE
from aecodec.entropy import _cluster_rows
from aecodec.train import TrainConfig, _latents, load_folder

from .kodak_roundtrip import save

OUT = Path(__file__).parent / "results" / "index_context.json"
SMOOTH = 0.02
REPORTED_STAGES = (1, 3, 6, 9, 11)

Feature = Callable[[dict, int, int], np.ndarray]


def _box3(x: np.ndarray) -> np.ndarray:
    pad = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    h, w = x.shape[-2:]
    return sum(pad[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3))


def features(symbols: np.ndarray, mode: np.ndarray, energy: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position context features of one image's symbols (S, G, h, w); ``energy`` (S, G, K)
    is each code's integer energy."""
    active = symbols != mode[:, :, None, None]
    pad = np.pad(active, ((0, 0), (0, 0), (1, 1), (1, 1)))
    around = pad[..., :-2, 1:-1].astype(np.int64) + pad[..., 2:, 1:-1] + pad[..., 1:-1, :-2] + pad[..., 1:-1, 2:]
    nb = np.zeros_like(around)
    nb[1:] = np.minimum(around[:-1], 2)  # the previous stage's, decoded before this one
    group = np.zeros(active.shape, dtype=np.int64)
    group[:, 1:] = active[:, :-1]  # the previous group's, decoded before this one
    stages, groups = symbols.shape[:2]
    spent = np.zeros(symbols.shape, dtype=np.int64)
    for s in range(1, stages):
        e = energy[s - 1][np.arange(groups)[:, None, None], symbols[s - 1]]
        window = _box3(e)
        spent[s] = window - e
        spent[s, 1:] += window[:-1]
        spent[s, :-1] += window[1:]
    return {"group": group, "nb": nb, "energy": spent}


CANDIDATES: list[tuple[int, tuple[str, ...], bool]] = [
    (16, (), False), (1, (), False), (4, (), False), (8, ("group",), False), (16, ("group",), False),
    (16, ("nb",), False), (4, ("group", "nb"), False), (8, ("group", "nb"), False), (16, ("group", "nb"), False),
    (2, ("energy",), False), (16, ("energy",), False), (16, ("energy",), True), (32, ("energy",), True),
]
CLASSES = {"group": 2, "nb": 3, "energy": 8}
QUANTILED = {"energy"}
"""Features that are raw activities, put in classes at their training octiles."""


def cross_entropy(train: list[np.ndarray], held: list[np.ndarray], clusters: int, names: tuple[str, ...],
                  joint: bool, train_f: list[dict], held_f: list[dict]) -> np.ndarray:
    """Bits (S,) of the held-out symbols, per stage, under tables fitted on the training ones."""
    stages, groups = train[0].shape[:2]
    k = 1 + int(max(s.max() for s in train + held))
    bits = np.zeros(stages)
    for s in range(stages):
        for g in range(groups):
            xt = np.concatenate([x[s, g].ravel() for x in train])
            xh = np.concatenate([x[s, g].ravel() for x in held])
            ft, fh, width = np.zeros_like(xt), np.zeros_like(xh), 1
            for name in names:
                vt = np.concatenate([f[name][s, g].ravel() for f in train_f])
                vh = np.concatenate([f[name][s, g].ravel() for f in held_f])
                if name in QUANTILED:
                    edges = np.quantile(vt, np.arange(1, CLASSES[name]) / CLASSES[name], method="lower")
                    vt, vh = np.searchsorted(edges, vt, side="right"), np.searchsorted(edges, vh, side="right")
                ft, fh, width = ft * CLASSES[name] + vt, fh * CLASSES[name] + vh, width * CLASSES[name]
            if s and clusters > 1:
                pt = np.concatenate([x[s - 1, g].ravel() for x in train])
                ph = np.concatenate([x[s - 1, g].ravel() for x in held])
                if joint:  # cluster (previous index, features) pairs
                    pt, ph, rows, ft, fh, width = pt * width + ft, ph * width + fh, k * width, 0 * ft, 0 * fh, 1
                else:
                    rows = k
                cmap = _cluster_rows(np.bincount(pt * k + xt, minlength=rows * k).reshape(rows, k), clusters, 0)
                ct, ch = cmap[pt].astype(np.int64), cmap[ph].astype(np.int64)
            else:
                ct, ch = np.zeros_like(xt), np.zeros_like(xh)
            if s == 0 and joint:  # nothing decoded before the first stage
                ft, fh, width = 0 * ft, 0 * fh, 1
            ct, ch, width = ct * width + ft, ch * width + fh, clusters * width
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
    rvq = net.bottleneck
    step2 = (rvq.price.double() / BIT_VALUE).clamp(min=1e-12)  # rvqs without prices: any scale
    energy = (4 * rvq.codebooks.double().square().sum(-1) / step2[:, None, None]).round().clamp(max=65535)
    energy = energy.long().numpy()
    train_f = [features(x, mode, energy) for x in train]
    held_f = [features(x, mode, energy) for x in held]
    pixels = sum(img.shape[1] * img.shape[2] for img in held_imgs)
    rows = []
    for clusters, names, joint in CANDIDATES:
        cum = np.cumsum(cross_entropy(train, held, clusters, names, joint, train_f, held_f)) / pixels
        tables = clusters * (1 if joint else int(np.prod([CLASSES[n] for n in names])))
        label = f"(previous stage x {' x '.join(names)}) in {clusters}" if joint else \
            " x ".join([f"previous stage ({clusters})", *names])
        rows.append({"context": label, "tables": tables,
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
    parser.add_argument("--model", default="denoise")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    save(args.out, run(args.train, args.model, args.photos), markdown)
