"""tlserve's trainer: transfer learning with TensorFlow/Keras, ONNX export, publication.

The only package that imports TensorFlow; the server never does.
"""
