"""``aecodec train``: train an autoencoder codec on a folder of images, resumably.

The recipe: a short warm-up as a plain (unquantised) autoencoder, k-means initialisation of
every RVQ stage from the warmed-up latents, then training through the quantiser with a random
number of stages per sample, so one model learns every quality level. The loss is the mean
over samples of 10*log10(MSE), i.e. minus the PSNR, which weighs every quality level alike in
dB instead of letting the coarsest samples dominate. Bottlenecks with a rate term (the VAE and
its sparse variant) draw a level per sample instead and minimise lambda(level) x 255^2 x MSE +
bpp. ``--noise`` (denoising) and ``--contractive`` (Jacobian penalty) apply to any of them. At
the end the entropy tables are fitted on the training images and the model is exported as one
safetensors file.
"""

from __future__ import annotations

import functools
import io
import json
import math
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .bd import bd_rate
from .grow import add_detail, grow
from .imageio import open_image, pad_to_stride, to_planes, write_atomic
from .model import AutoEncoder, ModelConfig
from .transforms import STRIDE, block_klt

BOTTLENECK_LR_SCALE = 10.0
"""Learning-rate multiplier of the bottleneck parameters it names in ``lr_scale`` (the VAE's
gains and prior): they start from scratch, often on trained transforms, and Adam moves a
log-gain by only about lr per step."""

INIT_CROPS = 512
"""Training crops whose latents initialise the bottleneck: 32768 positions at 128 x 128, 128
per code of a 256-code RVQ stage (k-means on a quarter of that fits its sample)."""

BALANCE_CROPS = 16
"""Training crops on which a coding space's axes are balanced (``CodingSpace.balance``): 1024
positions at 128 x 128, each axis's cost a mean over all of them."""

KLT_CROPS = 2048
"""Training crops whose 16x16 blocks a new linear path's KLT (or a detail basis) is fitted to:
131072 blocks at 128 x 128, about 170 per coefficient of a 768-coefficient block."""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm"}


@dataclass
class TrainConfig:
    data: str
    out: str
    steps: int = 20000
    batch_size: int = 16
    crop: int = 128
    lr: float = 5e-4
    lr_warmup: int = 300
    """Steps of linear learning-rate warm-up whenever the optimiser starts without saved state
    (a new run or --init): Adam's first updates move every weight by about lr, which knocks a
    trained model far off its optimum (measured: held-out PSNR fell 5 dB in 450 steps at 5e-4)."""
    rate_bias: float | None = None
    """Entropy-constrained encoding strength for the exported model (see ModelConfig); None
    chooses it on the held-out images at export."""
    warmup: int = 500
    """Steps as a plain autoencoder before the quantiser is switched on."""
    contractive: float = 0.0
    """Weight of the contractive penalty (Rifai et al., 2011): the encoder's Jacobian norm
    relative to its latent (see ``contraction``), so small input changes move the code little."""
    noise: float = 0.0
    """Denoising: each training input gets Gaussian noise of a standard deviation drawn
    uniformly from [0, noise] (in 8-bit levels) while the loss compares with the clean crop, so
    the codec learns to code the image rather than its noise."""
    min_scale: float = 1.0
    """Each crop comes from its image downscaled by a factor drawn log-uniformly from
    [min_scale, 1]. Photographs of a few megapixels are smoother per pixel than the sub-megapixel
    images people mostly compress (Kodak among them): session 3's VAE lost 2-11 dB at its finest
    level when the held-out images were halved. It paid off once: the shipped vae's last 6300
    steps (min_scale 0.4, resumed with its optimiser state, lr at most 2e-5) gained 5.2% and
    7.2% in BD-rate on the two held-out views. Earlier trials at higher learning rates after a cold --init got worse:
    the vae's (lr 8e-5, stopped after 1800 steps) and rvq's twice (lr 1e-4, with bfloat16
    transforms and in float32, over 6000-8000 steps; see the cards)."""
    decoder_only: bool = False
    """Only the synthesis learns: the analysis and the bottleneck (codebooks, their EMA and
    revival) stay as they are, so every image keeps its symbols and its rate, and the decoder
    adapts to the errors the quantizer really makes at each level. A decoder taken over from a
    VAE (``--init``) was trained on that model's finer, scalar rounding."""
    frozen_bottleneck: bool = False
    """The bottleneck (codebooks, their EMA and revival; a VAE's gains and prior) stays as it
    is while both transforms learn. With --noise, the analysis can learn to give a noisy photo
    the codes of its clean version, so the code stops spending stages on noise, where a
    decoder-only run can only clean up codes that carry it. Its first try on ``denoise`` spent
    1-6% more bits for about the same PSNR (see denoise.md): a fixed number of stages is no rate
    term."""
    full_rate_fraction: float = 0.25
    """Share of samples trained at the finest level; the rest draw a level uniformly."""
    val_count: int = 4
    """The last images of the folder (sorted by name) are held out for validation."""
    checkpoint_minutes: float = 5.0
    schedule: str = "cosine"
    """"cosine": lr falls from lr to lr/10 over ``steps``; "plateau": lr stays until the mean
    training loss of a checkpoint interval stops improving (``Plateau``), then halves, so a run
    can go on for as long as it gains without fixing its length in advance."""
    seed: int = 0
    device: str = "auto"
    threads: int = 0


