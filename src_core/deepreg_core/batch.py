"""Batch registration on dask.distributed: many pairs, resumable, each exactly once.

``batch_iter(pairs, out)`` registers every pair on a dask cluster and yields
:mod:`~deepreg_core.events` (``Started``, one ``Progress`` per finished pair, ``Finished`` with a
:class:`BatchSummary`); ``deepreg-core batch PAIRS.csv -o OUT`` drains it with a progress bar.
The cluster is a :class:`distributed.LocalCluster` started for the run (worker processes, one
thread each), or any running scheduler given by address (``dask-jobqueue`` on Slurm/PBS, dask on
Kubernetes): the code is the same, only the address differs.

The output folder
-----------------
``OUT/pairs/<id>/``
    The pair's result set, the same files as ``deepreg-core register -o`` writes
    (:func:`deepreg_core._outputs.write_result_set`), published whole by a rename.
``OUT/records/<id>.json``
    The completion record, written last and atomically: ``status`` (``"done"`` or
    ``"failed"`` with a one-line ``reason``), ``seconds``, the metrics, the run and worker.
``OUT/summary.csv``, ``OUT/summary.json``
    Every pair of the table, one row each: status, reason, seconds, metrics.

A pair is done when its record says ``done`` and its ``metrics.json`` exists. A rerun skips done
pairs and redoes the rest (failed ones and any a killed run left half written: their staging
folders are removed, a published set without a record is replaced). A pair folder is locked
while a worker writes it, so a task that dask runs again after losing its worker never mixes
files with the first attempt; a task that finds its pair already done returns its record.
Workers keep the loaded model in a :class:`ModelCache` worker plugin (one load per worker and
model) and, when GPUs exist, each worker takes one device.

Examples
--------
>>> from deepreg_core.batch import read_pairs, batch
>>> summary = batch(read_pairs("pairs.csv"), "out", workers=2, preset="fast")  # doctest: +SKIP
>>> summary.done, summary.failed  # doctest: +SKIP
(10, 0)
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    from distributed import Client, LocalCluster, as_completed, get_worker
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as error:  # pragma: no cover - the [scale] extra is missing
    raise ImportError(
        "batch registration needs dask.distributed; install it with "
        "pip install 'deepreg-core[scale]'."
    ) from error

from deepreg_core._files import atomic_write_text
from deepreg_core.events import Event, Finished, Progress, Started, Stopped, StopToken

PAIR_COLUMNS = ("fixed", "moving", "fixed_labels", "moving_labels", "fixed_points",
                "moving_points")
"""Columns of a pairs table; ``fixed`` and ``moving`` are required, ``id`` is optional."""
REGISTER_OPTIONS = ("model", "preset", "refine_steps", "time_budget", "qa", "refine_affine",
                    "affine_start", "fallback", "regularization", "seed")
"""Options of :func:`deepreg_core.inference.register_iter` a batch passes to every pair."""
PLUGIN_NAME = "deepreg-model-cache"
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Pair:
    """One registration of a batch: file paths, and the id that names its output folder."""

    id: str
    fixed: str
    moving: str
    fixed_labels: str | None = None
    moving_labels: str | None = None
    fixed_points: str | None = None
    moving_points: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    """What a batch run left in its output folder.

    ``done`` counts every done pair (``skipped`` of them were done before this run), ``failed``
    the pairs whose record says failed; ``rows`` are the summary table's rows, in table order.
    """

    output: Path
    done: int
    failed: int
    skipped: int
    rows: list[dict[str, Any]] = field(repr=False)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- the pairs table


def _pair_id(text: str) -> str:
    from deepreg_core.io import SUPPORTED_SUFFIXES

    name = Path(text).name
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _SAFE_ID.sub("_", name).strip("._") or "pair"


def _unique(pairs: list[Pair]) -> list[Pair]:
    """Pairs with ids made unique (``name``, ``name-2``, ...), in order."""
    seen: dict[str, int] = {}
    out = []
    for pair in pairs:
        count = seen.get(pair.id, 0) + 1
        seen[pair.id] = count
        out.append(pair if count == 1 else Pair(**{**asdict(pair), "id": f"{pair.id}-{count}"}))
    return out


def read_pairs(path: str | os.PathLike[str]) -> list[Pair]:
    """Read a pairs table: a CSV with a header row, columns :data:`PAIR_COLUMNS` (and ``id``).

    Relative paths are relative to the CSV's folder; empty cells are missing optional files.
    Without an ``id`` column a pair is named after its moving image (made unique).

    Raises
    ------
    FileNotFoundError
        No such CSV.
    ValueError
        No header, no ``fixed``/``moving`` column, an unknown column, an empty required cell, or
        no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pairs table.")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("fixed", "moving") if c not in columns]
        if missing:
            raise ValueError(
                f"{path}: expected a header with the columns fixed, moving (optional: "
                f"{', '.join(PAIR_COLUMNS[2:])}, id), got {columns or 'no header'}."
            )
        unknown = [c for c in columns if c not in (*PAIR_COLUMNS, "id")]
        if unknown:
            raise ValueError(f"{path}: unknown column(s) {', '.join(unknown)}; expected "
                             f"{', '.join((*PAIR_COLUMNS, 'id'))}.")
        pairs = []
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if not row["fixed"] or not row["moving"]:
                raise ValueError(f"{path}, line {line}: expected a fixed and a moving path.")
            files = {c: str(path.parent / row[c]) if row.get(c) else None for c in PAIR_COLUMNS}
            pid = _SAFE_ID.sub("_", row.get("id", "")).strip("._") or _pair_id(row["moving"])
            pairs.append(Pair(id=pid, **files))
    if not pairs:
        raise ValueError(f"{path}: expected at least one pair, got a header only.")
    return _unique(pairs)


