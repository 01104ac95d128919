"""benchmarks/ijepa_position_share.py on trained checkpoints: the share of each encoder's tokens
that is their per-position mean, read from a checkpoint as the CPU protocol writes it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightning_ssl.checkpoint import load_checkpoint
from lightning_ssl.methods import IJEPA
from lightning_ssl.nn.ijepa import patch_tokens
from tests.methods.test_ijepa import TINY

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "ijepa_position_share", REPO / "benchmarks/ijepa_position_share.py"
)
position_share = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(position_share)


def test_a_target_encoder_blind_to_content_is_all_position(tmp_path):
    torch.manual_seed(0)
    model = IJEPA(**TINY, ijepa_init=False)  # timm's: the CPU config's
    with torch.no_grad():  # the target encoder sees no pixels: its tokens are position only
        model.teacher.model.patch_embed.proj.weight.zero_()
    path = tmp_path / "last.ckpt"
    state = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    torch.save({**state, "lightning_ssl_method": "IJEPA", "epoch": 0}, path)
    images = torch.rand(16, 3, 32, 32)
    shares = position_share.trained_shares(load_checkpoint(path), images)
    assert shares["target"] == pytest.approx(1.0, abs=1e-6)
    with torch.no_grad():  # the context encoder, read back from the file, still sees the pixels
        tokens = patch_tokens(model.backbone.model, images)
    expected = position_share.position_share(F.layer_norm(tokens, tokens.shape[-1:]))
    assert shares["context"] == pytest.approx(expected, rel=1e-6) and expected < 0.99
