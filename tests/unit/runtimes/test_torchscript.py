"""TorchScriptRuntime: modules scripted and saved here, loaded with torch.jit.load; full pickles
only when trusted and hashed."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pinnace.errors import InvalidInputError, ModelLoadError, TrustError
from pinnace.manifest import Manifest, parse_manifest
from pinnace.repository.integrity import verify_version

torch = pytest.importorskip("torch")

from pinnace.runtimes.torchscript import TorchScriptRuntime  # noqa: E402
from tests.unit.runtimes._torch_models import Named, Ordered, TwoHeads  # noqa: E402

ROWS = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)


def manifest(**fields: Any) -> Manifest:
    return parse_manifest(yaml.safe_dump({"name": "m", "runtime": "torchscript", **fields}))


def scripted(tmp_path: Path, module: Any) -> Path:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module.eval()).save(str(version / "model.pt"))
    return version


def loaded(version: Path, **fields: Any) -> TorchScriptRuntime:
    """Load as the repository does: its trust gate first, then the runtime."""
    m = manifest(**fields)
    verify_version(m, version.parent, version, runs_code_on_load=TorchScriptRuntime.runs_code(m))
    runtime = TorchScriptRuntime(m, version)
    runtime.load()
    return runtime


def sig(name: str, shape: list[int]) -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": shape}


def test_tuple_outputs_by_position_match_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TwoHeads()
    runtime = loaded(
        scripted(tmp_path, module),
        inputs=[sig("x", [-1, 4])],
        outputs=[sig("probabilities", [-1, 3]), sig("logits", [-1, 3])],
    )
    result = runtime.predict({"x": ROWS}, ["logits", "probabilities"])
    with torch.no_grad():
        probabilities, logits = module(torch.from_numpy(ROWS))
    np.testing.assert_allclose(result["probabilities"], probabilities.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(result["logits"], logits.numpy(), rtol=0, atol=1e-5)
    assert runtime.metadata_parameters() == {"device": "cpu"}


def test_dict_outputs_by_name_and_read_only_inputs(tmp_path: Path) -> None:
    a, b = ROWS, ROWS[::-1].copy()
    a.flags.writeable = False  # decoded request buffers can be read-only
    runtime = loaded(scripted(tmp_path, Named()), inputs=[sig("a", [-1, 4]), sig("b", [-1, 4])])
    result = runtime.predict({"a": a, "b": b}, ["diff"])
    np.testing.assert_allclose(result["diff"], a - b, atol=1e-6)
    assert set(runtime.predict({"a": a, "b": b}, [])) == {"sum", "diff"}


def test_triton_style_names_are_ordered_by_index(tmp_path: Path) -> None:
    runtime = loaded(
        scripted(tmp_path, Ordered()),
        inputs=[sig("INPUT__1", [-1]), sig("INPUT__0", [-1])],
        outputs=[sig("OUTPUT__0", [-1])],
    )
    first, second = np.ones(3, np.float32), np.full(3, 2, np.float32)
    result = runtime.predict({"INPUT__1": second, "INPUT__0": first}, ["OUTPUT__0"])
    np.testing.assert_array_equal(result["OUTPUT__0"], first * 10 + second)


def test_threads_and_a_missing_gpu_are_reported(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    runtime = loaded(scripted(tmp_path, TwoHeads()), options={"intra_op_threads": 1, "device": "cuda"})
    assert torch.get_num_threads() == 1
    params = runtime.metadata_parameters()
    assert params["device"] == "cpu" and "CUDA is not available" in params["device_note"]


def test_a_shape_the_model_cannot_take_is_the_clients_error(tmp_path: Path) -> None:
    runtime = loaded(scripted(tmp_path, TwoHeads()))
    with pytest.raises(InvalidInputError, match="rejected the input"):
        runtime.predict({"x": np.ones((2, 7), np.float32)}, [])


def full_pickle(tmp_path: Path) -> Path:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    torch.save(TwoHeads(), version / "model.pt")
    return version


def test_full_pickles_are_not_torchscript(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"saved with torch.save\(model\)"):
        loaded(full_pickle(tmp_path))


def test_full_pickles_need_trust(tmp_path: Path) -> None:
    with pytest.raises(TrustError, match="trusted: true"):
        loaded(full_pickle(tmp_path), options={"load": "pickle"})


def test_full_pickles_need_every_hash(tmp_path: Path) -> None:
    version = full_pickle(tmp_path)
    with pytest.raises(TrustError, match="sha256"):
        loaded(version, options={"load": "pickle"}, trusted=True)


def test_trusted_hashed_full_pickles_load(tmp_path: Path) -> None:
    version = full_pickle(tmp_path)
    digest = hashlib.sha256((version / "model.pt").read_bytes()).hexdigest()
    runtime = loaded(version, options={"load": "pickle"}, trusted=True, artifacts={"1/model.pt": digest})
    assert runtime.predict({"x": ROWS}, [])["output__0"].shape == (6, 3)
    (version / "model.pt").write_bytes((version / "model.pt").read_bytes() + b"\0")
    with pytest.raises(TrustError, match="does not match"):
        loaded(version, options={"load": "pickle"}, trusted=True, artifacts={"1/model.pt": digest})


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9, 0.99])
def test_truncated_archives_fail_cleanly(tmp_path: Path, keep: float) -> None:
    version = scripted(tmp_path, TwoHeads())
    path = version / "model.pt"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError) as caught:
        loaded(version)
    assert "model.pt" in caught.value.message and str(tmp_path) not in caught.value.message
