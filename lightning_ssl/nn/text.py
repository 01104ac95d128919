"""CLIP's text tower: open_clip's causal text transformer, pooled at the end-of-text token.

open_clip is the optional extra ``lightning-ssl[clip]``; it is imported when a tower is built.
"""

from __future__ import annotations

from torch import Tensor, nn

from lightning_ssl.data.tokenizer import require_open_clip

#: open_clip's BPE vocabulary size (``open_clip.tokenizer.SimpleTokenizer``).
VOCAB_SIZE = 49408


class TextTower(nn.Module):
    """Token ids ``(B, L)`` to pooled features ``(B, width)``: token and position embeddings, a
    causal transformer, layer norm, the features of the end-of-text token (CLIP section 2.4).

    Args:
        width: model width (CLIP: 512; the demo: 128).
        layers: transformer blocks (CLIP: 12).
        heads: attention heads (CLIP: 8; width / 64).
        context_length: longest token sequence (CLIP: 77).
        vocab_size: tokenizer vocabulary (open_clip's BPE: 49408).

    Examples:
        >>> tower = TextTower(width=64, layers=1, heads=2, context_length=16)  # doctest: +SKIP
        >>> tower(torch.randint(1, 100, (3, 16))).shape  # doctest: +SKIP
        torch.Size([3, 64])
    """

    def __init__(
        self,
        width: int = 512,
        layers: int = 12,
        heads: int = 8,
        context_length: int = 77,
        vocab_size: int = VOCAB_SIZE,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"text width {width} must be a multiple of text heads {heads}")
        transformer = require_open_clip().transformer.TextTransformer
        self.transformer = transformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            heads=heads,
            layers=layers,
            output_dim=None,  # no projection inside: CLIP's own projection follows
            proj_type="none",
        )
        self.dim, self.context_length = width, context_length

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.shape[1] != self.context_length:
            raise ValueError(
                f"captions of {tokens.shape[1]} tokens but the text tower takes "
                f"{self.context_length}: set data context_length = model context_length"
            )
        return self.transformer(tokens)
