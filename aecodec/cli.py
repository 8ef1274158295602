"""The ``aecodec`` command line: parses arguments and calls the API, nothing more."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .errors import AecError, FormatError, UsageError, naming, reading


def _read_bytes(path: Path) -> bytes:
    with reading(path, FormatError):
        return path.read_bytes()


def _check_output(src: Path, dst: Path, force: bool) -> None:
    """Refuse before any work is done: never clobber an input, or an output without --force."""
    if dst.exists() and (src.resolve() == dst.resolve()):
        raise UsageError(f"{dst}: output is the input file")
    if dst.exists() and not force:
        raise UsageError(f"{dst}: exists (use --force to overwrite)")


def _file_codec(model: str | None, data: bytes):
    """The codec named by --model, else the shipped model the file's header names."""
    from .codec import codec_for, load

    return load(model) if model else codec_for(data)


def _single(args: argparse.Namespace, command: str) -> tuple[Path, Path]:
    """The two-file form: exactly INPUT OUTPUT; batch options need -o."""
    extra = [f"--{name}" for name in ("workers", "format") if getattr(args, name, None) is not None]
    if extra:
        raise UsageError(f"{' and '.join(extra)} only apply with -o/--output-dir")
    if len(args.files) != 2:
        raise UsageError(f"{command} takes INPUT OUTPUT, or any number of inputs and -o DIR "
                         f"(got {len(args.files)} file{'s' if len(args.files) != 1 else ''} and no -o)")
    src, dst = Path(args.files[0]), Path(args.files[1])
    if dst.is_dir():
        raise UsageError(f"{dst}: is a folder (to write into a folder, use -o {dst})")
    return src, dst


def _output_dir(args: argparse.Namespace, file_suffixes: set[str]) -> str:
    """-o is a folder; refuse what looks like an output file name (``-o out.aec``)."""
    path = Path(args.output_dir)
    if not path.is_dir() and path.suffix.lower() in file_suffixes:
        raise UsageError(f"{path}: -o names a folder; to write one file, give INPUT OUTPUT without -o")
    return args.output_dir


def _workers(args: argparse.Namespace) -> int:
    return 1 if args.workers is None else args.workers


def _batch_done(summary) -> None:
    print(summary)
    summary.check()


def _encode(args: argparse.Namespace) -> None:
    from .batch import AEC_SUFFIX, compress_files, sigterm_as_interrupt

    with sigterm_as_interrupt():
        if args.output_dir is not None:
            out = _output_dir(args, {AEC_SUFFIX})
            return _batch_done(compress_files(args.files, out, args.quality, args.model, _workers(args),
                                              args.force, progress=True, **_target(args)))
        _encode_one(*_single(args, "encode"), args)


def _encode_one(src: Path, dst: Path, args: argparse.Namespace) -> None:
    from .batch import image_suffixes
    from .codec import load
    from .imageio import open_image, write_atomic

    _check_output(src, dst, args.force)
    if dst.suffix.lower() in image_suffixes():
        raise UsageError(f"{dst}: an image name for a .aec output; to compress several images, use -o DIR")
    codec = load(args.model)
    codec.check_target(args.quality, **_target(args))
    data = codec.compress(open_image(src), args.quality, **_target(args))
    write_atomic(dst, data, overwrite=args.force)
    i = codec.info(data)
    print(f"{dst}: {i.width}x{i.height} {i.mode}, {_level(i)}, {i.bytes} bytes, {i.bpp:.3f} bpp")


def _target(args: argparse.Namespace) -> dict:
    return {"refine": args.refine, "bpp": args.bpp, "psnr": args.psnr, "beam": args.beam}


def _level(i) -> str:
    """'quality 4', or the rate level where it is no quality level, plus any refinement."""
    level = f"quality {i.quality}" if i.quality is not None else f"level {i.level}"
    return level + (f" + refinement step {i.refine}" if i.refine else "")


def _decode(args: argparse.Namespace) -> None:
    from .batch import decompress_files, image_suffixes, sigterm_as_interrupt

    with sigterm_as_interrupt():
        if args.output_dir is not None:
            out = _output_dir(args, image_suffixes())
            return _batch_done(decompress_files(args.files, out, args.format or "png", args.model,
                                                args.preview, _workers(args), args.force, progress=True))
        _decode_one(*_single(args, "decode"), args)


