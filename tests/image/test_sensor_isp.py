"""The simulated camera, the DNG round trip through rawpy, the ISP stages against LibRaw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rawpy", reason="the image extra is not installed (pip install -e .[image])")
pytest.importorskip("tifffile", reason="the image extra is not installed (pip install -e .[image])")

from churnops.image import isp, sensor  # noqa: E402
from churnops.image.dataset import ImageDataError, dataset_sha256, list_images, load_image, read_raw  # noqa: E402


def test_dng_round_trip_through_rawpy(tmp_path, raw_contract):
    import rawpy

    cap = sensor.render(11, raw_contract, seed=3)
    path = tmp_path / "x.dng"
    sensor.write_dng(path, cap.raw, raw_contract.sensor)
    with rawpy.imread(str(path)) as r:
        assert np.array_equal(r.raw_image, cap.raw)
        assert r.raw_image.dtype == np.uint16 and r.raw_image.shape == (32, 32)
        assert list(r.black_level_per_channel) == [1024] * 4
        assert r.white_level == 15000
        assert r.color_desc == b"RGBG" and r.raw_pattern.tolist() == [[0, 1], [3, 2]]  # R G / G B
        # AsShotNeutral 0.55, 1, 0.7 -> camera multipliers 1/neutral
        np.testing.assert_allclose(r.camera_whitebalance[:3], [1 / 0.55, 1.0, 1 / 0.7], rtol=1e-4)
        # ColorMatrix1 = camera-from-sRGB x sRGB-from-XYZ, so LibRaw's rgb_cam is its inverse
        cm = np.array(raw_contract.sensor.color_matrix)
        np.testing.assert_allclose(r.color_matrix[:, :3], np.linalg.inv(cm), atol=1e-4)


def test_generator_is_deterministic_and_labelled(tmp_path, raw_contract):
    from sklearn.datasets import load_digits

    a = sensor.generate(tmp_path / "a", raw_contract, seed=5, limit=12)
    b = sensor.generate(tmp_path / "b", raw_contract, seed=5, limit=12)
    c = sensor.generate(tmp_path / "c", raw_contract, seed=6, limit=12)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert [p.read_bytes() for p in a] != [p.read_bytes() for p in c]
    target = load_digits().target
    assert [(p.parent.name, p.name) for p in a] == [(str(target[i]), f"{i:04d}.dng") for i in range(12)]


def test_sensor_noise_and_levels(raw_contract):
    """Black frames sit at the black level with read noise; raw never exceeds the white level."""
    spec = raw_contract.sensor
    rng = np.random.default_rng(0)
    dark = sensor.expose(np.zeros((64, 64, 3)), spec, rng).astype(float)
    assert abs(dark.mean() - spec.black_level) < 1.0
    assert abs(dark.std() - spec.read_noise_dn) < 0.6
    bright = sensor.expose(np.full((8, 8, 3), 5.0), spec, rng)
    assert bright.max() == spec.white_level


def test_isp_matches_rawpy_postprocess(raw_folder, raw_contract):
    """Stages 1-5 (denoise/sharpen off) against LibRaw's bilinear pipeline: max |diff| <= 1e-3.

    rawpy options: camera white balance (AsShotNeutral), no auto brightness, BT.709 gamma
    (2.222, 4.5), 16-bit sRGB output, LINEAR (bilinear) demosaic, no flip. Measured max |diff|
    on these files is about 2e-4 of full scale (16-bit rounding and LibRaw's integer steps).
    """
    import rawpy

    spec = raw_contract.isp.model_copy(update={"denoise_sigma": 0.0, "sharpen_amount": 0.0})
    files = list_images(raw_folder, raw_contract)[:25]
    worst = 0.0
    for f in files:
        ours = isp.process(read_raw(f.path), spec)
        with rawpy.imread(str(f.path)) as r:
            ref = (
                r.postprocess(
                    use_camera_wb=True,
                    no_auto_bright=True,
                    gamma=(2.222, 4.5),
                    output_bps=16,
                    output_color=rawpy.ColorSpace.sRGB,
                    demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR,
                    user_flip=0,
                ).astype(np.float32)
                / 65535.0
            )
        assert ours.shape == ref.shape == (32, 32, 3)
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst <= 1e-3
    # and the comparison can fail: camera white balance off is far from LibRaw's
    off = isp.process(read_raw(files[0].path), spec.model_copy(update={"white_balance": "none"}))
    with rawpy.imread(str(files[0].path)) as r:
        ref = (
            r.postprocess(
                use_camera_wb=True,
                no_auto_bright=True,
                output_bps=16,
                user_flip=0,
                demosaic_algorithm=rawpy.DemosaicAlgorithm.LINEAR,
            ).astype(np.float32)
            / 65535.0
        )
    assert np.abs(off - ref).max() > 0.05


def test_isp_stages_on_known_values():
    frame = np.array([[1100, 2000], [3000, 15000]], np.uint16)
    x = isp.black_level(frame, np.full((2, 2), 1000.0), 15000)
    np.testing.assert_allclose(x, [[100 / 14000, 1000 / 14000], [2000 / 14000, 1.0]], rtol=1e-6)
    # white balance normalises the smallest multiplier to 1 and clips at 1
    wb = isp.white_balance(np.full((2, 2), 0.4, np.float32), "RGGB", np.array([2.0, 1.0, 4.0]))
    np.testing.assert_allclose(wb, [[0.8, 0.4], [0.4, 1.0]], rtol=1e-6)
    # bilinear demosaic of a flat mosaic is flat; the nearest one repeats each tile
    flat = isp.demosaic(np.tile(np.array([[0.2, 0.5], [0.5, 0.9]], np.float32), (4, 4)), "RGGB")
    np.testing.assert_allclose(flat[..., 0], 0.2, rtol=1e-6)
    np.testing.assert_allclose(flat[..., 1], 0.5, rtol=1e-6)
    np.testing.assert_allclose(flat[..., 2], 0.9, rtol=1e-6)
    near = isp.demosaic(np.array([[0.2, 0.4], [0.6, 0.9]], np.float32), "RGGB", "nearest")
    np.testing.assert_allclose(near[0, 0], [0.2, 0.5, 0.9], rtol=1e-6)
    # BT.709 curve: linear toe 4.5 L below ~0.018, 1.099 L^0.45 - 0.099 above
    g = isp.gamma_curve(np.array([0.01, 0.5, 1.0], np.float32), 1 / 0.45, 4.5)
    np.testing.assert_allclose(g, [0.045, 1.099 * 0.5**0.45 - 0.099, 1.0], atol=2e-3)
    cc = isp.color_correction(np.array([[[0.5, 0.5, 0.5]]], np.float32), np.eye(3) * 1.5)
    np.testing.assert_allclose(cc, 0.75)
    edge = np.zeros((8, 8, 3), np.float32)
    edge[:, 4:] = 0.5
    sharp = isp.sharpen(edge, 1.0)
    assert sharp[0, 4, 0] > 0.5 and sharp[0, 3, 0] == 0.0  # overshoot on the bright side, clip on the dark
    assert isp.denoise(edge, 1.0)[0, 3, 0] > 0.0
    with pytest.raises(isp.UnsupportedRawError, match="CFA pattern BGGR"):
        isp.channel_index("BGGR")


def test_dataset_sha256_covers_paths_and_bytes(tmp_path, raw_contract):
    root = tmp_path / "d"
    sensor.generate(root, raw_contract, seed=2, limit=60)
    c = raw_contract.model_copy(update={"min_images_per_class": 1})
    base = dataset_sha256(list_images(root, c))
    assert base == dataset_sha256(list_images(root, c))
    f = root / "0" / "0000.dng"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    changed = dataset_sha256(list_images(root, c))
    assert changed != base
    f.rename(root / "0" / "0000b.dng")
    assert dataset_sha256(list_images(root, c)) not in (base, changed)


def test_folder_errors_name_the_problem(tmp_path, raw_contract):
    with pytest.raises(ImageDataError, match="not found"):
        list_images(tmp_path / "missing", raw_contract)
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "a.png").write_bytes(b"x")
    with pytest.raises(ImageDataError, match="'cat' is not a class"):
        list_images(tmp_path, raw_contract)
    bad = tmp_path / "b"
    (bad / "3").mkdir(parents=True)
    (bad / "3" / "x.dng").write_bytes(b"not a raw file at all")
    with pytest.raises(ImageDataError, match="x.dng: not a readable raw file"):
        read_raw(bad / "3" / "x.dng", str(bad / "3" / "x.dng"))
    (bad / "3" / "y.txt").write_text("hi")
    with pytest.raises(ImageDataError, match="y.txt has extension"):
        list_images(bad, raw_contract)


def test_standard_images_skip_the_isp(tmp_path, raw_contract):
    from PIL import Image

    px = np.zeros((32, 32, 3), np.uint8)
    px[..., 0] = 255
    Image.fromarray(px).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", raw_contract)
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 5, 5], [1.0, 0.0, 0.0])
    Image.fromarray(px[:20]).save(tmp_path / "small.png")
    with pytest.raises(ImageDataError, match="expects 32x32"):
        load_image(tmp_path / "small.png", raw_contract)


def test_contract_dispatch_by_task(tmp_path):
    from churnops.contract import DatasetContract, load_any_contract, load_contract
    from churnops.image.contract import ImageContract

    assert isinstance(load_any_contract("bank_churners"), DatasetContract)
    img = load_any_contract("raw_digits")
    assert isinstance(img, ImageContract) and img.model_name == "raw-digits-cnn" and len(img.classes) == 10
    with pytest.raises(ValueError, match="image_classification contract, not a tabular one"):
        load_contract("raw_digits")
    bad = tmp_path / "c.yaml"
    bad.write_text("name: x\ntask: clustering\n")
    with pytest.raises(ValueError, match="task 'clustering' is not one of"):
        load_any_contract(bad)
    bad.write_text("name: x\ntask: image_classification\nmodel_name: m\nexperiment_name: e\nclasses: [a]\n")
    with pytest.raises(ValueError, match="classes"):
        load_any_contract(bad)


def test_generated_folder_is_reused_until_the_contract_changes(tmp_path, raw_contract):
    from churnops.image.train import resolve_data
    from churnops.settings import Settings

    s = Settings(state_dir=tmp_path, seed=9)
    root, synthetic = resolve_data(raw_contract, s, None, limit=12)
    assert synthetic and root == tmp_path / "images" / "raw_digits-seed9-first12"
    first = (root / "0" / "0000.dng").read_bytes()
    (root / "0" / "0000.dng").write_bytes(b"tampered")  # reused as is: nothing regenerates it
    assert resolve_data(raw_contract, s, None, limit=12)[0] == root
    assert (root / "0" / "0000.dng").read_bytes() == b"tampered"
    brighter = raw_contract.model_copy(update={"sensor": raw_contract.sensor.model_copy(update={"exposure": 0.9})})
    resolve_data(brighter, s, None, limit=12)
    regenerated = (root / "0" / "0000.dng").read_bytes()
    assert regenerated not in (b"tampered", first)
    assert resolve_data(raw_contract, Settings(state_dir=tmp_path), "/some/folder", limit=12) == (
        Path("/some/folder"),
        False,
    )
