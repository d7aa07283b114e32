"""Tiny stand-in networks shared by the tests (spec §5: linear decoders, linear/logistic models)."""
from __future__ import annotations

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from cflight.models.generative import DiffAE


class LinearDecoder(nn.Module):
    """``G(z) = sigmoid(A z + b)`` reshaped to ``[B, C, H, W]``; ``encode`` returns ``(mu, logvar)``."""

    def __init__(self, latent_dim: int = 4, channels: int = 1, size: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = channels * size * size
        self.latent_dim, self.in_channels, self.image_size = latent_dim, channels, (size, size)
        self.dec = nn.Linear(latent_dim, d)
        self.enc = nn.Linear(d, 2 * latent_dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.enc(x.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-4, 1)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.dec(z)).view(-1, self.in_channels, *self.image_size)


class LinearClassifier(nn.Module):
    """Logits ``W·flatten(x) + b``; ``num_classes == 1`` is a binary (logistic) model."""

    def __init__(self, num_classes: int = 3, channels: int = 1, size: int = 4, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.in_channels, self.image_size, self.num_classes = channels, (size, size), num_classes
        self.fc = nn.Linear(channels * size * size, num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g))
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class LinearRegressor(nn.Module):
    """A regressor ``sigmoid(w·flatten(x) / √d)`` ``[B, 1]`` (values in (0, 1), like the squares' red)."""

    def __init__(self, channels: int = 1, size: int = 4, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.in_channels, self.image_size = channels, (size, size)
        d = channels * size * size
        self.fc = nn.Linear(d, 1)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) / d**0.5)
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.fc(x.flatten(1)))


class ConstantClassifier(nn.Module):
    """Outputs fixed logits whatever the input: its input gradient is exactly zero."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1)[:, :1]


def images(n: int = 6, channels: int = 1, size: int = 4, seed: int = 0) -> Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


class TinyDicts(Dataset):
    """``n`` random 1×4×4 images as cflight dict samples with ``index`` and a label."""

    def __init__(self, n: int = 10) -> None:
        self.x = images(n)
        self.labels = torch.arange(n) % 3

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "index": i, "label": int(self.labels[i])}


class TinyDataModule(LightningDataModule):
    """``TinyDicts`` for every split: for CLI tests on tiny YAML configs."""

    def __init__(self, n: int = 8, batch_size: int = 4) -> None:
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def _loader(self) -> DataLoader:
        return DataLoader(TinyDicts(self.n), batch_size=self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()


class Squares(Dataset):
    """``n`` one-channel ``size``² images, each a white ``side``² square at a corner drawn from
    ``[low, high)`` per row/column, seeded by the index: a tiny image set for generative-model training tests."""

    def __init__(self, n: int, size: int, side: int, low: int, high: int) -> None:
        self.n, self.size, self.side, self.low, self.high = n, size, side, low, high

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        x = torch.zeros(1, self.size, self.size)
        r, c = torch.randint(self.low, self.high, (2,), generator=g).tolist()
        x[:, r:r + self.side, c:c + self.side] = 1.0
        return {"image": x, "index": i}


def tiny_config(template: str, tmp_path, **replace: str) -> str:
    """Write ``template`` (a YAML with ``OUTPUT_DIR``) to ``tmp_path/config.yaml`` with the output directory
    ``tmp_path/job`` and each ``old → new`` text replacement; returns the path. A replacement whose ``old``
    text is not in the template is an error: after an edit of a shipped config it would silently leave, e.g.,
    its full training length in a "tiny" test."""
    text = open(template).read().replace("OUTPUT_DIR", str(tmp_path / "job"))
    absent = [old for old in replace if old not in text]
    if absent:
        raise ValueError(f"tiny_config: {absent} not found in {template}; update the test to the config's text")
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


class TinyDiffAE(DiffAE):
    """A 1×4×4 diffusion autoencoder (TinyDicts images) whose zero-initialised output layers are drawn small,
    so the untrained net depends on z_sem: for YAML tests of Diff-AE-RE."""

    def __init__(self, seed: int = 0) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            super().__init__(in_channels=1, image_size=4, model_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                             attention_resolutions=(2,), head_channels=8, z_dim=6)
            with torch.no_grad():
                for p in self.parameters():
                    if not bool(p.any()):
                        p.normal_(0.0, 0.05)
