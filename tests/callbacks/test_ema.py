import copy
import math
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_ssl.callbacks.ema as ema_module
from lightning_ssl.callbacks.ema import EMA, ema_update_

BASE_TAU = 0.9


def _ema_rounding_bound(model, name: str, updates: int) -> float:
    """How far the callback's EMA (a lerp, ``t + (1 - tau)(s - t)``) and the hand-computed
    ``tau t + (1 - tau) s`` can differ in float32: per update each side rounds at most 4 times
    (the weight to float32, two products or a difference and a product, a sum), each by at most
    ``2^-24`` of the largest value involved, and an EMA shrinks earlier differences
    (``tau < 1``), so ``updates * 8 * 2^-24 * max|x|`` over the student's trajectory."""
    values = [model.at_start["student"][name]] + [s[name] for _, s, _ in model.record]
    return updates * 8 * 2.0**-24 * max(float(v.abs().max()) for v in values)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class TinyMethod(pl.LightningModule):
    """Linear + BatchNorm student, a perturbed deep copy as teacher, SGD with momentum."""

    def __init__(self, seed: int = 0, schedule: str = "cosine") -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.student = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
        self.teacher = copy.deepcopy(self.student)
        with torch.no_grad():  # the callback must make it an exact copy at the start
            for p in self.teacher.parameters():
                p.add_(1.0)
        self.schedule = schedule
        self.at_start: dict[str, dict[str, torch.Tensor]] = {}
        self.record: list[tuple[int, dict, dict]] = []  # (global_step, student, teacher)

    def configure_callbacks(self):
        return [EMA(self.student, self.teacher, base_tau=BASE_TAU, schedule=self.schedule)]

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.student(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.student.parameters(), lr=0.1, momentum=0.9)

    def on_train_start(self):
        self.at_start = {"student": snapshot(self.student), "teacher": snapshot(self.teacher)}

    def on_train_batch_end(self, outputs, batch, batch_idx):  # runs after the callbacks' hook
        self.record.append(
            (self.trainer.global_step, snapshot(self.student), snapshot(self.teacher))
        )


class ListLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.taus: list[tuple[int, float]] = []

    name, version = "list", 0

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        if "train/ema_tau" in metrics:
            self.taus.append((step, float(metrics["train/ema_tau"])))


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g))
    return DataLoader(data, batch_size=2, shuffle=False)  # 8 batches = 4 optimizer steps


