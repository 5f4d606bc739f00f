"""The stock tritonclient (HTTP) against a deployment, with its defaults (binary tensors) and
in pure JSON. Usage:
    python tritonclient_check.py <host:port> <deployment> <rows json> <labels json> [label output]
The label output is `prediction` for built-in models, `label` for scikit-learn ONNX exports.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, name, rows, expected = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
label_output = sys.argv[5] if len(sys.argv) > 5 else "prediction"
client = httpclient.InferenceServerClient(url=url)
assert client.is_server_live()
assert client.is_server_ready()
assert client.is_model_ready(name)
assert client.is_model_ready(name, model_version="1")
assert not client.is_model_ready("nope")
meta = client.get_model_metadata(name)
assert meta["versions"] == ["1"], meta
server = client.get_server_metadata()
assert server["name"] == "flywheel-deployer", server

x = np.array(rows, dtype=np.float32)


def labels(result):
    return [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy(label_output).tolist()]


# Defaults: binary input, binary output requested.
tensor = httpclient.InferInput("X", list(x.shape), "FP32")
tensor.set_data_from_numpy(x)
result = client.infer(name, [tensor])
assert labels(result) == expected, (labels(result), expected)
probabilities = result.as_numpy("probabilities")
assert probabilities.shape == (len(rows), 2), probabilities.shape
assert np.allclose(probabilities.sum(axis=1), 1.0)

# Pure JSON, a version, a request id, one output.
tensor = httpclient.InferInput("X", list(x.shape), "FP32")
tensor.set_data_from_numpy(x, binary_data=False)
result = client.infer(
    name,
    [tensor],
    model_version="1",
    request_id="req-7",
    outputs=[httpclient.InferRequestedOutput(label_output, binary_data=False)],
)
assert labels(result) == expected
assert result.get_response()["id"] == "req-7"
assert result.as_numpy("probabilities") is None

# Errors come back as exceptions with the server's message.
try:
    client.infer("nope", [tensor])
    raise AssertionError("an unknown model must fail")
except InferenceServerException as error:
    assert "not found" in str(error), error
print("tritonclient: ok")
