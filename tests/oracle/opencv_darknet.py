"""Run a darknet cfg and weights file with OpenCV DNN and write its YOLO-layer outputs.

The input is a raw little-endian float32 tensor of shape 1x3xHxW (planar RGB,
values 0..1), as edgedet's preprocessing produces it. The outputs of every
[yolo] layer, in cfg order, are written one after another to --out as raw
little-endian float32. Each output has one row per cell and anchor, ordered by
cell row, then column, then anchor. Its columns are x, y, w, h (relative to
the network input), objectness, and then objectness times the class
probability for each class. OpenCV writes 0 for a class score at or below 0.2.

A JSON object on stdout describes the outputs:
{"opencv": VERSION, "outputs": [{"name": NAME, "rows": R, "columns": C}, ...]}

Exit status 2 means a Python module is missing; 1 means any other failure.
"""

import argparse
import json
import sys

try:
    import cv2
    import numpy as np
except ImportError as error:
    print(f"opencv_darknet.py: {error}: install opencv-python-headless<5 and numpy", file=sys.stderr)
    sys.exit(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cfg", required=True, help="darknet .cfg file")
    parser.add_argument("--weights", required=True, help="darknet .weights file")
    parser.add_argument("--input", required=True, help="raw float32 input tensor, 1x3xHxW")
    parser.add_argument("--width", type=int, required=True, help="network input width in pixels")
    parser.add_argument("--height", type=int, required=True, help="network input height in pixels")
    parser.add_argument("--out", required=True, help="file to write the YOLO-layer outputs to")
    args = parser.parse_args()

    tensor = np.fromfile(args.input, dtype="<f4")
    expected = 3 * args.height * args.width
    if tensor.size != expected:
        sys.exit(f"opencv_darknet.py: {args.input} holds {tensor.size} floats, expected 3x{args.height}x{args.width} = {expected}")
    blob = tensor.reshape(1, 3, args.height, args.width)

    net = cv2.dnn.readNetFromDarknet(args.cfg, args.weights)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    # Winograd convolution trades accuracy for speed, so the plain algorithm is the better reference.
    if hasattr(net, "enableWinograd"):
        net.enableWinograd(False)
    net.setInput(blob)

    names = sorted(net.getUnconnectedOutLayersNames(), key=net.getLayerId)
    outputs = net.forward(names)

    described = []
    with open(args.out, "wb") as out:
        for name, output in zip(names, outputs):
            if output.ndim != 2:
                sys.exit(f"opencv_darknet.py: output {name} has shape {output.shape}, expected rows x columns")
            output.astype("<f4").tofile(out)
            described.append({"name": name, "rows": int(output.shape[0]), "columns": int(output.shape[1])})

    json.dump({"opencv": cv2.__version__, "outputs": described}, sys.stdout)


if __name__ == "__main__":
    main()
