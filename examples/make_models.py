"""Build the example model repository in examples/models from scratch.

    python examples/make_models.py [--out examples/models]

Trains three small models with the real libraries and packages each with ``pinnace init``'s
own code, so every manifest carries an inferred signature and sha256 hashes:

- ``iris``: logistic regression on the iris data set, converted to ONNX (adaptive batching on);
- ``iris-sklearn``: the same estimator as a trusted joblib file;
- ``mlp``: an MLP regressor 256→512→512→10, converted to ONNX.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import warnings
from pathlib import Path

import joblib
import msgspec
import numpy as np
import onnx
from onnx import helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPRegressor

from pinnace.cli.init import create_package, with_hashes
from pinnace.manifest import Batching, dump_manifest, load_manifest


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    iris = LogisticRegression(max_iter=500).fit(x, y)

    rng = np.random.default_rng(0)
    features = rng.standard_normal((512, 256)).astype(np.float32)
    targets = features[:, :10] * 0.5 + 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs are enough for an example
        mlp = MLPRegressor(hidden_layer_sizes=(512, 512), max_iter=5, random_state=0)
        mlp.fit(features, targets)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx_iris = work / "iris.onnx"
        onnx_iris.write_bytes(
            to_onnx(
                iris, initial_types=[("input", FloatTensorType([None, 4]))], options={"zipmap": False}
            ).SerializeToString()
        )
        onnx_mlp = work / "mlp.onnx"
        onnx_mlp.write_bytes(mlp_graph(mlp).SerializeToString())
        joblib_iris = work / "iris.joblib"
        joblib.dump(iris, joblib_iris)

        for name in ("iris", "iris-sklearn", "mlp"):
            shutil.rmtree(out / name, ignore_errors=True)
        package(out, onnx_iris, "iris", "onnx", "Iris species from 4 flower measurements (ONNX).", 64)
        package(out, joblib_iris, "iris-sklearn", "sklearn", "The iris classifier as scikit-learn.", 0, trusted=True)
        package(out, onnx_mlp, "mlp", "onnx", "MLP regressor 256→512→512→10 (ONNX).", 64)


def mlp_graph(mlp: MLPRegressor) -> onnx.ModelProto:
    """The trained MLP as a plain ONNX graph (MatMul, Add, Relu).

    Written by hand because skl2onnx flattens a multi-output regressor's output to [N*10, 1].
    """
    nodes = []
    initializers = []
    current = "input"
    layers = list(zip(mlp.coefs_, mlp.intercepts_, strict=True))
    for i, (weights, bias) in enumerate(layers):
        initializers += [
            numpy_helper.from_array(weights.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(bias.astype(np.float32), f"b{i}"),
        ]
        last = i == len(layers) - 1
        nodes += [
            helper.make_node("MatMul", [current, f"w{i}"], [f"mm{i}"]),
            helper.make_node("Add", [f"mm{i}", f"b{i}"], ["variable" if last else f"z{i}"]),
        ]
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [f"h{i}"]))
            current = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 256])],
        [helper.make_tensor_value_info("variable", onnx.TensorProto.FLOAT, ["N", 10])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def package(
    out: Path, source: Path, name: str, runtime: str, description: str, batch: int, *, trusted: bool = False
) -> None:
    path = create_package(
        source,
        repo=out,
        name=name,
        runtime=runtime,
        trusted=trusted,
        description=description,
        author="pinnace examples",
        license_="Apache-2.0",
        max_batch_size=batch,
        force=True,
    )
    manifest = load_manifest(path)
    if batch:
        manifest = msgspec.structs.replace(
            manifest, batching=Batching(max_batch_size=batch, max_queue_delay_us=0)
        )
    manifest = msgspec.structs.replace(manifest, tags=["example"])
    path.write_text(dump_manifest(with_hashes(manifest, path.parent)))
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "models")
    build(parser.parse_args().out)
