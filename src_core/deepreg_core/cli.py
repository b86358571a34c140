"""The ``deepreg-core`` command: register, batch, series, train, evaluate, models.

Heavy imports (torch) happen inside the commands. Bad input ends with one line on stderr,
``deepreg-core: error: ...``, and exit status 2; never a traceback. ``register`` validates every
input before it creates anything, locks its output folder for the run and publishes the result
set whole (:mod:`deepreg_core._outputs`). ``train`` turns Ctrl-C and SIGTERM into a stop with a
checkpoint.

Examples
--------
$ deepreg-core register fixed.nii.gz moving.nii.gz -o out --model deformable-3d --refine-steps 50
$ deepreg-core batch pairs.csv -o cohort --workers 4 --preset fast
$ deepreg-core series movie.tif -o corrected --time-axis 0 --reference first --model affine
$ deepreg-core train recipe.yaml
$ deepreg-core models
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

EXPECTED_ERRORS = (ValueError, TypeError, FileNotFoundError, ImportError, NotADirectoryError,
                   PermissionError, KeyError, MemoryError)
MAX_REFINE_STEPS = 100_000  # = deepreg_core.inference.MAX_REFINE_STEPS (not imported: torch)


def _bounded(kind: type, low: float, high: float):
    """An argparse type: ``kind`` within ``[low, high]``, refused with both bounds otherwise."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a value in [{low:g}, {high:g}], got {text}")
        return value

    return parse


def _write_json(data: dict, path: Path) -> None:
    from deepreg_core._files import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


LOG_PROGRESS_INTERVAL = 5.0  # seconds between progress lines when stderr is not a terminal


def _progress(events, desc: str):
    """Drain a generator of events with a tqdm bar; return the last event."""
    from tqdm import tqdm

    from deepreg_core.events import Metrics, Progress, Started

    bar = None
    last = None
    try:
        for event in events:
            last = event
            if isinstance(event, Started):
                # a terminal redraws the bar in place; a log file (not a terminal) keeps every
                # redraw, so it gets one every few seconds rather than one per optimiser step
                tty = sys.stderr.isatty()
                bar = tqdm(total=event.total_steps, desc=desc, unit="step", file=sys.stderr,
                           mininterval=0.1 if tty else LOG_PROGRESS_INTERVAL)
            elif isinstance(event, Progress) and bar is not None:
                bar.set_postfix_str(event.message, refresh=False)
                bar.update(event.step - bar.n)  # redraws only after tqdm's mininterval
            elif isinstance(event, Metrics) and bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(event.values.items())[:3]},
                                refresh=False)
    finally:  # an error must start on its own line, not on the bar's
        if bar is not None:
            bar.close()
    return last


