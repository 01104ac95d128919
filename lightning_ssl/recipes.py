"""Recipe records: every hyper-parameter of a shipped config beside its source's value.

A record (``recipes/<method>/<dataset>.yaml``, one per ``configs/<method>/<dataset>.yaml``) lists
``key: {value, source[, ours, deviation]}``: ``value`` is the source's, ``source`` where it is
(``<repo>:<path>:<line>`` with the repositories pinned in ``recipes/sources.yaml``, or a paper
section), ``ours`` what the config resolves to where it differs and ``deviation`` why.
``tests/test_recipes.py`` resolves each config through LightningCLI and checks every key with
:func:`resolve`; ``benchmarks/recipes_table.py`` renders the records into the README.

Keys: ``model.<argument>``, ``data.batch_size``, ``trainer.<argument>``, ``backbone.<kwarg>``,
``lars.<option>`` (the resolved LARS update rule), ``heads.<module>`` (layout string of
:func:`module_layout`), ``ema.buffers`` (what the method's EMA does with the teacher's
BatchNorm statistics), ``view<i>.<option>`` / ``local.<option>`` (the augmentation each view
gets), the derived ``global_batch``, ``effective_lr``, ``final_lr``, ``warmup_steps``,
``total_steps``, and ``code.<item>``: behaviour of the method's code (the loss's reduction,
kernels ...) that no argument shows; these are stated, with their status, and tested by
the method's own tests.

Examples:
    >>> import torch
    >>> module_layout(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
    ...     torch.nn.ReLU(), torch.nn.Linear(8, 2)))
    'L4x8 BN ReLU L8x2+b'
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from lightning_ssl.callbacks.ema import EMA
from lightning_ssl.lars import LARS_PRESETS
from lightning_ssl.optim import scaled_lr

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "recipes"
#: Keys a config cannot show (method code); recorded with a status, not resolved.
DOCUMENTARY_PREFIX = "code."


def load_records(root: Path = RECORDS) -> dict[str, dict[str, Any]]:
    """``{config path: record}`` of every record under ``root`` (``sources.yaml`` excluded)."""
    records = {}
    for path in sorted(root.glob("**/*.yaml")):
        if path.name == "sources.yaml":
            continue
        record = yaml.safe_load(path.read_text())
        record["record"] = str(path.relative_to(root.parent))
        records[record["config"]] = record
    return records


def expected(entry: dict[str, Any]) -> Any:
    """What the config must resolve to: ``ours`` where we deviate, else the source's value."""
    return entry["ours"] if "ours" in entry else entry["value"]


def module_layout(module: nn.Module) -> str:
    """Compact layout of a head: ``L<in>x<out>`` (``+b`` with a bias), ``BN`` (``BN-`` without
    affine, ``BN(scale, no shift)`` with a frozen shift), ``ReLU``/``GELU``; a bias directly
    followed by BatchNorm is not shown (BN's mean subtraction cancels it, so ``Linear(bias) BN``
    and ``Linear BN`` compute the same)."""
    leaves = [m for m in module.modules() if not list(m.children())]
    tokens = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, nn.Linear):
            followed_by_bn = i + 1 < len(leaves) and isinstance(leaves[i + 1], nn.BatchNorm1d)
            bias = leaf.bias is not None and not followed_by_bn
            tokens.append(f"L{leaf.in_features}x{leaf.out_features}{'+b' if bias else ''}")
        elif isinstance(leaf, nn.BatchNorm1d):
            tokens.append(_norm_token(leaf))
        elif isinstance(leaf, nn.ReLU | nn.GELU):
            tokens.append(type(leaf).__name__)
    return " ".join(tokens)


def _norm_token(norm: nn.BatchNorm1d) -> str:
    if not norm.affine:
        return "BN-"
    # a frozen shift stays 0 (SimCLR's output BN: scale, no centre)
    return "BN" if norm.bias.requires_grad else "BN(scale, no shift)"


