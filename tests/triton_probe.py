"""Runs NVIDIA's tritonclient (a KServe v2 client no one here wrote) against a tlserve server,
over gRPC or HTTP: `triton_probe.py grpc|http HOST:PORT MODEL [--ca PEM] [--cert PEM
--key PEM] [--token TOKEN]` (TLS when --ca is given; the token goes with every call).

Run as a separate process: tritonclient registers the `inference` proto package in
protobuf's default pool, as tlserve's own stubs do. Prints one JSON document, in the
same form for both protocols (shapes as integers, error status as the client gives it).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
from typing import Any

import numpy as np
import tritonclient.grpc
import tritonclient.http
from PIL import Image
from tritonclient.utils import InferenceServerException

COLOURS = {"red": (230, 20, 20), "green": (20, 230, 20), "blue": (20, 20, 230)}


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 30), COLOURS[colour]).save(buffer, format="PNG")
    return buffer.getvalue()


def _metadata(document: dict) -> dict:
    """gRPC's JSON form writes int64 shapes as strings; HTTP's as numbers."""
    for tensor in (*document.get("inputs", []), *document.get("outputs", [])):
        tensor["shape"] = [int(d) for d in tensor["shape"]]
    return document


class _WithHeaders:
    """The client with `headers=` added to every call (tritonclient takes them per call)."""

    def __init__(self, client: object, headers: dict[str, str]) -> None:
        self._client, self._headers = client, headers

    def __getattr__(self, name: str) -> object:
        method = getattr(self._client, name)
        return functools.partial(method, headers=self._headers) if self._headers else method


def _client(protocol: str, target: str, args: argparse.Namespace) -> object:
    if protocol == "grpc":
        tls = (
            {
                "ssl": True,
                "root_certificates": args.ca,
                "private_key": args.key,
                "certificate_chain": args.cert,
            }
            if args.ca
            else {}
        )
        return tritonclient.grpc.InferenceServerClient(url=target, **tls)
    if args.ca:
        options = {"ca_certs": args.ca}
        if args.cert:
            options |= {"certfile": args.cert, "keyfile": args.key}
        return tritonclient.http.InferenceServerClient(url=target, ssl=True, ssl_options=options)
    return tritonclient.http.InferenceServerClient(url=target)


def main(protocol: str, target: str, model: str, args: argparse.Namespace) -> None:
    triton = {"grpc": tritonclient.grpc, "http": tritonclient.http}[protocol]
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    client: Any = _WithHeaders(_client(protocol, target, args), headers)
    as_json = {"as_json": True} if protocol == "grpc" else {}
    report: dict[str, object] = {
        "server_live": client.is_server_live(),
        "server_ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
    }
    metadata = _metadata(client.get_model_metadata(model, **as_json))
    report["metadata"] = metadata
    server_metadata = client.get_server_metadata(**as_json)
    report["server_metadata"] = server_metadata

    order = ["red", "blue", "green"]
    encoded = np.array([png(c) for c in order], dtype=np.object_)
    image_input = triton.InferInput("IMAGE", [len(order)], "BYTES")
    image_input.set_data_from_numpy(encoded)
    result = client.infer(
        model,
        [image_input],
        outputs=[
            triton.InferRequestedOutput("PROBABILITIES"),
            triton.InferRequestedOutput("LABEL"),
        ],
        request_id="req-1",
    )
    report["bytes_labels"] = [label.decode() for label in result.as_numpy("LABEL")]
    report["bytes_probabilities_shape"] = list(result.as_numpy("PROBABILITIES").shape)
    response = result.get_response(**as_json)
    report["bytes_version"] = response["model_version"]
    report["bytes_request_id"] = response["id"]

    height, width = metadata["inputs"][1]["shape"][1:3]
    pixels = np.stack(
        [np.full((int(height), int(width), 3), COLOURS[c], dtype=np.uint8) for c in order]
    )
    pixel_input = triton.InferInput("PIXELS", list(pixels.shape), "UINT8")
    pixel_input.set_data_from_numpy(pixels)
    result = client.infer(model, [pixel_input])
    probabilities = result.as_numpy("PROBABILITIES")
    report["uint8_labels"] = [label.decode() for label in result.as_numpy("LABEL")]
    report["uint8_argmax"] = probabilities.argmax(axis=1).tolist()
    report["uint8_row_sums"] = probabilities.sum(axis=1).tolist()

    result = client.infer(
        model, [pixel_input], outputs=[triton.InferRequestedOutput("PROBABILITIES", class_count=2)]
    )
    report["classification"] = [
        [entry.decode() for entry in row] for row in result.as_numpy("PROBABILITIES")
    ]

    try:
        client.infer("no-such-model", [pixel_input])
        report["unknown_model_error"] = None
    except InferenceServerException as exc:
        report["unknown_model_error"] = {"status": exc.status(), "message": exc.message()}
    print(json.dumps(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for positional in ("protocol", "target", "model"):
        parser.add_argument(positional)
    for option in ("--ca", "--cert", "--key", "--token"):
        parser.add_argument(option)
    arguments = parser.parse_args()
    main(arguments.protocol, arguments.target, arguments.model, arguments)