def load_folder(folder: Path) -> list[torch.Tensor]:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {folder}")
    return [(to_planes(open_image(p)).rgb * 255).round().to(torch.uint8) for p in files]


def held_out_views(images: list[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """The held-out images (3, H, W) uint8 as models are selected on them: their 512x512
    top-left corners (quick: what checkpoints validate on) and the whole images downscaled by 2
    (Lanczos), whose detail per pixel is nearer that of the sub-megapixel images people mostly
    compress, Kodak's among them. The two can disagree; a choice should answer to both."""
    def halve(img: torch.Tensor) -> torch.Tensor:
        pil = Image.fromarray(img.permute(1, 2, 0).numpy())
        small = pil.resize((pil.width // 2, pil.height // 2), Image.LANCZOS)
        return torch.from_numpy(np.array(small)).permute(2, 0, 1)

    return {"512x512 corners": [img[:, :512, :512] for img in images],
            "whole, downscaled by 2": [halve(img) for img in images]}


def random_crops(images: list[torch.Tensor], n: int, size: int, rng: random.Random,
                 min_scale: float = 1.0) -> torch.Tensor:
    """n random size x size crops with random flips, each from its image downscaled by a factor
    log-uniform in [min_scale, 1] (antialiased, rounded to 8 bits as a resized file would be)."""
    out = []
    for _ in range(n):
        img = images[rng.randrange(len(images))]
        _, h, w = img.shape
        scale = math.exp(rng.uniform(math.log(min_scale), 0.0)) if min_scale < 1 else 1.0
        span = min(round(size / scale), h, w)
        y, x = rng.randrange(h - span + 1), rng.randrange(w - span + 1)
        crop = img[:, y : y + span, x : x + span]
        if span != size:
            crop = torch.nn.functional.interpolate(crop[None].float(), size=(size, size), mode="bilinear",
                                                   antialias=True, align_corners=False)[0]
            crop = crop.round().clamp(0, 255).to(torch.uint8)
        if rng.random() < 0.5:
            crop = crop.flip(2)
        if rng.random() < 0.5:
            crop = crop.flip(1)
        out.append(crop)
    return torch.stack(out).float() / 255.0


def corrupt(x: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """x plus Gaussian noise of a per-sample sigma uniform in [0, max_sigma] 8-bit levels,
    clipped and rounded to 8 bits as a noisy photo file would be."""
    sigma = torch.rand(len(x), 1, 1, 1, device=x.device) * (max_sigma / 255)
    return torch.round((x + sigma * torch.randn_like(x)).clamp(0, 1) * 255) / 255


CONTRACTION_STEP = 1 / 255
"""Finite-difference step of ``contraction``: one 8-bit level."""


def contraction(analysis: torch.nn.Module, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    """Per sample, ||J e||^2 / ||y||^2 for the encoder's Jacobian J at x, latent y and a random
    e ~ N(0, I): an unbiased one-sample estimate of the squared Frobenius norm of J (Rifai et
    al.'s penalty), by one finite difference instead of a Jacobian. Relative to the latent, so
    the encoder cannot satisfy it by shrinking its output for a gain to undo."""
    e = torch.randn_like(x)
    jv = (analysis(x + CONTRACTION_STEP * e) - latent) / CONTRACTION_STEP
    return jv.square().flatten(1).sum(1) / latent.detach().square().flatten(1).sum(1).clamp(min=1e-12)


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return -10 * torch.log10(mse.clamp(min=1e-10))


@torch.no_grad()
def _latents(model: AutoEncoder, images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    return [model.analyse(pad_to_stride(img[None].float().div(255), STRIDE).to(device)).cpu() for img in images]


@torch.no_grad()
def symbols_of(model: AutoEncoder, images: list[torch.Tensor],
               device: torch.device) -> Callable[[int], list[np.ndarray]]:
    """``level`` -> the symbols of each image (padded to the stride) at that level, for
    fitting tables; the images go through the analysis once, when first asked."""
    latents = functools.cache(lambda: _latents(model, images, device))
    return lambda level: [model.symbols(lat, level) for lat in latents()]


@torch.no_grad()
def validate(model: AutoEncoder, images: list[torch.Tensor], device: torch.device, beam: int = 1) -> list[dict]:
    """PSNR and real coded bpp at every quality level on the held-out images. Before export
    the tables are provisional: fitted on these images' own symbols (RVQ indices, VAE context
    tables: so slightly optimistic, alike at every checkpoint) or derived from the current
    prior (the VAE's factorized tables). ``beam`` as ``AutoEncoder.symbols``. Leaves each
    module in the mode it found it in (a decoder-only run keeps its frozen parts in eval)."""
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    latents = _latents(model, images, device)
    provisional = model.entropy is None
    if provisional:
        model.fit_entropy(lambda level: [model.symbols(lat, level) for lat in latents])
    rows = []
    for q, level in enumerate(model.config.qualities, 1):
        mse, bits, pixels = [], 0.0, 0
        for img, lat in zip(images, latents):
            x = img[None].float().div(255)
            sym = model.symbols(lat, level, beam)
            x_hat = model.synthesis(model.bottleneck.decode(sym, level).to(device)).cpu()[..., : x.shape[2], : x.shape[3]]
            mse.append(torch.mean((x_hat.clamp(0, 1).mul(255).round().div(255) - x) ** 2))  # what an 8-bit file holds
            pixels += x.shape[2] * x.shape[3]
            bits += 8 * sum(len(c) for c in model.entropy.encode(sym[:, 0], level))
        rows.append({"quality": q, "level": level, "bpp": bits / pixels, "psnr": float(psnr(torch.stack(mse)).mean())})
    if provisional:
        model.entropy = None
    for m, mode in was_training.items():
        m.train(mode)
    return rows


@dataclass
class Plateau:
    """Learning-rate decay on a plateau of the training loss: at each checkpoint the interval's
    mean loss is compared with the best interval's; after ``patience`` intervals without a gain
    of ``min_gain`` (relative), the learning rate's factor halves, down to ``floor``. The
    training loss, averaged over hundreds of steps, is what the run optimises; the held-out
    images stay for model selection."""

    factor: float = 1.0
    best: float = math.inf
    stale: int = 0
    total: float = 0.0
    count: int = 0
    patience: int = 3
    min_gain: float = 0.002
    floor: float = 1 / 64

    def observe(self, loss: float) -> None:
        self.total, self.count = self.total + loss, self.count + 1

    def end_interval(self) -> None:
        if not self.count:
            return
        mean = self.total / self.count
        self.total, self.count = 0.0, 0
        if mean < self.best - self.min_gain * abs(self.best) or not math.isfinite(self.best):
            self.best, self.stale = mean, 0
        else:
            self.stale += 1
            if self.stale >= self.patience and self.factor > self.floor:
                self.factor, self.stale = self.factor / 2, 0
                tqdm.write(f"training loss flat for {self.patience} checkpoints: learning rate x{self.factor:g}")


def _save_checkpoint(path: Path, model: AutoEncoder, opt: torch.optim.Optimizer, step: int,
                     rng: random.Random, cfg: TrainConfig, elapsed: float, plateau: Plateau) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                "model_config": asdict(model.config), "train_config": asdict(cfg),
                "elapsed": elapsed, "plateau": asdict(plateau)}, buf)
    write_atomic(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's tensors and plain state, read without unpickling arbitrary objects
    (``weights_only``): a checkpoint from elsewhere cannot run code when resumed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise SystemExit(f"{path}: not a checkpoint that can be loaded safely ({reason})") from None


def train(cfg: TrainConfig, model_config: ModelConfig, resume: bool = False,
          init: Path | None = None, name: str | None = None) -> Path:
    """Run (or continue) training; returns the path of the exported model. On resume the
    checkpoint's model config wins, except its ``name`` when one is given (a run continued
    under another name, e.g. a denoising model grown from the default model's run)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.schedule not in ("cosine", "plateau"):
        raise SystemExit(f"unknown learning-rate schedule {cfg.schedule!r} (cosine or plateau)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    images = load_folder(Path(cfg.data))
    train_imgs = images[: -cfg.val_count or None]
    views = held_out_views(images[len(images) - cfg.val_count :])
    val_imgs = views["512x512 corners"]
    ckpt_path = out / "checkpoint.pt"
    step, elapsed = 0, 0.0
    plateau = Plateau()
    state = None
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model_config = ModelConfig(**(state["model_config"] | ({"name": name} if name else {})))
    model = AutoEncoder(model_config).to(device)
    if cfg.decoder_only:
        model.analysis.requires_grad_(False)
    if cfg.decoder_only or cfg.frozen_bottleneck:
        model.bottleneck.requires_grad_(False)
    scales = getattr(model.bottleneck, "lr_scale", ())
    fast = [p for pname, p in model.bottleneck.named_parameters() if pname.split(".")[0] in scales and p.requires_grad]
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not f for f in fast)]
    opt = torch.optim.Adam([{"params": rest}] + ([{"params": fast, "lr_scale": BOTTLENECK_LR_SCALE}] if fast else []),
                           lr=cfg.lr)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        plateau = Plateau(**state.get("plateau", {}))
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed from {ckpt_path} at step {step}")
    new_bottleneck = True
    if state is None and init is None and hasattr(model.analysis, "initialise"):
        with torch.no_grad():  # a linear path starts as the KLT of the training crops' blocks
            basis, mean = block_klt(random_crops(train_imgs, KLT_CROPS, cfg.crop, rng, cfg.min_scale), model_config.latent)
            model.analysis.initialise(basis.to(device), mean.to(device))
            model.synthesis.initialise(basis.to(device), mean.to(device))
    if state is None and init is not None:  # continue from a trained model, not from scratch
        # another bottleneck takes the transforms, and whatever bottleneck state has the same
        # names and shapes (a sparse model grown from a VAE keeps its gains and prior)
        source = AutoEncoder.load(init)
        if source.config.latent < model_config.latent:  # a wider latent: grow the trained model
            print(f"growing the latent of {init} from {source.config.latent} to {model_config.latent} channels"
                  + (f", {model_config.detail} of them detail channels" if model_config.detail else ""))
            if model_config.detail:
                if model_config.latent - source.config.latent != model_config.detail:
                    raise SystemExit(f"--init {init}: growing {source.config.latent} channels to {model_config.latent} "
                                     f"adds {model_config.latent - source.config.latent} detail channels, not {model_config.detail}")
                source = add_detail(source, model_config.detail,
                                    random_crops(train_imgs, KLT_CROPS, cfg.crop, rng, cfg.min_scale), cfg.seed)
            else:
                source = grow(source, model_config.latent,
                              random_crops(train_imgs, 128, cfg.crop, rng, cfg.min_scale), cfg.seed)
        target = model.state_dict()
        weights = {k: v for k, v in source.state_dict().items()
                   if k in target and v.shape == target[k].shape}
        new_bottleneck = any(k.startswith("bottleneck.") and k not in weights for k in target)
        missing = [k for k in target if k not in weights and not k.startswith("bottleneck.")]
        if missing:
            raise SystemExit(f"--init {init}: its transforms do not fit this model (no {missing[0]})")
        model.load_state_dict(weights, strict=False)
        if hasattr(model.bottleneck, "adopt_levels") and \
                getattr(source.bottleneck, "lambdas", model.bottleneck.lambdas) != model.bottleneck.lambdas:
            print(f"adopting the levels of {init} into the ladder {model.bottleneck.lambdas}")
            with torch.no_grad():
                crops = random_crops(train_imgs, 128, cfg.crop, rng, cfg.min_scale)
                lat = model.analyse(crops.to(device)).permute(0, 2, 3, 1).reshape(-1, model_config.latent).cpu()
            model.bottleneck.adopt_levels(source.bottleneck, lat, seed=cfg.seed)
            new_bottleneck = False
        if hasattr(model.bottleneck, "adopt_coding_space") and hasattr(source.bottleneck, "coding_space"):
            # an RVQ on a VAE's transforms, its stages refining as the VAE's levels do
            model.bottleneck.adopt_coding_space(*source.bottleneck.coding_space(), steps=source.bottleneck.level_steps())
            if model.bottleneck.balanced:
                with torch.no_grad():
                    lat = model.analyse(random_crops(train_imgs, BALANCE_CROPS, cfg.crop, rng, cfg.min_scale).to(device))
                scale = model.bottleneck.balance(model.synthesis, lat)
                print(f"balanced the coding space: axis scales {float(scale.min()):.2f} to {float(scale.max()):.2f}")
        step = cfg.warmup  # trained transforms replace the plain-autoencoder phase
        print(f"initialised from {init}" + (" (transforms only)" if new_bottleneck else ""))
    model.train()
    if cfg.decoder_only:  # frozen parts run as at coding time (no EMA codebook updates)
        model.analysis.eval()
    if cfg.decoder_only or cfg.frozen_bottleneck:
        model.bottleneck.eval()
    fresh_from = step if state is None else None  # the step the optimiser started cold
    needs_init = step <= cfg.warmup and new_bottleneck
    levels = model.bottleneck.levels
    log = open(out / "log.jsonl", "a")
    last_ckpt = time.time()
    start = time.time() - elapsed
    bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True)
    while step < cfg.steps:
        if needs_init and step == cfg.warmup:
            needs_init = False
            _initialise_bottleneck(model, train_imgs, cfg, rng, device)
        if cfg.schedule == "plateau":
            lr = cfg.lr * plateau.factor
        else:
            lr = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        if fresh_from is not None and step - fresh_from < cfg.lr_warmup:
            lr *= (step - fresh_from + 1) / cfg.lr_warmup
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        x = random_crops(train_imgs, cfg.batch_size, cfg.crop, rng, cfg.min_scale).to(device)
        inp = corrupt(x, cfg.noise) if cfg.noise else x
        if step < cfg.warmup:
            x_hat = model.synthesis(model.analyse(inp))
            mse = ((x_hat - x) ** 2).mean((1, 2, 3))
            loss, metrics = -psnr(mse).mean(), {}
        else:
            n = torch.randint(1, levels + 1, (cfg.batch_size,), device=device)
            full = torch.rand(cfg.batch_size, device=device) < cfg.full_rate_fraction
            n = torch.where(full, torch.full_like(n, levels), n)
            x_hat, bo, latent = model(inp, n)
            mse = ((x_hat - x) ** 2).mean((1, 2, 3))
            metrics = bo.metrics
            if bo.bits is None:  # the level fixes the rate: minimise distortion in dB
                loss = -psnr(mse).mean() + bo.loss
            else:  # Lagrangian rate-distortion loss, lambda by level (CompressAI's scaling)
                bpp = bo.bits / (x.shape[2] * x.shape[3])
                loss = (model.bottleneck.rate_weight(n) * 255**2 * mse + bpp).mean() + bo.loss
                metrics = metrics | {"bpp": float(bpp.detach().mean())}
            if cfg.contractive:
                c = contraction(model.analysis, inp, latent)
                loss = loss + cfg.contractive * c.mean()
                metrics = metrics | {"contraction": float(c.detach().mean())}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step > cfg.warmup:  # the plain-autoencoder phase's loss is another quantity
            plateau.observe(float(loss.detach()))
        if step % 50 == 0:
            perp = [v for k, v in metrics.items() if k.startswith("perplexity/")]
            rec = {"step": step, "loss": float(loss.detach()), "psnr": float(psnr(mse.detach()).mean()), "lr": lr,
                   "time": time.time() - start,
                   "perplexity": [round(p, 1) for p in perp]} | {k: metrics[k] for k in ("bpp", "contraction") if k in metrics}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(psnr=f"{rec['psnr']:.2f}", ppl=f"{min(perp, default=0):.0f}-{max(perp, default=0):.0f}")
        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60 or step == cfg.steps:
            plateau.end_interval()
            _save_checkpoint(ckpt_path, model, opt, step, rng, cfg, time.time() - start, plateau)
            last_ckpt = time.time()
            if step > cfg.warmup:
                rows = validate(model, val_imgs, device)
                tqdm.write(f"step {step} val: " + "  ".join(f"q{r['quality']} {r['bpp']:.3f}bpp {r['psnr']:.2f}dB" for r in rows))
    bar.close()
    if needs_init:  # exported with no training step: the bottleneck still fits what it fits on latents
        _initialise_bottleneck(model, train_imgs, cfg, rng, device)
    return export(model, train_imgs, views, out, device, step, time.time() - start, cfg.rate_bias)


def _initialise_bottleneck(model: AutoEncoder, train_imgs: list[torch.Tensor], cfg: TrainConfig,
                           rng: random.Random, device: torch.device) -> None:
    """``initialise`` the bottleneck on the latents of ``INIT_CROPS`` random training crops."""
    with torch.no_grad():
        lat = torch.cat([model.analyse(random_crops(train_imgs, 64, cfg.crop, rng, cfg.min_scale).to(device))
                         .permute(0, 2, 3, 1).reshape(-1, model.config.latent).cpu()
                         for _ in range(INIT_CROPS // 64)])
    model.bottleneck.initialise(lat, seed=cfg.seed)
    model.bottleneck.to(device)


RATE_BIASES = (0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.5)

REFITS = 2
"""Table fits on rate-biased symbols at export: the choices follow the tables and the tables the
choices, and the first fit is on plain choices, which ECVQ codebooks (priced from the start,
rate bias 1) are furthest from; a second fit starts from tables made on biased choices."""


def choose_rate_bias(model: AutoEncoder, views: dict[str, list[torch.Tensor]], device: torch.device,
                     candidates: tuple[float, ...] = RATE_BIASES) -> float:
    """The rate_bias with the lowest BD-rate against plain nearest-code encoding summed over
    the held-out views (0 if none is lower): the corners alone once picked 0.1 for a vae whose
    downscaled view gained three times as much at 0.2."""
    scores = [0.0] * len(candidates)
    for name, images in views.items():
        curves = []
        for bias in candidates:
            model.config.rate_bias = bias
            rows = validate(model, images, device)
            curves.append(([r["bpp"] for r in rows], [r["psnr"] for r in rows]))
        gains = [bd_rate(*curves[0], *c) for c in curves]
        scores = [total + gain for total, gain in zip(scores, gains)]
        print(f"{name}: " + "  ".join(f"{b:g} {100 * g:+.1f}%" for b, g in zip(candidates, gains)))
    model.config.rate_bias = 0.0
    for bias, score in zip(candidates, scores):
        print(f"rate bias {bias:g}: BD-rate {100 * score:+.1f}% against plain encoding (held-out views, summed)")
    best = min(range(len(candidates)), key=lambda i: scores[i] if math.isfinite(scores[i]) else math.inf)
    return candidates[best] if scores[best] < 0 else 0.0


def export(model: AutoEncoder, train_imgs: list[torch.Tensor], views: dict[str, list[torch.Tensor]],
           out: Path, device: torch.device, step: int, seconds: float,
           rate_bias: float | None = None) -> Path:
    """Fit the entropy tables on the training images, choose the rate bias on the held-out
    views (unless given), and write ``<name>.safetensors``."""
    model.eval()
    model.config.rate_bias = 0.0
    train_symbols = symbols_of(model, train_imgs, device)
    model.fit_entropy(train_symbols)
    if model.entropy.rate_cost(1, 1.0) is not None:  # tables that can price each choice
        bias = choose_rate_bias(model, views, device) if rate_bias is None else rate_bias
        if bias:  # rate-biased choices make the symbols more peaked: refit tables fitted on them
            model.config.rate_bias = bias
            for _ in range(REFITS):
                model.fit_entropy(train_symbols)
    model.to("cpu")
    path = out / f"{model.config.name}.safetensors"
    model.save(path)
    rows = validate(model, views["512x512 corners"], torch.device("cpu"))
    summary = {"steps": step, "seconds": round(seconds), "device": str(device), "validation": rows}
    write_atomic(out / "summary.json", json.dumps(summary, indent=1).encode())
    for r in rows:
        print(f"q{r['quality']} (level {r['level']}): {r['bpp']:.3f} bpp  {r['psnr']:.2f} dB")
    print(f"exported {path}")
    return path
