"""Triton config.pbtxt → manifest: the text-format reader, the mapping, refused and reported keys,
and `pinnace init --from triton` (import_repository)."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from pinnace.errors import ManifestError
from pinnace.manifest import load_manifest
from pinnace.manifest.discover import read_model_config
from pinnace.manifest.importers import import_repository
from pinnace.manifest.pbtxt import PbtxtError, parse
from pinnace.manifest.triton import convert_triton

onnx = pytest.importorskip("onnx")

from examples.formats.onnx_providers_model import mlp_onnx  # noqa: E402

ONNX_CONFIG = """
name: "mlp"
platform: "onnxruntime_onnx"   # a comment
max_batch_size: 16
input [
  { name: "x", data_type: TYPE_FP32, dims: [ 4 ] }
]
output [
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 3 ]
  }
]
dynamic_batching {
  max_queue_delay_microseconds: 250
  preferred_batch_size: [ 4, 8 ]
  default_queue_policy { max_queue_size: 64 default_timeout_microseconds: 1500 }
}
instance_group [ { count: 2, kind: KIND_CPU }, { count: 1 kind: KIND_CPU } ]
version_policy: { latest: { num_versions: 2 } }
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
"""


def triton_model(root: Path, name: str, config: str, files: dict[str, bytes] | None = None) -> Path:
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(textwrap.dedent(config))
    for filename, data in (files or {}).items():
        (model_dir / "1" / filename).write_bytes(data)
    return model_dir


def onnx_bytes() -> bytes:
    return mlp_onnx(seed=1).SerializeToString()


def test_text_format_reader() -> None:
    message = parse(
        'a: 1 b: -2.5e3 c: "x\\"y" \'z\' d: TYPE_FP32 e: true f [1, 2] g { h: 0x1F } g < h: 3 >; i: [{j: 1}, {j: 2}]'
    )
    assert message["a"] == [1] and message["b"] == [-2500.0] and message["c"] == ['x"yz']
    assert message["d"] == ["TYPE_FP32"] and message["e"] == [True] and message["f"] == [1, 2]
    assert message["g"] == [{"h": [31]}, {"h": [3]}] and message["i"] == [{"j": [1]}, {"j": [2]}]
    with pytest.raises(PbtxtError, match="line 2"):
        parse("a: 1\nb { c: 2")
    with pytest.raises(PbtxtError, match="line 1"):
        parse("a: 1 }")


def test_onnx_config_maps_onto_the_manifest(tmp_path: Path) -> None:
    model_dir = triton_model(tmp_path, "mlp", ONNX_CONFIG, {"model.onnx": onnx_bytes()})
    conversion = convert_triton(model_dir)
    m = conversion.manifest
    assert (m.name, m.runtime, m.model_file) == ("mlp", "onnx", "model.onnx")
    assert [(t.name, t.datatype, t.shape) for t in m.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.shape) for t in m.outputs] == [("probabilities", [-1, 3])]
    b = m.batching
    assert (b.max_batch_size, b.max_queue_delay_us, b.max_queue_size, b.default_timeout_ms) == (16, 250, 64, 2)
    assert m.instances == 3 and m.version_policy.latest == 2
    assert m.options == {"intra_op_threads": 2}
    assert conversion.warnings == [
        "'dynamic_batching.preferred_batch_size' not carried over: pinnace closes a batch when it is full or "
        "the queue delay has passed"
    ]


def test_serving_reads_the_config_and_logs_what_it_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = triton_model(tmp_path, "mlp", ONNX_CONFIG, {"model.onnx": onnx_bytes()})
    with caplog.at_level(logging.WARNING):
        manifest = read_model_config(model_dir)
    assert manifest.runtime == "onnx"
    assert "preferred_batch_size" in caplog.text


def test_unbatched_dims_stay_as_they_are(tmp_path: Path) -> None:
    config = """
        backend: "onnxruntime"
        input { name: "x" data_type: TYPE_FP32 dims: [ 2, 4 ] }
        output { name: "probabilities" data_type: TYPE_FP32 dims: [ 2, 3 ] }
    """
    m = convert_triton(triton_model(tmp_path, "m", config)).manifest
    assert m.inputs[0].shape == [2, 4] and not m.batched


def test_missing_signature_is_read_from_the_model(tmp_path: Path) -> None:
    config = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
    m = convert_triton(triton_model(tmp_path, "m", config, {"model.onnx": onnx_bytes()})).manifest
    assert [(t.name, t.shape) for t in m.inputs] == [("x", [-1, 4])]
    assert [(t.name, t.shape) for t in m.outputs] == [("probabilities", [-1, 3])]


def test_runtime_is_guessed_from_the_files_without_platform(tmp_path: Path) -> None:
    m = convert_triton(triton_model(tmp_path, "m", "max_batch_size: 4", {"model.onnx": onnx_bytes()})).manifest
    assert m.runtime == "onnx"


def test_pytorch_gpu_and_openvino_mappings(tmp_path: Path) -> None:
    torch_config = """
        platform: "pytorch_libtorch"
        max_batch_size: 4
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        instance_group [ { kind: KIND_GPU count: 2 } ]
        parameters: { key: "INTER_OP_THREAD_COUNT" value: { string_value: "1" } }
        parameters: { key: "ENABLE_JIT_PROFILING" value: { string_value: "false" } }
    """
    conversion = convert_triton(triton_model(tmp_path, "t", torch_config))
    m = conversion.manifest
    assert (m.runtime, m.model_file, m.instances, m.resources.gpu) == ("torchscript", "model.pt", 2, 1)
    assert m.options == {"device": "cuda", "inter_op_threads": 1}
    assert any("ENABLE_JIT_PROFILING" in w for w in conversion.warnings)
    ov_config = """
        backend: "openvino"
        default_model_filename: "net.xml"
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 1, 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 1, 3 ] } ]
        parameters: { key: "NUM_STREAMS" value: { string_value: "2" } }
    """
    m = convert_triton(triton_model(tmp_path, "o", ov_config)).manifest
    assert (m.runtime, m.model_file, m.options) == ("openvino", "net.xml", {"num_streams": 2})


def test_onnx_tensorrt_accelerator_becomes_providers(tmp_path: Path) -> None:
    config = ONNX_CONFIG + """
        optimization { execution_accelerators { gpu_execution_accelerator : [ {
            name : "tensorrt"
            parameters { key: "precision_mode" value: "FP16" }
        } ] } }
    """
    m = convert_triton(triton_model(tmp_path, "mlp", config, {"model.onnx": onnx_bytes()})).manifest
    assert m.options["providers"] == [{"tensorrt": {"trt_fp16_enable": "true"}}, "cuda", "cpu"]


def test_fil_xgboost_models_become_xgboost_with_roles(tmp_path: Path) -> None:
    config = """
        backend: "fil"
        max_batch_size: 32
        input [ { name: "input__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "output__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        parameters [
          { key: "model_type" value: { string_value: "xgboost_json" } },
          { key: "output_class" value: { string_value: "true" } },
          { key: "predict_proba" value: { string_value: "true" } },
          { key: "storage_type" value: { string_value: "AUTO" } }
        ]
    """
    conversion = convert_triton(triton_model(tmp_path, "fil", config))
    m = conversion.manifest
    assert (m.runtime, m.model_file) == ("xgboost", "xgboost.json")
    assert m.options == {"output_roles": {"output__0": "predict_proba"}}
    assert any("storage_type" in w for w in conversion.warnings)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ('platform: "ensemble"', "platform"),
        ('backend: "python"', "backend"),
        ('platform: "tensorrt_plan"', "platform"),
        ('backend: "onnxruntime" sequence_batching { }', "sequence_batching"),
        ('backend: "onnxruntime" input { name: "x" data_type: TYPE_FP32 dims: [4] reshape { shape: [2, 2] } }',
         "input[0].reshape"),
        ('backend: "onnxruntime" input { name: "x" data_type: TYPE_FP32 dims: [4] allow_ragged_batch: true }',
         "input[0].allow_ragged_batch"),
        ('backend: "onnxruntime" model_transaction_policy { decoupled: true }', "model_transaction_policy.decoupled"),
        ('backend: "onnxruntime" model_operations { op_library_filename: "libx.so" }', "model_operations"),
        ('backend: "onnxruntime" colour: "blue"', "colour"),
        ('backend: "onnxruntime" dynamic_batching { max_queue_delay: 5 }', "dynamic_batching.max_queue_delay"),
    ],
)
def test_refused_settings_name_their_key(tmp_path: Path, config: str, key: str) -> None:
    with pytest.raises(ManifestError) as caught:
        convert_triton(triton_model(tmp_path, "m", config, {"model.onnx": onnx_bytes()}))
    assert f"{key!r} is not supported" in caught.value.message
    assert caught.value.message.startswith("m/config.pbtxt: ")


def test_scheduling_only_settings_are_warnings(tmp_path: Path) -> None:
    config = ONNX_CONFIG.replace(
        "max_queue_delay_microseconds: 250",
        "max_queue_delay_microseconds: 250 priority_levels: 2 default_priority_level: 1",
    ) + 'model_warmup [ { name: "w" batch_size: 1 } ]\nresponse_cache { enable: true }\n'
    warnings = convert_triton(triton_model(tmp_path, "mlp", config, {"model.onnx": onnx_bytes()})).warnings
    keys = [w.split("'")[1] for w in warnings]
    assert keys == [
        "dynamic_batching.priority_levels",
        "dynamic_batching.default_priority_level",
        "dynamic_batching.preferred_batch_size",
        "model_warmup",
        "response_cache",
    ]


def test_syntax_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"m/config.pbtxt: not valid protobuf text format: line 3"):
        convert_triton(triton_model(tmp_path, "m", 'backend: "onnxruntime"\n\ninput { name: "x" \n'))


def test_import_copies_versions_and_records_hashes(tmp_path: Path) -> None:
    source = tmp_path / "triton"
    triton_model(source, "mlp", ONNX_CONFIG, {"model.onnx": onnx_bytes()})
    (source / "mlp" / "2").mkdir()
    (source / "mlp" / "2" / "model.onnx").write_bytes(onnx_bytes())
    written = import_repository(source, "triton", tmp_path / "models")
    assert written == [tmp_path / "models" / "mlp" / "model.yaml"]
    text = written[0].read_text()
    assert text.startswith("# Imported from config.pbtxt") and "preferred_batch_size" in text.splitlines()[2]
    manifest = load_manifest(written[0])
    assert sorted(manifest.artifacts) == ["1/model.onnx", "2/model.onnx"] and not manifest.trusted
    assert (tmp_path / "models" / "mlp" / "2" / "model.onnx").is_file()
    with pytest.raises(ManifestError, match="already exists"):
        import_repository(source, "triton", tmp_path / "models")


def test_import_in_place_writes_model_yaml_beside_the_config(tmp_path: Path) -> None:
    source = tmp_path / "triton"
    triton_model(source, "mlp", ONNX_CONFIG, {"model.onnx": onnx_bytes()})
    (written,) = import_repository(source, "triton", source)
    assert written == source / "mlp" / "model.yaml"
    assert read_model_config(source / "mlp").artifacts.keys() == {"1/model.onnx"}


def test_one_bad_model_stops_the_import_before_anything_is_written(tmp_path: Path) -> None:
    source = tmp_path / "triton"
    triton_model(source, "a-good", ONNX_CONFIG, {"model.onnx": onnx_bytes()})
    triton_model(source, "b-bad", 'platform: "ensemble"')
    with pytest.raises(ManifestError, match=r"b-bad/config\.pbtxt"):
        import_repository(source, "triton", tmp_path / "models")
    assert not (tmp_path / "models").exists()
