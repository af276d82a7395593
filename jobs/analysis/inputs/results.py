"""Study result files: what the analysis needs from one trained architecture, without its weights.

`miscause study --stage-only` writes one compressed `.npz` per architecture, about 2 MB for 10,000 test and 5,000
validation images of a 10-class model, meant to be committed; `miscause analyze --results` reads them back into
the runs the erasure analysis takes, so the report needs neither the model nor the images. Layout (format
version 4; SPLIT is `val` or `test`; CODE arrays hold a class after erasure as (class - the image's original
prediction) mod K, mostly 0, int8 (int16 beyond 127 classes), which compresses far better than the class):

    meta                       str: a JSON document (arch, model: ARCH_sSEED, classes, normalisation, accuracy,
                               training, the erasure options, `anchors`, `methods`, `draws`, data, device,
                               versions, seconds, images/s)
    settings                   float64 [S,2]: (top_percent, box) of every erasure setting, in run order
    SPLIT/positions            int64 [N]: the images' positions in the split
    SPLIT/labels               int64 [N]
    SPLIT/logits               float32 [N,K]: the network as served (its test-time augmentation included)
    SPLIT/after/ANCHOR         CODE [S,N]: each image's class after erasure at ANCHOR's anchors, per setting
    SPLIT/fill/FILL/ANCHOR     CODE [N]: the class after erasure with FILL at the primary setting
    SPLIT/method/METHOD/ANCHOR CODE [S,N] and SPLIT/method/METHOD/fill/FILL/ANCHOR CODE [N]: a further saliency
                               method's sweep, ANCHOR `saliency` or `matched`
    test/pixels/ANCHOR         uint16 [S,N] (int32 beyond 65,535 pixels): pixels erased per image
    test/draws/CONTROL/KIND    uint8 [N]: the draws of CONTROL (`matched`, `shifted`) at the primary setting
                               per image (KIND `count`: `draws`, or 0 where the image has no such control), how
                               many gave the true class (`corrected`) and how many changed the prediction
                               (`changed`)
    test/geometry/ANCHOR       float16 [3,N]: at the primary setting, the mask's pixels, its share in the central
                               half of each side and its share inside the saliency mask (means over draws)
    curves/rows                int64 [C]: the test rows of the deletion and insertion curves
    curves/ORDER/MODE          float32 [C, steps+1]: the predicted class's probability, ORDER a saliency method or
                               `random`, MODE `deletion` or `insertion`
    randomisation/rows         int64 [R]: the test rows of the cascading model-randomisation check
    randomisation/METHOD/spearman  float32 [L,R]: per cascade step (the layers of `meta["randomisation"]["layers"]`
                               randomised cumulatively, top down) each image's Spearman correlation of the
                               absolute trained and randomised METHOD maps (NaN: a constant map)
    randomisation/METHOD/ssim      float32 [L,R]: the same steps' SSIM of the maps scaled to [0, 1]
    randomisation/METHOD/maps      float16 [r,H,W]: the trained model's METHOD maps of the first r rows (r at
                               most 16), for the seed-to-seed reference
    examples/NAME              the report's example images (see EXAMPLE_ARRAYS), rows of the test split

ANCHOR names a way of choosing the anchors, described in `meta["anchors"]`: `saliency` (the top pixels of the
predicted class's saliency map), `random` (control a: a uniform random map) and `matched` (the location-matched
control: the saliency mask of another image with the same predicted class, one draw per setting).
`meta["fill_sweep"]` (`setting`, `fills`), `meta["curves"]` (`orders`, `steps`) and `meta["randomisation"]`
(`methods`, `seed`, `layers`) say which of the optional arrays a file holds. The validation split carries what
the policy fit needs (logits and the classes after erasure); pixels, draws, geometry and the further methods are
the test split's. Files of earlier format versions are refused: they lack the controls the endpoints need.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from miscause.atomic import atomic_path
from miscause.errors import MiscauseError
from miscause.jobs.analysis.erasure.collect import TEST_ONLY, ModelRuns
from miscause.jobs.analysis.erasure.controls import GEOMETRY, MATCHED, SHIFTED
from miscause.jobs.analysis.erasure.curves import MODES, Curves
from miscause.jobs.analysis.erasure.examples import Example
from miscause.jobs.analysis.erasure.randomisation import Randomisation
from miscause.jobs.analysis.erasure.run import ANCHORS, DRAWN, Draws, ErasureOptions, MethodRun, SplitRun
from miscause.jobs.analysis.inputs.data_record import data_record
from miscause.jobs.analysis.inputs.predictions import make_predictions

FORMAT_VERSION = 4
SPLITS = ("val", "test")
METHOD_ANCHORS = ("saliency", MATCHED)
META_KEYS = ("arch", "model", "classes", "training", "erasure", "data", "methods", "draws", "draw_setting")
DRAW_KINDS = ("count", "corrected", "changed")
TUPLE_OPTIONS = ("sweep_top_percent", "sweep_box", "sweep_fill", "sweep_methods", "curve_methods")
# erasure options each stage chooses for itself: its seed and batch, and how much of the sweep and the curves it
# runs (a design sweeps on one seed per architecture); every other option defines the primary endpoint and the
# files must agree on it
STAGE_OPTIONS = ("seed", "batch_size", "sweep_top_percent", "sweep_box", "sweep_fill", "sweep_methods", "curve_images")
# name -> dtype of the example arrays; `rows` index the test split's rows, `after` is the erased image's class
EXAMPLE_ARRAYS = {"rows": np.int64, "after": np.int64, "image": np.uint8, "saliency": np.float32,
                  "erased": np.uint8, "mask": np.bool_}


def anchor_descriptions(options: ErasureOptions) -> dict[str, dict]:
    """What each ANCHOR and drawn control of a result file means, for `meta["anchors"]`."""
    return {"saliency": {"kind": "saliency", "method": options.saliency_method, "target": "predicted class"},
            "random": {"kind": "uniform random map", "seed": options.seed},
            MATCHED: {"kind": "saliency mask of another image with the same predicted class", "seed": options.seed},
            SHIFTED: {"kind": "saliency mask at a non-zero wrapped offset that does not overlap it: the same pixel "
                              "count", "seed": options.seed, "primary setting only": True}}


def code_dtype(k: int) -> type:
    return np.int8 if k <= 127 else np.int16


def encode(after: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Classes after erasure as CODE: (class - original prediction) mod K."""
    return ((after.astype(np.int64) - predicted) % k).astype(code_dtype(k))


