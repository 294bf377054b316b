"""timm models, spelled ``"timm:<name>"``: read once, offline, timm's own way.

A timm model is built with ``timm.create_model(name, num_classes=0)`` (its
classifier removed; the output is timm's pooled representation) and kept in
the model registry as a read-only :class:`~skxfer._backbones.Prototype`,
found by content: the seed of random weights, the hash of a checkpoint's
bytes, the hashes of a ``local-dir:`` folder's ``config.json`` and weights
file, or the name for timm's own pretrained weights (downloaded by timm into
the Hugging Face cache). Each prototype is built once, under its key's own
lock; random weights come from a generator of the build's own (timm's
initialisers draw from torch's global one: the build redirects them), so no
thread's random numbers change. A file is read once; its tensors are loaded
from the very bytes hashed. Preprocessing is timm's eval transform for the model's
data config (``resolve_data_config`` / ``create_transform``), applied to the
images as timm's own loops do (8-bit images through PIL). A model's blocks,
for freezing and layer-wise learning rates, are timm's coarse parameter
groups (``model.group_matcher(coarse=True)``).
"""

import io
import json
import os
import tempfile
from pathlib import Path

import torch

from ._backbones import (
    LayerTap,
    Prototype,
    _cached,
    _differences,
    _drawn_from,
    _mismatch_error,
    _prototype,
    did_you_mean,
    is_checkpoint_path,
)
from ._keys import known_file_key, read_file

PREFIX = "timm:"
LOCAL_DIR = "local-dir:"
# the files timm looks for in a local-dir folder, in its order; then the
# first file (by name) of each suffix, in this order
_FOLDER_FILES = (
    "model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
)
_FOLDER_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".bin")

_WEIGHTS = (
    "None (random weights, drawn from random_state), 'DEFAULT' (timm's "
    "pretrained weights for the name: a tag goes in the name, e.g. "
    "'timm:resnet18.a1_in1k'), the path of a checkpoint file (.pth, .pt, .bin, "
    ".safetensors) holding the model's state dict, or 'local-dir:/path/to/folder' "
    "(a folder with config.json and the weights, as timm.models.save_for_hf "
    "writes it)"
)


def is_timm_name(value):
    """Whether ``value`` spells a timm model (``"timm:<name>"``)."""
    return isinstance(value, str) and value.startswith(PREFIX)


def is_timm_model(module):
    """Whether ``module`` is a timm model (one with timm's parameter groups)."""
    return type(module).__module__.startswith("timm.") and callable(
        getattr(module, "group_matcher", None))


def import_timm(spec):
    """The ``timm`` package, or an ImportError that says how to install it."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            f"model={spec!r} is a timm model, and timm is not installed. Install "
            'it with: pip install "skxfer[timm]"'
        ) from err
    return timm


def timm_version():
    import timm

    return timm.__version__


def model_name(spec):
    """The timm name in ``spec`` (``"timm:resnet18.a1_in1k"`` ->
    ``"resnet18.a1_in1k"``), checked against timm's registry."""
    timm = import_timm(spec)
    name = spec[len(PREFIX):]
    if not name or any(c in name for c in ":/\\"):
        raise ValueError(
            f"model={spec!r}: after 'timm:' comes a name of timm.list_models(), "
            "optionally with a pretrained tag ('timm:resnet18.a1_in1k'). Local "
            "weights go in weights=: a checkpoint file "
            "(weights='/path/to/model.safetensors') or a folder "
            "(weights='local-dir:/path/to/folder')."
        )
    architecture, _, tag = name.partition(".")
    if not timm.is_model(architecture):
        hint = did_you_mean(architecture, timm.list_models())
        raise ValueError(
            f"Unknown timm model {architecture!r}.{hint} Any name in "
            "timm.list_models() works after 'timm:'."
        )
    if tag:
        try:
            timm.models.get_pretrained_cfg(name)
        except RuntimeError as err:
            tags = [t.partition(".")[2] for t in timm.list_pretrained(
                architecture + ".*")]
            raise ValueError(
                f"Unknown pretrained tag {tag!r} for timm model {architecture!r}. "
                f"Its tags: {tags}."
            ) from err
    return name


