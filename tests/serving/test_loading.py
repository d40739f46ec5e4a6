"""One model-loading module for every line (serving/loading.py); serving.model and serving.image no
longer import each other."""

from __future__ import annotations

import ast
from pathlib import Path

SERVING = Path(__file__).resolve().parents[2] / "serving"


def serving_imports(module: str) -> set[str]:
    """The `serving.*` modules `serving/<module>.py` imports, inside functions too."""
    out = set()
    for node in ast.walk(ast.parse((SERVING / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("serving"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("serving")}
    return out


def test_loading_model_and_image_form_no_cycle():
    assert serving_imports("loading") <= {"serving.tasks"}  # below routing, reloads and image decoding
    assert "serving.image" not in serving_imports("model")
    assert "serving.model" not in serving_imports("image")
    assert "serving.loading" in serving_imports("model") and "serving.loading" in serving_imports("image")


def test_one_load_model_for_a_tabular_bundle(bundles, serving_settings):
    """The loader of serving.model (the reloads') is serving.loading's; it loads a tabular bundle."""
    import serving.model
    from serving.loading import LoadedModel, load_model

    assert serving.model.load_model is load_model
    m = load_model(str(bundles["a"]), "champion", serving_settings)
    assert isinstance(m, LoadedModel)
    assert (m.route, m.run_id, m.version, m.threshold) == ("champion", "localrun1", None, 0.5)
    assert m.describe()["runtime"] == "onnx" and m.describe()["dataset"] == "bank_churners"
