"""Speed of the hot kernels of ``register()`` against the straightforward way, in the same run.

    python bench/kernels.py [--repeats 5]

At 160 x 192 x 224 (a 1 mm T1-sized volume), medians of repeats after one warm-up:

* Jacobian: ``metrics.jacobian_and_worst`` (one slab-wise pass giving the central determinant and
  the worst of the 8 one-sided ones) against the whole-volume way: central differences, then the
  8 forward/backward combinations, each determinant written out, then their minimum.
* Separable Gaussian (sigma 1.5, replicate borders): ``_diff.conv_along_axis`` (a weighted sum of
  shifted views) against a grouped ``torch.nn.functional.conv3d`` per axis.
* 3D convolution, batch 1, 32 x 40 x 32 and 2 -> 16 channels (a working-grid UNet level):
  ``models.blocks.Conv3d`` (oneDNN) against ``torch.nn.functional.conv3d`` (which PyTorch routes
  to its im2col fallback at this size).

With gradients (forward and backward, as the refinement runs them):

* Local NCC's box sum, width 5, the five statistics maps of a 2 mm MNI volume (99 x 117 x 95):
  ``losses._box_sum`` (shifted views for boxes up to ``SHIFTED_BOX_MAX``) against the running
  sum it uses for wider boxes.
* Mutual information of an affine level (4096 samples, 32 bins): ``ReferenceMutualInformation``
  (the fixed samples' Parzen memberships computed once) against ``MutualInformationLoss``.

Results go to ``bench/results/kernels.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
SHAPE = (160, 192, 224)


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def whole_volume_jacobian(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from deepreg_core._diff import axis_difference

    def det(columns):
        j = [[columns[d][:, c] + (1.0 if c == d else 0.0) for d in range(3)] for c in range(3)]
        return (j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
                - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
                + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0]))

    central = det([axis_difference(u, d, scheme="central") for d in range(3)])
    sides = [{s: axis_difference(u, d, scheme=s) for s in ("forward", "backward")}
             for d in range(3)]
    worst = torch.stack([det([sides[d][s] for d, s in enumerate(combo)])
                         for combo in itertools.product(("forward", "backward"), repeat=3)])
    return central, worst.amin(0)


def grouped_conv_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    k = kernel.numel()
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = k
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = k // 2
        x = F.conv3d(F.pad(x, pad, mode="replicate"), kernel.float().view(1, 1, *shape))
    return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from deepreg_core import metrics
    from deepreg_core._diff import gaussian_kernel, separable_filter
    from deepreg_core.models.blocks import Conv3d

    torch.manual_seed(0)
    u = 0.5 * torch.randn(1, 3, *SHAPE)
    image = torch.rand(1, 1, *SHAPE)
    kernel = gaussian_kernel(1.5)
    conv = Conv3d(2, 16, kernel_size=3, padding=1).eval()
    level = torch.rand(1, 2, 32, 40, 32)
    rows = []
    with torch.no_grad():
        pairs = [
            ("jacobian central + worst of 8", lambda: metrics.jacobian_and_worst(u),
             lambda: whole_volume_jacobian(u)),
            ("gaussian blur sigma 1.5",
             lambda: separable_filter(image, kernel, padding_mode="replicate"),
             lambda: grouped_conv_blur(image, kernel)),
            ("conv3d 32x40x32 2->16", lambda: conv(level),
             lambda: F.conv3d(level, conv.weight, conv.bias, padding=1)),
        ]
        for name, ours, baseline in pairs:
            ours_s, base_s = median_time(ours, args.repeats), median_time(baseline, args.repeats)
            rows.append({"kernel": name, "ours_s": ours_s, "baseline_s": base_s,
                         "speedup": base_s / ours_s})
            print(f"{name:32s} ours {ours_s * 1e3:8.1f} ms   baseline {base_s * 1e3:8.1f} ms   "
                  f"x{base_s / ours_s:.1f}", flush=True)
    from deepreg_core import losses

    def box(width_limit: int, x: torch.Tensor) -> None:
        old, losses.SHIFTED_BOX_MAX = losses.SHIFTED_BOX_MAX, width_limit
        try:
            losses._box_sum(x, (5, 5, 5)).square().sum().backward()
        finally:
            losses.SHIFTED_BOX_MAX = old

    maps = torch.rand(1, 5, 99, 117, 95, requires_grad=True)
    fixed_s, moving_s = torch.rand(1, 1, 4096, 1, 1), torch.rand(1, 1, 4096, 1, 1)
    moving_s.requires_grad_()
    reference = losses.ReferenceMutualInformation(fixed_s)
    full_mi = losses.MutualInformationLoss()
    for name, ours, baseline in [
        ("box sum w5 99x117x95x5 fwd+bwd", lambda: box(losses.SHIFTED_BOX_MAX, maps),
         lambda: box(1, maps)),
        ("MI 4096 samples fwd+bwd", lambda: reference(moving_s).backward(),
         lambda: full_mi(fixed_s, moving_s).backward()),
    ]:
        ours_s, base_s = median_time(ours, args.repeats), median_time(baseline, args.repeats)
        rows.append({"kernel": name, "ours_s": ours_s, "baseline_s": base_s,
                     "speedup": base_s / ours_s})
        print(f"{name:32s} ours {ours_s * 1e3:8.1f} ms   baseline {base_s * 1e3:8.1f} ms   "
              f"x{base_s / ours_s:.1f}", flush=True)
    out = HERE / "results" / "kernels.json"
    out.write_text(json.dumps({"shape": SHAPE, "threads": torch.get_num_threads(), "rows": rows},
                              indent=2))


if __name__ == "__main__":
    main()
