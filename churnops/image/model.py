"""A small CNN for the image track, deterministic on CPU for a given seed.

input - background colour, polarity made positive (the frame's outer ring; so the polarity and colours of ink and background
do not matter) -> a small digit zoomed to fill the frame (`zoom_to_ink`; one that spans it is untouched, so the
size of the digit does not matter) -> conv3x3(w) -> pool -> conv3x3(2w) -> pool -> conv3x3(4w) -> average over
2x2 cells = the embedding (16w numbers, what image drift will compare) -> linear -> class logits. Inputs are (N, 3, H, W)
in [0, 1]; each image's channels are standardised first. Training is Adam with a one-cycle
learning-rate schedule over seeded mini-batches with seeded augmentation (shifts,
brightness and per-channel gain jitter, scaled by `strength` in [0, 1]). With `mix` > 0 that
fraction of every batch is replaced by random PNG/JPEG renders of the same images
(`churnops.image.standard.random_render`: colours, contrast, inversion, colour maps, blur, scale),
so the net learns ordinary images as well as the raw captures.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

from churnops.image.standard import mix_batch, strokes_of


def set_determinism(seed: int, threads: int = 1) -> None:
    """Seed torch, use deterministic kernels and a fixed thread count (results depend on it)."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, threads))


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def from_background(x: torch.Tensor) -> torch.Tensor:
    """(x - background) per channel with the ink's polarity made positive, the background being the mean
    of the frame's outer ring of pixels: ink darker or lighter than the background (black on white,
    white on black, any two colours) gives the same input."""
    ring = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, 1:-1, 0], x[:, :, 1:-1, -1]], dim=2)
    d = x - ring.mean(dim=2)[:, :, None, None]
    # the ink's side of the background, per image and channel: its sign flips darker ink to lighter one.
    # Signed, not |d|: the background's sensor noise stays zero-mean (|d| rectified it into a level that
    # moved with every camera's noise, and the drift monitor's embedding test saw clean captures as drift)
    return d * torch.where(d.mean(dim=(2, 3), keepdim=True) < 0, -1.0, 1.0)


INK_THRESHOLD = 0.35  # of the frame's strongest ink: what counts as ink for the digit's extent
FILL = 1.0  # the extent (longer side, fraction of the frame) a small digit is zoomed to
MAX_ZOOM = 2.5  # at most this much (a digit under 40% of the frame stays smaller)