def run_arrays(run: SplitRun) -> dict[str, np.ndarray]:
    """The arrays of one split's run, keyed as the file holds them."""
    split, k, predicted = run.split, len(run.classes), run.predicted
    arrays = {f"{split}/positions": run.positions.astype(np.int64), f"{split}/labels": run.labels.astype(np.int64),
              f"{split}/logits": run.logits.astype(np.float32)}
    for anchor in run.anchors:
        arrays[f"{split}/after/{anchor}"] = encode(run.after(anchor), predicted, k)
    for fill, by_anchor in run.fill_predicted.items():
        arrays.update({f"{split}/fill/{fill}/{anchor}": encode(after, predicted, k)
                       for anchor, after in by_anchor.items()})
    if split != TEST_ONLY:
        return arrays
    most = max(int(run.erased_pixels(anchor).max(initial=0)) for anchor in run.anchors)
    pixels_dtype = np.uint16 if most < 2 ** 16 else np.int32
    for anchor in run.anchors:
        arrays[f"test/pixels/{anchor}"] = run.erased_pixels(anchor).astype(pixels_dtype)
    for control, draws in run.draws.items():
        arrays.update({f"test/draws/{control}/{kind}": getattr(draws, kind).astype(np.uint8) for kind in DRAW_KINDS})
    arrays.update({f"test/geometry/{anchor}": values.astype(np.float16) for anchor, values in run.geometry.items()})
    for method, sweep in run.methods.items():
        arrays.update({f"test/method/{method}/{anchor}": encode(getattr(sweep, anchor), predicted, k)
                       for anchor in METHOD_ANCHORS})
        arrays.update({f"test/method/{method}/fill/{fill}/{anchor}": encode(after, predicted, k)
                       for fill, by_anchor in sweep.fills.items() for anchor, after in by_anchor.items()})
    return arrays


def curve_arrays(curves: Curves | None) -> dict[str, np.ndarray]:
    """The deletion and insertion curves as arrays (none without curves)."""
    if curves is None:
        return {}
    arrays = {"curves/rows": curves.rows.astype(np.int64)}
    for order, by_mode in curves.probabilities.items():
        arrays.update({f"curves/{order}/{mode}": values.astype(np.float32) for mode, values in by_mode.items()})
    return arrays


