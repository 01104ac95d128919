"""Captions to token ids with open_clip's bundled BPE tokenizer, and CLIP's prompt templates.

open_clip (the optional extra ``lightning-ssl[clip]``) ships its BPE vocabulary inside the
package, so tokenizing works offline; it is imported on first use only.

Examples:
    >>> tokenize(["a photo of a dog."], context_length=16).shape  # doctest: +SKIP
    torch.Size([1, 16])
    >>> fill_templates(["a photo of a {}."], ["beagle"])
    ['a photo of a beagle.']
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from torch import Tensor

INSTALL_HINT = 'CLIP needs open_clip: pip install "lightning-ssl[clip]" (or open_clip_torch)'

#: Captions made from a class name for training on labelled images (demo and tests): a few
#: of CLIP's ImageNet prompts (Radford et al., 2021, ``notebooks/Prompt_Engineering``).
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of the {}.",
    "a good photo of the {}.",
    "a low resolution photo of a {}.",
    "a photo of the small {}.",
)

#: The 7-prompt ensemble CLIP's notebook selected for ImageNet zero-shot classification.
ZERO_SHOT_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def require_open_clip() -> Any:
    """The ``open_clip`` module, or one ``ImportError`` naming the extra to install."""
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return open_clip


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int) -> Any:
    from_package = require_open_clip().tokenizer.SimpleTokenizer
    return from_package(context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int = 77) -> Tensor:
    """``(len(texts), context_length)`` int64 token ids (start, BPE, end; zero-padded,
    truncated to ``context_length`` with the end token kept)."""
    if context_length < 3:
        raise ValueError(f"context_length must be >= 3, got {context_length}")
    return _tokenizer(context_length)(list(texts))


def fill_templates(templates: Sequence[str], names: Sequence[str]) -> list[str]:
    """Every template filled with every name, templates varying fastest within a name."""
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"a prompt template needs exactly one '{{}}', got {template!r}")
    return [template.format(name) for name in names for template in templates]
