"""LARS / LARC with the options that tell the sources' optimizers apart, and their presets.

The self-supervised sources all call their optimizer "LARS" but differ in four places, and each
one changes the step by a large factor (solo-learn's ``eta = 0.02`` with clipping moves a ResNet-18
weight ~50x further than ``eta = 0.001`` without):

* ``eta``: the trust coefficient, ``local_lr = eta * ||w|| / ||.||``;
* ``trust_norm``: the norm under ``||w||``: of the decayed update ``||g + wd w||`` (SimCLR's TF
  code, BYOL, Barlow Twins, VICReg, MoCo v3) or ``||g|| + wd ||w|| + eps`` (NVIDIA apex's LARC as
  SwAV uses it, solo-learn's LARS). The LARC form also decays a parameter only where it adapts it;
* ``clip``: LARC's clipping, a step of ``min(local_lr, lr)`` instead of ``local_lr * lr``;
* ``momentum_style``: ``"torch"`` (``v = m v + d; w -= lr v``) or ``"classic"`` (SimCLR's TF
  code: ``v = m v + lr d; w -= v``, so a changing lr does not rescale the past updates).

Whether biases and normalisation weights (parameters with at most one dimension) are adapted and
decayed is a property of each parameter group (``lars_adapt`` and ``weight_decay``), set by
:func:`lightning_ssl.optim.parameter_groups`.

Examples:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(4, 4))
    >>> opt = LARS([w], lr=1.0, momentum=0.0, **LARS_PRESETS["solo_learn"].optimizer_options())
    >>> w.grad = torch.full((4, 4), 10.0)
    >>> opt.step()
    >>> round(float(w[0, 0].detach()), 4)  # the step is min(0.02 * 4 / 40, lr) * 10 = 0.02
    0.98
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

TrustNorm = Literal["update", "grad_plus_decay"]
MomentumStyle = Literal["torch", "classic"]
#: What torch's multi-tensor (``_foreach``) operations take and return.
Tensors = list[Tensor] | tuple[Tensor, ...]
LarsPresetName = Literal["simclr", "byol", "barlow_twins", "vicreg", "mocov3", "solo_learn", "swav"]


@dataclass(frozen=True)
class LarsPreset:
    """One source's LARS: its update rule and which parameters it adapts and decays.

    ``adapt_bias_and_norm`` / ``decay_bias_and_norm`` are what the source does to parameters
    with at most one dimension; a config sets them through the method's arguments of the same
    name, and ``tests/test_recipes.py`` checks that they agree with the preset the recipe names.
    """

    eta: float
    clip: bool
    trust_norm: TrustNorm
    momentum_style: MomentumStyle
    adapt_bias_and_norm: bool
    decay_bias_and_norm: bool
    eps: float
    source: str

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`LARS` for this preset."""
        return {
            "eta": self.eta,
            "clip": self.clip,
            "trust_norm": self.trust_norm,
            "momentum_style": self.momentum_style,
            "eps": self.eps,
        }