def span(hit: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first, last) index where `hit` (N, L; 0/1) is 1, per row, `index` being 0..L-1; (L, 0) for a row without any."""
    return (index + (1 - hit) * len(index)).amin(1), (index * hit).amax(1)


def zoom_to_ink(x: torch.Tensor) -> torch.Tensor:
    """Small digits zoomed to fill the frame: the ink's bounding box (pixels at >= INK_THRESHOLD of the
    strongest, on the `from_background` input) scaled up so its longer side spans FILL of the frame
    (at most MAX_ZOOM), about the point that brings the box to the centre. A digit that already spans
    the frame (the raw captures) gets a zoom of 1, the identity, so its pixels are untouched."""
    # the frame's size as plain numbers (an ONNX export has a fixed H x W: constants, not shape lookups),
    # the row and column indices from a cumulative sum over the frame (static lengths in the ONNX graph)
    h, w = float(x.shape[2]), float(x.shape[3])
    iy = torch.ones_like(x[0, 0, :, 0]).cumsum(0) - 1  # 0..H-1
    ix = torch.ones_like(x[0, 0, 0, :]).cumsum(0) - 1
    ink = x.clamp(min=0).mean(1)  # (N, H, W)
    hit = (ink >= INK_THRESHOLD * ink.amax(dim=(1, 2), keepdim=True)).to(x.dtype)
    y0, y1 = span(hit.amax(2), iy)
    x0, x1 = span(hit.amax(1), ix)
    extent = torch.maximum((y1 - y0 + 1) / h, (x1 - x0 + 1) / w)
    zoom = (FILL / extent).clamp(1.0, MAX_ZOOM)[:, None, None]  # (N, 1, 1); a blank frame: extent 1, zoom 1
    # the box's centre in grid_sample's coordinates (-1..1, pixel centres at (2i + 1) / size - 1)
    cy, cx = ((y0 + y1 + 1) / h - 1)[:, None, None], ((x0 + x1 + 1) / w - 1)[:, None, None]
    # zoom about the point p whose image of the box's centre is 0 (p = zoom * c / (zoom - 1)), kept in frame
    grow = (zoom - 1).clamp(min=1e-6)
    py, px = (zoom * cy / grow).clamp(-1, 1), (zoom * cx / grow).clamp(-1, 1)
    sy = py + (((2 * iy + 1) / h - 1)[None, :, None] - py) / zoom  # (N, H, 1): where output row i reads
    sx = px + (((2 * ix + 1) / w - 1)[None, None, :] - px) / zoom  # (N, 1, W)
    grid = torch.stack([sx + 0 * sy, sy + 0 * sx], dim=-1)  # (N, H, W, 2)
    return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DigitCNN(nn.Module):
    def __init__(self, n_classes: int, width: int = 16):
        super().__init__()
        w = int(width)
        self.features = nn.Sequential(
            *_block(3, w),
            nn.MaxPool2d(2),
            *_block(w, 2 * w),
            nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),  # keep where strokes are: 2x2 cells
        )
        self.head = nn.Linear(16 * w, n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = zoom_to_ink(from_background(x))
        # each image's channels standardised: exposure and white balance shifts mostly cancel here
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True)
        return self.features((x - mean) / (std + 1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class Exported(nn.Module):
    """What ONNX carries: class probabilities and the embedding."""

    def __init__(self, net: DigitCNN):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        z = self.net.embed(x)
        return torch.softmax(self.net.head(z), dim=1), z


def augment(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Random shifts (up to 3*strength px), brightness (+-25%) and channel gains (+-15%), scaled by strength."""
    if strength <= 0:
        return x
    n = x.shape[0]
    shift = int(round(3 * strength))
    if shift:
        pad = nn.functional.pad(x, (shift,) * 4, mode="replicate")
        dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
        x = pad[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
    bright = 1 + 0.25 * strength * (2 * torch.rand(n, 1, 1, 1, generator=gen) - 1)
    gains = 1 + 0.15 * strength * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    return (x * bright * gains).clamp(0, 1)


def fit(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    width: int,
    lr: float,
    epochs: int,
    strength: float,
    seed: int,
    threads: int = 1,
    batch_size: int = 64,
    device: str = "cpu",
    mix: float = 0.0,
) -> DigitCNN:
    """Train a fresh CNN; the same arguments give the same weights on CPU (the default and what the
    project trains on). `device="cuda"` runs the same steps on a GPU (the batches and augmentation are
    drawn on the CPU from the same seed; GPU kernels are not bit-reproducible); the net comes back on
    the CPU either way. `mix`: the fraction of each batch replaced by standard-image renders (seeded)."""
    set_determinism(seed, threads)
    if device != "cpu":
        torch.use_deterministic_algorithms(False)
    net = DigitCNN(n_classes, width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = max(1, int(epochs) * -(-len(X) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    Xt, yt = (
        torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)),
        torch.from_numpy(np.asarray(y, dtype=np.int64)),
    )
    loss_fn = nn.CrossEntropyLoss()
    strokes = strokes_of(Xt.numpy()) if mix > 0 else None
    rng = np.random.default_rng([seed, 7])
    net.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            xb = Xt[idx]
            if strokes is not None:
                rows = idx.numpy()
                xb = torch.from_numpy(mix_batch(Xt.numpy()[rows], strokes[rows], mix, rng))
            loss = loss_fn(net(augment(xb, strength, gen).to(device)), yt[idx].to(device))
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    return net.to("cpu")


@torch.no_grad()
def predict_proba(net: DigitCNN, X: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(N, classes) float32 softmax probabilities."""
    net.eval()
    out = [
        torch.softmax(net(torch.from_numpy(np.ascontiguousarray(X[i : i + batch_size], dtype=np.float32))), 1)
        for i in range(0, len(X), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.empty((0, net.head.out_features), np.float32)


def export_onnx(net: DigitCNN, height: int, width: int) -> bytes:
    """ONNX (opset 17, dynamic batch): input `image` (N, 3, H, W) -> `probabilities`, `embedding`."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            Exported(net).eval(),
            (torch.zeros(1, 3, height, width),),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["probabilities", "embedding"],
            dynamic_axes={"image": {0: "n"}, "probabilities": {0: "n"}, "embedding": {0: "n"}},
        )
    return buf.getvalue()


def onnx_session(onnx_bytes: bytes, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def onnx_proba(session, X: np.ndarray) -> np.ndarray:
    return session.run(["probabilities"], {"image": np.ascontiguousarray(X, dtype=np.float32)})[0]
