"""The papers' augmentation recipes as view groups: :func:`preset` and its names, :data:`PRESETS`.

A recipe is one small function returning its global view groups, the colour jitter of its local
crops and their crop scale, with its source in the docstring; adding a preset is one such
function and an entry in ``_RECIPES``.

Examples:
    >>> [(g.num, g.size) for g in preset("swav", 224, num_local=6)]
    [(2, 224), (6, 96)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TypedDict

from lightning_ssl.data.transforms import ViewGroup

#: Crops of at most this many pixels get no Gaussian blur in the presets (SimCLR drops blur on
#: CIFAR; a 10%-of-the-crop kernel is 3 px there and only smears the few pixels there are).
BLUR_MIN_SIZE = 64


class _Jitter(TypedDict):
    """Colour jitter strengths, keyword arguments of :class:`ViewGroup`."""

    brightness: float
    contrast: float
    saturation: float
    hue: float


#: Colour jitter strengths of BYOL (table 6), also DINO's; MoCo v2's differs in saturation.
_BYOL_JITTER: _Jitter = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
#: SwAV's local crop scale, used by every preset but DINO when local crops are asked for.
_SWAV_LOCAL_SCALE: tuple[float, float] = (0.05, 0.14)
#: A preset's global view groups, the colour jitter of its local crops and their crop scale.
_Recipe = tuple[list[ViewGroup], _Jitter, tuple[float, float]]


def _strong_jitter(s: float) -> _Jitter:
    """SimCLR's colour jitter of strength ``s``: (0.8s, 0.8s, 0.8s, 0.2s)."""
    return {"brightness": 0.8 * s, "contrast": 0.8 * s, "saturation": 0.8 * s, "hue": 0.2 * s}


def _simclr(size: int, num_local: int) -> _Recipe:
    """SimCLR (Chen et al., 2020, appendix A): 2 views, scale (0.08, 1), jitter strength
    s = 1.0 with p 0.8 (s = 0.5 for images <= 64 px: the CIFAR-10 recipe, appendix B.9),
    grayscale 0.2, blur 0.5."""
    jitter = _strong_jitter(0.5 if size <= BLUR_MIN_SIZE else 1.0)
    return [ViewGroup(2, size, (0.08, 1.0), blur_prob=0.5, **jitter)], jitter, _SWAV_LOCAL_SCALE


def _swav(size: int, num_local: int) -> _Recipe:
    """SwAV (Caron et al., 2020, multi-crop): 2 globals of scale (0.14, 1), locals of scale
    (0.05, 0.14), jitter (0.8, 0.8, 0.8, 0.2) p 0.8, grayscale 0.2, blur 0.5."""
    jitter = _strong_jitter(1.0)
    return [ViewGroup(2, size, (0.14, 1.0), blur_prob=0.5, **jitter)], jitter, _SWAV_LOCAL_SCALE


def _moco(size: int, num_local: int) -> _Recipe:
    """MoCo v2 (Chen et al., 2020, ``aug_plus`` of the official code): 2 views, scale (0.2, 1),
    jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2, blur 0.5."""
    jitter: _Jitter = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
    return [ViewGroup(2, size, (0.2, 1.0), blur_prob=0.5, **jitter)], jitter, _SWAV_LOCAL_SCALE


def _instdisc(size: int, num_local: int) -> _Recipe:
    """InstDisc (Wu et al., 2018, official ``main.py``): 1 view, scale (0.2, 1), jitter
    (0.4, 0.4, 0.4, 0.4) always, grayscale 0.2, flip, no blur."""
    jitter: _Jitter = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.4}
    view = ViewGroup(1, size, (0.2, 1.0), jitter_prob=1.0, blur_prob=0.0, **jitter)
    return [view], jitter, _SWAV_LOCAL_SCALE


def _asymmetric(size: int, scale: tuple[float, float]) -> list[ViewGroup]:
    """BYOL's two views: view 1 blur 1.0 solarize 0.0, view 2 blur 0.1 solarize 0.2."""
    return [
        ViewGroup(1, size, scale, blur_prob=1.0, **_BYOL_JITTER),
        ViewGroup(1, size, scale, blur_prob=0.1, solarize_prob=0.2, **_BYOL_JITTER),
    ]


def _byol(size: int, num_local: int) -> _Recipe:
    """BYOL (Grill et al., 2020, table 6): two asymmetric views, scale (0.08, 1), jitter
    (0.4, 0.4, 0.2, 0.1) p 0.8, grayscale 0.2."""
    return _asymmetric(size, (0.08, 1.0)), _BYOL_JITTER, _SWAV_LOCAL_SCALE


def _dino(size: int, num_local: int) -> _Recipe:
    """DINO (Caron et al., 2021, ``main_dino.py``): BYOL's asymmetric globals with scale (0.4, 1)
    and local crops of scale (0.05, 0.4), blur 0.5. Without local crops the globals use scale
    (0.14, 1), as the DINO code recommends."""
    scale = (0.4, 1.0) if num_local else (0.14, 1.0)
    return _asymmetric(size, scale), _BYOL_JITTER, (0.05, 0.4)


