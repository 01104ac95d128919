"""Each LARS preset against its source's update rule, written out here from the source.

Every reference below is a transcription of the cited lines (parameter loop, trust ratio,
weight decay, momentum); our optimizer must reproduce it to 1e-6 over several steps with a
changing learning rate (warm-up), on random tensors of the shapes of a conv layer, a linear
layer, a BN weight and a bias.
"""

from __future__ import annotations

import pytest
import torch

from lightning_ssl.lars import LARS, LARS_PRESETS
from lightning_ssl.optim import parameter_groups

SHAPES = {"conv.weight": (8, 4, 3, 3), "fc.weight": (6, 8), "bn.weight": (8,), "fc.bias": (6,)}
LRS = (0.0, 0.4, 0.8, 1.2, 0.9)  # from 0 like a warm-up; 0.0 exercises LARC's 1/lr
WEIGHT_DECAY, MOMENTUM = 1e-4, 0.9


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x)


def simclr_tf(w, g, state, lr, wd, adapt, decay, eta=1e-3):
    """google-research/simclr lars_optimizer.py:98-118 (classic_momentum=True, no nesterov)."""
    if decay:  # :98-99 _use_weight_decay
        g = g + wd * w
    trust = torch.tensor(1.0, dtype=torch.float64)
    if adapt:  # :103-110
        w_norm, g_norm = _norm(w), _norm(g)
        if w_norm > 0 and g_norm > 0:
            trust = eta * w_norm / g_norm
    v = MOMENTUM * state.get("v", torch.zeros_like(w)) + lr * trust * g  # :111-113
    state["v"] = v
    return w - v  # :117-118


def optax_byol(w, g, state, lr, wd, adapt, decay, eta=1e-3):
    """deepmind-research byol/utils/optimizers.py: add_weight_decay :133-135, scale_by_lars
    :91-102, optax.scale(-lr) :187. The same rule as barlowtwins main.py:245-263, vicreg
    main_vicreg.py:275-299 and moco-v3 moco/optimizer.py:27-43 (torch loops of it)."""
    if decay:
        g = g + wd * w
    if adapt:
        w_norm, u_norm = _norm(w), _norm(g)
        g = g * (eta * w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
    mu = MOMENTUM * state.get("mu", torch.zeros_like(w)) + g
    state["mu"] = mu
    return w - lr * mu


def solo_learn(w, g, state, lr, wd, adapt, decay, eta=0.02, clip=True, eps=1e-8):
    """vturrisi/solo-learn solo/utils/lars.py:131-165 (exclude_bias_n_norm -> adapt=False for
    1-d parameters; `decay` is ignored: the source decays only inside the adapted branch).
    NVIDIA/apex apex/parallel/LARC.py LARC.step is the same rule (SwAV: clip=False, eta 1e-3,
    every parameter adapted)."""
    d = g
    w_norm, g_norm = _norm(w), _norm(g)
    if adapt and w_norm != 0 and g_norm != 0:  # :140-141
        lars_lr = eta * w_norm / (g_norm + w_norm * wd + eps)  # :142-143
        if clip:  # :146-147 (lr 0: inf -> min(., 1) = 1)
            lars_lr = min(lars_lr / lr, 1) if lr > 0 else 1.0
        d = (d + wd * w) * lars_lr  # :149-150
    if "buf" not in state:  # :155-159
        state["buf"] = d.clone()
    else:
        state["buf"] = MOMENTUM * state["buf"] + d
    return w - lr * state["buf"]  # :165


def swav_larc(w, g, state, lr, wd, adapt, decay):
    return solo_learn(w, g, state, lr, wd, adapt, decay, eta=1e-3, clip=False)


REFERENCES = {
    "simclr": simclr_tf,
    "byol": optax_byol,
    "barlow_twins": optax_byol,
    "vicreg": optax_byol,
    "mocov3": optax_byol,
    "solo_learn": solo_learn,
    "swav": swav_larc,
}


@pytest.mark.parametrize("preset", sorted(LARS_PRESETS))
def test_lars_preset_equals_its_source_update_rule(preset):
    spec = LARS_PRESETS[preset]
    torch.manual_seed(0)
    params = {n: torch.nn.Parameter(torch.randn(s)) for n, s in SHAPES.items()}
    groups = parameter_groups(
        params.items(),
        WEIGHT_DECAY,
        decay_bias_and_norm=spec.decay_bias_and_norm,
        adapt_bias_and_norm=spec.adapt_bias_and_norm,
    )
    opt = LARS(groups, lr=LRS[0], momentum=MOMENTUM, **spec.optimizer_options())
    reference = {n: p.detach().double().clone() for n, p in params.items()}
    states: dict[str, dict] = {n: {} for n in params}
    for lr in LRS:
        scales = {n: 10 ** torch.empty(1).uniform_(-3, 1) for n in SHAPES}  # ||g|| << or >> ||w||
        grads = {n: torch.randn(s) * scales[n] for n, s in SHAPES.items()}
        for name, p in params.items():
            p.grad = grads[name].clone()
            one_d = p.ndim <= 1
            reference[name] = REFERENCES[preset](
                reference[name],
                grads[name].double(),
                states[name],
                lr,
                WEIGHT_DECAY,
                adapt=spec.adapt_bias_and_norm or not one_d,
                decay=spec.decay_bias_and_norm or not one_d,
            )
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        for name, p in params.items():
            torch.testing.assert_close(p.detach().double(), reference[name], rtol=1e-6, atol=1e-6)


def test_solo_learn_step_is_about_50x_the_old_default_on_a_weight():
    """The review's measurement in miniature: eta 0.02 with clipping vs eta 1e-3 unclipped."""
    steps = {}
    for preset in ("solo_learn", "byol"):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(64, 64) * 0.05)
        w.grad = torch.randn(64, 64) * 0.01
        before = w.detach().clone()
        LARS([w], lr=0.4, momentum=0.0, **LARS_PRESETS[preset].optimizer_options()).step()
        steps[preset] = float(_norm(w.detach() - before))
    # eta ||w||/||g|| < lr here, so solo steps eta_solo * r and we stepped lr * eta_byol * r:
    # 0.02 / (0.4 * 0.001) = 50.
    assert steps["solo_learn"] / steps["byol"] == pytest.approx(50.0, rel=1e-4)
