"""Hostile files: corrupt or lying images, configs and weights are refused with a ValueError
that names the file, before anything large is allocated (issue 13, classes 1 and 2)."""

from __future__ import annotations

import gzip
import json
import math
import pickle
import resource
import struct
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
import torch
import yaml
from model_folders import make_model_folder

from deepreg_core import cli, zoo
from deepreg_core.io import MAX_IMAGE_BYTES_ENV, read_image
from deepreg_core.metrics import dice_per_label
from deepreg_core.training.checkpoint import load_weights
from deepreg_core.training.config import load_config


def _nifti_bytes(shape=(6, 7, 5), dtype=np.float32) -> bytearray:
    data = np.random.default_rng(0).random(shape).astype(dtype)
    return bytearray(nib.Nifti1Image(data, np.eye(4)).to_bytes())


def _declaring(shape, dtype=np.uint8, payload: bytes = b"\0" * 64) -> bytes:
    """A NIfTI header that declares ``shape`` but is followed by only ``payload``."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4 + payload


def _peak_bytes(fn, *args, refused: str | None = None) -> int:
    """Peak traced allocation while ``fn(*args)`` runs (and raises ValueError matching
    ``refused``, when given)."""
    tracemalloc.start()
    try:
        if refused is None:
            fn(*args)
        else:
            with pytest.raises(ValueError, match=refused):
                fn(*args)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# ------------------------------------------------------------------------------- images
def test_fuzzed_nifti_headers_are_read_or_refused_with_a_value_error(tmp_path):
    """Random bytes in the header fields (dims, datatype, vox_offset, scaling, sizeof_hdr)."""
    rng = np.random.default_rng(13)
    base = _nifti_bytes()
    fields = [(0, 4), (40, 56), (70, 74), (108, 112), (112, 120), (252, 256), (0, 352)]
    outcomes = {"read": 0, "refused": 0}
    for i in range(300):
        blob = bytearray(base)
        start, stop = fields[i % len(fields)]
        for _ in range(int(rng.integers(1, 4))):
            blob[int(rng.integers(start, stop))] = int(rng.integers(0, 256))
        path = tmp_path / f"f{i}.nii{'.gz' if i % 2 else ''}"
        path.write_bytes(gzip.compress(bytes(blob)) if i % 2 else bytes(blob))
        try:
            read_image(path)
            outcomes["read"] += 1
        except ValueError as error:
            assert str(path) in str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 30 and outcomes["read"] > 30


@pytest.mark.parametrize("field, value, match", [
    ("datatype", 35, "not recognized"),       # an unknown data-type code: HeaderDataError
    ("vox_offset", 100, "NIfTI"),             # below the 352-byte header
    ("datatype", 1792, "truncated"),          # complex128 in a file sized for float32
])
def test_corrupt_nifti_header_fields_are_a_value_error(tmp_path, field, value, match):
    blob = bytearray(_nifti_bytes())
    offset = {"datatype": 70, "vox_offset": 108}[field]
    packed = struct.pack("<h", value) if field == "datatype" else struct.pack("<f", value)
    blob[offset:offset + len(packed)] = packed
    if field == "datatype" and value == 1792:
        blob[72:74] = struct.pack("<h", 128)  # bitpix of complex128
    path = tmp_path / "bad.nii"
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=match):
        read_image(path)


def test_nan_intercept_is_refused_by_registration_not_a_traceback(tmp_path, capsys):
    blob = _nifti_bytes()
    blob[116:120] = struct.pack("<f", math.nan)  # scl_inter
    blob[112:116] = struct.pack("<f", 1.0)
    bad = tmp_path / "nan.nii"
    bad.write_bytes(bytes(blob))
    assert cli.main(["register", str(bad), str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepreg-core: error:") and "intercept" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_header_declaring_a_huge_array_is_refused_before_allocating(tmp_path, suffix):
    path = tmp_path / f"huge{suffix}"
    blob = _declaring((2000, 2000, 2000))
    path.write_bytes(gzip.compress(blob) if suffix == ".nii.gz" else blob)
    assert _peak_bytes(read_image, path, refused=r"2000 x 2000 x 2000 voxels.*GiB") < 20 << 20


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_a_lying_header_within_the_limit_is_refused_by_the_streamed_length(tmp_path, suffix,
                                                                            monkeypatch):
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, str(1 << 40))
    path = tmp_path / f"short{suffix}"
    blob = _declaring((512, 512, 512), payload=b"\1" * 100_000)  # 128 MiB declared
    path.write_bytes(gzip.compress(blob) if suffix == ".nii.gz" else blob)
    assert _peak_bytes(read_image, path, refused="holds only") < 20 << 20


def test_a_gzip_bomb_is_never_expanded_past_the_declared_size(tmp_path):
    """A small header followed by 128 MiB of zeros (compressed to ~130 KB): only what the
    header declares is read."""
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(bytes(_nifti_bytes((8, 8, 8))))
        zeros = bytes(1 << 20)
        for _ in range(128):
            stream.write(zeros)
    assert path.stat().st_size < 1 << 20
    began = time.perf_counter()
    peak = _peak_bytes(read_image, path)
    assert peak < 20 << 20 and time.perf_counter() - began < 5


def test_the_size_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.float32))
    with pytest.raises(ValueError, match="above the limit"):
        read_image(path, max_bytes=1000)
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "1000")
    with pytest.raises(ValueError, match=MAX_IMAGE_BYTES_ENV):
        read_image(path)
    monkeypatch.setenv(MAX_IMAGE_BYTES_ENV, "lots")
    with pytest.raises(ValueError, match="positive integer"):
        read_image(path)
    monkeypatch.delenv(MAX_IMAGE_BYTES_ENV)
    assert read_image(path).shape == (64, 64)


def test_a_png_declaring_huge_dimensions_is_refused_from_its_header(tmp_path):
    ihdr = struct.pack(">II5B", 100_000, 100_000, 8, 0, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\0" * 4)
    with pytest.raises(ValueError, match="100000 x 100000"):
        read_image(path)


def test_complex_data_is_refused_not_silently_made_real(tmp_path):
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.complex64), np.eye(4)), path)
    with pytest.raises(ValueError, match="complex"):
        read_image(path)


# ------------------------------------------------------------------------------- configs
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
) + "model: *i\n"


def test_billion_laughs_config_is_refused_at_once(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    began = time.perf_counter()
    with pytest.raises(ValueError, match="aliases") as error:
        load_config(path)
    assert time.perf_counter() - began < 2 and "lol" not in str(error.value)


def test_config_errors_never_echo_the_input(tmp_path):
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump({"model": {"kind": "x" * 100_000}, "extra": ["y" * 1000]}))
    with pytest.raises(ValueError, match="model.kind") as error:
        load_config(path)
    assert len(str(error.value)) < 600 and "xxxx" not in str(error.value)


def test_empty_and_oversized_configs_are_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_config(empty)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20))
    with pytest.raises(ValueError, match="at most"):
        load_config(big)


# ------------------------------------------------------------------------------- weights
def _corrupt(kind: str, path: Path) -> None:
    good = path.read_bytes()
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "lying header":
        n = struct.unpack("<Q", good[:8])[0]
        header = json.loads(good[8:8 + n])
        key = next(k for k in header if k != "__metadata__")
        header[key]["data_offsets"][1] += 10**9
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(struct.pack("<Q", len(text)) + text + good[8 + n:])
    elif kind == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("kind", ["pickle", "truncated", "lying header", "empty"])
def test_bad_weights_files_are_a_value_error_naming_them(model_folder, kind, tmp_path, capsys):
    weights = model_folder / "weights.safetensors"
    _corrupt(kind, weights)
    with pytest.raises(ValueError, match="safetensors"):
        zoo.load_model(model_folder)
    with pytest.raises(ValueError, match="weights.safetensors"):
        load_weights(weights)
    fixed = tmp_path / "f.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 1), np.float32) * 1.0,
                             np.eye(4)), fixed)
    code = cli.main(["register", str(fixed), str(fixed), "-o", str(tmp_path / "o"),
                     "--model", str(model_folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "weights.safetensors" in err[0]


def test_weights_that_do_not_fit_the_widest_config_fail_before_building(model_folder):
    """The widest allowed network (4 GB of float32 weights) is never built: the shapes in the
    safetensors header are compared with the config's first (peak resident memory stays put)."""
    config = model_folder / "config.yaml"
    data = yaml.safe_load(config.read_text())
    data["model"].update(kind="global_local", ndim=3, features=[1024] * 7,
                         local_features=[1024] * 7)
    data["data"]["shape"] = [32, 32, 32]
    config.write_text(yaml.safe_dump(data))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    began = time.perf_counter()
    with pytest.raises(ValueError, match="do not fit the config"):
        zoo.load_model(model_folder)
    assert time.perf_counter() - began < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000


