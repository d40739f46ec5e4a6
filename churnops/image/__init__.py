"""The image-classification track: simulated camera raw (DNG), a seven-stage ISP, a small CNN.

Modules: `contract` (the image data contract), `sensor` (simulated camera + DNG writer),
`dataset` (ImageFolder layout, SHA-256 version, loading DNG/PNG/JPG), `isp` (the ISP stages),
`model` (the CNN), `train` (sweep, ONNX parity gate, MLflow), `analysis` (ISP sensitivity),
`drift` (image drift between windows of logged predictions).
Only `model`, `train` and `analysis` import torch, and only when called.
"""
