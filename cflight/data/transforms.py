"""Small image transforms shared by the datasets (tensors in [0, 1], ``[C, H, W]``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.transforms import functional as TF


def resize(image: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize a ``[C, H, W]`` image to ``size`` (square side or ``(H, W)``) with antialiased bilinear
    interpolation, clamped back to [0, 1]."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == hw:
        return image
    out = F.interpolate(image[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[0]
    return out.clamp_(0.0, 1.0)


def load_image(
    path: str, channels: int = 3, crop_size: int | None = None, image_size: int | None = None
) -> Tensor:
    """Read an image file as float32 ``[C, H, W]`` in [0, 1].

    Optionally centre-crops to ``crop_size`` first (e.g. 178 for CelebA), then resizes the shorter side to
    ``image_size`` and centre-crops to a square ``image_size``.
    """
    with Image.open(path) as im:
        im = im.convert("L" if channels == 1 else "RGB")
        if crop_size is not None:
            im = TF.center_crop(im, [crop_size, crop_size])
        if image_size is not None:
            im = TF.resize(im, image_size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
            im = TF.center_crop(im, [image_size, image_size])
        return TF.pil_to_tensor(im).to(torch.float32).div_(255.0)