def _weights_kind(spec, weights):
    if weights is None:
        return "random"
    if isinstance(weights, str) and weights == "DEFAULT":
        return "pretrained"
    if isinstance(weights, str) and weights.startswith(LOCAL_DIR):
        return "folder"
    if is_checkpoint_path(weights) or (
            isinstance(weights, str) and weights.endswith(".safetensors")):
        return "file"
    raise ValueError(
        f"Unknown weights {weights!r} for timm model {spec!r}. Use {_WEIGHTS}."
    )


def _build(name, seed, **kwargs):
    """A new timm model without its classifier, random weights from ``seed``."""
    import timm

    with _drawn_from(seed):
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def _download_error(name, err):
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    try:
        from huggingface_hub import constants

        hub_cache = constants.HF_HUB_CACHE
    except ImportError:  # pragma: no cover - a dependency of timm
        hub_cache = "the Hugging Face cache"
    where = []
    if cfg is not None and cfg.hf_hub_id:
        where.append(
            f"from the Hugging Face hub ({cfg.hf_hub_id!r}) into {hub_cache} (set "
            "HF_HOME or HF_HUB_CACHE to change where; HF_HUB_OFFLINE=1 reads "
            "only what is there)")
    if cfg is not None and cfg.url:
        where.append(
            f"from {cfg.url} into {os.path.join(torch.hub.get_dir(), 'checkpoints')} "
            "(set TORCH_HOME to change where)")
    where = " or ".join(where) or "from where its pretrained config says"
    return OSError(
        f"Could not load timm's pretrained weights for {name!r}: "
        f"{type(err).__name__}: {err}. timm reads them {where}, and downloads "
        "them when missing, which needs internet access. Offline, copy them "
        "there, or pass weights='/path/to/model.safetensors' (a state dict of "
        "this architecture), weights='local-dir:/path/to/folder' (a folder with "
        "config.json and the weights, as timm.models.save_for_hf writes it), or "
        "weights=None for a randomly initialised network."
    )


def _pretrained(name, seed):
    import timm

    try:
        with _drawn_from(seed):
            return timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as err:  # no network, a broken download, ...
        raise _download_error(name, err) from err


def _state_from_bytes(data, path):
    """The state dict in a checkpoint's bytes, as timm's ``load_state_dict``
    reads it (EMA weights first, then 'state_dict', then 'model'; wrapper
    prefixes removed), tensors only."""
    from timm.models import clean_state_dict

    should_be = ("a state dict of the timm model (saved with "
                 "torch.save(model.state_dict(), path) or safetensors)")
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load

            state = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu",
                               weights_only=True)
    except Exception as err:  # text, pickled objects, a truncated file
        raise ValueError(
            f"weights={str(path)!r} is not {should_be}: it could not be read as "
            f"tensors ({type(err).__name__}). skxfer loads weights only, never "
            "pickled objects."
        ) from err
    if isinstance(state, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(
            f"weights={str(path)!r} does not hold {should_be} (got "
            f"{type(state).__name__})."
        )
    return clean_state_dict(state)


def _load(model, state, path):
    """Load ``state`` into ``model`` (built with ``num_classes=0``): keys of
    the classifier that the model no longer has are dropped; any other
    difference names the file and the first key."""
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not any(
        k.startswith(head + ".") for head in heads)}
    differences = _differences(model, state)
    if differences:
        raise _mismatch_error(path, differences)
    model.load_state_dict(state)
    return model


def _existing(path, kind):
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(
            f"weights={str(path)!r} is a folder, not a {kind}. For a folder "
            f"with config.json and the weights, pass weights='{LOCAL_DIR}{path}'."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={str(path)!r}: no {kind} there. Pass {_WEIGHTS}."
        )
    return path