def randomisation_arrays(check: Randomisation | None) -> dict[str, np.ndarray]:
    """The cascading model-randomisation check as arrays (none without it)."""
    if check is None:
        return {}
    arrays = {"randomisation/rows": check.rows.astype(np.int64)}
    for method in check.spearman:
        arrays.update({f"randomisation/{method}/spearman": check.spearman[method].astype(np.float32),
                       f"randomisation/{method}/ssim": check.ssim[method].astype(np.float32),
                       f"randomisation/{method}/maps": check.maps[method].astype(np.float16)})
    return arrays


def randomisation_meta(check: Randomisation | None) -> dict | None:
    """What the randomisation arrays hold: the methods, the weights' seed and the cascade's layers, top down."""
    return {"methods": list(check.spearman), "seed": check.seed, "layers": list(check.layers)} if check else None


def optional_meta(test: SplitRun, curves: Curves | None, check: Randomisation | None) -> dict:
    """What the optional arrays hold: the fill sweep's setting and fills, the curves' orders and steps, the
    randomisation check's methods and seed."""
    meta = {"fill_sweep": None, "curves": None, "methods": list(test.methods),
            "draws": max((d.drawn for d in test.draws.values()), default=0),
            "draw_setting": list(test.draw_setting) if test.draw_setting else None,
            "randomisation": randomisation_meta(check)}
    if test.fill_predicted:
        meta["fill_sweep"] = {"setting": list(test.fill_setting), "fills": list(test.fill_predicted)}
    if curves is not None:
        meta["curves"] = {"orders": list(curves.probabilities), "steps": curves.steps}
    return meta


def example_arrays(run: SplitRun, examples: list[Example]) -> dict[str, np.ndarray]:
    """The report examples as arrays (empty arrays when there are none)."""
    rows = {int(p): row for row, p in enumerate(run.positions)}
    values = {"rows": lambda e: rows[e.position], "after": lambda e: run.classes.index(e.after)}
    return {f"examples/{key}": np.asarray([values[key](e) if key in values else getattr(e, key) for e in examples],
                                          dtype=dtype)
            for key, dtype in EXAMPLE_ARRAYS.items()}


def write_results(path: str | os.PathLike, meta: dict, runs: ModelRuns) -> Path:
    """Write one architecture's result file atomically: `meta`, the val and test runs, the test examples, the
    test curves and the model-randomisation check."""
    document = {**meta, **optional_meta(runs.test, runs.curves, runs.randomisation), "format_version": FORMAT_VERSION}
    arrays = {"meta": np.asarray(json.dumps(document)), "settings": np.asarray(runs.test.settings, dtype=np.float64)}
    for split in SPLITS:
        arrays.update(run_arrays(getattr(runs, split)))
    arrays.update(curve_arrays(runs.curves))
    arrays.update(randomisation_arrays(runs.randomisation))
    arrays.update(example_arrays(runs.test, runs.examples))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)


def shaped(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    """The array `key`, which must have `shape`."""
    values = arrays[key]
    if values.shape != shape:
        raise MiscauseError(f"{source}: {key} is {list(values.shape)}, expected {list(shape)}")
    return values


def decoded(arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...], predicted: np.ndarray, k: int,
            source: str) -> np.ndarray:
    """The classes after erasure that the CODE array `key`, of `shape` and within [0, k), holds, as int64."""
    codes = shaped(arrays, key, shape, source).astype(np.int64)
    if codes.min(initial=0) < 0 or codes.max(initial=0) >= k:
        raise MiscauseError(f"{source}: {key} holds class codes outside [0, {k - 1}]")
    return (codes + predicted) % k


