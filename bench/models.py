"""The benchmark's model repository and request bodies, built in a scratch folder.

- ``iris`` and ``mlp``: copied from examples/models (adaptive batching on, max 64, delay 0).
  Older example MLP graphs end in skl2onnx's ``Reshape(-1, 1)``, which turns a batch of N rows
  into ``[N*10, 1]``, so the output cannot be split back per request; such a copy is reshaped
  to ``(-1, 10)`` here (the same weights);
- ``mlp-nobatch``: the same MLP with batching off, for scenario (b);
- ``identity``: an ONNX ``Identity`` over FP32 ``[-1, 262144]`` (1 MiB a row), for (c).

Bodies are written once as files that wrk's Lua script sends verbatim. JSON numbers are
written as tritonclient writes them (``float(np.float32)`` reprs), since that is what a real
client sends.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from pinnace.cli.init import create_package, with_hashes
from pinnace.manifest import Batching, dump_manifest, load_manifest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "models"
TENSOR_ELEMENTS = 256 * 1024
"""FP32 elements in the 1 MiB tensor."""


@dataclass(frozen=True)
class Body:
    """One request body on disk, and how to send it."""

    name: str
    model: str
    path: Path
    header_length: int | None = None
    """Inference-Header-Content-Length, for binary-extension bodies."""

    @property
    def content_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


def build_repository(root: Path) -> Path:
    repo = root / "models"
    repo.mkdir(parents=True)
    for name in ("iris", "mlp"):
        shutil.copytree(EXAMPLES / name, repo / name)
    _fix_mlp_output(repo / "mlp")
    _variant(repo, "mlp", "mlp-nobatch", Batching(max_batch_size=0))
    _identity(root, repo)
    return repo


def write_bodies(root: Path) -> dict[str, Body]:
    folder = root / "bodies"
    folder.mkdir()
    rng = np.random.default_rng(0)
    bodies: dict[str, Body] = {}

    def json_body(name: str, model: str, array: np.ndarray) -> None:
        doc = {"inputs": [{
            "name": "input", "shape": list(array.shape), "datatype": "FP32",
            "data": [float(v) for v in array.ravel()],
        }]}
        path = folder / f"{name}.json"
        path.write_bytes(msgspec.json.encode(doc))
        bodies[name] = Body(name, model, path)

    json_body("iris", "iris", np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
    json_body("mlp", "mlp", rng.standard_normal((1, 256)).astype(np.float32))
    tensor = rng.standard_normal((1, TENSOR_ELEMENTS)).astype(np.float32)
    json_body("tensor-json", "identity", tensor)
    header = msgspec.json.encode({
        "inputs": [{
            "name": "input", "shape": list(tensor.shape), "datatype": "FP32",
            "parameters": {"binary_data_size": tensor.nbytes},
        }],
        "parameters": {"binary_data_output": True},
    })
    path = folder / "tensor-binary.bin"
    path.write_bytes(header + tensor.tobytes())
    bodies["tensor-binary"] = Body("tensor-binary", "identity", path, header_length=len(header))
    return bodies


def _variant(repo: Path, source: str, name: str, batching: Batching) -> None:
    target = repo / name
    shutil.copytree(repo / source, target)
    path = target / "model.yaml"
    manifest = msgspec.structs.replace(load_manifest(path), name=name, batching=batching)
    path.write_text(dump_manifest(with_hashes(manifest, target)))


def _fix_mlp_output(model_dir: Path) -> None:
    import onnx
    from onnx import numpy_helper

    path = model_dir / "1" / "model.onnx"
    model = onnx.load(path)
    reshape = next((n for n in model.graph.node if n.op_type == "Reshape"), None)
    if reshape is None:  # examples/make_models.py already writes the graph without it
        return
    for i, init in enumerate(model.graph.initializer):
        if init.name == reshape.input[1]:
            fixed = numpy_helper.from_array(np.array([-1, 10], dtype=np.int64), init.name)
            model.graph.initializer[i].CopyFrom(fixed)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 10
    onnx.save(model, path)
    manifest = load_manifest(model_dir / "model.yaml")
    (model_dir / "model.yaml").write_text(dump_manifest(with_hashes(manifest, model_dir)))


def _identity(root: Path, repo: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", TENSOR_ELEMENTS])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", TENSOR_ELEMENTS])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the project supports
    source = root / "identity.onnx"
    source.write_bytes(model.SerializeToString())
    create_package(source, repo=repo, name="identity", runtime="onnx", description="1 MiB identity")