def folder_pairs(folder: str | os.PathLike[str], atlas: str | os.PathLike[str], *,
                 atlas_labels: str | os.PathLike[str] | None = None) -> list[Pair]:
    """Every image in ``folder`` as a moving image, registered to ``atlas`` (the fixed image).

    Raises
    ------
    NotADirectoryError, FileNotFoundError, ValueError
        No such folder, no such atlas, no image in the folder.
    """
    from deepreg_core.io import SUPPORTED_SUFFIXES

    folder, atlas = Path(folder), Path(atlas)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: expected a folder of moving images.")
    if not atlas.is_file():
        raise FileNotFoundError(f"--atlas: no such file {atlas}.")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.resolve() != atlas.resolve()
                    and p.name.lower().endswith(tuple(SUPPORTED_SUFFIXES)))
    if not images:
        raise ValueError(f"{folder}: expected images ({', '.join(SUPPORTED_SUFFIXES)}), "
                         "found none.")
    labels = str(atlas_labels) if atlas_labels else None
    return _unique([Pair(id=_pair_id(p.name), fixed=str(atlas), moving=str(p),
                         fixed_labels=labels) for p in images])


# ----------------------------------------------------------------------------- records


def pair_folder(out: Path, pair_id: str) -> Path:
    return Path(out) / "pairs" / pair_id


def record_path(out: Path, pair_id: str) -> Path:
    return Path(out) / "records" / f"{pair_id}.json"


def read_record(out: Path, pair_id: str) -> dict[str, Any] | None:
    """The pair's completion record, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(record_path(out, pair_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_done(out: Path, pair_id: str) -> bool:
    """Whether the pair's results and its ``done`` completion record both exist."""
    record = read_record(out, pair_id)
    return bool(record and record.get("status") == "done"
                and (pair_folder(out, pair_id) / "metrics.json").is_file())


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip().rstrip(":")[:300]


