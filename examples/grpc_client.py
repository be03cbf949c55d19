"""Calling pinnace over gRPC with tritonclient: health, metadata, inference, statistics.

    pinnace serve examples/models --grpc-port 8001 &
    python examples/grpc_client.py                   # or: --url 127.0.0.1:8001

Needs ``pip install "tritonclient[grpc]" numpy``. Any Open Inference Protocol gRPC client
(KServe's, Triton's, one generated from pinnace's grpc_service.proto) works the same way.
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="127.0.0.1:8001", help="host:port of the gRPC listener")
    url = parser.parse_args().url

    with grpcclient.InferenceServerClient(url) as client:
        # Health and metadata.
        print("live:", client.is_server_live(), "ready:", client.is_server_ready())
        meta = client.get_model_metadata("iris", as_json=True)
        print("iris inputs:", [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]])

        # Inference: tritonclient sends the tensor as raw little-endian bytes.
        flowers = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
        tensor = grpcclient.InferInput("input", list(flowers.shape), "FP32")
        tensor.set_data_from_numpy(flowers)
        result = client.infer(
            "iris",
            [tensor],
            outputs=[grpcclient.InferRequestedOutput("label"), grpcclient.InferRequestedOutput("probabilities")],
            request_id="example-1",
            client_timeout=5.0,  # the call's deadline, in seconds; the server honours it
        )
        print("labels:", result.as_numpy("label").tolist())
        print("probabilities:", np.round(result.as_numpy("probabilities"), 3).tolist())

        # Errors arrive as gRPC status codes.
        try:
            client.infer("no-such-model", [tensor])
        except InferenceServerException as exc:
            print("unknown model:", exc.status(), exc.message())

        # Statistics in Triton's shape.
        (stats,) = client.get_inference_statistics("iris").model_stats
        print(f"iris: {stats.inference_count} rows in {stats.execution_count} executions")


if __name__ == "__main__":
    main()