def read_test_parts(arrays: dict[str, np.ndarray], meta: dict, shape: tuple[int, int], predicted: np.ndarray,
                    source: str) -> dict:
    """The test split's pixels, drawn controls, geometry and further methods, shapes and ranges checked."""
    k, n = int(len(meta["classes"])), shape[1]
    draws = int(meta["draws"])
    counts = {control: {kind: shaped(arrays, f"test/draws/{control}/{kind}", (n,), source).astype(np.int64)
                        for kind in DRAW_KINDS} for control in DRAWN}
    if any((c["count"] > draws).any() or (c["corrected"] > c["count"]).any() or (c["changed"] > c["count"]).any()
           for c in counts.values()):
        raise MiscauseError(f"{source}: test/draws hold counts outside [0, {draws}] or above their draws")
    fills = (meta.get("fill_sweep") or {}).get("fills", [])
    return {
        "pixels": {anchor: shaped(arrays, f"test/pixels/{anchor}", shape, source).astype(np.int64)
                   for anchor in ANCHORS},
        "draws": {control: Draws(**{kind: v.astype(np.uint8) for kind, v in c.items()})
                  for control, c in counts.items()},
        "draw_setting": (float(meta["draw_setting"][0]), int(meta["draw_setting"][1])),
        "geometry": {anchor: shaped(arrays, f"test/geometry/{anchor}", (len(GEOMETRY), n), source).astype(np.float32)
                     for anchor in (*ANCHORS, SHIFTED)},
        "methods": {method: MethodRun(
            **{anchor: decoded(arrays, f"test/method/{method}/{anchor}", shape, predicted, k, source)
               for anchor in METHOD_ANCHORS},
            fills={fill: {anchor: decoded(arrays, f"test/method/{method}/fill/{fill}/{anchor}", (n,), predicted, k,
                                          source) for anchor in METHOD_ANCHORS} for fill in fills})
            for method in meta["methods"]}}


def read_run(arrays: dict[str, np.ndarray], meta: dict, split: str, settings: list[tuple[float, int]],
             source: str) -> SplitRun:
    """One split's run from the file's arrays, checked like a predictions file plus the erasure arrays' shapes."""
    predictions = make_predictions(meta["model"], arrays[f"{split}/logits"], arrays[f"{split}/labels"],
                                   arrays[f"{split}/positions"], meta["classes"], f"{source} ({split})")
    k, shape, predicted = len(predictions.classes), (len(settings), len(predictions)), predictions.predicted
    after = {anchor: decoded(arrays, f"{split}/after/{anchor}", shape, predicted, k, source) for anchor in ANCHORS}
    sweep = meta.get("fill_sweep") or {"setting": None, "fills": []}
    filled = {fill: {anchor: decoded(arrays, f"{split}/fill/{fill}/{anchor}", shape[1:], predicted, k, source)
                     for anchor in ANCHORS} for fill in sweep["fills"]}
    parts = (read_test_parts(arrays, meta, shape, predicted, source) if split == TEST_ONLY else
             {"pixels": dict.fromkeys(ANCHORS, np.zeros(shape, np.int64)), "draws": {}, "geometry": {},
              "methods": {}})
    pixels = parts.pop("pixels")
    return SplitRun(model=meta["model"], split=split, classes=predictions.classes, positions=predictions.indices,
                    labels=predictions.labels, logits=predictions.logits, settings=settings,
                    saliency_predicted=after["saliency"], random_predicted=after["random"],
                    saliency_pixels=pixels["saliency"], random_pixels=pixels["random"],
                    error_rows=np.flatnonzero(predicted != predictions.labels),
                    error_maps=np.zeros((0, 0, 0), np.float32),
                    controls={MATCHED: (after[MATCHED], pixels[MATCHED])}, fill_predicted=filled,
                    fill_setting=(float(sweep["setting"][0]), int(sweep["setting"][1])) if filled else None, **parts)


def indexed_rows(arrays: dict[str, np.ndarray], key: str, test: SplitRun, source: str) -> np.ndarray:
    """The rows `key` as int64, which must index the test run's rows."""
    rows = arrays[key].astype(np.int64)
    if rows.ndim != 1 or rows.min(initial=0) < 0 or rows.max(initial=0) >= len(test.labels):
        raise MiscauseError(f"{source}: {key} must index the {len(test.labels)} test rows")
    return rows


def read_curves(arrays: dict[str, np.ndarray], meta: dict, test: SplitRun, source: str) -> Curves | None:
    """The test curves the file holds, rows and shapes checked; None when it holds none."""
    if not meta.get("curves"):
        return None
    rows = indexed_rows(arrays, "curves/rows", test, source)
    steps = int(meta["curves"]["steps"])
    return Curves(rows, steps, {order: {mode: shaped(arrays, f"curves/{order}/{mode}", (len(rows), steps + 1),
                                                     source).astype(np.float32) for mode in MODES}
                                for order in meta["curves"]["orders"]})


RANDOMISATION_ARRAYS = ("spearman", "ssim", "maps")