def _folder_weights(folder):
    """The weights file of a ``local-dir:`` folder, found as timm finds it."""
    for name in _FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    for suffix in _FOLDER_SUFFIXES:
        files = sorted(folder.glob(f"*{suffix}"))
        if files:
            return files[0]
    raise FileNotFoundError(
        f"weights='{LOCAL_DIR}{folder}': the folder has no weights file "
        f"(model.safetensors, pytorch_model.bin, or any {_FOLDER_SUFFIXES} file)."
    )


def _get(key, build, keep=True):
    """The registry's prototype under ``key``, built by ``build()`` once (under
    the key's own lock)."""
    return _prototype(key, lambda: Prototype(build()), cache=keep)


def _from_file(name, path, seed):
    """The prototype of a checkpoint file: read once, loaded from the bytes
    hashed."""
    path = _existing(path, "checkpoint file")
    known = known_file_key(path)
    prototype = _cached(("timm", name, "file", known)) if known else None
    if prototype is not None:
        return prototype
    data, key, _ = read_file(path)
    return _get(("timm", name, "file", key), lambda: _load(
        _build(name, seed), _state_from_bytes(data, path), path))


def _from_folder(name, weights, seed):
    """``(prototype, config key)`` of a ``local-dir:`` folder: its config and
    weights file each read once; timm builds the model from the config's
    bytes, the weights load from the bytes hashed."""
    folder = Path(weights[len(LOCAL_DIR):])
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"weights={weights!r}: no config.json in {str(folder)!r}. A local-dir "
            "folder holds config.json and the weights, as "
            "timm.models.save_for_hf(model, folder) writes them."
        )
    config, config_key, _ = read_file(config_path)
    try:
        architecture = json.loads(config)["architecture"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"weights={weights!r}: {str(config_path)!r} is not a timm model config "
            f"(no 'architecture' in it: {type(err).__name__})."
        ) from err
    if architecture != name.partition(".")[0]:
        raise ValueError(
            f"weights={weights!r} holds a {architecture!r} (its config.json's "
            f"architecture), not {name.partition('.')[0]!r}: pass "
            f"model='timm:{architecture}'."
        )
    path = _folder_weights(folder)
    known = known_file_key(path)
    prototype = (_cached(("timm", name, "folder", config_key, known)) if known
                 else None)
    if prototype is not None:
        return prototype, config_key
    data, key, _ = read_file(path)

    def build():
        state = _state_from_bytes(data, path)
        # timm reads the config (architecture, model arguments, preprocessing)
        # from a private copy of the very bytes hashed
        with tempfile.TemporaryDirectory() as copy:
            Path(copy, "config.json").write_bytes(config)
            model = _build(LOCAL_DIR + copy, seed)
        model.pretrained_cfg = {**model.pretrained_cfg, "file": str(folder)}
        return _load(model, state, path)

    return _get(("timm", name, "folder", config_key, key), build), config_key


def timm_prototype(spec, weights, seed=0, cache=True):
    """``(prototype, identity)`` of timm model ``spec`` with ``weights``.

    The :class:`~skxfer._backbones.Prototype` is built once per process per
    content (see the module's docstring); ``identity`` is what the feature
    store keys the network on: timm's version, the name, the weights' bytes
    (:meth:`Prototype.digest`) and, for a folder, its config. ``seed`` draws
    random weights (``weights=None``); ``cache=False`` keeps no prototype of
    random weights (a one-off seed).
    """
    name = model_name(spec)
    kind = _weights_kind(spec, weights)
    config_key = None
    if kind == "random":
        prototype = _get(("timm", name, None, int(seed)),
                         lambda: _build(name, seed), keep=cache)
    elif kind == "pretrained":
        prototype = _get(("timm", name, "DEFAULT"),
                         lambda: _pretrained(name, seed))
    elif kind == "file":
        prototype = _from_file(name, weights, seed)
    else:
        prototype, config_key = _from_folder(name, weights, seed)
    identity = ("timm", timm_version(), name, prototype.digest(), config_key)
    return prototype, identity


