#!/usr/bin/env python3
"""Time one peer runtime on a YOLO model so `edgedet bench` can print it beside edgedet.

Each call runs one runtime in its own process, so the peak memory it reports
is not shared with another runtime:

    python benches/peers.py --runtime ort-f32 --cfg yolov4-tiny.cfg \
        --weights yolov4-tiny.weights --onnx yolov4-tiny.onnx --image dog.jpg \
        --size 416 --threads 2 --warmup 3 --runs 20

stdout gets exactly one JSON line. It contains the timings, or
{"runtime": ..., "skipped": reason} with exit status 0 when the runtime's
package is missing or the runtime cannot run this model. Everything else goes
to stderr. Exit status 1 means the benchmark itself failed (an unreadable
image, a broken cache) and 2 means invalid arguments.

The runtimes are OpenCV DNN on the darknet cfg and weights, and ONNX Runtime
and ncnn on the ONNX file that `edgedet export-onnx` writes. The ONNX model
must have one float input of shape 1x3xSIZExSIZE. Derived models (the ORT
int8 model, the ncnn conversion) are cached under --work-dir by the sha256 of
the ONNX file.
"""

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    import cv2
    import numpy as np
except ImportError as err:
    sys.exit(f"peers.py: error: {err}: install benches/requirements-peers.txt into this Python")

RUNTIMES = ("opencv", "ort-f32", "ort-int8", "ncnn-f32", "ncnn-int8")
CALIBRATION_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
DEFAULT_WORK_DIR = Path.home() / ".cache" / "edgedet" / "peers"

RSS_NOTE = (
    "peak_rss_mb is VmHWM of this Python process, so it includes the interpreter "
    "with numpy and OpenCV ({base:.1f} MB resident before the runtime was loaded)"
)


class Skip(Exception):
    """A runtime that cannot run here, because its package is missing or it rejects the model."""


class BenchError(Exception):
    """A failure of the benchmark itself rather than of the runtime under test."""