def _views(views: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    index = 0
    for group in views:
        fields = {
            "size": group.size,
            "scale": list(group.scale),
            "flip_prob": group.flip_prob,
            "jitter": [group.brightness, group.contrast, group.saturation, group.hue],
            "jitter_prob": group.jitter_prob,
            "grayscale_prob": group.grayscale_prob,
            "blur_prob": group.blur_prob,
            "solarize_prob": group.solarize_prob,
        }
        if group.local:
            out["local.num"] = group.num
            out.update({f"local.{k}": v for k, v in fields.items()})
            continue
        for _ in range(group.num):
            index += 1
            out.update({f"view{index}.{k}": v for k, v in fields.items()})
    return out


def resolve(model: Any, datamodule: Any, trainer: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Every key a record can hold, from the objects a config instantiates (and the record's
    ``processes`` and ``dataset_size``, which give the global batch and steps per epoch)."""
    hp = dict(model.hparams)
    out: dict[str, Any] = {f"model.{k}": v for k, v in hp.items()}
    for k, v in (hp.get("backbone_kwargs") or {}).items():
        out[f"backbone.{k}"] = v
    out.setdefault("backbone.zero_init_residual", False)
    out["data.batch_size"] = datamodule.batch_size
    out["trainer.max_epochs"] = trainer.max_epochs
    out["trainer.sync_batchnorm"] = trainer._accelerator_connector._layer_sync is not None
    out["trainer.precision"] = trainer.precision
    out.update(_views(datamodule.views))
    for callback in model.configure_callbacks():
        if isinstance(callback, EMA):
            out["ema.buffers"] = callback.buffers
    for name in ("projector", "expander", "predictor", "prototypes", "head"):
        if isinstance(getattr(model, name, None), nn.Module):
            out[f"heads.{name}"] = module_layout(getattr(model, name))
    processes = record.get("processes", 1)
    out["global_batch"] = batch = datamodule.batch_size * processes
    steps_per_epoch = math.ceil(record["dataset_size"] / processes) // datamodule.batch_size
    if "lr" in hp:
        out["effective_lr"] = scaled_lr(hp["lr"], batch, hp.get("lr_scaling", "linear"))
        out["final_lr"] = out["effective_lr"] * hp.get("min_lr_ratio", 0.0)
    if "warmup_epochs" in hp:
        out["warmup_steps"] = round(hp["warmup_epochs"] * steps_per_epoch)
    out["total_steps"] = (trainer.max_epochs or 0) * steps_per_epoch
    if hp.get("optimizer") == "lars" and "lars_preset" in hp:
        preset = LARS_PRESETS[hp["lars_preset"]]
        out.update({f"lars.{k}": v for k, v in preset.optimizer_options().items()})
        if hp.get("trust_coefficient") is not None:
            out["lars.eta"] = hp["trust_coefficient"]
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.6g}"
    return str(value).replace("|", "\\|")


def render_summary(records: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per config with its source, the keys checked and the deviating keys."""
    lines = ["| config | source | keys | deviating keys |", "|---|---|---|---|"]
    for config, record in records.items():
        deviations = [f"`{key}`" for key, entry in record["values"].items() if "ours" in entry]
        lines.append(
            f"| [`{config}`]({config}) | {_cell(record['source'])} | {len(record['values'])} | "
            f"{'; '.join(deviations) or 'none'} |"
        )
    return "\n".join(lines)


def render_table(records: dict[str, dict[str, Any]]) -> str:
    """Markdown: one section per config, one row per recorded key."""
    lines = []
    for config, record in records.items():
        lines += [
            f"#### `{config}`",
            "",
            f"Source: {record['source']}. Record: `{record['record']}`.",
            "",
            "| key | source | ours | where | deviation |",
            "|---|---|---|---|---|",
        ]
        for key, entry in record["values"].items():
            ours = _cell(expected(entry)) if "ours" in entry else "="
            lines.append(
                f"| `{key}` | {_cell(entry['value'])} | {ours} | {_cell(entry['source'])} | "
                f"{_cell(entry.get('deviation', ''))} |"
            )
        lines.append("")
    return "\n".join(lines)