def test_an_empty_model_config_is_refused(model_folder):
    (model_folder / "config.yaml").write_text("")
    with pytest.raises(ValueError, match="empty"):
        zoo.load_model(model_folder)


def test_one_broken_user_model_is_listed_as_broken_and_breaks_nothing(tmp_path, monkeypatch,
                                                                       capsys):
    root = tmp_path / "home" / "models"
    good = make_model_folder(root, "good-2d", kind="deformable", ndim=2)
    bad = make_model_folder(root, "bad-2d", kind="deformable", ndim=2)
    (bad / "config.yaml").write_text(LAUGHS)
    monkeypatch.setenv("DEEPREG_HOME", str(tmp_path / "home"))
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("good-2d") and "deformable" in line for line in lines)
    assert any(line.startswith("bad-2d") and "BROKEN" in line for line in lines)
    assert "bad-2d" not in zoo.list_models() and "good-2d" in zoo.list_models(ndim=2)
    assert set(zoo.broken_models()) == {"bad-2d"}
    assert zoo.load_model("good-2d").name == "good-2d"
    with pytest.raises(ValueError, match="nope") as error:
        zoo.get("nope")
    assert "aliases" not in str(error.value)
    assert good.is_dir()


# ------------------------------------------------------------------------------- Dice
def test_dice_of_many_labels_is_one_pass_and_matches_the_definition():
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(-3, 40, (20, 30)))
    b = torch.from_numpy(rng.integers(-3, 40, (20, 30)))
    got = dice_per_label(a, b, labels=[*range(-3, 40), 1000])
    for label, score in got.items():
        in_a, in_b = a == label, b == label
        total = int(in_a.sum() + in_b.sum())
        expected = 2 * int((in_a & in_b).sum()) / total if total else math.nan
        assert score == pytest.approx(expected, nan_ok=True), label
    many = torch.arange(140_000).reshape(350, 400) // 2  # 70,000 labels
    began = time.perf_counter()
    scores = dice_per_label(many, many)
    assert len(scores) == 69_999 and all(v == 1.0 for v in scores.values())
    assert time.perf_counter() - began < 10