def _ibot(size: int, num_local: int) -> _Recipe:
    """iBOT (Zhou et al., 2022, ``main_ibot.py`` ``DataAugmentationiBOT``, the README's ViT
    commands): DINO's asymmetric globals with scale (0.25, 1) and local crops of scale
    (0.05, 0.25), blur 0.5. Without local crops the globals use scale (0.14, 1), the code's
    default."""
    scale = (0.25, 1.0) if num_local else (0.14, 1.0)
    return _asymmetric(size, scale), _BYOL_JITTER, (0.05, 0.25)


def _mae(size: int, num_local: int) -> _Recipe:
    """MAE (He et al., 2022, ``main_pretrain.py``): one view, scale (0.2, 1), horizontal flip,
    no colour augmentation (the official crop resizes bicubically, ours bilinearly)."""
    view = ViewGroup(1, size, (0.2, 1.0), jitter_prob=0.0, grayscale_prob=0.0)
    no_jitter: _Jitter = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    return [view], no_jitter, _SWAV_LOCAL_SCALE  # MAE has no local crops


def _ijepa(size: int, num_local: int) -> _Recipe:
    """I-JEPA (Assran et al., 2023, ``configs/in1k_vith14_ep300.yaml``): one view, scale
    (0.3, 1), no flip, no colour augmentation, no blur."""
    view = ViewGroup(1, size, (0.3, 1.0), flip_prob=0.0, jitter_prob=0.0, grayscale_prob=0.0)
    no_jitter: _Jitter = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    return [view], no_jitter, _SWAV_LOCAL_SCALE  # I-JEPA has no local crops
def _cpc(size: int, num_local: int) -> _Recipe:
    """CPC v2 (Hénaff et al., 2020, sec. 4.1): one view, a random crop (scale (0.2, 1), ours)
    and a horizontal flip; the colour augmentation is per patch, in the method (colour dropping),
    not per image."""
    no_jitter: _Jitter = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0}
    view = ViewGroup(
        1, size, (0.2, 1.0), jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0, **no_jitter
    )
    return [view], no_jitter, _SWAV_LOCAL_SCALE  # CPC has no local crops


_RECIPES: dict[str, Callable[[int, int], _Recipe]] = {
    "simclr": _simclr,
    "moco": _moco,
    "byol": _byol,
    "dino": _dino,
    "swav": _swav,
    "mae": _mae,
    "instdisc": _instdisc,
    "ijepa": _ijepa,
    "ibot": _ibot,
    "cpc": _cpc,
}
PRESETS = (*_RECIPES, "none")


def preset(
    name: str, global_size: int, local_size: int | None = None, num_local: int = 0
) -> list[ViewGroup]:
    """The view groups of a paper's augmentation recipe.

    ``simclr``, ``moco``, ``byol``, ``dino``, ``swav`` and ``mae`` follow each paper (crop
    scale, colour jitter as (brightness, contrast, saturation, hue) with its probability,
    grayscale, blur and solarisation probabilities: see ``_simclr`` ... in this module, with
    their sources);
    ``none`` makes 2 identical views, the centre square resized to ``global_size`` without
    augmentation (a sanity baseline, never with local crops).

    Blur is disabled for every crop of at most 64 px (:data:`BLUR_MIN_SIZE`), as SimCLR does on
    CIFAR. Local crops are appended only when ``num_local > 0``; ``simclr``, ``moco`` and ``byol``
    then use SwAV's local crops (scale (0.05, 0.14)) with the global colour augmentation.

    Args:
        name: One of ``simclr``, ``moco``, ``byol``, ``dino``, ``swav``, ``mae``, ``instdisc``,
            ``ijepa``, ``ibot``, ``cpc``, ``none``.
        global_size: Side of the global crops in pixels.
        local_size: Side of the local crops (default ``max(8, round(global_size * 96 / 224))``).
        num_local: Number of local crops.

    Returns:
        The view groups, global groups first.

    Examples:
        >>> [(g.num, g.size, g.scale) for g in preset("dino", 224, 96, num_local=8)]
        [(1, 224, (0.4, 1.0)), (1, 224, (0.4, 1.0)), (8, 96, (0.05, 0.4))]
    """
    if name not in PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; valid names: {', '.join(PRESETS)}")
    if num_local < 0:
        raise ValueError(f"num_local must be >= 0, got {num_local}")
    if name == "none":
        return [
            ViewGroup(
                2,
                global_size,
                (1.0, 1.0),
                (1.0, 1.0),
                flip_prob=0.0,
                jitter_prob=0.0,
                grayscale_prob=0.0,
            )
        ]
    groups, jitter, local_scale = _RECIPES[name](global_size, num_local)
    if num_local > 0:
        local_size = local_size or default_local_size(global_size)
        groups.append(
            ViewGroup(num_local, local_size, local_scale, blur_prob=0.5, local=True, **jitter)
        )
    return [replace(g, blur_prob=0.0) if g.size <= BLUR_MIN_SIZE else g for g in groups]


def default_local_size(global_size: int) -> int:
    """Local crop side scaled like 96 px locals for 224 px globals, at least 8 px.

    Examples:
        >>> default_local_size(224), default_local_size(32)
        (96, 14)
    """
    return max(8, round(global_size * 96 / 224))