def main():
    args = parse_args()
    try:
        output = run_benchmark(args)
    except Skip as skip:
        output = {"runtime": args.runtime, "skipped": str(skip)}
    except BenchError as err:
        print(f"peers.py: error: {args.runtime}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(output))
    return 0


def run_benchmark(args):
    """Time args.runtime and return the JSON object to print."""
    image = cv2.imread(args.image)
    if image is None:
        raise BenchError(f"cannot decode --image {args.image}: expected a JPEG or PNG file")

    # cv2.resize and blobFromImage take part in frame_ms for every runtime, so
    # OpenCV gets the same thread budget as the runtime under test.
    cv2.setNumThreads(args.threads)
    base_rss_mb = read_status_mb("VmRSS")

    bench = {
        "opencv": bench_opencv,
        "ort-f32": bench_ort_f32,
        "ort-int8": bench_ort_int8,
        "ncnn-f32": bench_ncnn_f32,
        "ncnn-int8": bench_ncnn_int8,
    }[args.runtime]
    result = bench(args, image)

    output = {"runtime": args.runtime, "threads": args.threads, "load_ms": result["load_ms"]}
    if "prepare_ms" in result:
        output["prepare_ms"] = result["prepare_ms"]
    output["inference_ms"] = result["inference_ms"]
    output["frame_ms"] = result["frame_ms"]
    output["peak_rss_mb"] = round(read_status_mb("VmHWM"), 1)
    output["version"] = result["version"]
    output["notes"] = "; ".join(result["notes"] + [RSS_NOTE.format(base=base_rss_mb)])
    return output


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", required=True, choices=RUNTIMES, help="peer runtime to time")
    parser.add_argument("--cfg", type=Path, help="darknet .cfg file (opencv)")
    parser.add_argument("--weights", type=Path, help="darknet .weights file (opencv)")
    parser.add_argument("--onnx", type=Path, help="ONNX model from `edgedet export-onnx` (ort-*, ncnn-*)")
    parser.add_argument("--image", required=True, help="image to run on, decoded once with cv2.imread")
    parser.add_argument(
        "--size", type=int, default=416, metavar="PIXELS", help="network input width and height in pixels"
    )
    parser.add_argument(
        "--threads", type=int, default=1, metavar="N", help="threads for the runtime and for OpenCV"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, metavar="N", help="untimed runs before the timed ones"
    )
    parser.add_argument("--runs", type=int, default=20, metavar="N", help="timed runs")
    parser.add_argument(
        "--calibrate", type=Path, metavar="DIR", help="directory of calibration images (ort-int8)"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        metavar="DIR",
        default=DEFAULT_WORK_DIR,
        help=f"cache of quantized and converted models [default: {DEFAULT_WORK_DIR}]",
    )
    parser.add_argument(
        "--int8-activations",
        choices=("auto", "quint8", "qint8"),
        default="auto",
        help="ort-int8 activation type; auto follows ONNX Runtime's advice for this CPU",
    )
    args = parser.parse_args()

    if args.size <= 0 or args.size % 32 != 0:
        parser.error(f"--size {args.size} is invalid: expected a positive multiple of 32")
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        parser.error("expected --threads >= 1, --runs >= 1 and --warmup >= 0")

    needed = ["cfg", "weights"] if args.runtime == "opencv" else ["onnx"]
    for name in needed:
        if getattr(args, name) is None:
            parser.error(f"--runtime {args.runtime} requires --{name}")
    for name in ("cfg", "weights", "onnx", "calibrate"):
        path = getattr(args, name)
        if path is not None and not path.exists():
            parser.error(f"--{name} {path} not found")
    return args


def time_runs(args, image, preprocess, infer):
    """Run the warmup, then time inference alone and preprocessing plus inference on each run."""
    for _ in range(args.warmup):
        infer(preprocess(image))

    inference_ms, frame_ms = [], []
    for _ in range(args.runs):
        start = time.perf_counter()
        blob = preprocess(image)
        ready = time.perf_counter()
        infer(blob)
        done = time.perf_counter()
        inference_ms.append(round((done - ready) * 1000, 3))
        frame_ms.append(round((done - start) * 1000, 3))
    return {"inference_ms": inference_ms, "frame_ms": frame_ms}


def blob_from_image(image, size):
    """Stretch to size x size, BGR to RGB, scale to 0..1, as a 1x3xHxW float32 array."""
    return cv2.dnn.blobFromImage(image, 1 / 255.0, (size, size), swapRB=True, crop=False)


def bench_opencv(args, image):
    start = time.perf_counter()
    try:
        net = cv2.dnn.readNetFromDarknet(str(args.cfg), str(args.weights))
    except cv2.error as err:
        raise Skip(f"OpenCV {cv2.__version__} cannot read {args.cfg}: {first_line(err)}") from None
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    output_names = net.getUnconnectedOutLayersNames()
    load_ms = elapsed_ms(start)

    def infer(blob):
        net.setInput(blob)
        return net.forward(output_names)

    try:
        timings = time_runs(args, image, lambda img: blob_from_image(img, args.size), infer)
    except cv2.error as err:
        raise Skip(f"OpenCV {cv2.__version__} cannot run {args.cfg}: {first_line(err)}") from None

    notes = [
        "OpenCV DNN, DNN_BACKEND_OPENCV on DNN_TARGET_CPU, darknet cfg and weights",
        "input from cv2.dnn.blobFromImage (bilinear stretch, BGR to RGB, /255)",
        "forward() includes OpenCV's [yolo] layers, which decode boxes (logistic and anchors) into one row"
        " per box, while the ONNX runtimes stop at the raw head tensors",
        "load_ms excludes the network setup that OpenCV runs on the first forward(), in the warmup",
    ]
    return {"load_ms": load_ms, **timings, "version": cv2.__version__, "notes": notes}


def ort_session(model_path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        # onnxruntime raises its own pybind11 exception classes (Fail,
        # InvalidGraph, NotImplemented, ...) that share no base class but Exception.
        raise Skip(f"ONNX Runtime {ort.__version__} cannot load {model_path}: {first_line(err)}") from None


def bench_ort(args, image, model_path):
    """Time ONNX Runtime on model_path and return the result without notes."""
    if importlib.util.find_spec("onnxruntime") is None:
        raise Skip("onnxruntime is not installed")
    import onnxruntime as ort

    start = time.perf_counter()
    session = ort_session(model_path, args.threads)
    load_ms = elapsed_ms(start)

    inputs = session.get_inputs()
    expected = [1, 3, args.size, args.size]
    if len(inputs) != 1 or inputs[0].shape != expected:
        shapes = [input_.shape for input_ in inputs]
        raise BenchError(
            f"{args.onnx} has inputs {shapes}: expected one input of shape {expected} for --size {args.size}"
        )
    input_name = inputs[0].name

    def infer(blob):
        return session.run(None, {input_name: blob})

    timings = time_runs(args, image, lambda img: blob_from_image(img, args.size), infer)
    return {"load_ms": load_ms, **timings, "version": ort.__version__}


ORT_NOTES = [
    "CPUExecutionProvider, intra_op_num_threads=threads, inter_op_num_threads=1, ORT_SEQUENTIAL,"
    " default graph optimizations",
    "input from cv2.dnn.blobFromImage (bilinear stretch, BGR to RGB, /255)",
]


def bench_ort_f32(args, image):
    result = bench_ort(args, image, args.onnx)
    return {**result, "notes": ["ONNX Runtime float32 on the ONNX file"] + ORT_NOTES}


def ort_int8_settings(choice):
    """Choose activation type and reduce_range as quantize_static's docstring in onnxruntime 1.32 advises."""
    machine = platform.machine().lower()
    is_arm = machine.startswith(("aarch64", "arm"))
    flags = cpu_flags()
    has_vnni = "avx512_vnni" in flags or "avx_vnni" in flags

    if choice == "auto":
        # ORT advises QUInt8 activations on x86-64, and QInt8 on ARM, whose kernels prefer symmetric ones.
        activation = "qint8" if is_arm else "quint8"
    else:
        activation = choice
    # Without VNNI, x86-64 multiplies u8 by s8 with VPMADDUBSW, whose 16-bit
    # intermediate sums saturate. ORT advises 7-bit weights (reduce_range) there.
    reduce_range = not is_arm and not has_vnni

    if is_arm:
        cpu = "ARM"
    elif has_vnni:
        cpu = "x86-64 with VNNI"
    else:
        cpu = "x86-64 without VNNI"
    tag = f"qdq-perchannel-s8w-{activation}a" + ("-rr" if reduce_range else "")
    return {"activation": activation, "reduce_range": reduce_range, "cpu": cpu, "tag": tag}


def quantize_model(onnx_path, out_path, image_paths, size, activation, reduce_range):
    """Pre-process and statically quantize onnx_path into out_path (runs in a child process)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class ImageReader(CalibrationDataReader):
        def __init__(self, input_name):
            self.input_name = input_name
            self.paths = iter(image_paths)

        def get_next(self):
            path = next(self.paths, None)
            if path is None:
                return None
            image = cv2.imread(str(path))
            if image is None:
                # A builtin type, because the parent cannot unpickle this module's classes.
                raise ValueError(f"cannot decode calibration image {path}")
            return {self.input_name: blob_from_image(image, size)}

    import onnx

    input_name = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
    # quant_pre_process runs shape inference and graph optimization, because the
    # quantizer leaves a tensor of unknown shape in float32.
    preprocessed = out_path.with_name("preprocessed.onnx")
    quant_pre_process(str(onnx_path), str(preprocessed))
    quantize_static(
        str(preprocessed),
        str(out_path),
        ImageReader(input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=reduce_range,
        activation_type=QuantType.QInt8 if activation == "qint8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    preprocessed.unlink()


def bench_ort_int8(args, image):
    for package in ("onnxruntime", "onnx", "sympy"):
        if importlib.util.find_spec(package) is None:
            raise Skip(f"{package} is not installed, and quant_pre_process or quantize_static needs it")

    # A skip rather than an error, so that a benchmark run without calibration images still times the rest.
    if args.calibrate is None:
        raise Skip("ort-int8 needs --calibrate DIR with images for ONNX Runtime's static quantizer")
    image_paths = sorted(p for p in args.calibrate.iterdir() if p.suffix.lower() in CALIBRATION_SUFFIXES)
    if not image_paths:
        suffixes = ", ".join(sorted(CALIBRATION_SUFFIXES))
        raise BenchError(f"--calibrate {args.calibrate} has no images: expected files ending in {suffixes}")
    unreadable = [str(path) for path in image_paths if not cv2.haveImageReader(str(path))]
    if unreadable:
        raise BenchError(f"OpenCV cannot decode these calibration images: {', '.join(unreadable)}")
    settings = ort_int8_settings(args.int8_activations)
    key = "-".join(
        [
            args.onnx.stem,
            file_sha256(args.onnx)[:16],
            "ort-int8",
            settings["tag"],
            "cal" + files_sha256(image_paths)[:8],
        ]
    )

    def build(directory):
        # The quantizer runs in a child process so that its memory stays out of this process's peak RSS.
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            try:
                pool.apply(
                    quantize_model,
                    (
                        args.onnx,
                        directory / "model.onnx",
                        image_paths,
                        args.size,
                        settings["activation"],
                        settings["reduce_range"],
                    ),
                )
            except Exception as err:
                # The child's exception comes back pickled, of any onnx or
                # onnxruntime type, with the child's traceback as its cause.
                print(err.__cause__ or "", file=sys.stderr)
                reason = f"{type(err).__name__}: {first_line(err)}"
                raise Skip(f"ONNX Runtime's quantizer failed on {args.onnx}: {reason}") from None

    directory, prepare_ms, reused = prepare_cached(args.work_dir, key, build)
    result = bench_ort(args, image, directory / "model.onnx")

    quantized = (
        f"ONNX Runtime int8 from quantize_static: QDQ format, per-channel QInt8 weights, "
        f"{'QInt8' if settings['activation'] == 'qint8' else 'QUInt8'} activations, "
        f"reduce_range={settings['reduce_range']}, MinMax calibration on {len(image_paths)} images "
        f"from {args.calibrate} preprocessed like the input, after quant_pre_process"
    )
    if args.int8_activations == "auto":
        quantized += f"; these follow the quantize_static docstring of onnxruntime 1.32 for {settings['cpu']}"
    origin = "reused from" if reused else "written to"
    cache = f"prepare_ms is the quantization time; the quantized model was {origin} {directory}"
    return {**result, "prepare_ms": prepare_ms, "notes": [quantized, cache] + ORT_NOTES}


def pnnx_executable():
    """Locate the pnnx binary inside the pnnx wheel without importing pnnx, whose __init__ imports torch."""
    spec = importlib.util.find_spec("pnnx")
    if spec is None or not spec.submodule_search_locations:
        raise Skip("pnnx is not installed: pip install --no-deps pnnx (see benches/requirements-peers.txt)")
    executable = Path(list(spec.submodule_search_locations)[0]) / "pnnx"
    if not os.access(executable, os.X_OK):
        raise Skip(f"the pnnx package has no executable at {executable}")
    return executable


def convert_with_pnnx(onnx_path, directory, size):
    """Convert onnx_path to directory/model.ncnn.{param,bin} with float32 weights."""
    # pnnx writes <stem>.pnnxsim.onnx next to its input. A link inside directory keeps that file out of
    # the input's folder.
    link = directory / "model.onnx"
    link.symlink_to(onnx_path.resolve())
    outputs = {
        "ncnnparam": "model.ncnn.param",
        "ncnnbin": "model.ncnn.bin",
        "ncnnpy": "model_ncnn.py",
        "pnnxparam": "model.pnnx.param",
        "pnnxbin": "model.pnnx.bin",
        "pnnxpy": "model_pnnx.py",
        "pnnxonnx": "model.pnnx.onnx",
    }
    command = [str(pnnx_executable()), str(link), f"inputshape=[1,3,{size},{size}]", "fp16=0"]
    command += [f"{name}={directory / file}" for name, file in outputs.items()]
    completed = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    if completed.returncode != 0 or not (directory / "model.ncnn.bin").is_file():
        sys.stderr.write(completed.stdout + completed.stderr)
        last = (completed.stdout + completed.stderr).strip().splitlines()[-1:] or ["no output"]
        raise Skip(f"pnnx failed on {onnx_path} with exit status {completed.returncode}: {last[0]}")

    for path in directory.iterdir():
        if path.name not in ("model.ncnn.param", "model.ncnn.bin"):
            path.unlink()


def bench_ncnn_f32(args, image):
    if importlib.util.find_spec("ncnn") is None:
        raise Skip("ncnn is not installed")
    import ncnn

    key = "-".join([args.onnx.stem, file_sha256(args.onnx)[:16], "ncnn-f32", str(args.size)])
    directory, prepare_ms, reused = prepare_cached(
        args.work_dir, key, lambda d: convert_with_pnnx(args.onnx, d, args.size)
    )

    start = time.perf_counter()
    net = ncnn.Net()
    net.opt.num_threads = args.threads
    net.opt.use_vulkan_compute = False
    # ncnn 1.0.20261020 turns on fp16 storage and arithmetic by default where the CPU supports them.
    for option in (
        "use_fp16_packed",
        "use_fp16_storage",
        "use_fp16_arithmetic",
        "use_bf16_packed",
        "use_bf16_storage",
    ):
        setattr(net.opt, option, False)
    if (
        net.load_param(str(directory / "model.ncnn.param")) != 0
        or net.load_model(str(directory / "model.ncnn.bin")) != 0
    ):
        raise Skip(f"ncnn {ncnn.__version__} cannot load the model that pnnx converted into {directory}")
    load_ms = elapsed_ms(start)

    input_name = net.input_names()[0]
    output_names = net.output_names()

    def preprocess(img):
        height, width = img.shape[:2]
        mat = ncnn.Mat.from_pixels_resize(
            img, ncnn.Mat.PixelType.PIXEL_BGR2RGB, width, height, args.size, args.size
        )
        mat.substract_mean_normalize([], [1 / 255.0] * 3)
        return mat

    def infer(mat):
        outputs = []
        with net.create_extractor() as extractor:
            extractor.input(input_name, mat)
            for name in output_names:
                status, output = extractor.extract(name)
                if status != 0:
                    raise Skip(f"ncnn {ncnn.__version__} failed to compute {name} (status {status})")
                outputs.append(np.array(output))
        return outputs

    timings = time_runs(args, image, preprocess, infer)
    pnnx_version = package_version("pnnx")
    origin = "reused from" if reused else "written to"
    notes = [
        f"ncnn float32 (fp16 and bf16 storage and arithmetic off) on the ONNX file converted by"
        f" pnnx {pnnx_version} with fp16=0",
        f"prepare_ms is the pnnx conversion time; the ncnn model was {origin} {directory}",
        "input from ncnn.Mat.from_pixels_resize (bilinear stretch, BGR to RGB) and"
        " substract_mean_normalize (/255)",
        "inference_ms covers create_extractor, input and extract of every output",
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}: ncnn's threads are libgomp threads,"
        " which spin before they sleep unless it is PASSIVE, so other load on the same cores slows them down",
    ]
    return {
        "load_ms": load_ms,
        "prepare_ms": prepare_ms,
        **timings,
        "version": ncnn.__version__,
        "notes": notes,
    }


def bench_ncnn_int8(args, image):
    raise Skip(
        "ncnn's int8 calibration tools ncnn2table and ncnn2int8 are C++ programs built from ncnn's"
        f" source tree, and neither the PyPI package ncnn {package_version('ncnn')} nor"
        f" pnnx {package_version('pnnx')} ships them"
    )


def prepare_cached(work_dir, key, build):
    """Return (directory, prepare_ms, reused) for work_dir/key, calling build(directory) if not cached.

    A directory counts as cached once it contains prepare.json, which is written
    last, so an interrupted build is redone on the next run.
    """
    final = work_dir / key
    stamp = final / "prepare.json"
    if stamp.is_file():
        return final, json.loads(stamp.read_text())["prepare_ms"], True

    work_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=work_dir))
    try:
        start = time.perf_counter()
        build(staging)
        prepare_ms = elapsed_ms(start)
        (staging / "prepare.json").write_text(json.dumps({"prepare_ms": prepare_ms}))
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final, prepare_ms, False


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_sha256(paths):
    """Digest of the names and contents of paths, so a changed calibration set makes a new cache key."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def read_status_mb(field):
    """Read a kB field such as VmHWM from /proc/self/status, in MB (2**20 bytes)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError as err:
        raise BenchError(
            f"cannot read /proc/self/status ({err}): peak memory is only read on Linux"
        ) from None
    raise BenchError(f"/proc/self/status has no {field} field")


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def elapsed_ms(start):
    return round((time.perf_counter() - start) * 1000, 3)


def first_line(err):
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