def read_randomisation(arrays: dict[str, np.ndarray], meta: dict, test: SplitRun, source: str) -> Randomisation | None:
    """The cascading model-randomisation check the file holds, rows and shapes checked; None when it holds none."""
    check = meta.get("randomisation")
    if check is None:
        return None
    rows = indexed_rows(arrays, "randomisation/rows", test, source)
    layers = tuple(check["layers"])
    scores = {key: {method: shaped(arrays, f"randomisation/{method}/{key}", (len(layers), len(rows)),
                                   source).astype(np.float32) for method in check["methods"]}
              for key in ("spearman", "ssim")}
    maps = {method: arrays[f"randomisation/{method}/maps"] for method in check["methods"]}
    for method, values in maps.items():
        if values.ndim != 3 or len(values) > len(rows):
            raise MiscauseError(f"{source}: randomisation/{method}/maps is {list(values.shape)}, expected [r, H, W] "
                                f"with r at most {len(rows)}")
    return Randomisation(rows=rows, seed=int(check["seed"]), layers=layers, spearman=scores["spearman"],
                         ssim=scores["ssim"], maps={method: maps[method].astype(np.float16) for method in maps})


def randomisation_needed(meta: dict) -> list[str]:
    """The randomisation arrays a file with this `meta` must hold."""
    check = meta.get("randomisation")
    if check is None:
        return []
    return [f"randomisation/{method}/{key}" for method in check["methods"] for key in RANDOMISATION_ARRAYS] + [
        "randomisation/rows"]


def needed_arrays(meta: dict) -> list[str]:
    """Every array a file with this `meta` must hold."""
    fills = (meta.get("fill_sweep") or {}).get("fills", [])
    per_split = ["positions", "labels", "logits", *(f"after/{anchor}" for anchor in ANCHORS),
                 *(f"fill/{fill}/{anchor}" for fill in fills for anchor in ANCHORS)]
    test = ([f"pixels/{anchor}" for anchor in ANCHORS]
            + [f"draws/{control}/{kind}" for control in DRAWN for kind in DRAW_KINDS]
            + [f"geometry/{anchor}" for anchor in (*ANCHORS, SHIFTED)]
            + [f"method/{method}/{part}{anchor}" for method in meta["methods"] for anchor in METHOD_ANCHORS
               for part in ("", *(f"fill/{fill}/" for fill in fills))])
    curves = meta.get("curves")
    return (["settings"] + [f"{split}/{key}" for split in SPLITS for key in per_split]
            + [f"test/{key}" for key in test]
            + ([f"curves/{order}/{mode}" for order in curves["orders"] for mode in MODES] + ["curves/rows"]
               if curves else [])
            + randomisation_needed(meta)
            + [f"examples/{key}" for key in EXAMPLE_ARRAYS])


def read_examples(arrays: dict[str, np.ndarray], test: SplitRun) -> list[Example]:
    """The report examples, as `erasure.examples` returns them."""
    fields = {key: arrays[f"examples/{key}"] for key in EXAMPLE_ARRAYS}
    return [Example.of(test, row, fields["after"][n], image=fields["image"][n], saliency=fields["saliency"][n],
                       erased=fields["erased"][n], mask=fields["mask"][n])
            for n, row in enumerate(fields["rows"].tolist())]


def load_results(path: str | os.PathLike) -> tuple[dict, ModelRuns]:
    """A result file's metadata and runs; every failure is a `MiscauseError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MiscauseError(f"result file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise MiscauseError(f"{path}: cannot read as .npz ({error})") from None
    try:
        meta = json.loads(str(arrays["meta"]))
    except (KeyError, json.JSONDecodeError) as error:
        raise MiscauseError(f"{path}: not a study result file (no readable meta: {error})") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise MiscauseError(f"{path}: not a study result file (its meta has no format_version)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise MiscauseError(f"{path}: result format version {meta.get('format_version')!r}, this miscause reads "
                            f"version {FORMAT_VERSION} only (rerun the study stage)")
    if any(key not in meta for key in META_KEYS):
        raise MiscauseError(f"{path}: not a study result file (meta lacks one of {', '.join(META_KEYS)})")
    missing = [key for key in needed_arrays(meta) if key not in arrays]
    if missing:
        raise MiscauseError(f"{path}: not a study result file, missing {', '.join(missing)}")
    settings = [(float(p), int(b)) for p, b in arrays["settings"]]
    runs = {split: read_run(arrays, meta, split, settings, str(path)) for split in SPLITS}
    normalization = (tuple(meta["mean"]), tuple(meta["std"])) if "mean" in meta and "std" in meta else None
    model = ModelRuns(name=meta["model"], source=str(path), training_split=meta["training"].get("split"),
                      test=runs["test"], val=runs["val"], examples=read_examples(arrays, runs["test"]),
                      curves=read_curves(arrays, meta, runs["test"], str(path)), normalization=normalization,
                      randomisation=read_randomisation(arrays, meta, runs["test"], str(path)))
    return meta, model


def primary_options(meta: dict) -> dict:
    """A result file's erasure options less those each stage chooses for itself (`STAGE_OPTIONS`)."""
    return {key: value for key, value in meta["erasure"].items() if key not in STAGE_OPTIONS}


