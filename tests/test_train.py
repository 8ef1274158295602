"""`aecodec train` end to end on a few generated images: trains, checkpoints, resumes, exports."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from aecodec.cli import main
from aecodec.codec import load
from aecodec.train import RATE_BIASES, Plateau, held_out_views, load_checkpoint

from .conftest import smooth_image

TINY = ["--channels", "8", "--latent", "8", "--stages", "4", "--codebook-size", "16",
        "--qualities", "1,2,3,4", "--default-quality", "2", "--batch-size", "2", "--crop", "32",
        "--val-count", "1", "--threads", "1"]


def photos(tmp_path: Path, count: int = 2, width: int = 64) -> tuple[Path, Path]:
    """A folder of ``count`` generated photos and a run folder beside it."""
    data = tmp_path / "data"
    data.mkdir()
    for s in range(count):
        smooth_image(width, 64, seed=s).save(data / f"{s}.png")
    return data, tmp_path / "run"


def test_train_resume_and_export(tmp_path, capsys):
    data, out = photos(tmp_path, 3, 80)
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "6", "--warmup", "3", *TINY]) == 0
    assert (out / "checkpoint.pt").exists()
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "8", "--warmup", "3",
                 "--resume", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed
    assert all(f"rate bias {b:g}: BD-rate" in printed for b in RATE_BIASES)
    assert "512x512 corners: 0 +0.0%" in printed and "whole, downscaled by 2: 0 +0.0%" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 8 and len(summary["validation"]) == 4
    codec = load(out / "rvq.safetensors")
    img = smooth_image(40, 30)
    assert codec.decompress(codec.compress(img, 4)).size == (40, 30)
    assert codec.model.config.rate_bias in RATE_BIASES


def test_a_given_rate_bias_is_kept(tmp_path):
    data, out = photos(tmp_path)
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "4", "--warmup", "2",
                 "--rate-bias", "7.5", *TINY]) == 0
    assert load(out / "rvq.safetensors").model.config.rate_bias == 7.5


def test_corrupt_adds_bounded_noise_and_keeps_8_bit_levels():
    from aecodec.train import corrupt

    torch.manual_seed(0)
    x = torch.full((64, 3, 16, 16), 0.5)
    y = corrupt(x, 25)
    assert torch.equal(torch.round(y * 255), y * 255) and 0 <= y.min() and y.max() <= 1
    sigmas = (y - x).flatten(1).std(1) * 255
    assert sigmas.max() < 27 and sigmas.min() < 5 and sigmas.mean() > 8  # uniform in [0, 25]


def test_crops_from_downscaled_images_see_more_of_the_image():
    """On a horizontal ramp of one level per two pixels a full-scale 64-pixel crop spans 31 or
    32 levels; a crop of the image downscaled by s spans 32 / s."""
    import random

    from aecodec.train import random_crops

    def spans(x: torch.Tensor) -> torch.Tensor:
        return (x.amax((1, 2, 3)) - x.amin((1, 2, 3))) * 255

    ramp = (torch.arange(512) // 2).to(torch.uint8).expand(3, 200, 512).contiguous()
    full = spans(random_crops([ramp], 32, 64, random.Random(0)))
    assert full.round().min() >= 31 and full.round().max() <= 32
    scaled = spans(random_crops([ramp], 200, 64, random.Random(0), min_scale=0.5))
    assert scaled.min() >= 30 and scaled.max() <= 64 and scaled.max() > 55 and scaled.median() > 38
    assert (scaled < 36).any()


def test_a_run_resumed_under_another_name_with_noise(tmp_path, capsys):
    """How the shipped denoising model was grown from the default model's run."""
    import shutil

    (data, out), den = photos(tmp_path), tmp_path / "den"
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "4", "--warmup", "2", *TINY]) == 0
    den.mkdir()
    shutil.copy(out / "checkpoint.pt", den / "checkpoint.pt")
    assert main(["train", "--data", str(data), "--out", str(den), "--steps", "6", "--warmup", "2",
                 "--resume", "--name", "den", "--noise", "20", *TINY]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert load(den / "den.safetensors").name == "den"


def test_contraction_estimates_the_jacobian_norm():
    """For a linear encoder y = A x, E||J e||^2 / ||y||^2 = ||A||_F^2 / ||A x||^2."""
    from aecodec.train import contraction

    torch.manual_seed(0)
    enc = torch.nn.Conv2d(3, 4, 2, stride=2, bias=False)
    x = torch.rand(1, 3, 8, 8)
    y = enc(x)
    estimate = torch.stack([contraction(enc, x, y) for _ in range(2000)]).mean()
    exact = enc.weight.square().sum() * 16 / y.square().sum()  # each of 16 outputs sees its own patch
    assert abs(float((estimate / exact).detach()) - 1) < 0.1


def test_the_contractive_penalty_changes_training(tmp_path):
    from safetensors.torch import load_file

    data, _ = photos(tmp_path)
    weights = []
    for extra in ([], ["--contractive", "1"]):
        out = tmp_path / f"run{len(extra)}"
        assert main(["train", "--data", str(data), "--out", str(out), "--steps", "4", "--warmup", "2",
                     "--rate-bias", "0", *extra, *TINY]) == 0
        weights.append(load_file(out / "rvq.safetensors")["analysis.0.weight"])
    assert not torch.equal(*weights)


def _tuned(tmp_path: Path, *flags: str) -> tuple[dict, dict, Path, Path]:
    """A tiny model trained 4 steps, then 6 more from it with ``flags``: both state dicts and
    both exported files."""
    from safetensors.torch import load_file

    data, out = photos(tmp_path)
    assert main(["train", "--data", str(data), "--out", str(out), "--steps", "4", "--warmup", "2",
                 "--rate-bias", "0", *TINY]) == 0
    tuned = tmp_path / "tuned"
    assert main(["train", "--data", str(data), "--out", str(tuned), "--steps", "8", "--warmup", "2",
                 "--init", str(out / "rvq.safetensors"), "--lr", "1e-2", "--lr-warmup", "1",
                 "--rate-bias", "0", *flags, *TINY]) == 0
    files = out / "rvq.safetensors", tuned / "rvq.safetensors"
    return load_file(files[0]), load_file(files[1]), *files


def test_a_decoder_only_run_keeps_encoder_codebooks_and_symbols(tmp_path):
    """--decoder-only moves the synthesis alone: the EMA codebooks, revival and tables stay."""
    before, after, first, second = _tuned(tmp_path, "--decoder-only")
    fixed = [k for k in before if not k.startswith("synthesis.")]
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("synthesis."))
    img = smooth_image(48, 40, seed=5)  # same encoder, codebooks and tables: the same bits
    assert len(load(first).compress(img, 3)) == len(load(second).compress(img, 3))


