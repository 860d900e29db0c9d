"""Augmentation on tensors, as in the paper: random crops, horizontal flips, PCA colour lighting,
mean/std normalisation; and the test-time centre crop and ten crops. Batches in, batches out,
on whatever device the batch is on; every random choice comes from the given generator.
"""
from __future__ import annotations

import torch

# The paper's ImageNet RGB eigen-decomposition (as used by fb.resnet.torch and others), for
# pixel values scaled to 0-1.
IMAGENET_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                                [-0.5808, -0.0045, -0.8140],
                                [-0.5836, -0.6948, 0.4203]])


def random_crop(images: torch.Tensor, height: int, generator: torch.Generator,
                width: int | None = None) -> torch.Tensor:
    """A height x width crop (width: height, a square) at a random place in each image (the crop
    lies inside the image)."""
    n, _, h, w = images.shape
    width = height if width is None else width
    if height > h or width > w:
        raise ValueError(f"crop {height}x{width} is larger than the images ({h}x{w})")
    tops = torch.randint(0, h - height + 1, (n,), generator=generator).tolist()
    lefts = torch.randint(0, w - width + 1, (n,), generator=generator).tolist()
    return torch.stack([img[:, t:t + height, l:l + width] for img, t, l in zip(images, tops, lefts)])


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    out = images.clone()
    out[flip.to(images.device)] = images[flip.to(images.device)].flip(-1)
    return out


def lighting(images: torch.Tensor, sigma: float, generator: torch.Generator, eigval: torch.Tensor = IMAGENET_EIGVAL,
             eigvec: torch.Tensor = IMAGENET_EIGVEC) -> torch.Tensor:
    """The paper's PCA colour augmentation on 0-1 RGB images: add eigvec @ (alpha * eigval) to every
    pixel, alpha ~ N(0, sigma^2) per image and component."""
    if sigma <= 0:
        return images
    alpha = torch.randn(images.shape[0], 3, generator=generator) * sigma
    shift = (alpha * eigval) @ eigvec.T  # (N, 3): per image, per channel
    return images + shift.to(images.device, images.dtype)[:, :, None, None]


def center_crop(images: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """The centre height x width of each image (width: height, a square)."""
    _, _, h, w = images.shape
    width = height if width is None else width
    top, left = (h - height) // 2, (w - width) // 2
    return images[:, :, top:top + height, left:left + width]


def ten_crops(images: torch.Tensor, height: int, width: int | None = None) -> list[torch.Tensor]:
    """The four corners and the centre, height x width (width: height, a square), and their mirror
    images (the paper's test-time crops)."""
    _, _, h, w = images.shape
    width = height if width is None else width
    corners = [images[:, :, :height, :width], images[:, :, :height, w - width:], images[:, :, h - height:, :width],
               images[:, :, h - height:, w - width:], center_crop(images, height, width)]
    return corners + [c.flip(-1) for c in corners]


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """(images - mean) / std per channel, images in the 0-255 scale. Without a mean, pixels are
    scaled to 0-1; with a mean but no std, only the mean is subtracted (Caffe's AlexNet)."""
    channels = images.shape[1]
    default_std = 1.0 if mean is not None else 255.0
    mean_t = torch.tensor(mean if mean is not None else [0.0] * channels, device=images.device, dtype=images.dtype)
    std_t = torch.tensor(std if std is not None else [default_std] * channels, device=images.device,
                         dtype=images.dtype)
    return (images - mean_t[:, None, None]) / std_t[:, None, None]


class NetworkInput:
    """How a uint8 batch becomes the network's input on `device`: for training a random crop
    (where the images are larger), a flip and lighting as `augmentation` asks; otherwise the
    centre crop; then normalised, channels-last where asked."""

    def __init__(self, shape: tuple[int, int, int], augmentation, device: torch.device, channels_last: bool = False):
        self.shape, self.augmentation, self.device, self.channels_last = shape, augmentation, device, channels_last

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 train: bool = False) -> torch.Tensor:
        aug = self.augmentation
        x = images.to(self.device, non_blocking=True).float()
        _, height, width = self.shape
        if train and aug.crop and (x.shape[2] > height or x.shape[3] > width):
            x = random_crop(x, height, generator, width)
        elif x.shape[2] != height or x.shape[3] != width:
            x = center_crop(x, height, width)
        if train and aug.flip:
            x = random_flip(x, generator)
        if train and aug.lighting and x.shape[1] == 3:
            x = lighting(x / 255.0, aug.lighting, generator) * 255.0
        x = normalise(x, aug.mean, aug.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
