"""Tests of deepreg_core.models: shapes, initial state, coordinate conversions, configs, errors,
and recovery of a known translation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import ValidationError

from deepreg_core.models import (
    AffineHead,
    AffineNet,
    CentroidHead,
    ConvEncoder,
    DeformableNet,
    FlowHead,
    GlobalLocalNet,
    ModelConfig,
    RegistrationOutput,
    SaliencyGate,
    UNet,
    VelocityIntegrator,
    build_model,
    normalized_to_voxel_affine,
    resize_image,
    voxel_to_normalized_affine,
    working_shape,
)
from deepreg_core.saliency import joint_saliency
from deepreg_core.spatial import warp, warp_affine

TINY = {"features": [4, 8, 8], "affine_features": [4, 8], "local_features": [4, 8]}
SHAPES = {2: (32, 32), 3: (16, 16, 16)}
ODD_SHAPES = {2: (30, 34), 3: (15, 17, 13)}


def tiny(kind: str, ndim: int, **overrides: object) -> ModelConfig:
    return ModelConfig(kind=kind, ndim=ndim, **{**TINY, **overrides})


def blob(shape: tuple[int, ...], centre: tuple[float, ...], sigma: float) -> torch.Tensor:
    """A Gaussian blob ``(1, 1, *shape)`` centred at ``centre`` (voxels)."""
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij")
    r2 = sum((a - c) ** 2 for a, c in zip(axes, centre))
    return torch.exp(-r2 / (2 * sigma**2))[None, None]


def pair(shape: tuple[int, ...], batch: int = 1, channels: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(batch, channels, *shape, generator=g) for _ in range(2))


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("diffeomorphic", [True, False])
@pytest.mark.parametrize("kind", ["affine", "deformable", "global_local"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_output_shapes(kind: str, ndim: int, diffeomorphic: bool) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(kind, ndim, diffeomorphic=diffeomorphic))
    fixed, moving = pair(SHAPES[ndim], batch=2)
    out = model(fixed, moving)
    assert isinstance(out, RegistrationOutput)
    assert out.warped.shape == moving.shape
    assert out.displacement.shape == (2, ndim, *SHAPES[ndim])
    field_shape = (2, ndim, *SHAPES[ndim])
    if kind == "affine":
        assert out.affine.shape == (2, ndim + 1, ndim + 1)
        assert out.velocity is None and out.saliency is None
    elif kind == "deformable":
        assert out.affine is None
        assert (out.velocity is not None) == diffeomorphic
        if diffeomorphic:
            assert out.velocity.shape == field_shape
    else:
        assert out.saliency.shape == (2, 1, *SHAPES[ndim])
        assert out.coarse_displacement.shape == field_shape
        assert float(out.saliency.detach().min()) >= 0 and float(out.saliency.detach().max()) <= 1


@pytest.mark.parametrize("kind", ["affine", "deformable", "global_local"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_sizes_not_divisible_by_two(kind: str, ndim: int) -> None:
    model = build_model(tiny(kind, ndim, working_scale=0.7))
    fixed, moving = pair(ODD_SHAPES[ndim])
    out = model(fixed, moving)
    assert out.warped.shape == moving.shape
    assert out.displacement.shape == (1, ndim, *ODD_SHAPES[ndim])


def test_unet_keeps_size_and_channels() -> None:
    net = UNet(2, in_channels=3, features=[4, 8, 8, 16], decoder_features=[8, 8, 6])
    assert net(torch.rand(1, 3, 23, 9)).shape == (1, 6, 23, 9)
    assert UNet(3, 2, [5]).out_channels == 5  # one level: no decoder


def test_multichannel_images() -> None:
    model = build_model(tiny("global_local", 2, in_channels=2))
    fixed, moving = pair(SHAPES[2], channels=2)
    assert model(fixed, moving).warped.shape == (1, 2, 32, 32)


def test_float64_inputs_give_float64_outputs() -> None:
    model = build_model(tiny("deformable", 2)).double()
    fixed, moving = (x.double() for x in pair(SHAPES[2]))
    out = model(fixed, moving)
    assert out.displacement.dtype == out.warped.dtype == torch.float64


# ----------------------------------------------------------------------------- initial state


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_net_starts_at_identity(ndim: int) -> None:
    torch.manual_seed(0)
    model = build_model(tiny("affine", ndim))
    image = blob(SHAPES[ndim], tuple(n / 2 for n in SHAPES[ndim]), 3.0)
    out = model(image, image)
    eye = torch.eye(ndim + 1).expand(1, -1, -1)
    assert torch.equal(out.affine, eye)
    assert torch.equal(out.displacement, torch.zeros_like(out.displacement))
    torch.testing.assert_close(out.warped, image, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["deformable", "global_local"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_dense_nets_start_near_zero_field(kind: str, ndim: int) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(kind, ndim))
    image = blob(SHAPES[ndim], tuple(n / 2 for n in SHAPES[ndim]), 3.0)
    out = model(image, image)
    assert float(out.displacement.detach().abs().max()) < 1e-2
    torch.testing.assert_close(out.warped, image, atol=1e-3, rtol=0)


def test_affine_head_starts_at_identity_for_any_features() -> None:
    head = AffineHead(3, in_channels=4)
    assert torch.equal(head(torch.randn(2, 4, 3, 5, 2)), torch.eye(3, 4).expand(2, -1, -1))


# ----------------------------------------------------------------------------- coordinates


def test_normalized_translation_to_voxels() -> None:
    # t in normalised units is t * (n - 1) / 2 voxels along that axis
    theta = torch.tensor([[[1.0, 0.0, 0.5], [0.0, 1.0, -0.25]]])
    A = normalized_to_voxel_affine(theta, (21, 41))
    expected = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, -5.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(A[0], expected)


def test_normalized_scale_is_about_the_centre() -> None:
    s = torch.tensor([0.8, 1.25, 1.5])
    theta = torch.cat([torch.diag(s), torch.zeros(3, 1)], dim=1)[None]
    shape = (9, 17, 33)
    A = normalized_to_voxel_affine(theta, shape)[0]
    centre = torch.tensor([(n - 1) / 2 for n in shape])
    torch.testing.assert_close(A[:3, :3], torch.diag(s))
    torch.testing.assert_close(A[:3, 3], centre * (1 - s))  # the centre stays put
    torch.testing.assert_close(A[3], torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_normalized_affine_matches_torch_affine_grid() -> None:
    # torch's affine_grid (align_corners=True) uses the same normalised frame, in (x, y) order
    g = torch.Generator().manual_seed(1)
    theta = torch.eye(2, 3)[None] + 0.2 * torch.randn(1, 2, 3, generator=g)
    image = torch.rand(1, 1, 20, 27, generator=g)
    theta_xy = theta[:, [1, 0]][:, :, [1, 0, 2]]
    grid = F.affine_grid(theta_xy, list(image.shape), align_corners=True)
    expected = F.grid_sample(image, grid, align_corners=True)
    ours = warp_affine(image, normalized_to_voxel_affine(theta, (20, 27)))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(12, 31), (7, 16, 25)])
def test_normalized_voxel_round_trip(shape: tuple[int, ...]) -> None:
    ndim = len(shape)
    g = torch.Generator().manual_seed(2)
    theta = torch.eye(ndim, ndim + 1, dtype=torch.float64) + 0.3 * torch.randn(
        4, ndim, ndim + 1, generator=g, dtype=torch.float64
    )
    A = normalized_to_voxel_affine(theta, shape)
    back = voxel_to_normalized_affine(A, shape)
    torch.testing.assert_close(back[:, :ndim], theta)
    torch.testing.assert_close(normalized_to_voxel_affine(back, shape), A)


@pytest.mark.parametrize("ndim", [2, 3])
def test_symmetric_affine_is_identity_for_an_identical_pair_and_inverts_when_swapped(ndim):
    torch.manual_seed(1)
    model = build_model(tiny("affine", ndim, pass_guard=False)).eval()
    with torch.no_grad():  # a head that predicts a clear non-identity transform
        model.head.linear.weight.normal_(0, 0.05)
    fixed, moving = pair(SHAPES[ndim])
    with torch.no_grad():
        same = model(fixed, fixed).affine[0].double()
        forward = model(fixed, moving).affine[0].double()
        backward = model(moving, fixed).affine[0].double()
    eye = torch.eye(ndim + 1, dtype=torch.float64)
    torch.testing.assert_close(same, eye, atol=1e-5, rtol=0)
    assert (forward - eye).abs().max() > 1e-2
    torch.testing.assert_close(forward @ backward, eye, atol=1e-4, rtol=0)


@pytest.mark.parametrize("ndim", [2, 3])
def test_affine_passes_compose_estimates_in_evaluation_and_train_one_pass(ndim: int) -> None:
    model = build_model(tiny("affine", ndim, symmetric=False, passes=3, pass_guard=False))
    step = torch.eye(ndim, ndim + 1)
    step[0, 1], step[1, ndim] = 0.1, -0.05  # a shear and a shift, whatever the input
    with torch.no_grad():
        model.head.linear.bias.copy_((step - torch.eye(ndim, ndim + 1)).flatten())
    fixed, moving = pair(SHAPES[ndim])
    square = torch.eye(ndim + 1)
    square[:ndim] = step
    model.train()
    one = model(fixed, moving).affine[0]
    torch.testing.assert_close(one, normalized_to_voxel_affine(square[None], SHAPES[ndim])[0])
    model.eval()
    three = model(fixed, moving).affine[0]
    expected = normalized_to_voxel_affine((square @ square @ square)[None], SHAPES[ndim])[0]
    torch.testing.assert_close(three, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="passes"):
        build_model(tiny("affine", ndim, passes=0))


@pytest.mark.parametrize("sign, kept", [(1.0, True), (-1.0, False)])
def test_affine_pass_guard_keeps_only_passes_that_improve_the_match(sign: float,
                                                                     kept: bool) -> None:
    # fixed: a blob at the centre; moving: the same blob 4 voxels down axis 0. A head that
    # always answers "shift by +4" (the truth) is kept, and applied once only (a second +4
    # would make the match worse); one that answers "-4" is refused: the identity stands.
    model = build_model(tiny("affine", 2, symmetric=False, passes=3)).eval()
    shift = sign * 4.0 * 2 / 31  # voxels -> normalised coordinates on 32 voxels
    with torch.no_grad():
        model.head.linear.bias.copy_(torch.tensor([0.0, 0.0, shift, 0.0, 0.0, 0.0]))
    fixed, moving = blob((32, 32), (15.5, 15.5), 3.0), blob((32, 32), (19.5, 15.5), 3.0)
    with torch.no_grad():
        affine = model(fixed, moving).affine[0]
    expected = torch.eye(3)
    if kept:
        expected[0, 2] = 4.0
    torch.testing.assert_close(affine, expected, atol=1e-4, rtol=0)


def test_symmetric_affine_with_passes_stays_identity_for_an_identical_pair() -> None:
    torch.manual_seed(2)
    model = build_model(tiny("affine", 3, passes=3, pass_guard=False)).eval()
    with torch.no_grad():
        model.head.linear.weight.normal_(0, 0.05)
    fixed, moving = pair(SHAPES[3])
    with torch.no_grad():
        same = model(fixed, fixed).affine[0]
        forward = model(fixed, moving).affine[0]
    torch.testing.assert_close(same, torch.eye(4), atol=1e-5, rtol=0)
    assert (forward - torch.eye(4)).abs().max() > 1e-2


@pytest.mark.parametrize("ndim", [2, 3])
def test_centroid_head_fits_the_affine_that_carries_matched_points(ndim: int) -> None:
    g = torch.Generator().manual_seed(ndim)
    head = CentroidHead(ndim, in_channels=4, keypoints=12)
    points = torch.rand(1, 12, ndim, generator=g) * 1.6 - 0.8
    weights = torch.rand(1, 12, generator=g) + 0.5
    truth = torch.eye(ndim, ndim + 1) + 0.1 * torch.randn(ndim, ndim + 1, generator=g)
    moved = points @ truth[:, :ndim].T + truth[:, ndim]
    fitted = head.fit((points, weights), (moved, weights))[0]
    torch.testing.assert_close(fitted, truth, atol=1e-3, rtol=0)
    # a keypoint off by a lot and given no weight does not move the fit
    wrong, light = moved.clone(), weights.clone()
    wrong[0, 0] += 5.0
    light[0, 0] = 0.0
    torch.testing.assert_close(head.fit((points, light), (wrong, light))[0], truth, atol=1e-3,
                               rtol=0)
    with pytest.raises(ValueError, match="keypoints"):
        CentroidHead(ndim, 4, keypoints=ndim)


def test_centroid_head_points_follow_a_shifted_peak() -> None:
    head = CentroidHead(2, in_channels=1, keypoints=4)
    with torch.no_grad():
        head.conv.weight.fill_(20.0)
        head.conv.bias.zero_()
    image = torch.zeros(1, 1, 21, 21)
    image[0, 0, 5, 15] = 1.0  # normalised (array order): (-0.5, 0.5)
    centroids, weights = head.points(image)
    torch.testing.assert_close(centroids[0, 0], torch.tensor([-0.5, 0.5]), atol=1e-3, rtol=0)
    assert float(weights.detach().min()) > 10.0  # a sharp peak is a confident keypoint


def test_centroid_affine_net_identity_inverse_and_passes() -> None:
    torch.manual_seed(3)
    model = build_model(tiny("affine", 2, affine_head="centroids", affine_features=[4, 8],
                             keypoints=6, passes=2, pass_guard=False)).eval()
    fixed, moving = pair(SHAPES[2])
    with torch.no_grad():
        same = model(fixed, fixed).affine[0]
        forward = model(fixed, moving).affine[0]
        backward = model(moving, fixed).affine[0]
    torch.testing.assert_close(same, torch.eye(3), atol=1e-4, rtol=0)
    assert (forward - torch.eye(3)).abs().max() > 1e-3
    torch.testing.assert_close(forward @ backward, torch.eye(3), atol=2e-2, rtol=0)
    assert model.in_channels == 1 and model.centroids


def test_affine_net_reports_its_transform_in_voxels() -> None:
    model = build_model(tiny("affine", 2, symmetric=False))
    with torch.no_grad():
        model.head.linear.bias.copy_(torch.tensor([0.0, 0.0, 0.2, 0.0, 0.0, -0.1]))
    fixed, moving = pair((21, 31))
    out = model(fixed, moving)
    torch.testing.assert_close(out.affine[0, :2, 2], torch.tensor([2.0, -1.5]))
    torch.testing.assert_close(out.warped, warp_affine(moving, out.affine), atol=1e-5, rtol=0)


def test_coordinate_conversion_errors() -> None:
    expected = r"expected shape \(B, 2, 3\) or \(B, 3, 3\).*got \(1, 3, 4\)"
    with pytest.raises(ValueError, match=expected):
        normalized_to_voxel_affine(torch.zeros(1, 3, 4), (8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        voxel_to_normalized_affine(torch.eye(3, dtype=torch.int64), (8, 8))


# ----------------------------------------------------------------------------- working scale


@pytest.mark.parametrize("kind", ["affine", "deformable", "global_local"])
def test_working_scale_runs_small_and_returns_full_size(kind: str) -> None:
    model = build_model(tiny(kind, 3, working_scale=0.5, global_scale=0.25))
    seen: list[tuple[int, ...]] = []
    inner = model.encoder if kind == "affine" else (
        model.backbone if kind == "deformable" else model.local_backbone
    )
    inner.register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape[2:])))
    fixed, moving = pair(SHAPES[3])
    out = model(fixed, moving)
    assert set(seen) == {(8, 8, 8)}  # the symmetric affine runs its encoder twice
    assert out.displacement.shape == (1, 3, *SHAPES[3])
    assert out.warped.shape == moving.shape
    if kind == "global_local":
        assert out.saliency.shape == (1, 1, *SHAPES[3])
        assert out.coarse_displacement.shape == (1, 3, *SHAPES[3])


def test_working_scale_field_is_in_voxels_of_the_input() -> None:
    # a constant field of c voxels on the 16-voxel working grid is c * 31 / 15 voxels on 32
    backbone = UNet(2, 2, [4, 8])
    head = FlowHead(2, backbone.out_channels)
    with torch.no_grad():
        head.conv.weight.zero_()
        head.conv.bias.copy_(torch.tensor([1.0, -2.0]))
    model = DeformableNet(backbone, head, working_scale=0.5)
    out = model(*pair((32, 32)))
    torch.testing.assert_close(out.displacement[:, 0], torch.full((1, 32, 32), 31 / 15))
    torch.testing.assert_close(out.displacement[:, 1], torch.full((1, 32, 32), -2 * 31 / 15))


def test_resize_image_preserves_smooth_images() -> None:
    # a linear ramp stays a ramp over the same extent (align_corners=True geometry) away from
    # the edges, where the anti-aliasing blur replicates the border
    ramp = torch.linspace(0, 1, 33).view(1, 1, 1, 33).expand(1, 1, 9, 33)
    small = resize_image(ramp, (5, 17))
    assert small.shape == (1, 1, 5, 17)
    expected = torch.linspace(0, 1, 17).view(1, 1, 1, 17).expand(1, 1, 5, 17)
    torch.testing.assert_close(small[..., 2:-2], expected[..., 2:-2])
    constant = torch.full((1, 2, 11, 12, 13), 3.0)
    torch.testing.assert_close(resize_image(constant, (4, 5, 6)), torch.full((1, 2, 4, 5, 6), 3.0))
    assert resize_image(ramp, (9, 33)) is ramp
    assert working_shape((160, 192, 224), 0.5) == (80, 96, 112)
    assert working_shape((2, 9), 0.1) == (2, 2)
    with pytest.raises(ValueError, match=r"expected 0 < scale <= 1, got 1.5"):
        working_shape((8, 8), 1.5)


# ----------------------------------------------------------------------------- global-local


def test_global_local_composes_coarse_and_residual() -> None:
    torch.manual_seed(0)
    model = build_model(tiny("global_local", 2, diffeomorphic=False))
    with torch.no_grad():  # the global net predicts a constant shift, the local net nothing
        model.global_net.head.conv.weight.zero_()
        model.global_net.head.conv.bias.copy_(torch.tensor([1.5, -0.5]))
        model.local_head.conv.weight.zero_()
    fixed, moving = pair(SHAPES[2])
    out = model(fixed, moving)
    coarse = model.global_net(fixed, moving)
    torch.testing.assert_close(out.coarse_displacement, coarse.displacement)
    torch.testing.assert_close(out.displacement, coarse.displacement, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.saliency, joint_saliency(fixed, coarse.warped))

    with torch.no_grad():  # now a constant residual r (gated): u = r + u_g(x + r) = r + u_g
        model.local_head.conv.bias.copy_(torch.tensor([1.0, 1.0]))
    out = model(fixed, moving)
    r = model.gate(out.saliency) * 1.0
    torch.testing.assert_close(out.displacement, r + coarse.displacement, atol=1e-4, rtol=0)


def test_global_local_trains_end_to_end() -> None:
    # gradients reach the global net, the local net and the gate (also through the saliency)
    model = build_model(tiny("global_local", 2, working_scale=0.5, global_scale=0.25))
    fixed, moving = blob((32, 32), (14, 15), 4.0), blob((32, 32), (17, 13), 4.0)
    out = model(fixed, moving)
    ((out.warped - fixed) ** 2 * (1 + out.saliency)).mean().backward()
    for name in ("global_net.head.conv.weight", "local_head.conv.weight", "gate.slope"):
        grad = model.get_parameter(name).grad
        assert grad is not None and float(grad.abs().sum()) > 0, name


def test_saliency_gate_closes_where_images_agree() -> None:
    gate = SaliencyGate()
    values = gate(torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3))[0, 0, 0]
    torch.testing.assert_close(values, torch.sigmoid(torch.tensor([2.0, 0.0, -2.0])))
    assert values[0] > values[1] > values[2]


def test_global_local_rejects_a_mismatched_local_backbone() -> None:
    coarse = DeformableNet(UNet(2, 2, [4]), FlowHead(2, 4))
    with pytest.raises(ValueError, match=r"expected 3 input channels.*got 2"):
        GlobalLocalNet(coarse, UNet(2, 2, [4]), FlowHead(2, 4))


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize("kind", ["affine", "deformable", "global_local"])
def test_config_round_trip_rebuilds_the_same_model(kind: str) -> None:
    config = tiny(kind, 3, working_scale=0.5, instance_norm=True, decoder_features=[6, 5])
    model = build_model(config)
    assert model.config is config
    restored = ModelConfig.model_validate(json.loads(json.dumps(config.model_dump())))
    via_yaml = ModelConfig.model_validate(yaml.safe_load(yaml.safe_dump(config.model_dump())))
    assert restored == config == via_yaml
    twin = build_model(restored.model_dump())
    assert type(twin) is type(model)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in twin.state_dict().items()}
    twin.load_state_dict(model.state_dict(), strict=True)
    fixed, moving = pair(SHAPES[3])
    torch.testing.assert_close(twin(fixed, moving).displacement, model(fixed, moving).displacement)


def test_config_choices_change_the_architecture() -> None:
    plain = build_model(tiny("deformable", 2, diffeomorphic=False))
    assert plain.integrator is None
    steps = build_model(tiny("deformable", 2, integration_steps=4)).integrator.steps
    assert steps == 4
    assert build_model(tiny("global_local", 2, saliency_gate=False)).gate is None
    assert isinstance(build_model(tiny("affine", 2)), AffineNet)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"working_scale": 0.0}, "working_scale"),
        ({"working_scale": 1.5}, "working_scale"),
        ({"global_scale": -0.5}, "global_scale"),
        ({"integration_steps": 13}, "integration_steps"),
        ({"integration_steps": -1}, "integration_steps"),
        ({"ndim": 4}, "ndim"),
        ({"kind": "bspline"}, "kind"),
        ({"in_channels": 0}, "in_channels"),
        ({"features": []}, "features"),
        ({"features": [16, 0]}, "features"),
        ({"affine_features": [8] * 8}, "affine_features"),
        ({"convs_per_level": 0}, "convs_per_level"),
        ({"decoder_features": [8]}, "decoder_features"),
        ({"learning_rate": 1e-3}, "learning_rate"),
    ],
)
def test_invalid_config_names_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        ModelConfig(**values)
    with pytest.raises(ValidationError, match=field):
        build_model(values)


def test_build_model_rejects_other_types() -> None:
    with pytest.raises(TypeError, match=r"expected a ModelConfig or a mapping.*got str"):
        build_model("deformable")  # type: ignore[arg-type]


def test_unet_rejects_bad_widths() -> None:
    with pytest.raises(ValueError, match=r"decoder_features: expected 2 widths.*got 1"):
        UNet(2, 2, [4, 8, 8], decoder_features=[8])
    with pytest.raises(ValueError, match="at least one encoder width"):
        UNet(2, 2, [])
    with pytest.raises(ValueError, match=r"ndim: expected 2 or 3.*got 4"):
        ConvEncoder(4, 2, [4])


# ----------------------------------------------------------------------------- input errors


@pytest.mark.parametrize("kind", ["affine", "deformable", "global_local"])
def test_input_errors_say_expected_and_got(kind: str) -> None:
    model = build_model(tiny(kind, 2))
    fixed, moving = pair(SHAPES[2])
    mismatch = r"share their spatial shape.*\(1, 1, 32, 32\).*\(1, 1, 32, 30\)"
    with pytest.raises(ValueError, match=mismatch):
        model(fixed, moving[..., :30])
    with pytest.raises(ValueError, match=r"fixed: expected 2 spatial dimensions, got 3"):
        model(fixed[..., None], moving[..., None])
    with pytest.raises(ValueError, match=r"moving: expected 1 channel\(s\).*got 2"):
        model(fixed, moving.expand(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"equal batch sizes, got 1 and 2"):
        model(fixed, moving.expand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="finite values"):
        model(fixed, torch.where(moving > 0.5, torch.nan, moving))
    with pytest.raises(TypeError, match="floating-point tensor, got dtype torch.int64"):
        model(fixed, moving.long())
    with pytest.raises(TypeError, match="expected a torch.Tensor, got ndarray"):
        model(fixed.numpy(), moving)
    with pytest.raises(ValueError, match="same dtype"):
        model(fixed, moving.double())


# ----------------------------------------------------------------------------- behaviour


def test_diffeomorphic_net_does_not_fold() -> None:
    metrics = pytest.importorskip("deepreg_core.metrics")
    fixed, moving = blob((32, 32), (12, 13), 5.0), blob((32, 32), (18, 17), 4.0)
    fractions = {}
    for diffeomorphic in (True, False):
        torch.manual_seed(0)
        model = build_model(tiny("deformable", 2, diffeomorphic=diffeomorphic))
        with torch.no_grad():  # large random weights: a field of several voxels
            model.head.conv.weight.normal_(0.0, 20.0)
            out = model(fixed, moving)
        assert float(out.displacement.abs().max()) > 4.0
        fractions[diffeomorphic] = metrics.folding_fraction(out.displacement)
    assert fractions[False] > 0.05
    assert fractions[True] < 0.01


def test_affine_net_learns_a_known_translation() -> None:
    # two blobs (no rotational symmetry); moving = fixed shifted by t, so the answer is u = t:
    # warped(x) = moving(x + t) = fixed(x)
    torch.manual_seed(0)
    shape, shift = (32, 32), (2.5, -1.5)

    def pattern(t: tuple[float, float]) -> torch.Tensor:
        big = blob(shape, (12 + t[0], 13 + t[1]), 4.0)
        return big + 0.7 * blob(shape, (20 + t[0], 19 + t[1]), 2.5)

    fixed, moving = pattern((0.0, 0.0)), pattern(shift)
    model = build_model(ModelConfig(kind="affine", ndim=2, affine_features=[4, 8]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.mse_loss(model(fixed, moving).warped, fixed)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        A = model(fixed, moving).affine[0]
    assert float((A[:2, 2] - torch.tensor(shift)).abs().max()) < 0.2
    torch.testing.assert_close(A[:2, :2], torch.eye(2), atol=0.02, rtol=0)


def test_velocity_integrator_of_a_constant_field_is_the_field() -> None:
    v = torch.full((1, 3, 8, 8, 8), 0.25)
    torch.testing.assert_close(VelocityIntegrator(7)(v), v)


def test_affine_net_components_can_be_composed_directly() -> None:
    net = AffineNet(ConvEncoder(3, 2, [4]), AffineHead(3, 4), working_scale=0.5)
    out = net(*pair(SHAPES[3]))
    assert torch.equal(out.affine, torch.eye(4)[None])
    torch.testing.assert_close(out.warped, warp(pair(SHAPES[3])[1], out.displacement))


@pytest.mark.parametrize("shape", [(1, 2, 9, 10, 8), (2, 16, 5, 6, 7)])
def test_conv3d_takes_onednn_with_the_same_values_and_gradients(shape) -> None:
    """blocks.Conv3d (oneDNN on CPU for every size) against torch's own conv3d."""
    from deepreg_core.models.blocks import Conv3d

    gen = torch.Generator().manual_seed(0)
    conv = Conv3d(shape[1], 8, kernel_size=3, padding=1)
    x = torch.randn(shape, generator=gen, requires_grad=True)
    out = conv(x)
    reference = F.conv3d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    expected = torch.autograd.grad(reference.square().sum(), (x, conv.weight))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert set(conv.state_dict()) == {"weight", "bias"}  # checkpoints are unchanged