def test_a_frozen_bottleneck_run_moves_both_transforms_only(tmp_path):
    """--frozen-bottleneck: encoder and decoder learn, the codebooks and their EMA stay."""
    before, after, _, _ = _tuned(tmp_path, "--frozen-bottleneck", "--noise", "20")
    bottleneck = [k for k in before if k.startswith("bottleneck.")]
    assert bottleneck and all(torch.equal(before[k], after[k]) for k in bottleneck)
    for part in ("analysis.", "synthesis."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(part))


def test_held_out_views_are_corners_and_halved_wholes():
    images = [torch.randint(0, 256, (3, 600, 700), dtype=torch.uint8), torch.randint(0, 256, (3, 81, 90), dtype=torch.uint8)]
    views = held_out_views(images)
    assert [v.shape for v in views["512x512 corners"]] == [(3, 512, 512), (3, 81, 90)]
    assert [v.shape for v in views["whole, downscaled by 2"]] == [(3, 300, 350), (3, 40, 45)]
    assert torch.equal(views["512x512 corners"][0], images[0][:, :512, :512])
    assert all(v.dtype == torch.uint8 for view in views.values() for v in view)


def test_plateau_halves_the_learning_rate_only_when_the_loss_stops_improving():
    plateau = Plateau(patience=2)
    for mean in (3.0, 2.0, 1.5):  # improving: no decay
        plateau.observe(mean)
        plateau.end_interval()
    assert plateau.factor == 1.0 and plateau.best == 1.5
    for mean in (1.499, 1.6):  # within min_gain of the best, then worse: two flat intervals
        plateau.observe(mean - 0.1)
        plateau.observe(mean + 0.1)
        plateau.end_interval()
    assert plateau.factor == 0.5 and plateau.stale == 0
    plateau.end_interval()  # an interval with no steps changes nothing
    assert plateau.factor == 0.5


def test_a_plateau_run_resumes_with_its_schedule_state(tmp_path):
    data, run = photos(tmp_path)
    args = ["--data", str(data), "--out", str(run), "--warmup", "1", "--checkpoint-minutes", "0",
            "--schedule", "plateau", *TINY]
    assert main(["train", "--steps", "3", *args]) == 0
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["plateau"]["best"] < float("inf") and state["plateau"]["count"] == 0
    assert main(["train", "--steps", "4", "--resume", *args]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4