def trainer(**kwargs) -> pl.Trainer:
    defaults = dict(
        accelerator="cpu",
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    return pl.Trainer(**(defaults | kwargs))


def byol_tau(k: int, total: int) -> float:
    return 1 - (1 - BASE_TAU) * (math.cos(math.pi * k / total) + 1) / 2


def test_ema_update_is_the_formula():
    teacher, student = [torch.randn(5), torch.randn(2, 3)], [torch.randn(5), torch.randn(2, 3)]
    expected = [0.99 * t + 0.01 * s for t, s in zip(teacher, student, strict=True)]
    ema_update_(teacher, student, tau=0.99)
    for t, e in zip(teacher, expected, strict=True):
        torch.testing.assert_close(t, e)
    ema_update_(teacher, student, tau=0.0)  # tau 0: exact copy
    assert all(torch.equal(t, s) for t, s in zip(teacher, student, strict=True))


def test_tau_schedule_start_middle_end():
    student = nn.Linear(2, 2)
    ema = EMA(student, copy.deepcopy(student), base_tau=0.996, final_tau=1.0)
    ema.on_fit_start(SimpleNamespace(estimated_stepping_batches=100), None)
    assert ema.tau(0) == 0.996
    assert ema.tau(50) == pytest.approx(0.998)
    assert ema.tau(100) == 1.0 and ema.tau(150) == 1.0
    constant = EMA(student, copy.deepcopy(student), base_tau=0.99, schedule="constant")
    constant.on_fit_start(SimpleNamespace(estimated_stepping_batches=100), None)
    assert constant.tau(0) == constant.tau(70) == 0.99


def test_one_update_per_optimizer_step_matches_hand_computed_ema(monkeypatch):
    calls = []
    original = ema_module.ema_update_

    def counting_update(teacher, student, tau):
        calls.append(tau)
        original(teacher, student, tau)

    monkeypatch.setattr(ema_module, "ema_update_", counting_update)
    model = TinyMethod()
    trainer(max_steps=6).fit(model, loader())

    # Teacher == student exactly at the start, frozen.
    for name, value in model.at_start["student"].items():
        assert torch.equal(model.at_start["teacher"][name], value), name
    assert not any(p.requires_grad for p in model.teacher.parameters())

    # 12 batches, 6 optimizer steps (accumulation 2): 6 updates with tau_k, k = 0..5.
    assert len(model.record) == 12 and model.trainer.global_step == 6
    assert calls == pytest.approx([byol_tau(k, 6) for k in range(6)], abs=1e-15)

    # No optimizer step yet after the first batch: teacher untouched.
    step, _, teacher_after_first_batch = model.record[0]
    assert step == 0
    for name, value in model.at_start["teacher"].items():
        assert torch.equal(teacher_after_first_batch[name], value), name

    # Hand-computed EMA of the student trajectory, once per optimizer step.
    params = [n for n, _ in model.student.named_parameters()]
    teacher = {n: model.at_start["student"][n].clone() for n in params}
    last = 0
    for step, student, _ in model.record:
        if step > last:
            tau = byol_tau(step - 1, 6)
            teacher = {n: tau * teacher[n] + (1 - tau) * student[n] for n in params}
            last = step
    final = snapshot(model.teacher)
    for n in params:
        bound = _ema_rounding_bound(model, n, updates=last)
        torch.testing.assert_close(final[n], teacher[n], rtol=0, atol=bound)
        assert not torch.equal(final[n], model.student.state_dict()[n])  # really averaged

    # Buffers (BatchNorm statistics, num_batches_tracked) copied from the student.
    for name, buffer in model.student.named_buffers():
        assert torch.equal(final[name], buffer), name
    assert int(final["1.num_batches_tracked"]) == 12


class Crash(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_resume_is_equivalent_to_a_straight_run(tmp_path):
    straight, straight_log = TinyMethod(), ListLogger()
    trainer(max_epochs=2, logger=straight_log).fit(straight, loader())

    first, first_log = TinyMethod(), ListLogger()
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1)
    first_trainer = trainer(
        max_epochs=2, logger=first_log, callbacks=[ckpt, Crash()], enable_checkpointing=True
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        first_trainer.fit(first, loader())
    (path,) = tmp_path.glob("*.ckpt")
    assert first_trainer.global_step == 4

    resumed, resumed_log = TinyMethod(seed=123), ListLogger()  # weights come from the checkpoint
    trainer(max_epochs=2, logger=resumed_log).fit(resumed, loader(), ckpt_path=path)

    assert resumed.trainer.global_step == straight.trainer.global_step == 8
    expected, got = snapshot(straight.teacher), snapshot(resumed.teacher)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert len(straight_log.taus) == 8
    assert first_log.taus + resumed_log.taus == straight_log.taus
    assert straight_log.taus[0] == (0, pytest.approx(BASE_TAU))  # logged as float32


def test_state_dict_and_state_key():
    student = nn.Linear(2, 2)
    a = EMA(student, copy.deepcopy(student), name="ema")
    b = EMA(student, copy.deepcopy(student), name="ema_head")
    assert a.state_key != b.state_key and "ema_head" in b.state_key
    a._last_step = 7
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == {"last_update_step": 7}


def test_no_update_without_optimizer_step():
    student = nn.Linear(2, 2)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        teacher.weight.zero_()
    ema = EMA(student, teacher)
    ema.on_fit_start(SimpleNamespace(estimated_stepping_batches=10), None)
    module = SimpleNamespace(log=lambda *args, **kwargs: None)
    ema.on_train_batch_end(SimpleNamespace(global_step=0), module, None, None, 0)
    assert torch.count_nonzero(teacher.weight) == 0
    ema.on_train_batch_end(SimpleNamespace(global_step=1), module, None, None, 1)
    assert torch.count_nonzero(teacher.weight) > 0


def test_validation_errors():
    fake_trainer = SimpleNamespace(global_step=0)
    student = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    owner = nn.ModuleDict({"teacher": nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4))})
    with pytest.raises(ValueError, match="shape"):
        EMA(student, owner["teacher"]).setup(fake_trainer, owner, "fit")
    owner = nn.ModuleDict({"teacher": nn.Sequential(nn.Linear(2, 3))})
    with pytest.raises(ValueError, match=r"only in student \['1\.bias', '1\.weight'\]"):
        EMA(student, owner["teacher"]).setup(fake_trainer, owner, "fit")
    with pytest.raises(ValueError, match="submodule"):
        EMA(student, copy.deepcopy(student)).setup(fake_trainer, nn.Module(), "fit")
    with pytest.raises(ValueError, match="different"):
        EMA(student, student)
    with pytest.raises(ValueError, match="tau"):
        EMA(student, copy.deepcopy(student), base_tau=1.5)


class BufferMethod(TinyMethod):
    """TinyMethod whose EMA has a buffer policy; optionally the teacher runs in training mode."""

    def __init__(self, buffers: str, teacher_forward: bool) -> None:
        super().__init__()
        self.buffer_policy, self.teacher_forward = buffers, teacher_forward
        self.after_teacher_forward: list[dict[str, torch.Tensor]] = []

    def configure_callbacks(self):
        return [EMA(self.student, self.teacher, base_tau=BASE_TAU, buffers=self.buffer_policy)]

    def training_step(self, batch, batch_idx):
        if self.teacher_forward:  # like MoCo/BYOL/DINO: batch statistics, running stats update
            with torch.no_grad():
                self.teacher(batch[0])
            own = {k: v.clone() for k, v in self.teacher.named_buffers()}
            self.after_teacher_forward.append(own)
        return super().training_step(batch, batch_idx)


def teacher_buffers(record_entry) -> dict[str, torch.Tensor]:
    return {k: v for k, v in record_entry[2].items() if "running" in k or "num_batches" in k}


def test_buffers_copy_makes_the_teacher_statistics_the_students():
    model = BufferMethod("copy", teacher_forward=True)
    trainer(max_steps=4).fit(model, loader())
    for name, buffer in model.student.named_buffers():
        assert torch.equal(model.teacher.get_buffer(name), buffer), name


def test_buffers_leave_keeps_the_statistics_of_the_teachers_own_forward_passes():
    """Official MoCo/BYOL/DINO: the momentum update touches ``parameters()`` only."""
    model = BufferMethod("leave", teacher_forward=True)
    trainer(max_steps=4).fit(model, loader())
    assert len(model.record) == len(model.after_teacher_forward) == 8
    for entry, own in zip(model.record, model.after_teacher_forward, strict=True):
        assert {k: torch.equal(v, own[k]) for k, v in teacher_buffers(entry).items()} == {
            k: True for k in own
        }  # the callback left them as the teacher's forward wrote them
    final_teacher = model.teacher.get_buffer("1.running_mean")
    assert not torch.equal(final_teacher, model.student.get_buffer("1.running_mean"))
    assert not torch.equal(model.teacher[0].weight, model.student[0].weight)  # still averaged


def test_buffers_ema_averages_float_buffers_and_copies_integer_ones():
    model = BufferMethod("ema", teacher_forward=False)
    trainer(max_steps=4).fit(model, loader())
    names = ["1.running_mean", "1.running_var"]
    teacher = {n: model.at_start["student"][n].clone() for n in names}
    last = 0
    for step, student, _ in model.record:
        if step > last:
            tau = byol_tau(step - 1, 4)
            teacher = {n: tau * teacher[n] + (1 - tau) * student[n] for n in names}
            last = step
    for n in names:
        bound = _ema_rounding_bound(model, n, updates=last)
        torch.testing.assert_close(model.teacher.get_buffer(n), teacher[n], rtol=0, atol=bound)
        assert not torch.equal(model.teacher.get_buffer(n), model.student.get_buffer(n))
    assert int(model.teacher.get_buffer("1.num_batches_tracked")) == 8  # copied


def test_buffer_policy_is_checked():
    with pytest.raises(ValueError, match="buffers must be"):
        EMA(nn.Linear(2, 2), nn.Linear(2, 2), buffers="average")
