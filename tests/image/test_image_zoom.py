"""The CNN's zoom step (churnops.image.model.zoom_to_ink): small digits are zoomed to fill the frame,
digits that already span it are left alone, and the ONNX export does the same.

The inputs are hand-built bars of ink with known bounding boxes; the expected boxes after the zoom
are worked out here from the bar's size (a box of L pixels on a 32-pixel frame is zoomed by 32 / L).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")


def bar(rows: tuple[int, int], cols: tuple[int, int], size: int = 32) -> np.ndarray:
    """(1, 3, size, size): white ink in [rows) x [cols) on black, as `from_background` hands it on."""
    x = np.zeros((1, 3, size, size), np.float32)
    x[:, :, rows[0] : rows[1], cols[0] : cols[1]] = 1.0
    return x


def box(x: np.ndarray, level: float = 0.5) -> tuple[int, int, int, int]:
    """(first row, last row, first column, last column) where the ink is at least `level`."""
    rows = np.flatnonzero((x[0].mean(0) >= level).any(1))
    cols = np.flatnonzero((x[0].mean(0) >= level).any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def zoom(x: np.ndarray) -> np.ndarray:
    from churnops.image.model import zoom_to_ink

    return zoom_to_ink(torch.from_numpy(x)).numpy()


def test_a_digit_spanning_the_frame_is_left_untouched():
    x = bar((0, 32), (12, 20))  # full height: a zoom of 1
    assert np.allclose(zoom(x), x, atol=1e-6)


def test_a_small_centred_digit_is_zoomed_to_fill_the_frame():
    # 16 rows (8..23) x 4 columns (14..17), centred: zoom 32 / 16 = 2 -> rows 0..31, columns 12..19
    out = zoom(bar((8, 24), (14, 18)))
    top, bottom, left, right = box(out)
    assert (top, bottom) == (0, 31)
    assert abs(left - 12) <= 1 and abs(right - 19) <= 1
    assert out.max() <= 1.0 + 1e-6  # bilinear: no overshoot


def test_a_small_digit_in_a_corner_is_zoomed_without_losing_ink():
    # 16 x 16 near the top left (rows and columns 1..16): zoom 2, the box mapped onto the whole frame
    x = bar((1, 17), (1, 17))
    out = zoom(x)
    assert box(out) == (0, 31, 0, 31)
    assert out.sum() == pytest.approx(4 * x.sum(), rel=0.05)  # area x zoom^2, none cut off


def test_the_zoom_is_at_most_max_zoom():
    from churnops.image.model import MAX_ZOOM

    # a 4-pixel dot would need a zoom of 8: it gets MAX_ZOOM (2.5) -> about 10 pixels
    top, bottom, _, _ = box(zoom(bar((14, 18), (14, 18))))
    assert abs((bottom - top + 1) - 4 * MAX_ZOOM) <= 1.5


def test_the_onnx_export_zooms_like_torch():
    from churnops.image.model import DigitCNN, export_onnx, onnx_proba, onnx_session

    torch.manual_seed(0)
    net = DigitCNN(10, width=4).eval()
    X = np.concatenate([bar((8, 24), (14, 18)), bar((1, 17), (1, 17)), bar((0, 32), (12, 20))])
    X = 0.2 + 0.6 * X  # on a grey background: from_background takes it off first
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(X)), 1).numpy()
    got = onnx_proba(onnx_session(export_onnx(net, 32, 32)), X)
    assert np.abs(got - want).max() < 1e-5