def _decode_one(src: Path, dst: Path, args: argparse.Namespace) -> None:
    from .imageio import image_bytes, output_format, write_atomic

    _check_output(src, dst, args.force)
    output_format(dst)
    data = _read_bytes(src)
    with naming(src):
        img = _file_codec(args.model, data).decompress(data, stages=args.preview)
    write_atomic(dst, image_bytes(img, dst), overwrite=args.force)


def _truncate(args: argparse.Namespace) -> None:
    from .imageio import write_atomic

    src, dst = Path(args.input), Path(args.output)
    _check_output(src, dst, args.force)
    data = _read_bytes(src)
    with naming(src):
        codec = _file_codec(args.model, data)
        out = codec.truncate(data, args.quality, args.bpp)
    write_atomic(dst, out, overwrite=args.force)
    i = codec.info(out)
    print(f"{dst}: {_level(i)}, {i.bytes} bytes ({len(data)} before), {i.bpp:.3f} bpp")


def _info(args: argparse.Namespace) -> None:
    from .codec import info

    with naming(Path(args.input)):
        i = info(_read_bytes(Path(args.input)))
    quality = i.quality if i.quality is not None else "custom"
    print(f"model:       {i.model} (fingerprint {i.fingerprint})")
    print(f"image:       {i.width}x{i.height} {i.mode}")
    sections = f"{i.sections} section" + ("s" if i.sections != 1 else "")
    print(f"quality:     {quality} (level {i.level if i.level is not None else 'unknown'}, {sections})")
    print(f"refinement:  {f'step {i.refine} (max error {i.refine // 2})' if i.refine else 'none'}")
    print(f"size:        {i.bytes} bytes, {i.bpp:.4f} bits per pixel")


def _models(args: argparse.Namespace) -> None:
    from .codec import available_models, load

    for name in available_models():
        c = load(name)
        lambdas = getattr(c.model.bottleneck, "lambdas", None)  # rate-trained levels
        unit, values = ("lambda", [lambdas[lv - 1] for lv in c.levels_per_quality]) if lambdas else \
            ("sections" if c.model.config.bottleneck == "lattice" else "stages", c.levels_per_quality)
        levels = ", ".join(f"q{q}={v:g}" for q, v in enumerate(values, 1))
        print(f"{name}: bottleneck {c.model.config.bottleneck}, quality 1-{len(c.levels_per_quality)} "
              f"(default {c.default_quality}); {unit} per quality: {levels}")


