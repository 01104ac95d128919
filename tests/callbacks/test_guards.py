import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_ssl.callbacks import NonFiniteLossError
from lightning_ssl.methods import SimCLR
from tests.methods.helpers import SyntheticViews, quick_trainer


class NaNAtStep3(SimCLR):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        if self.global_step == 3:
            out["loss"] = out["loss"] * float("nan")
        return out


def test_nan_loss_stops_before_the_step_and_keeps_the_last_checkpoint(tmp_path):
    data = SyntheticViews(n=64)
    model = NaNAtStep3(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16, **data.link())
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    trainer = quick_trainer(max_steps=10, callbacks=[ckpt], enable_checkpointing=True)
    with pytest.raises(NonFiniteLossError, match=r"at global step 3 \(epoch 0, batch 3\)"):
        trainer.fit(model, data)
    # No optimizer step was taken with the NaN loss, and last.ckpt is the step-3 state.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert state["global_step"] == 3
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )
    for name, param in model.named_parameters():
        assert torch.equal(state["state_dict"][name], param.detach()), name


def test_deferred_check_names_the_first_bad_step_and_refuses_later_checkpoints(tmp_path):
    """``check_every_n_steps=3``: the NaN of step 3 would be read at step 5, but the step
    checkpoint after step 3 reads it first and is refused; the one before it is kept."""
    from lightning_ssl.callbacks import NonFiniteLossGuard

    data = SyntheticViews(n=64)
    model = NaNAtStep3(backbone="timm:test_resnet", proj_hidden_dim=32, proj_dim=16, **data.link())
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=1, save_top_k=0)
    guard = NonFiniteLossGuard(check_every_n_steps=3)
    trainer = quick_trainer(max_steps=10, callbacks=[ckpt, guard], enable_checkpointing=True)
    with pytest.raises(NonFiniteLossError, match=r"at global step 3 \(found at a deferred"):
        trainer.fit(model, data)
    assert [c for c in trainer.callbacks if isinstance(c, NonFiniteLossGuard)] == [guard]
    state = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert state["global_step"] == 3  # the state before the bad step's update
    assert trainer.global_step == 4  # the bad update happened in memory, not on disk
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )
