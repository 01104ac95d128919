"""Validated values (issue 10, failure 8): every numeric argument of every method is checked when
the method is built, with a message naming the class, the argument and the value."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from lightning_ssl import callbacks, data, methods
from lightning_ssl.validation import InvalidValueError, check_trainer
from tests.cli_run import lightning_ssl_in_process

REPO = Path(__file__).resolve().parents[1]
METHODS = [getattr(methods, n) for n in methods.__all__ if n != "SSLMethod"]


def _numeric_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """Numeric ``__init__`` arguments of ``cls`` and the bases its ``**kwargs`` reach."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or not issubclass(klass, methods.SSLMethod):
            continue
        for name, param in inspect.signature(klass.__init__).parameters.items():
            default = param.default
            numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
            if numeric or "float" in str(param.annotation) or "int" in str(param.annotation):
                found.setdefault(name, param)
    return found


SWEEP = [(cls, name) for cls in METHODS for name in _numeric_arguments(cls)]


@pytest.mark.parametrize(("cls", "name"), SWEEP, ids=lambda x: getattr(x, "__name__", x))
def test_each_numeric_argument_of_each_method_refuses_a_bad_value(cls, name):
    """-1 is outside every numeric domain here (sizes, rates, temperatures, coefficients)."""
    with pytest.raises(InvalidValueError, match=rf"{cls.__name__}: {name} must be .*, got -1"):
        cls(backbone="timm:test_resnet", **{name: -1})


@pytest.mark.parametrize(
    ("cls", "name", "value"),
    [
        (methods.SimCLR, "temperature", 1e-9),  # issue 10: trained silently
        (methods.SimCLR, "proj_dim", 0),
        (methods.DINO, "warmup_epochs", -1.0),
        (methods.BYOL, "tau_base", 1.5),
        (methods.MoCo, "lr", float("nan")),
    ],
)
def test_the_values_the_red_team_found_are_refused(cls, name, value):
    with pytest.raises(InvalidValueError, match=rf"{name} must be"):
        cls(backbone="timm:test_resnet", **{name: value})


def test_trainer_accumulation_zero_is_named_not_a_zero_division():
    with pytest.raises(InvalidValueError, match="accumulate_grad_batches must be an integer >= 1"):
        check_trainer(0)


@pytest.mark.parametrize(
    "arg",
    ["--model.init_args.temperature=-0.1", "--trainer.accumulate_grad_batches=0"],
)
def test_the_cli_prints_one_clear_line(arg, cifar10_dir, tmp_path):
    result = lightning_ssl_in_process(
        "fit", f"--config={REPO / 'configs/simclr/cifar10.yaml'}",
        f"--data.init_args.data_dir={cifar10_dir}", "--trainer.accelerator=cpu", arg,
        cwd=tmp_path, env={"WANDB_MODE": "disabled"},
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "lightning-ssl: error:" in line]
    assert len(errors) == 1 and arg.split(".")[-1].split("=")[0] in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def _numeric_defaults(cls: type) -> list[str]:
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [  # any integer seeds a generator: ``seed`` has no domain to check
        p.name
        for p in parameters
        if isinstance(p.default, (int, float))
        and not isinstance(p.default, bool)
        and p.name != "seed"
    ]


CALLBACKS_AND_DATA = [
    (callbacks.OnlineLinearProbe, {}),
    (callbacks.KNNMonitor, {}),
    (callbacks.EmbeddingPlot, {"method": "pca"}),
    (callbacks.CollapseMonitor, {}),
    (callbacks.NonFiniteLossGuard, {}),
]


@pytest.mark.parametrize(
    ("cls", "name", "kwargs"),
    [(cls, name, kw) for cls, kw in CALLBACKS_AND_DATA for name in _numeric_defaults(cls)],
    ids=lambda x: getattr(x, "__name__", x) if not isinstance(x, dict) else "",
)
def test_every_numeric_argument_of_a_callback_refuses_a_negative_value(cls, name, kwargs):
    with pytest.raises(ValueError, match=name):
        cls(**{**kwargs, name: -1})


@pytest.mark.parametrize("name", _numeric_defaults(data.SSLDataModule))
def test_every_numeric_argument_of_a_datamodule_refuses_a_negative_value(name, tmp_path):
    with pytest.raises(ValueError, match=name):
        data.CIFAR10DataModule(str(tmp_path), **{name: -1})
