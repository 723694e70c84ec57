"""Run an ONNX model with ONNX Runtime on one input tensor and write every output.

The input is a raw little-endian float32 tensor fed to the model's only input
with the shape that input declares (1x3xHxW for edgedet's exports). The
outputs, in the model's output order, are written one after another to --out
as raw little-endian float32.

A JSON object on stdout describes the run:
{"onnxruntime": VERSION, "input": {"name": NAME, "shape": [...]},
 "outputs": [{"name": NAME, "shape": [...]}, ...], "metadata": {KEY: VALUE, ...}}
where "metadata" is the model's custom metadata (ONNX metadata_props).

Exit status 2 means a Python module is missing; 1 means any other failure.
"""

import argparse
import json
import sys

try:
    import numpy as np
    import onnxruntime as ort
except ImportError as error:
    print(f"onnxruntime_heads.py: {error}: install onnxruntime and numpy", file=sys.stderr)
    sys.exit(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ONNX model file")
    parser.add_argument("--input", required=True, help="raw float32 input tensor")
    parser.add_argument("--out", required=True, help="file to write the outputs to")
    args = parser.parse_args()

    options = ort.SessionOptions()
    # Graph rewrites such as fusing activations into convolutions change rounding,
    # and the reference should evaluate the graph as written.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(args.model, sess_options=options, providers=["CPUExecutionProvider"])

    inputs = session.get_inputs()
    if len(inputs) != 1:
        sys.exit(f"onnxruntime_heads.py: {args.model} has {len(inputs)} inputs, expected 1")
    model_input = inputs[0]
    shape = model_input.shape
    if not all(isinstance(dim, int) for dim in shape):
        sys.exit(f"onnxruntime_heads.py: input {model_input.name} has a symbolic shape {shape}, expected fixed sizes")

    tensor = np.fromfile(args.input, dtype="<f4")
    if tensor.size != int(np.prod(shape)):
        sys.exit(f"onnxruntime_heads.py: {args.input} holds {tensor.size} floats, expected {shape} = {int(np.prod(shape))}")

    output_names = [output.name for output in session.get_outputs()]
    outputs = session.run(output_names, {model_input.name: tensor.reshape(shape)})

    described = []
    with open(args.out, "wb") as out:
        for name, output in zip(output_names, outputs):
            np.asarray(output, dtype="<f4").tofile(out)
            described.append({"name": name, "shape": [int(dim) for dim in output.shape]})

    json.dump(
        {
            "onnxruntime": ort.__version__,
            "input": {"name": model_input.name, "shape": [int(dim) for dim in shape]},
            "outputs": described,
            "metadata": dict(session.get_modelmeta().custom_metadata_map),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