_DECAYED_UPDATE: dict[str, Any] = {"trust_norm": "update", "clip": False, "eps": 0.0, "eta": 1e-3}
LARS_PRESETS: dict[str, LarsPreset] = {
    # exclude_from_weight_decay=['batch_normalization', 'bias', ...] (also layer adaptation).
    "simclr": LarsPreset(
        **_DECAYED_UPDATE,
        momentum_style="classic",
        adapt_bias_and_norm=False,
        decay_bias_and_norm=False,
        source="google-research/simclr lars_optimizer.py:98-118, model_util.py:95-100",
    ),
    "byol": LarsPreset(
        **_DECAYED_UPDATE,
        momentum_style="torch",
        adapt_bias_and_norm=False,
        decay_bias_and_norm=False,
        source="deepmind/deepmind-research byol/utils/optimizers.py:87-103,133-135,182-187; "
        "byol/byol_experiment.py:191-194; byol/configs/byol.py:59",
    ),
    "barlow_twins": LarsPreset(
        **_DECAYED_UPDATE,
        momentum_style="torch",
        adapt_bias_and_norm=False,
        decay_bias_and_norm=False,
        source="facebookresearch/barlowtwins main.py:99-101,224-263",
    ),
    "vicreg": LarsPreset(
        **_DECAYED_UPDATE,
        momentum_style="torch",
        adapt_bias_and_norm=False,
        decay_bias_and_norm=False,
        source="facebookresearch/vicreg main_vicreg.py:109-115,235-237,245-299",
    ),
    "mocov3": LarsPreset(
        **_DECAYED_UPDATE,
        momentum_style="torch",
        adapt_bias_and_norm=False,
        decay_bias_and_norm=False,
        source="facebookresearch/moco-v3 moco/optimizer.py:10-43",
    ),
    # solo-learn's LARS decays a parameter only inside its adaptation branch, so with
    # exclude_bias_n_norm: True biases/norms get neither (its exclude_bias_n_norm_wd is moot).
    "solo_learn": LarsPreset(
        eta=0.02,
        clip=True,
        trust_norm="grad_plus_decay",
        momentum_style="torch",
        adapt_bias_and_norm=False,
        decay_bias_and_norm=False,
        eps=1e-8,
        source="vturrisi/solo-learn solo/utils/lars.py:124-165; scripts/pretrain/cifar/*.yaml "
        "optimizer.kwargs {clip_lr: True, eta: 0.02, exclude_bias_n_norm: True}",
    ),
    # SGD(model.parameters(), weight_decay=wd) wrapped in apex LARC(trust 0.001, clip=False):
    # every parameter, biases and BN included, is decayed and adapted.
    "swav": LarsPreset(
        eta=1e-3,
        clip=False,
        trust_norm="grad_plus_decay",
        momentum_style="torch",
        adapt_bias_and_norm=True,
        decay_bias_and_norm=True,
        eps=1e-8,
        source="facebookresearch/swav main_swav.py:171-177; NVIDIA/apex apex/parallel/LARC.py "
        "LARC.step",
    ),
}


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling, in each source's variant.

    Per parameter ``w`` with gradient ``g`` and group weight decay ``wd``:

    * ``trust_norm="update"``: ``d = g + wd w``; if adapted, ``d *= eta ||w|| / ||d||``
      (1 where a norm is 0);
    * ``trust_norm="grad_plus_decay"``: if adapted and ``||w||, ||g|| > 0``,
      ``d = (g + wd w) * eta ||w|| / (||g|| + wd ||w|| + eps)``, else ``d = g``;
    * ``clip=True`` replaces the trust ratio ``q`` by ``min(q / lr, 1)`` (a step of
      ``min(q, lr)``);
    * then momentum in ``momentum_style``.

    A group is adapted unless it sets ``lars_adapt=False``.

    Args:
        params: parameters or groups (keys ``lr``, ``weight_decay``, ``lars_adapt`` ...).
        lr: learning rate.
        momentum: momentum coefficient.
        weight_decay: default L2 coefficient of the groups.
        eta: trust coefficient.
        clip: LARC clipping.
        trust_norm: ``"update"`` or ``"grad_plus_decay"`` (see above).
        momentum_style: ``"torch"`` or ``"classic"``.
        eps: added to the LARC denominator.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
        clip: bool = False,
        trust_norm: TrustNorm = "update",
        momentum_style: MomentumStyle = "torch",
        eps: float = 0.0,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS needs lr, momentum, weight_decay >= 0 and eta > 0, got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
            )
        if trust_norm not in ("update", "grad_plus_decay"):
            raise ValueError(f"trust_norm: 'update' or 'grad_plus_decay', not {trust_norm!r}")
        if momentum_style not in ("torch", "classic"):
            raise ValueError(f"momentum_style: 'torch' or 'classic', not {momentum_style!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            clip=clip,
            trust_norm=trust_norm,
            momentum_style=momentum_style,
            eps=eps,
            lars_adapt=True,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                grads = [p.grad for p in params]
                self._apply(group, params, self._directions(group, params, grads))
        return loss

    @staticmethod
    def _trust(group: dict[str, Any], ratio: Tensor) -> Tensor:
        if not group["clip"]:
            return ratio
        if group["lr"] <= 0:  # the sources' ratio / 0 = inf, clipped to 1
            return torch.ones_like(ratio)
        return torch.clamp(ratio / group["lr"], max=1.0)  # LARC: a step of min(ratio, lr)

    def _directions(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> Tensors:
        """The decayed, trust-scaled update of every parameter of ``group`` (multi-tensor ops,
        no host synchronisation)."""
        wd, eta, larc = group["weight_decay"], group["eta"], group["trust_norm"] != "update"
        if not group["lars_adapt"]:  # the LARC form decays only where it adapts
            return torch._foreach_add(grads, params, alpha=wd) if wd and not larc else grads
        w_norm = torch.stack(torch._foreach_norm(params))
        g_norm = torch.stack(torch._foreach_norm(grads))
        if not larc:
            d = torch._foreach_add(grads, params, alpha=wd) if wd else grads
            u_norm = torch.stack(torch._foreach_norm(d)) if wd else g_norm
            ratio = torch.where((w_norm > 0) & (u_norm > 0), eta * w_norm / u_norm, 1.0)
            return torch._foreach_mul(d, list(self._trust(group, ratio).unbind()))
        adapted = (w_norm != 0) & (g_norm != 0)
        ratio = self._trust(group, eta * w_norm / (g_norm + w_norm * wd + group["eps"]))
        ratio = torch.where(adapted, ratio, 1.0)
        decay = torch.where(adapted, wd, 0.0).to(w_norm.dtype)
        d = torch._foreach_add(grads, torch._foreach_mul(params, list(decay.unbind())))
        return torch._foreach_mul(d, list(ratio.unbind()))

    def _apply(self, group: dict[str, Any], params: list[Tensor], d: Tensors) -> None:
        lr, momentum = group["lr"], group["momentum"]
        if momentum == 0:
            torch._foreach_add_(params, d, alpha=-lr)
            return
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(state["momentum_buffer"])
        classic = group["momentum_style"] == "classic"
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, d, alpha=lr if classic else 1.0)
        torch._foreach_add_(params, bufs, alpha=-1.0 if classic else -lr)