def combine_results(loaded: list[tuple[dict, ModelRuns]], top_percent: float, box: int,
                    saliency_method: str) -> tuple[ErasureOptions, dict]:
    """The erasure options the files share, with the default setting chosen (the sweeps: every value some file
    ran; the seed: the first file's), and the data description with each file's own stage options; files that
    ran another primary setting or other images are an error."""
    if not loaded:
        raise MiscauseError("no result files given")
    first_meta, first = loaded[0]
    shared = primary_options(first_meta)
    for meta, runs in loaded[1:]:
        mine = primary_options(meta)
        differ = sorted(key for key in {*mine, *shared} if mine.get(key) != shared.get(key))
        if differ:
            raise MiscauseError(f"{runs.source}: erasure options differ from {first.source}'s, "
                                + ", ".join(f"{key} {mine.get(key)!r} against {shared.get(key)!r}" for key in differ))
        for split in SPLITS:
            own, theirs = getattr(runs, split), getattr(first, split)
            if not (np.array_equal(own.positions, theirs.positions) and np.array_equal(own.labels, theirs.labels)):
                raise MiscauseError(f"{runs.source}: its {split} images differ from {first.source}'s: not the same "
                                    "data or --limit")
    stages = {runs.name: {key: meta["erasure"][key] for key in STAGE_OPTIONS} for meta, runs in loaded}
    swept = {key: [value for stage in stages.values() for value in stage[key]]
             for key in ("sweep_top_percent", "sweep_box", "sweep_fill", "sweep_methods")}
    fill = shared["fill"]
    options = ErasureOptions(**{
        **first_meta["erasure"], "top_percent": top_percent, "box": box,
        **{key: tuple(shared[key]) for key in TUPLE_OPTIONS if key in shared},
        "sweep_top_percent": tuple(sorted(set(swept["sweep_top_percent"]))),
        "sweep_box": tuple(sorted(set(swept["sweep_box"]))),
        "sweep_fill": tuple(dict.fromkeys(swept["sweep_fill"])),
        "sweep_methods": tuple(dict.fromkeys(swept["sweep_methods"])),
        "curve_images": max(stage["curve_images"] for stage in stages.values()),
        "fill": tuple(fill) if isinstance(fill, list) else fill})
    if options.default != first.test.draw_setting:
        raise MiscauseError(f"the result files drew their controls at top percent {first.test.draw_setting[0]:g}, "
                            f"box {first.test.draw_setting[1]}, not at top percent {top_percent:g}, box {box}: the "
                            "primary setting is the stage's")
    if saliency_method != options.saliency_method:
        raise MiscauseError(f"the result files hold saliency method {options.saliency_method!r} only, not "
                            f"{saliency_method!r}")
    names = [runs.name for _, runs in loaded]
    data = data_record(f"Result files of {', '.join(names)} (`miscause study --stage-only`), each run",
                       len(first.test.labels), path=first_meta["data"]["path"],
                       split_size=first_meta["data"]["test_size"], validation_n=len(first.val.labels),
                       results=[runs.source for _, runs in loaded], models=names,
                       devices={runs.name: meta["device"] for meta, runs in loaded}, stages=stages)
    seeds = ", ".join(f"{name} {stage['seed']}" for name, stage in stages.items())
    data["description"] += (f" Each stage drew its controls with its own seed ({seeds}) and ran its own sweep "
                            "(`data.stages`); a model's sweep tables show what it ran.")
    return options, data