def _write_record(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    path = record_path(out, record["id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str))
    return record


# ----------------------------------------------------------------------------- on a worker


class ModelCache(WorkerPlugin):
    """A worker plugin that loads each model once per worker process and keeps it.

    ``setup`` picks the worker's device: with GPUs, ``cuda:<i>`` where ``i`` is the worker's
    number modulo the device count (one worker per device); else the CPU with ``torch_threads``.
    ``loads`` counts the models loaded (recorded with each pair; 1 per worker and model).
    """

    name = PLUGIN_NAME

    def __init__(self, device: str = "auto", torch_threads: int | None = None):
        self.device, self.torch_threads = device, torch_threads
        self.models: dict[tuple[str, int], Any] = {}
        self.loads = 0

    def setup(self, worker=None) -> None:
        import torch

        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        if self.device == "auto" and torch.cuda.is_available():
            index = int(worker.name) if worker is not None and str(worker.name).isdigit() else 0
            self.device = f"cuda:{index % torch.cuda.device_count()}"

    def get(self, model: Any, ndim: int, preset: str | None = None) -> list:
        """The loaded stages of ``model`` (a name, ``"a+b"`` or a folder) for ``ndim`` (and the
        ``preset``, which ``"auto"`` depends on)."""
        from deepreg_core import zoo

        key = (str(model), ndim, preset)
        if key not in self.models:
            self.models[key] = [zoo.load(zoo.resolve_name(part.strip(), ndim, preset))
                                for part in str(model).split("+")]
            self.loads += 1
        return self.models[key]


_LOCAL_CACHE = ModelCache()  # used when run_pair runs outside a dask worker


def _cache() -> ModelCache:
    try:
        return get_worker().plugins[PLUGIN_NAME]
    except (ValueError, KeyError):
        return _LOCAL_CACHE


def run_pair(pair: Pair, out: str | os.PathLike[str], options: dict[str, Any],
             run_id: str) -> dict[str, Any]:
    """Register one pair into ``OUT/pairs/<id>`` and write its completion record; return it.

    Runs on a worker (it is what the batch submits). A pair already done returns its record
    untouched; an error becomes a ``failed`` record with a one-line reason (never raised).
    """
    from deepreg_core._outputs import (
        check_output_folder,
        output_lock,
        recover,
        staged_folder,
        write_result_set,
    )
    from deepreg_core.inference import register_iter
    from deepreg_core.io import read_image, read_points

    out = Path(out)
    if is_done(out, pair.id):
        return {**read_record(out, pair.id), "skipped": True}
    cache, t0 = _cache(), time.perf_counter()
    record: dict[str, Any] = {"id": pair.id, "fixed": pair.fixed, "moving": pair.moving,
                              "run": run_id, "host": socket.gethostname(), "pid": os.getpid()}
    folder = pair_folder(out, pair.id)
    try:
        fixed, moving = read_image(pair.fixed), read_image(pair.moving)
        extras = {key: read_image(getattr(pair, key), labels=True) if getattr(pair, key) else None
                  for key in ("fixed_labels", "moving_labels")}
        extras.update({key: read_points(getattr(pair, key), key) if getattr(pair, key) else None
                       for key in ("fixed_points", "moving_points")})
        kwargs = {k: v for k, v in options.items() if k in REGISTER_OPTIONS}
        kwargs["model"] = cache.get(kwargs.get("model", "auto"), fixed.ndim,
                                    kwargs.get("preset", "auto"))
        last = None
        for last in register_iter(fixed, moving, device=cache.device, **kwargs, **extras):
            pass
        if not isinstance(last, Finished):
            raise RuntimeError("registration stopped before it finished")
        with output_lock(folder):
            recover(folder)
            check_output_folder(folder, overwrite=True)  # results without a record: redo
            with staged_folder(folder) as staging:
                metrics = write_result_set(last.result, fixed, staging, fixed_path=pair.fixed,
                                           moving_path=pair.moving)
        record.update(status="done", reason="", model_loads=cache.loads,
                      metrics={k: v for k, v in metrics.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)})
    except Exception as error:  # noqa: BLE001 - recorded, the batch goes on
        record.update(status="failed", reason=_one_line(error))
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return _write_record(out, record)


# ----------------------------------------------------------------------------- the client


@contextmanager
def _client(scheduler: str | Client | None, workers: int | None, dashboard: bool,
            device: str) -> Iterator[Client]:
    """A client of ``scheduler`` (an address or a Client), or of a LocalCluster started here."""
    if isinstance(scheduler, Client):
        yield scheduler
        return
    if scheduler:
        with Client(scheduler, timeout="30s") as client:
            yield client
        return
    import logging

    gpus = _gpu_count() if device in ("auto", "cuda") else 0
    n = int(workers or gpus or 2)
    threads = max(1, (os.cpu_count() or 1) // n)
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=":0" if dashboard else None,
                      silence_logs=logging.ERROR,
                      env={"OMP_NUM_THREADS": str(threads)}) as cluster, Client(cluster) as client:
        yield client


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def batch_iter(
    pairs: Sequence[Pair],
    out: str | os.PathLike[str],
    *,
    scheduler: str | Client | None = None,
    workers: int | None = None,
    dashboard: bool = False,
    device: str = "auto",
    stop: StopToken | None = None,
    **options: Any,
) -> Iterator[Event]:
    """Register every pair not done yet on a dask cluster, yielding events.

    Parameters
    ----------
    pairs : sequence of Pair
        From :func:`read_pairs` or :func:`folder_pairs`; ids must be unique.
    out : path
        The batch folder (see the module docstring); created if needed and locked for the run.
    scheduler : str or distributed.Client, optional
        A scheduler address (``tcp://host:8786``) or a client; default: a LocalCluster with
        ``workers`` worker processes (default: one per GPU, else 2), closed at the end.
    dashboard : bool
        Start the LocalCluster's dashboard; its link is in ``Started.config["dashboard"]``.
    device : str
        ``"auto"`` (one GPU per worker when there are GPUs, else the CPU), ``"cpu"``, ``"cuda"``.
    stop : StopToken, optional
        When set, pairs not started are cancelled and the job ends with ``Stopped``.
    **options
        :data:`REGISTER_OPTIONS` for every pair (``model``, ``preset``, ``refine_steps``, ...).

    Yields
    ------
    ``Started(total_steps=len(pairs), config)``, ``Progress(step, total, "<id>: <status>")``
    per pair (done pairs first), then ``Finished(BatchSummary)`` or ``Stopped``.
    """
    from deepreg_core._outputs import output_lock, recover

    unknown = sorted(set(options) - set(REGISTER_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected option(s) {', '.join(unknown)}; expected "
                        f"{', '.join(REGISTER_OPTIONS)}.")
    ids = [p.id for p in pairs]
    if not pairs or len(set(ids)) != len(ids):
        raise ValueError(f"pairs: expected a non-empty list with unique ids, got {len(ids)} "
                         f"pair(s), {len(ids) - len(set(ids))} repeated id(s).")
    out = Path(out).resolve()
    stop = stop or StopToken()
    t0, run_id = time.perf_counter(), uuid.uuid4().hex[:12]
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        todo = [p for p in pairs if not is_done(out, p.id)]
        skipped = len(pairs) - len(todo)
        for pair in pairs:  # a killed run may leave staging folders beside done pairs too
            if pair not in todo:
                recover(pair_folder(out, pair.id))
        with _client(scheduler, workers, dashboard, device) as client:
            config = {"pairs": len(pairs), "skipped": skipped, "run": run_id,
                      "workers": len(client.scheduler_info().get("workers", {})),
                      "dashboard": client.dashboard_link if dashboard else None}
            yield Started(total_steps=len(pairs), config=config)
            step = skipped
            if skipped:
                yield Progress(step=step, total=len(pairs), message=f"{skipped} already done")
            if todo:
                client.register_plugin(ModelCache(device=device), name=PLUGIN_NAME)
                futures = {client.submit(run_pair, p, str(out), options, run_id, pure=False,
                                         key=f"deepreg-pair-{run_id}-{p.id}"): p for p in todo}
                for future in as_completed(futures):
                    pair = futures[future]
                    try:
                        record = future.result()
                    except Exception as error:  # noqa: BLE001 - e.g. KilledWorker: recorded
                        record = _write_record(out, {"id": pair.id, "fixed": pair.fixed,
                                                     "moving": pair.moving, "run": run_id,
                                                     "status": "failed",
                                                     "reason": _one_line(error)})
                    step += 1
                    yield Progress(step=step, total=len(pairs),
                                   message=f"{pair.id}: {record['status']}")
                    if stop.stopped:
                        client.cancel(list(futures))
                        write_summary(out, pairs)
                        yield Stopped(step=step)
                        return
        rows = write_summary(out, pairs)
    done = sum(row["status"] == "done" for row in rows)
    failed = sum(row["status"] == "failed" for row in rows)
    yield Finished(result=BatchSummary(output=out, done=done, failed=failed, skipped=skipped,
                                       rows=rows, seconds=time.perf_counter() - t0))


def batch(pairs: Sequence[Pair], out: str | os.PathLike[str], **kwargs: Any) -> BatchSummary:
    """:func:`batch_iter` run to the end; returns its :class:`BatchSummary`."""
    last = None
    for last in batch_iter(pairs, out, **kwargs):
        pass
    if not isinstance(last, Finished):
        raise RuntimeError("the batch stopped before it finished")
    return last.result


def write_summary(out: str | os.PathLike[str], pairs: Sequence[Pair]) -> list[dict[str, Any]]:
    """Write ``summary.csv`` and ``summary.json`` from the records; return the rows.

    One row per pair, in table order: ``id``, ``status`` (``done``, ``failed`` or ``pending``),
    ``reason``, ``seconds``, ``fixed``, ``moving``, ``output`` and every metric.
    """
    out = Path(out)
    rows = []
    for pair in pairs:
        record = read_record(out, pair.id) or {}
        status = "done" if is_done(out, pair.id) else \
            "failed" if record.get("status") == "failed" else "pending"
        rows.append({"id": pair.id, "status": status, "reason": record.get("reason", ""),
                     "seconds": record.get("seconds", ""), "fixed": pair.fixed,
                     "moving": pair.moving,
                     "output": str(pair_folder(out, pair.id)) if status == "done" else "",
                     **record.get("metrics", {})})
    columns = list(dict.fromkeys(key for row in rows for key in row))
    from io import StringIO

    text = StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "summary.csv", text.getvalue())
    totals = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed", "pending")}
    atomic_write_text(out / "summary.json",
                      json.dumps({"totals": totals, "pairs": rows}, indent=2, default=str))
    return rows