def cmd_register(args: argparse.Namespace) -> int:
    from deepreg_core._outputs import (
        check_output_folder,
        output_lock,
        recover,
        staged_folder,
        write_result_set,
    )
    from deepreg_core.events import Finished
    from deepreg_core.inference import register_iter
    from deepreg_core.io import read_image, read_points

    if args.fixed_labels and not args.moving_labels:
        raise ValueError(
            "--fixed-labels needs --moving-labels: Dice compares the warped moving labels with "
            "the fixed ones (pass --moving-labels alone to only warp labels)."
        )
    if args.fixed_points and not args.moving_points:
        raise ValueError("--fixed-points needs --moving-points (the landmark error needs both).")
    if args.channel_axis is not None or args.channel is not None:
        return cmd_register_channels(args)
    out = check_output_folder(args.output, args.overwrite)
    # Every input is read and checked before the output folder is touched.
    fixed, moving = read_image(args.fixed), read_image(args.moving)
    labels = {key: read_image(getattr(args, key), labels=True) if getattr(args, key) else None
              for key in ("fixed_labels", "moving_labels")}
    points = {key: read_points(getattr(args, key), "--" + key.replace("_", "-"))
              if getattr(args, key) else None for key in ("fixed_points", "moving_points")}
    events = register_iter(fixed, moving, model=args.model, preset=args.preset,
                           refine_steps=args.refine_steps, time_budget=args.time_budget,
                           qa=not args.no_qa, **_switches(args),
                           regularization=args.regularization, device=args.device,
                           seed=args.seed, landmark_holdout=args.landmark_holdout,
                           **labels, **points)
    first = next(events)  # the generator's checks (labels, points, options) run here
    with output_lock(out):
        recover(out)
        check_output_folder(out, args.overwrite)  # again: another run may have finished
        last = _progress(_chain(first, events), desc="register")
        if not isinstance(last, Finished):
            raise ValueError("registration stopped before it finished")  # noqa: TRY004
        result = last.result
        with staged_folder(out) as staging:
            summary = write_result_set(result, fixed, staging, fixed_path=args.fixed,
                                           moving_path=args.moving)
    for note in result.notes:
        print(f"deepreg-core: note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"deepreg-core: warning: {warning}", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0


def _chain(first, rest):
    yield first
    yield from rest


def _read_channels(path: str, axis: int, ndim: int | None = None):
    """A multi-channel file's channels; a single-channel image of ``ndim`` dimensions as one."""
    from deepreg_core.io import read_image
    from deepreg_core.stacks import read_stack

    if ndim is not None:
        try:
            image = read_image(path)
        except ValueError:  # 4D, or a TIFF with channel axes: a stack
            image = None
        if image is not None and image.ndim == ndim:
            return image
    return read_stack(path, axis, name="--channel-axis").frames


def cmd_register_channels(args: argparse.Namespace) -> int:
    """``register --channel-axis N --channel K|mean``: one transform for every channel."""
    from deepreg_core._outputs import (
        check_output_folder,
        output_lock,
        recover,
        staged_folder,
        write_result_set,
    )
    from deepreg_core.channels import register_channels_iter
    from deepreg_core.events import Finished
    from deepreg_core.stacks import write_frames

    if args.channel_axis is None:
        raise ValueError("--channel needs --channel-axis (where the channels lie in the file).")
    if args.fixed_labels or args.moving_labels or args.fixed_points or args.moving_points:
        raise ValueError("--channel-axis registers images only; labels and points are not "
                         "taken with it (register one channel to use them).")
    out = check_output_folder(args.output, args.overwrite)
    moving = _read_channels(args.moving, args.channel_axis)
    fixed = _read_channels(args.fixed, args.channel_axis, ndim=moving[0].ndim)
    events = register_channels_iter(
        fixed, moving, channel=args.channel if args.channel is not None else 0,
        channel_axis=args.channel_axis, model=args.model, preset=args.preset,
        refine_steps=args.refine_steps, time_budget=args.time_budget, qa=not args.no_qa,
        regularization=args.regularization, device=args.device, seed=args.seed,
        **_switches(args))
    first = next(events)  # the channel and the registration options are checked here
    with output_lock(out):
        recover(out)
        check_output_folder(out, args.overwrite)
        last = _progress(_chain(first, events), desc="register")
        if not isinstance(last, Finished):
            raise ValueError("registration stopped before it finished")  # noqa: TRY004
        result = last.result.registration
        suffix = ".tif" if args.moving.lower().endswith((".tif", ".tiff")) else ".nii.gz"
        with staged_folder(out) as staging:
            summary = write_result_set(result, result.fixed, staging, fixed_path=args.fixed,
                                       moving_path=args.moving)
            write_frames(last.result.warped_channels, result.fixed,
                         staging / f"warped_channels{suffix}")
    for note in result.notes:
        print(f"deepreg-core: note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"deepreg-core: warning: {warning}", file=sys.stderr)
    summary = {**summary, "channel": last.result.channel,
               "channels": len(last.result.warped_channels)}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0


def _reference(text: str):
    """``--reference``: first, previous, mean or a frame index."""
    if text in ("first", "previous", "mean"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected first, previous, mean or a frame index, got {text!r}") from None


def _channel(text: str):
    """``--channel``: a channel index or mean."""
    if text == "mean":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a channel index or mean, got {text!r}") \
            from None


def _write_csv(rows: list[dict], path: Path) -> None:
    import csv
    import io

    from deepreg_core._files import atomic_write_text

    buffer = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _write_series(result, stack, folder: Path, source: str, config: dict) -> dict:
    """The series result set: corrected stack, metrics.csv/json, drift.csv; returns the summary."""
    from deepreg_core.stacks import write_stack

    suffix = ".nii.gz" if stack.kind == "nifti" else ".tif"
    write_stack(stack, result.corrected, folder / f"corrected{suffix}")
    rows = [{"frame": t, **row} for t, row in enumerate(result.metrics)]
    _write_csv(rows, folder / "metrics.csv")
    _write_csv([{"frame": t, "drift_mm": float(result.drift_mm[t]),
                 **{f"drift_axis{i}_mm": float(v) for i, v in enumerate(result.drift_vector_mm[t])}}
                for t in range(result.frames_done)], folder / "drift.csv")
    summary = {"stack": str(source), "time_axis": stack.axis, "reference": result.reference,
               "frames_done": result.frames_done, "total_frames": result.total_frames,
               "model": config.get("model"), "preset": config.get("preset"),
               "device": config.get("device"),
               "mean_drift_mm": float(result.drift_mm.mean()),
               "mean_drift_vector_mm": result.drift_vector_mm.mean(axis=0).tolist(),
               "warnings": list(result.warnings), "notes": list(result.notes)}
    _write_json({**summary, "frames": rows}, folder / "metrics.json")
    return summary


def cmd_large(args: argparse.Namespace) -> int:
    from deepreg_core.lazy import register_large

    result = register_large(args.fixed, args.moving, args.output, max_voxels=args.max_voxels,
                            chunks=args.chunks, nifti=not args.no_nifti, model=args.model,
                            preset=args.preset, refine_steps=args.refine_steps,
                            time_budget=args.time_budget, device=args.device, seed=args.seed)
    print(json.dumps({"output": str(result.output), "level_shape": list(result.level_shape),
                      "factor": result.factor, **{k: v for k, v in result.metrics.items()
                                                  if k.endswith(("_before", "_after"))}},
                     default=float))
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    """Register every frame of a 2D+t / 3D+t stack to a reference; Ctrl-C keeps frames done."""
    from deepreg_core._outputs import check_output_folder, output_lock, recover, staged_folder
    from deepreg_core.events import Started, StopToken
    from deepreg_core.series import register_series_iter
    from deepreg_core.stacks import read_stack

    out = check_output_folder(args.output, args.overwrite)
    stack = read_stack(args.stack, args.time_axis, name="--time-axis")
    stop = StopToken()
    events = register_series_iter(
        stack.frames, reference=args.reference, model=args.model, preset=args.preset,
        refine_steps=args.refine_steps, time_budget=args.time_budget, qa=not args.no_qa,
        regularization=args.regularization, device=args.device, seed=args.seed,
        keep_displacements=False, stop=stop, **_switches(args))
    first = next(events)  # the series, the reference and the options are checked here
    config = first.config if isinstance(first, Started) else {}
    with output_lock(out):
        recover(out)
        check_output_folder(out, args.overwrite)
        with _stop_on_signals(stop):
            last = _progress(_chain(first, events), desc="series")
        result = last.result
        if result.frames_done == 0:
            raise ValueError("stopped before the first frame was registered; nothing written")
        with staged_folder(out) as staging:
            summary = _write_series(result, stack, staging, args.stack, config)
    for note in result.notes:
        print(f"deepreg-core: note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"deepreg-core: warning: {warning}", file=sys.stderr)
    if not result.complete:
        print(f"deepreg-core: stopped: kept {result.frames_done} of {result.total_frames} "
              "frames", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))
    return 0 if result.complete else 130


@contextmanager
def _stop_on_signals(stop):
    """SIGTERM and Ctrl-C set ``stop``: the job ends at its next step and keeps what it did."""
    previous = {sig: signal.signal(sig, lambda *_: stop.stop())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_batch(args: argparse.Namespace) -> int:
    from deepreg_core.batch import batch_iter, folder_pairs, read_pairs
    from deepreg_core.events import Finished, Started

    source = Path(args.pairs)
    if source.is_dir():
        if not args.atlas:
            raise ValueError(f"{source} is a folder: pass --atlas FIXED (every image in the "
                             "folder is registered to it), or give a pairs CSV.")
        pairs = folder_pairs(source, args.atlas, atlas_labels=args.atlas_labels)
    elif args.atlas:
        raise ValueError("--atlas goes with a folder of moving images, not with a pairs CSV.")
    else:
        pairs = read_pairs(source)
    options = dict(model=args.model, preset=args.preset, refine_steps=args.refine_steps,
                   time_budget=args.time_budget, qa=not args.no_qa, seed=args.seed,
                   regularization=args.regularization, **_switches(args))
    events = batch_iter(pairs, args.output, scheduler=args.scheduler, workers=args.workers,
                        dashboard=args.dashboard, device=args.device, **options)
    first = next(events)
    if isinstance(first, Started) and first.config.get("dashboard"):
        print(f"deepreg-core: dashboard: {first.config['dashboard']}", file=sys.stderr)
    last = _progress(_chain(first, events), desc="batch")
    if not isinstance(last, Finished):
        raise ValueError("the batch stopped before it finished")  # noqa: TRY004
    summary = last.result
    for row in summary.rows:
        if row["status"] == "failed":
            print(f"deepreg-core: failed: {row['id']}: {row['reason']}", file=sys.stderr)
    print(json.dumps({"done": summary.done, "failed": summary.failed,
                      "skipped": summary.skipped, "pairs": len(summary.rows),
                      "seconds": round(summary.seconds, 2),
                      "summary": str(summary.output / "summary.csv")}))
    return 1 if summary.failed else 0


def cmd_train(args: argparse.Namespace) -> int:
    from deepreg_core.events import Finished, Stopped, StopToken
    from deepreg_core.training.config import load_config
    from deepreg_core.training.loop import train

    cfg = load_config(args.config)
    if args.output_dir:
        cfg = cfg.model_copy(update={"output_dir": args.output_dir})
    # SIGTERM (``timeout``, a scheduler) and Ctrl-C stop at the next step boundary with a
    # checkpoint, so chunked runs (`timeout 540 deepreg-core train ... --resume DIR`) lose nothing.
    stop = StopToken()
    with _stop_on_signals(stop):
        last = _progress(train(cfg, resume=args.resume, stop=stop), desc="train")
    if isinstance(last, (Finished, Stopped)):
        print(json.dumps({"event": type(last).__name__,
                          "result": str(getattr(last, "result", getattr(last, "checkpoint", "")))}))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from deepreg_core import zoo

    if args.name:
        print(zoo.model_card(args.name))
        return 0
    for name, entry in zoo.entries().items():
        where = "shipped" if entry.shipped else str(entry.path)
        problem = entry.problem()
        if problem is not None:  # listed, not fatal: the other models stay usable
            print(f"{name:24s} {'BROKEN':13s} --  {where}: {problem}")
            continue
        cfg = entry.config()
        print(f"{name:24s} {cfg.model.kind:13s} {cfg.model.ndim}D  {where}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from deepreg_core.evaluation import evaluate_model

    report = evaluate_model(args.model, data=args.data, cases=args.cases, seed=args.seed,
                            refine_steps=args.refine_steps, preset=args.preset,
                            device=args.device, **_switches(args))
    if args.output:
        _write_json(report, Path(args.output))
    print(json.dumps(report["summary"], indent=2))
    return 0


def _switches(args: argparse.Namespace) -> dict[str, bool | None]:
    """The command's ``--no-refine-affine``/``--no-affine-start``/``--no-fallback`` as
    :func:`~deepreg_core.inference.register`'s keywords (None: the preset's), those it has."""
    out: dict[str, bool | None] = {}
    if hasattr(args, "no_refine_affine"):
        out["refine_affine"] = not args.no_refine_affine
    out["affine_start"] = False if getattr(args, "no_affine_start", False) else None
    out["fallback"] = False if getattr(args, "no_fallback", False) else None
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with the command's one-line error format (exit status 2, no usage dump)."""

    def error(self, message: str):
        print(f"deepreg-core: error: {message.splitlines()[0] if message else 'bad usage'}",
              file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deepreg-core", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    reg = sub.add_parser("register", help="register MOVING to FIXED and write the results")
    reg.add_argument("fixed")
    reg.add_argument("moving")
    reg.add_argument("-o", "--output", required=True, help="output folder")
    reg.add_argument("--model", default="auto",
                     help="zoo name, 'affine+deformable', a folder, 'rigid' (no network: rigid "
                          "refinement in mm), or landmarks-rigid|similarity|affine|tps (fitted to "
                          "--fixed-points/--moving-points; 'landmarks-affine+deformable' then "
                          "runs the network)")
    reg.add_argument("--preset", default="auto", choices=["auto", "fast", "accurate"],
                     help="auto (default): networks, then refinement that stops when it stops "
                          "paying; fast: networks only; accurate: a larger refinement budget; "
                          "every preset falls back (to the networks' start, or refinement "
                          "without them) when the networks make the pair worse: --no-fallback "
                          "(before a deformable zoo model, every preset starts from the affine "
                          "network's estimate when it improves the match: --no-affine-start)")
    reg.add_argument("--refine-steps", type=_bounded(int, 0, MAX_REFINE_STEPS), default=None,
                     help="fixed instance-optimisation budget instead of the preset's "
                          f"(0 = networks only, with the fallback; at most {MAX_REFINE_STEPS})")
    reg.add_argument("--time-budget", type=float, default=None,
                     help="seconds after which refinement stops where it is")
    reg.add_argument("--no-qa", action="store_true",
                     help="skip the quality maps (jacobian.nii.gz, saliency.nii.gz, folding)")
    reg.add_argument("--no-refine-affine", action="store_true",
                     help="refine without the affine levels (pairs already affinely aligned)")
    reg.add_argument("--no-affine-start", action="store_true",
                     help="exactly the deformable network(s): no affine start from the zoo's "
                          "affine network (the default uses it when it improves the match)")
    reg.add_argument("--no-fallback", action="store_true",
                     help="return the method's result even when it matches worse than the "
                          "input (the default keeps its start, or refines again; the guard "
                          "warns either way)")
    reg.add_argument("--regularization", type=_bounded(float, 0.0, 1e6), default=None,
                     help="refinement smoothness weight (>= 0; default: the preset's)")
    reg.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    reg.add_argument("--seed", type=int, default=0)
    reg.add_argument("--landmark-holdout", type=int, default=0, metavar="N",
                     help="with a landmarks-* model: leave N point pairs out of the fit and "
                          "report their error (tre_holdout_*_mm)")
    reg.add_argument("--fixed-labels")
    reg.add_argument("--moving-labels")
    reg.add_argument("--fixed-points", help="CSV of voxel indices, one landmark a row")
    reg.add_argument("--moving-points", help="CSV of voxel indices, one landmark a row")
    reg.add_argument("--overwrite", action="store_true",
                     help="replace the results of an earlier run in -o (the whole set)")
    reg.add_argument("--channel-axis", type=int, default=None,
                     help="the channel axis of a multi-channel MOVING (and FIXED) file, singleton "
                          "axes dropped; every channel is warped (warped_channels.*)")
    reg.add_argument("--channel", type=_channel, default=None,
                     help="the channel registered (index, default 0) or 'mean'")
    reg.set_defaults(func=cmd_register)

    se = sub.add_parser("series", help="register every frame of a 2D+t / 3D+t stack to a "
                                       "reference (motion and drift correction)")
    se.add_argument("stack", help="a .nii/.nii.gz or .tif/.tiff stack")
    se.add_argument("-o", "--output", required=True,
                    help="output folder: corrected.*, metrics.csv, metrics.json, drift.csv")
    se.add_argument("--time-axis", type=int, required=True,
                    help="the time axis of the file's array (singleton axes dropped), "
                         "e.g. 3 for a NIfTI (x, y, z, t)")
    se.add_argument("--reference", type=_reference, default="first",
                    help="first (default), previous (chained), mean, or a frame index")
    for action in reg._actions:  # the registration options, exactly as `register` has them
        if action.dest in ("preset", "refine_steps", "time_budget", "no_qa", "no_refine_affine",
                           "no_affine_start", "no_fallback", "regularization", "device", "seed",
                           "overwrite"):
            se._add_action(action)
    se.add_argument("--model", default="deformable",
                    help="rigid (rotation + translation in mm, no network), affine (affine-only "
                         "correction), deformable (default), a zoo name or a folder")
    se.set_defaults(func=cmd_series)

    ba = sub.add_parser("batch", help="register many pairs on a dask cluster (resumable)")
    ba.add_argument("pairs", help="CSV with columns fixed, moving[, fixed_labels, moving_labels, "
                                  "fixed_points, moving_points, id], or a folder with --atlas")
    ba.add_argument("-o", "--output", required=True,
                    help="batch folder: pairs/<id>/, records/, summary.csv, summary.json")
    ba.add_argument("--atlas", help="the fixed image for every image of a PAIRS folder")
    ba.add_argument("--atlas-labels", help="the atlas's label map (Dice needs moving labels too)")
    ba.add_argument("--scheduler", help="address of a running dask scheduler "
                                        "(default: a local cluster for this run)")
    ba.add_argument("--workers", type=_bounded(int, 1, 1024), default=None,
                    help="local worker processes (default: one per GPU, else 2)")
    ba.add_argument("--dashboard", action="store_true", help="print the dask dashboard's link")
    for action in reg._actions:  # the registration options, exactly as `register` has them
        if action.dest in ("model", "preset", "refine_steps", "time_budget", "no_qa",
                           "no_refine_affine", "no_affine_start", "no_fallback",
                           "regularization", "device", "seed"):
            ba._add_action(action)
    ba.set_defaults(func=cmd_batch)

    la = sub.add_parser("large", help="register images larger than memory: estimate on a level "
                                      "that fits, warp the full resolution block by block")
    la.add_argument("fixed", help="NIfTI, zarr or OME-Zarr (opened lazily)")
    la.add_argument("moving", help="NIfTI, zarr or OME-Zarr (opened lazily)")
    la.add_argument("-o", "--output", required=True,
                    help="new folder: warped.ome.zarr, warped.nii.gz, displacement.nii.gz, "
                         "metrics.json")
    la.add_argument("--max-voxels", type=_bounded(int, 1_000, 10**10), default=128**3,
                    help="the registration level's size at most (default 128^3)")
    la.add_argument("--chunks", type=_bounded(int, 8, 4096), default=128,
                    help="block edge for the warp and the zarr store (default 128)")
    la.add_argument("--no-nifti", action="store_true", help="write the OME-Zarr only")
    for action in reg._actions:  # the registration options, exactly as `register` has them
        if action.dest in ("model", "preset", "refine_steps", "time_budget", "device", "seed"):
            la._add_action(action)
    la.set_defaults(func=cmd_large)

    tr = sub.add_parser("train", help="train a model from a YAML config (also under torchrun)")
    tr.add_argument("config")
    tr.add_argument("--resume", help="checkpoint folder to resume from")
    tr.add_argument("--output-dir")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a model on pairs with known ground truth")
    ev.add_argument("model")
    ev.add_argument("--data", default="synthetic",
                    choices=["synthetic", "mni", "mni1mm", "slice", "t1slice", "nib-t1",
                             "nib-epi", "dipy-b0"])
    ev.add_argument("--cases", type=int, default=5)
    ev.add_argument("--seed", type=int, default=1000)
    ev.add_argument("--preset", default="auto", choices=["auto", "fast", "accurate"])
    ev.add_argument("--refine-steps", type=_bounded(int, 0, MAX_REFINE_STEPS), default=None,
                    help="a fixed refinement budget instead of the preset's (0: networks only)")
    ev.add_argument("--no-affine-start", action="store_true",
                    help="the model's networks alone: no affine start from the zoo's affine "
                         "network (the model cards' 'network only' rows: with --refine-steps 0 "
                         "--no-fallback)")
    ev.add_argument("--no-fallback", action="store_true",
                    help="keep a result that matches worse than the input (the raw network)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--output", help="write the full report as JSON")
    ev.set_defaults(func=cmd_evaluate)

    mo = sub.add_parser("models", help="list the zoo, or print one model's card")
    mo.add_argument("name", nargs="?")
    mo.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, already reported)
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return args.func(args)
    except EXPECTED_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"deepreg-core: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("deepreg-core: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
