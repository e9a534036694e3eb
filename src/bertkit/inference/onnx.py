"""Inference backends besides eager PyTorch: ONNX export and ONNX Runtime, and int8 (dynamic quantization).

    export_onnx("runs/sst2", "runs/sst2/model.onnx")      # dynamic batch and sequence axes, parity-checked
    model = OnnxModel("runs/sst2/model.onnx")             # runs wherever a bertkit task model runs
    model(input_ids=..., attention_mask=..., token_type_ids=...).logits

The ONNX graph comes from `torch.onnx.export(dynamo=True)` (torch.export, then onnxscript). int8 is ONNX Runtime's
dynamic quantization for ONNX, and `torch.ao`'s `quantize_dynamic` of the Linear layers for PyTorch: weights in
int8, activations quantized on the fly, so no calibration data is needed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from bertkit.errors import UserError

log = logging.getLogger("bertkit")

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# What each architecture's ONNX graph returns, named as the fields of its PyTorch output.
OUTPUTS = {
    "BertModel": ("last_hidden_state", "pooler_output"),
    "BertForSequenceClassification": ("logits",),
    "BertForTokenClassification": ("logits",),
    "BertForQuestionAnswering": ("start_logits", "end_logits"),
    "BertForMaskedLM": ("logits",),
    "BertForNextSentencePrediction": ("logits",),
    "BertForPreTraining": ("prediction_logits", "seq_relationship_logits"),
}
PARITY_TOLERANCE = 1e-4


def _need_onnx():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UserError("ONNX needs onnx, onnxscript and onnxruntime: pip install 'bertkit[onnx]'") from None


class _Graph(nn.Module):
    """The model as a function of the three input tensors, returning a tuple of output tensors."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return tuple(getattr(out, name) for name in self.outputs)


def _example_inputs(tokenizer) -> dict[str, torch.Tensor]:
    """Two texts of different lengths, padded: the export traces the masked path and checks parity on it."""
    texts = ["A short one.", "A second, longer example sentence for tracing the model with padding in it."]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {name: enc[name] for name in INPUTS}


def load_for_export(model_dir: str | os.PathLike):
    """(model in eval mode, its tokenizer, output names) for any architecture a checkpoint's config names."""
    import bertkit.modeling as modeling
    from bertkit.config import BertConfig
    from bertkit.tokenization import BertTokenizer

    config = BertConfig.from_pretrained(model_dir)
    arch = (config.architectures or ["BertModel"])[0]
    if arch not in OUTPUTS:
        raise UserError(f"{model_dir}: cannot export architecture {arch}; supported: {', '.join(OUTPUTS)}")
    model = getattr(modeling, arch).from_pretrained(model_dir, config=config).eval()
    return model, BertTokenizer.from_pretrained(model_dir), OUTPUTS[arch]


def export_onnx(model_dir: str | os.PathLike, out: str | os.PathLike, int8: bool = False, opset: int = 18,
                check: bool = True) -> Path:
    """Write `model_dir`'s model as ONNX to `out` (atomically), with dynamic batch and sequence axes; with `int8`
    the Linear weights are quantized to int8 (ONNX Runtime's dynamic quantization). With `check` the fp32 graph's
    outputs are compared with PyTorch's under ONNX Runtime; a difference over 1e-4 is an error."""
    _need_onnx()
    from bertkit.checkpoint import atomic_path

    model, tokenizer, outputs = load_for_export(model_dir)
    inputs = _example_inputs(tokenizer)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    with atomic_path(out) as fp32_path, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _quiet_export(lambda: torch.onnx.export(
            _Graph(model, outputs), tuple(inputs[name] for name in INPUTS), str(fp32_path), input_names=list(INPUTS),
            output_names=list(outputs), dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUTS},
            opset_version=opset, dynamo=True, external_data=False))
        if check:
            with torch.inference_mode():
                expected = _Graph(model, outputs)(*(inputs[name] for name in INPUTS))
            got = OnnxModel(fp32_path)(**inputs)
            diff = max(float((getattr(got, n) - e).abs().max()) for n, e in zip(outputs, expected))
            if diff > PARITY_TOLERANCE:
                raise UserError(f"{out}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {PARITY_TOLERANCE})")
            log.info("ONNX Runtime parity with PyTorch: max |diff| %.2e", diff)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = fp32_path.with_name(fp32_path.name + ".int8")
            logging.disable(logging.WARNING)  # its advice to pre-process goes to the root logger
            try:
                quantize_dynamic(str(fp32_path), str(quantized), weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            os.replace(quantized, fp32_path)
    return out


def _quiet_export(run) -> None:
    """torch.onnx.export prints its progress to stdout, and warns of every torchvision op it cannot register; keep
    stdout for results and stderr for what matters."""
    import contextlib
    import io

    buffer = io.StringIO()
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buffer):
            run()
    except Exception:
        sys.stderr.write(buffer.getvalue())
        raise
    finally:
        registry.setLevel(level)


class OnnxModel:
    """An ONNX Runtime session that a task runs like its PyTorch model: called with input tensors, it returns an
    object with the output fields (`logits`, or `start_logits`/`end_logits`, ...) as CPU tensors."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        _need_onnx()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001  (onnxruntime raises its own untyped errors for bad files)
            raise UserError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.device = torch.device("cpu")

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, **_) -> SimpleNamespace:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if given["attention_mask"] is None:
            given["attention_mask"] = torch.ones_like(input_ids)
        if given["token_type_ids"] is None:
            given["token_type_ids"] = torch.zeros_like(input_ids)
        feeds = {name: given[name].cpu().long().numpy() for name in self.inputs}
        return SimpleNamespace(**{n: torch.from_numpy(a) for n, a in zip(self.outputs, self.session.run(None, feeds))})


def quantize_int8(model: nn.Module) -> nn.Module:
    """PyTorch dynamic quantization: every nn.Linear's weight to int8 (per tensor), activations quantized per batch.
    CPU only; the model must be in eval mode."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices: the API still works in this torch
        return quantize_dynamic(model.cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def onnx_for(model_dir: str | os.PathLike, int8: bool = False) -> Path:
    """The ONNX file for a checkpoint: `model.onnx` / `model_int8.onnx` in its directory when present (what
    `bertkit export onnx` writes by default), else exported once into the cache, keyed by the checkpoint files."""
    from bertkit.settings import cache_dir

    name = "model_int8.onnx" if int8 else "model.onnx"
    local = Path(model_dir) / name
    if local.exists():
        return local
    # keyed as the data cache keys its files: path, size and modification time, with no weight read on each call
    files = [Path(model_dir, f).resolve() for f in ("config.json", "model.safetensors", "pytorch_model.bin")]
    stats = [(str(p), st.st_size, st.st_mtime_ns) for p in files if p.exists() for st in [p.stat()]]
    digest = hashlib.sha256(repr(stats).encode()).hexdigest()
    cached = cache_dir() / "onnx" / digest[:16] / name
    if not cached.exists():
        print(f"bertkit: exporting {model_dir} to {cached} (once)", file=sys.stderr)
        export_onnx(model_dir, cached, int8=int8)
    return cached
