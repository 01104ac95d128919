"""The check of the methods that take one view per image (MAE, I-JEPA, CPC v2)."""

from __future__ import annotations


def require_one_view(method: str, uses: str, num_global_crops: int, augmentation: str) -> None:
    """Refuse data that makes ``num_global_crops`` != 1 views per image, naming the method,
    what it does with its one view and the data augmentation preset that makes one.

    Examples:
        >>> require_one_view("MAE", "reconstructs one view per image", 1, "mae")  # accepted
        >>> require_one_view("MAE", "reconstructs one view per image", 2, "mae")
        Traceback (most recent call last):
        ...
        ValueError: MAE reconstructs one view per image but the data makes 2; set the data's augmentation: mae
    """  # noqa: E501
    if num_global_crops != 1:
        raise ValueError(
            f"{method} {uses} but the data makes {num_global_crops}; "
            f"set the data's augmentation: {augmentation}"
        )