def _demo(args: argparse.Namespace) -> None:
    from .codec import SAMPLE, load
    from .imageio import image_bytes, open_image, write_atomic
    from .metrics import bpp, psnr

    codec = load(args.model)
    image = open_image(SAMPLE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{SAMPLE.name}: {image.width}x{image.height}, model {codec.name}")
    print("quality   level    bytes     bpp   PSNR (dB)")
    for q in codec.quality_levels:
        data = codec.compress(image, q)
        decoded = codec.decompress(data)
        print(f"{q:7d}  {codec.levels_per_quality[q - 1]:6d}  {len(data):7d}  {bpp(len(data), image):6.3f}  {psnr(image, decoded):9.2f}")
        if q == codec.default_quality:
            write_atomic(out / "sample.aec", data)
            write_atomic(out / "sample-decoded.png", image_bytes(decoded, out / "sample-decoded.png"))
    print(f"wrote {out / 'sample.aec'} and {out / 'sample-decoded.png'} (quality {codec.default_quality})")


def _train(args: argparse.Namespace) -> None:
    from . import bottlenecks
    from .bottlenecks.vae import LAMBDAS
    from .model import ModelConfig
    from .train import TrainConfig, train

    cfg = TrainConfig(data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size,
                      crop=args.crop, lr=args.lr, lr_warmup=args.lr_warmup, warmup=args.warmup, seed=args.seed,
                      device=args.device, threads=args.threads,
                      checkpoint_minutes=args.checkpoint_minutes, val_count=args.val_count,
                      rate_bias=args.rate_bias, full_rate_fraction=args.full_rate_fraction, noise=args.noise,
                      min_scale=args.min_scale,
                      contractive=args.contractive, decoder_only=args.decoder_only,
                      frozen_bottleneck=args.frozen_bottleneck, schedule=args.schedule)
    if args.bottleneck in ("vae", "sparse"):
        lambdas = [float(v) for v in args.lambdas.split(",")] if args.lambdas else list(LAMBDAS)
        bottleneck_args: dict = {"lambdas": lambdas} | ({"sparsity": args.sparsity} if args.bottleneck == "sparse" else {})
        default_qualities = list(range(1, len(lambdas) + 1))
    elif args.bottleneck == "lattice":  # planes, head and steps: LatticeRVQ's defaults
        bottleneck_args = {}
        default_qualities = list(range(1, bottlenecks.create("lattice", dim=args.latent).levels + 1))
    else:
        bottleneck_args = {"stages": args.stages, "codebook_size": args.codebook_size} | \
            ({"group_dim": args.group_dim} if args.group_dim else {})
        default_qualities = ModelConfig().qualities
    qualities = [int(q) for q in args.qualities.split(",")] if args.qualities else default_qualities
    mcfg = ModelConfig(name=args.name or args.bottleneck, bottleneck=args.bottleneck, transform=args.transform,
                       channels=args.channels, latent=args.latent, detail=args.detail,
                       bottleneck_args=bottleneck_args,
                       qualities=qualities, default_quality=min(args.default_quality, len(qualities)))
    train(cfg, mcfg, resume=args.resume, init=args.init, name=args.name)


def _scale(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value


def _auto_or_number(text: str) -> float | None:
    return None if text == "auto" else float(text)


_auto_or_number.__name__ = "number or 'auto'"  # argparse names the type in its error message


def _add_file_args(p: argparse.ArgumentParser, inputs: str, suffix: str) -> None:
    """The arguments encode and decode share: one file to one file, or many to a folder."""
    p.add_argument("files", nargs="+", metavar="FILE", help=f"INPUT OUTPUT; or, with -o, any number of {inputs}")
    p.add_argument("-o", "--output-dir", default=None, metavar="DIR",
                   help=f"batch: write DIR/<input stem>.{suffix} for every input (DIR is created)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="batch: N worker processes (default 1: this process; 0: one per CPU core)")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing outputs (a batch otherwise skips them, so a re-run resumes)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aecodec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("encode", help="compress images to .aec",
                       usage="aecodec encode INPUT OUTPUT [options]\n"
                             "       aecodec encode INPUT... -o DIR [--workers N] [options]")
    _add_file_args(p, "input images", "aec")
    p.add_argument("--model", default="rvq", help="shipped model name or path to a .safetensors model")
    p.add_argument("--quality", "-q", type=int, default=None, help="quality level, 1 = smallest file")
    p.add_argument("--refine", type=int, default=None, metavar="STEP",
                   help="add a refinement layer: no sample off by more than STEP // 2 (1: lossless on this machine)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--bpp", type=float, default=None,
                        help="instead of a quality: the largest file within this many bits per pixel")
    target.add_argument("--psnr", type=float, default=None,
                        help="instead of a quality: the smallest file reaching this PSNR (dB)")
    p.add_argument("--beam", type=int, default=1, metavar="N",
                   help="rvq: search N code paths through the stages (slower encoding, smaller files; default 1)")
    p.set_defaults(func=_encode)
    p = sub.add_parser("decode", help="decompress .aec to images (format from the extension or --format)",
                       usage="aecodec decode INPUT OUTPUT [options]\n"
                             "       aecodec decode INPUT... -o DIR [--format png] [--workers N] [options]")
    _add_file_args(p, ".aec inputs", "<format>")
    p.add_argument("--format", default=None, metavar="EXT",
                   help="batch: output image format by extension: png (default), jpg, webp, ...")
    p.add_argument("--model", default=None, help="model to decode with (default: the one the file names)")
    p.add_argument("--preview", type=int, nargs="?", const=1, default=None, metavar="STAGES",
                   help="decode only the first STAGES stages (default 1): a fast, coarse preview")
    p.set_defaults(func=_decode)
    p = sub.add_parser("truncate", help="drop the finest stages of a .aec file, without re-encoding")
    p.add_argument("input")
    p.add_argument("output")
    keep = p.add_mutually_exclusive_group(required=True)
    keep.add_argument("--quality", "-q", type=int, help="the lower quality level to keep")
    keep.add_argument("--bpp", type=float, help="keep the most stages within this many bits per pixel")
    p.add_argument("--model", default=None, help="model whose quality table to use (default: the file's)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=_truncate)
    p = sub.add_parser("info", help="describe a .aec file")
    p.add_argument("input")
    p.set_defaults(func=_info)
    p = sub.add_parser("demo", help="compress the bundled sample image at every quality")
    p.add_argument("--model", default="rvq")
    p.add_argument("--out", default="aecodec-demo", help="folder for the demo's .aec and decoded .png")
    p.set_defaults(func=_demo)
    p = sub.add_parser("models", help="list the shipped models and their quality levels")
    p.set_defaults(func=_models)
    p = sub.add_parser("train", help="train a model on a folder of images")
    p.add_argument("--data", required=True, help="folder of training images (the last --val-count are held out)")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, log.jsonl, exported model")
    p.add_argument("--name", default=None,
                   help="model id (default: the bottleneck's name; on --resume, the checkpoint's)")
    p.add_argument("--bottleneck", default="rvq", choices=["rvq", "lattice", "vae", "sparse"],
                   help="rvq: residual vector quantizer with learned codebooks; lattice: residual quantizer whose "
                        "stages halve a lattice step (bit-planes; --init from a vae); vae: scalar latent under a learned factorized prior; "
                        "sparse: the vae with an L1 penalty, coded as significance map plus values")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--lr-warmup", type=int, default=300,
                   help="steps of linear learning-rate warm-up when the optimiser starts cold (new run or --init)")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--transform", default="gdn",
                   help="gdn: the GDN stack alone; lapped: a KLT-initialised linear lapped transform plus the GDN stack as a residual")
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--latent", type=int, default=96)
    p.add_argument("--detail", type=int, default=0,
                   help="lapped: how many of the latent's channels are detail coefficients (with --init from a "
                        "model without them: fitted to what its transforms miss)")
    p.add_argument("--stages", type=int, default=32, help="rvq: quantizer stages")
    p.add_argument("--codebook-size", type=int, default=256, help="rvq: codes per stage")
    p.add_argument("--group-dim", type=int, default=None, metavar="D",
                   help="rvq: channels per codebook (default: the whole latent, one codebook per stage)")
    p.add_argument("--lambdas", default=None,
                   help="vae, sparse: distortion weight of each level (comma list; default CompressAI's 0.0018..0.0483)")
    p.add_argument("--sparsity", type=float, default=0.05, help="sparse: weight of the L1 penalty on the code")
    p.add_argument("--qualities", default=None,
                   help="level used by quality 1, 2, ... (comma list; rvq: stages, vae: 1..levels)")
    p.add_argument("--noise", type=float, default=0.0, metavar="SIGMA",
                   help="denoising: add Gaussian noise of sigma uniform in [0, SIGMA] 8-bit levels to the inputs, "
                        "loss against the clean images")
    p.add_argument("--contractive", type=float, default=0.0, metavar="WEIGHT",
                   help="contractive autoencoder: penalise the encoder's relative Jacobian norm with this weight")
    p.add_argument("--decoder-only", action="store_true",
                   help="train the synthesis alone: the encoder and bottleneck, so the symbols and rates, stay fixed")
    p.add_argument("--frozen-bottleneck", action="store_true",
                   help="train both transforms but keep the bottleneck (codebooks; a VAE's gains and prior) as it is")
    p.add_argument("--full-rate-fraction", type=float, default=0.25,
                   help="share of samples trained at the finest level (the rest draw a level uniformly)")
    p.add_argument("--min-scale", type=_scale, default=1.0,
                   help="downscale each training crop's image by a random factor in [MIN_SCALE, 1] (log-uniform)")
    p.add_argument("--default-quality", type=int, default=4)
    p.add_argument("--rate-bias", default=None, type=_auto_or_number,
                   help="entropy-constrained encoding: each symbol choice pays this x its bits, a bit priced at what a "
                        "bit typically buys there (dimensionless); auto (default) picks it on the held-out "
                        "images at export")
    p.add_argument("--val-count", type=int, default=4)
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "plateau"],
                   help="learning rate: cosine decay over --steps, or halved when the training loss stops improving")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    p.add_argument("--init", default=None, help="start from an exported model (.safetensors)")
    p.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = lambda msg, *a, **k: print(f"aecodec: note: {msg}", file=sys.stderr)
    try:
        args.func(args)
    except AecError as exc:
        print(f"aecodec: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("aecodec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
