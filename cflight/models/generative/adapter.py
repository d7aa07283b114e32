"""Your own encoder and decoder in the latent-method protocol (no cflight checkpoint, no Lightning).

Latent methods (:class:`~cflight.methods.LatentAttack`, :class:`~cflight.methods.InterFaceGANEdit`) need a
generator with ``decode(z) -> [B, C, H, W]`` in [0, 1] and ``encode(x)`` returning a latent ``[B, D]`` or a
VAE's ``(mu, logvar)``. A model that already has both methods is used as it is; :class:`LatentGenerator`
builds one from two separate pieces::

    generator = LatentGenerator(decode=my_decoder, encode=my_encoder)        # two nn.Modules
    generator = LatentGenerator(decode=my_vae.decode, encode=my_vae.encode)  # bound methods work too
    method = cflight.LatentAttack(generator, lr=0.1)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn


def _owner(fn: Callable) -> nn.Module | None:
    """The module that holds ``fn``: ``fn`` itself, or the module a bound method belongs to."""
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


class LatentGenerator(nn.Module):
    """A decoder (and encoder) as a cflight latent-space generator.

    Args:
        decode: ``z [B, D] -> images [B, C, H, W]`` in [0, 1] (end a decoder with a sigmoid, or map a tanh
            output with ``(y + 1) / 2``): an ``nn.Module``, a module's bound method or any callable.
        encode: ``images -> z [B, D]`` or ``(mu, logvar)`` (a VAE; :class:`~cflight.methods.LatentAttack`
            then starts from a reparameterised sample seeded per image, or from ``mu`` with
            ``latent_init="mean"``). ``None`` for a decoder without an encoder (a GAN): wrap the generator in
            :class:`~cflight.models.generative.projection.GANManifold` (give ``latent_dim``,
            ``in_channels`` and ``image_size``), which projects images by optimisation.
        latent_dim: ``D`` (needed by ``GANManifold`` only).
        in_channels, image_size: what the decoder produces; when given, methods refuse images of another
            shape with a one-line error before any work.

    Modules behind ``decode`` / ``encode`` are registered as submodules, so ``.to(device)``, ``.eval()``
    and ``requires_grad_(False)`` (which methods apply) reach them; the generator is never trained here.
    """

    def __init__(self, decode: Callable[[Tensor], Tensor], encode: Callable[[Tensor], object] | None = None,
                 latent_dim: int | None = None, in_channels: int | None = None,
                 image_size: int | Sequence[int] | None = None) -> None:
        super().__init__()
        if not callable(decode):
            raise TypeError("decode must be callable (an nn.Module or a function), "
                            f"got {type(decode).__name__}")
        if encode is not None and not callable(encode):
            raise TypeError(f"encode must be callable or None, got {type(encode).__name__}")
        # the callables stay out of nn.Module's registry; the modules that hold them are registered once each
        object.__setattr__(self, "_decode_fn", decode)
        object.__setattr__(self, "_encode_fn", encode)
        owners: list[nn.Module] = []
        for fn in (decode, encode):
            owner = _owner(fn) if fn is not None else None
            if owner is not None and all(owner is not o for o in owners):
                owners.append(owner)
        self.parts = nn.ModuleList(owners)
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.image_size = image_size

    @property
    def encoder(self) -> Callable | None:
        """The ``encode`` callable, ``None`` without one (what ``GANManifold`` looks at)."""
        return self._encode_fn

    @property
    def decoder(self) -> Callable:
        return self._decode_fn

    def decode(self, z: Tensor) -> Tensor:
        """Images ``[B, C, H, W]`` in [0, 1] for latents ``z``."""
        return self._decode_fn(z)

    def encode(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """The latent of images ``x`` (``[B, D]`` or ``(mu, logvar)``)."""
        if self._encode_fn is None:
            raise RuntimeError("this LatentGenerator has no encoder: pass encode=..., or wrap it in "
                               "cflight.GANManifold(generator, ...) to project images by optimisation")
        return self._encode_fn(x)

    def forward(self, z: Tensor) -> Tensor:
        return self.decode(z)

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, in_channels={self.in_channels}, image_size={self.image_size}"