class TimmTransform:
    """timm's eval transform for a data config, on the images skxfer decodes.

    8-bit images (C, H, W) or batches (N, C, H, W) go through PIL, as timm's
    own loops feed them; float images in [0, 1] go through the same
    transforms as tensors.

    Parameters
    ----------
    config : dict
        ``timm.data.resolve_data_config(model=model)``.
    """

    def __init__(self, config):
        from timm.data import create_transform

        self.config = dict(config)
        self.transform = create_transform(**self.config)

    def __call__(self, x):
        if x.ndim == 4:
            return torch.stack([self._one(image) for image in x])
        return self._one(x)

    def _one(self, x):
        if x.dtype != torch.uint8:
            return self.transform(x)
        from PIL import Image

        pixels = x.permute(1, 2, 0).contiguous().numpy()
        return self.transform(Image.fromarray(
            pixels[:, :, 0] if pixels.shape[2] == 1 else pixels))

    def __repr__(self):
        return f"timm.data.create_transform(**{self.config!r})"


def timm_transform(module):
    """The preprocessing timm's data config gives for ``module``."""
    from timm.data import resolve_data_config

    return TimmTransform(resolve_data_config(model=module))


def _cover(names, all_names):
    """fnmatch patterns that match ``names`` and no other of ``all_names``:
    per top-level part, the shortest module prefix that covers only
    ``names``, else the names themselves."""
    chosen, parts = set(names), {}
    for name in names:
        parts.setdefault(name.split(".")[0], []).append(name)
    patterns = []
    for top, group in parts.items():
        if group == [top]:  # a parameter of the model itself (a class token)
            patterns.append(top)
            continue
        pieces = group[0].split(".")[:-1]
        for depth in range(1, len(pieces) + 1):
            prefix = ".".join(pieces[:depth]) + "."
            inside = [n for n in all_names if n.startswith(prefix)]
            if set(group) <= set(inside) and all(n in chosen for n in inside):
                patterns.append(prefix + "*")
                break
        else:
            patterns.extend(group)
    return patterns


def timm_blocks(backbone):
    """The blocks of a timm model inside ``backbone``, or None.

    ``[(label, parameter names, fnmatch patterns)]`` in the order the model
    computes them: timm's coarse parameter groups (resnets: the stem, then
    layer1..layer4; vision transformers: the stem, then each of blocks.N).
    Single wrappers (the pooling after a model, a layer tap) are looked
    through; names are relative to ``backbone``. Behind a layer tap, the
    groups after the one holding the tapped layer never run and are left out.
    """
    prefix, module, tapped = "", backbone, None
    while not is_timm_model(module):
        if isinstance(module, LayerTap):
            prefix, module, tapped = f"{prefix}model.", module.model, module.layer
            continue
        children = [(n, c) for n, c in module.named_children()
                    if any(True for _ in c.parameters())]
        if len(children) != 1:
            return None
        name, module = children[0]
        prefix = f"{prefix}{name}."
    from timm.models import group_parameters

    groups = [list(g) for g in group_parameters(
        module, module.group_matcher(coarse=True)).values()]
    if tapped is not None:
        ends = [i for i, g in enumerate(groups) if any(
            n.startswith(tapped + ".") for n in g)]
        groups = groups[:ends[0] + 1] if ends else groups
    all_names = [n for n, _ in module.named_parameters()]
    blocks = []
    for group in groups:
        patterns = _cover(group, all_names)
        label = "+".join(p[:-2] if p.endswith(".*") else p for p in patterns)
        blocks.append((prefix + label, [prefix + n for n in group],
                       [prefix + p for p in patterns]))
    return blocks
