"""Send images to a running miscause server and print what it predicts; optionally explain and erase.

`infer` reads PNG/JPEG files (or every such file under a folder), resizes any whose size differs from the
model's input (with a warning), and prints one row per image: label and confidence; with --erase also the
label after erasing the most salient pixels and the policy-corrected label. With --out, writes a saliency
overlay (--explain) and the erased image (--erase) per input as PNG.

example:
  $ miscause client infer photos/ --server localhost:8001 --explain --erase --out overlays/
  image           label     confidence  erased label  corrected label
  photos/cat.png  cat       0.912       cat           cat
  photos/dog.jpg  deer      0.534       dog           dog
  wrote 4 images to overlays/

  # TLS and a bearer token:
  $ MISCAUSE_TOKEN=secret miscause client infer cat.png --server host:8001 --tls --ca server.crt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
import numpy as np

from miscause import defaults
from miscause.client import images as image_files
from miscause.client.api import InferenceClient
from miscause.errors import MiscauseError
from miscause.proto import names
from miscause.proto.names import TOKEN_ENV


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="client_command", metavar="COMMAND", required=True)
    infer = commands.add_parser("infer", help="predict (and explain, and erase) image files",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    infer.add_argument("paths", nargs="+", type=Path, metavar="PATHS", help="PNG/JPEG files or folders")
    infer.add_argument("--server", default="localhost:8001", help="HOST:PORT of the server (default %(default)s)")
    infer.add_argument("--model", default="cifarnet", help="model name (default %(default)s)")
    infer.add_argument("--explain", action="store_true", help="ask for saliency; with --out, write overlays")
    infer.add_argument("--erase", action="store_true",
                       help="ask for the erased image's label and the corrected label; with --out, write it")
    infer.add_argument("--out", type=Path, help="folder for saliency overlays and erased images (PNG)")
    infer.add_argument("--batch-size", type=int, default=32, help="images per request (default %(default)s)")
    infer.add_argument("--top-percent", type=float, help="erase around this top share of salient pixels "
                       f"(default: the model's policy, else {defaults.TOP_PERCENT:g})")
    infer.add_argument("--box", type=int, help="side of the box erased around each anchor pixel "
                       f"(default: the model's policy, else {defaults.BOX})")
    infer.add_argument("--saliency-method", help="saliency method, checked by the server "
                       f"(default: the model's policy, else {defaults.SALIENCY_METHOD})")
    infer.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default %(default)s)")
    infer.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca)")
    infer.add_argument("--ca", type=Path, help="PEM root certificate to trust (implies --tls)")
    infer.add_argument("--token-file", type=Path, help=f"bearer token file (default: ${TOKEN_ENV} if set)")


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is None:
        return os.environ.get(TOKEN_ENV) or None
    try:
        return args.token_file.read_text().strip()
    except OSError as error:
        raise MiscauseError(f"cannot read --token-file: {error}") from None


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def infer(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise MiscauseError("--batch-size must be at least 1")
    if args.explain and args.out is None:
        raise MiscauseError("--explain writes saliency overlays: give --out DIR")
    try:
        paths = image_files.find_images(args.paths)
    except FileNotFoundError as error:
        raise MiscauseError(str(error)) from None
    if not paths:
        raise MiscauseError("no PNG or JPEG images found in the given paths")
    root = args.ca.read_bytes() if args.ca else None
    outputs = [names.LABEL, names.PROBS] + ([names.SALIENCY] if args.explain else [])
    outputs += [names.MASK, names.ERASED_LABEL, names.CORRECTED_LABEL] if args.erase else []
    parameters = {key: value for key, value in (("top_percent", args.top_percent), ("box", args.box),
                                                ("saliency_method", args.saliency_method)) if value is not None}
    with InferenceClient(args.server, token=_token(args), tls=args.tls, root_certificates=root) as client:
        try:
            metadata = client.model_metadata(args.model, timeout=args.timeout)
            _, height, width, _ = metadata["inputs"][0]["shape"]
            loaded = []
            for path in paths:
                pixels, original = image_files.load(path, height, width)
                if original is not None:
                    print(f"warning: {path} is {original[0]}x{original[1]}, resized to {height}x{width}",
                          file=sys.stderr)
                loaded.append(pixels)
            batch = np.stack(loaded)
            results: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
            for start in range(0, len(batch), args.batch_size):
                answer = client.infer(args.model, batch[start:start + args.batch_size], outputs, parameters,
                                      timeout=args.timeout)
                for name in outputs:
                    results[name].append(answer[name])
        except grpc.RpcError as error:
            raise MiscauseError(f"{args.server}: {error.code().name}: {error.details()}") from None
    merged = {name: np.concatenate(parts) for name, parts in results.items()}
    classes = metadata["classes"]

    def name_of(index: int) -> str:
        return classes[index] if 0 <= index < len(classes) else str(index)

    header = ["image", "label", "confidence"] + (["erased label", "corrected label"] if args.erase else [])
    rows = [header]
    for i, path in enumerate(paths):
        label = int(merged[names.LABEL][i])
        row = [str(path), name_of(label), f"{merged[names.PROBS][i, label]:.3f}"]
        if args.erase:
            row += [name_of(int(merged[names.ERASED_LABEL][i])), name_of(int(merged[names.CORRECTED_LABEL][i]))]
        rows.append(row)
    print(_table(rows))
    if args.out and (args.explain or args.erase):
        written = 0
        scale = max(1, 128 // max(height, width))
        for i, path in enumerate(paths):
            stem = f"{i:04d}-{path.stem}"
            if args.explain:
                overlay = image_files.overlay(loaded[i], merged[names.SALIENCY][i])
                image_files.save_png(overlay, args.out / f"{stem}.saliency.png", scale)
                written += 1
            if args.erase:
                image_files.save_png(image_files.erased(loaded[i], merged[names.MASK][i]),
                                     args.out / f"{stem}.erased.png", scale)
                written += 1
        print(f"wrote {written} images to {args.out}")
    return 0


def run(args: argparse.Namespace) -> int:
    return infer(args)
