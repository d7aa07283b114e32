"""``squares``: Ha & Bender's synthetic regression set (spec latent_and_regression §2.6), procedural.

64×64 RGB: a grey background (``colour_b``), a 12×12 grey frame at ``(pos_x, pos_y)`` and the 8×8 inner
square inside it with red ``colour_a`` (green = blue = 0); one Gaussian noise field (std 20 in pixel units)
is added to all parts, then the image is clipped and quantised to 8 bits. The regression ``target`` is
``colour_a / 255``; ``label`` is 1 when ``colour_a >= 128`` (upper half), else 0.

Designs: "factorial" (the training design: ``colour_a`` upper half on even indices, ``colour_b`` alternating
every 2, ``pos_x`` every 4 and ``pos_y`` every 8 indices, values uniform within the chosen halves) and the
315-image "mirror" validation grids "grid_lower" / "grid_upper" (3×3 positions × 5 inner colours × 7
backgrounds; an upper image shares its noise with its lower twin). Image ``i`` depends only on
``(seed, split, i)``.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import Dataset

from cflight.data import _checks

SIDE, FRAME, INNER, MAX_POS = 64, 12, 8, 52
_GRID = (
    np.linspace(0, MAX_POS, 3).astype(int),
    np.linspace(0, 127, 5).astype(int),
    np.linspace(0, 255, 7).astype(int),
)
GRID_SIZE = 3 * 3 * 5 * 7
_STREAMS = {"train": 0, "val": 1, "test": 2}


class SquaresDataset(Dataset):
    """The squares regression dataset as cflight dict samples (``image``, ``index``, ``label``, ``target``,
    ``mask`` ``[1, H, W]`` of the inner square, ``descriptors`` = ``colour_a``, ``colour_b`` (both /255),
    ``pos_x``, ``pos_y`` (frame corner / 64)).

    Args:
        length: number of images (default 16,000 for "factorial", all 315 for a grid).
        seed: dataset seed.
        split: "train", "val" or "test": independent random streams for the same seed.
        design: "factorial", "grid_lower" or "grid_upper".
        noise_std: noise std in pixel units (0..255), 20 in the paper.
    """

    descriptor_names = ["colour_a", "colour_b", "pos_x", "pos_y"]
    class_names = ["lower", "upper"]
    num_classes, in_channels, image_size = 2, 3, (SIDE, SIDE)

    def __init__(
        self,
        length: int | None = None,
        seed: int = 0,
        split: str = "train",
        design: str = "factorial",
        noise_std: float = 20.0,
    ) -> None:
        self.design = _checks.choice("design", design, ["factorial", "grid_lower", "grid_upper"])
        self.seed, self.split = int(seed), _checks.choice("split", split, _STREAMS)
        default = 16_000 if design == "factorial" else GRID_SIZE
        self.length = default if length is None else _checks.non_negative_int("length", length)
        if design != "factorial" and self.length > GRID_SIZE:
            raise ValueError(f"length must be at most {GRID_SIZE} for design={design!r}, got {length}")
        if not isinstance(noise_std, (int, float)) or noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.noise_std = float(noise_std)

    def __len__(self) -> int:
        return self.length

    def factors(self, i: int) -> tuple[int, int, int, int]:
        """``(colour_a, colour_b, pos_x, pos_y)`` of image ``i`` in pixel units."""
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for a squares dataset of length {self.length}")
        if self.design != "factorial":
            rest, b = divmod(i, 7)
            rest, a = divmod(rest, 5)
            py, px = divmod(rest, 3)
            shift = 128 if self.design == "grid_upper" else 0
            return int(_GRID[1][a]) + shift, int(_GRID[2][b]), int(_GRID[0][px]), int(_GRID[0][py])
        rng = np.random.default_rng([self.seed, _STREAMS[self.split], i])
        half = MAX_POS // 2

        def draw(upper: bool, lo: int, width: int) -> int:
            return int(rng.integers(lo + (width if upper else 0), lo + (2 * width if upper else width)))

        return (
            draw(i % 2 == 0, 0, 128),
            draw((i // 2) % 2 == 0, 0, 128),
            draw((i // 4) % 2 == 1, 0, half),
            draw((i // 8) % 2 == 1, 0, half),
        )

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        colour_a, colour_b, px, py = self.factors(i)
        stream = 3 if self.design != "factorial" else _STREAMS[self.split]
        noise = np.random.default_rng([self.seed, stream, i, 1]).normal(0.0, self.noise_std, (SIDE, SIDE))
        image = np.empty((SIDE, SIDE, 3))
        image[:] = colour_b
        image[py : py + FRAME, px : px + FRAME] = 127
        o = (FRAME - INNER) // 2
        image[py + o : py + o + INNER, px + o : px + o + INNER] = (colour_a, 0, 0)
        image = np.round(np.clip(image + noise[..., None], 0, 255)) / 255.0
        mask = torch.zeros(1, SIDE, SIDE)
        mask[:, py + o : py + o + INNER, px + o : px + o + INNER] = 1.0  # the inner square (the target's pixels)
        return {
            "image": torch.from_numpy(rearrange(image, "h w c -> c h w").astype(np.float32)),
            "index": i,
            "label": int(colour_a >= 128),
            "target": colour_a / 255.0,
            "mask": mask,
            "descriptors": torch.tensor(
                [colour_a / 255, colour_b / 255, px / SIDE, py / SIDE], dtype=torch.float32
            ),
        }
