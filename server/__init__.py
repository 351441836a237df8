"""tlserve's server: gRPC serving of ONNX models, the registry format and the stores.

Never imports TensorFlow (a test holds it to that): the serving image stays small.
"""

__version__ = "0.1.0"
