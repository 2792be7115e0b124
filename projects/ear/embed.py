"""Audio → vectors: a small convolutional network over log-mel windows, trained by `ear train`.

One window is 2 s of 16 kHz mono; its vector is 64 floats with unit length, so the angular
distance between two windows says how alike they sound. The model file holds the weights in
float16 next to the settings they were trained with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .decode import SAMPLE_RATE
from .features import HOP, N_FFT, Block, blocks, power_spectrum

WINDOW_S = 2.0  # with features' N_FFT and HOP (32 ms frames every 16 ms)
N_MELS = 64
DIM = 64
WINDOW_FRAMES = 1 + int(WINDOW_S * SAMPLE_RATE - N_FFT) // HOP  # 123
MODEL_PATH = Path(__file__).with_name("model") / "ear-embed.pt"
SHIPPED = "shipped"  # MODEL_PATH's name among the model's versions (models.py)


def _mel_filters(n_mels: int, n_fft: int, rate: int, low: float = 50.0,
                 high: float = 8000.0) -> torch.Tensor:
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    edges = 700.0 * (10 ** (np.linspace(to_mel(low), to_mel(high), n_mels + 2) / 2595.0) - 1)
    freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    bank = np.zeros((n_mels, freqs.size), np.float32)
    for m in range(n_mels):
        left, centre, right = edges[m:m + 3]
        rise = (freqs - left) / (centre - left)
        fall = (right - freqs) / (right - centre)
        bank[m] = np.clip(np.minimum(rise, fall), 0, None)
    return torch.from_numpy(bank)


class LogMel(nn.Module):
    """Samples (batch, n) → log-mel (batch, N_MELS, frames), level-normalised per window later.
    Made from the STFT the peaks are found in (features.power_spectrum), so that a track's
    blocks are transformed once for both chains."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("filters", _mel_filters(N_MELS, N_FFT, SAMPLE_RATE), persistent=False)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return self.from_power(power_spectrum(samples))

    def from_power(self, power: torch.Tensor) -> torch.Tensor:
        """(..., N_FFT // 2 + 1, frames) power spectra → (..., N_MELS, frames)."""
        return torch.log(self.filters @ power + 1e-6)


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


_TEXTURE_BLOCK = 5  # of the 7 conv blocks (measured best for similar tracks: docs/embeddings.md)
TEXTURE_CHANNELS = 192
STYLE_DIM = 3 * TEXTURE_CHANNELS


class Embedder(nn.Module):
    """Log-mel windows (batch, N_MELS, WINDOW_FRAMES) → unit vectors (batch, DIM)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            _block(1, 24, 2), _block(24, 48, 2), _block(48, 48, 1), _block(48, 96, 2),
            _block(96, 96, 1), _block(96, 192, 2), _block(192, 192, 1))
        self.head = nn.Sequential(nn.Linear(2 * 192 * 4, 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, DIM))

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.forward_with_texture(logmel)[0]

    def forward_with_texture(self, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unit vectors (batch, DIM), texture (batch, 2 × TEXTURE_CHANNELS)): the texture is
        the mean and standard deviation of each channel of the last-but-one block, which
        describe a window's sound (timbre, instruments) rather than its exact notes."""
        # Level does not say which music it is: remove each window's mean log energy.
        x = logmel - logmel.mean(dim=(1, 2), keepdim=True)
        x = self.convs[:_TEXTURE_BLOCK + 1](x.unsqueeze(1))
        texture = torch.cat(_mean_and_std(x), dim=1)
        x = self.convs[_TEXTURE_BLOCK + 1:](x)  # (batch, 192, 4, time)
        x = x.flatten(1, 2)
        x = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
        return nn.functional.normalize(self.head(x), dim=1), texture


def _mean_and_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's mean and (unbiased) standard deviation over (batch, channel, h, w)'s h × w,
    from the mean of squares: torch's `std` over 32 values of a channels-last tensor took 12×
    as long, 5 % of the network's time (docs/speed.md)."""
    flat = x.flatten(2)
    n = flat.shape[2]
    mean = flat.mean(dim=2)
    variance = (flat.square().mean(dim=2) - mean.square()).clamp(min=0.0) * (n / (n - 1))
    return mean, variance.sqrt()


def _for_inference(net: Embedder) -> Embedder:
    """The same function in 30 % less CPU (docs/speed.md): each batch norm, a fixed
    affine map once trained, folded into the convolution before it, and the weights laid out
    channels-last, oneDNN's own layout."""
    for block in net.convs:
        block[0] = fuse_conv_bn_eval(block[0], block[1])
        block[1] = nn.Identity()
    return net.to(memory_format=torch.channels_last)


class Model:
    """The trained embedder, loaded once (in the Gunicorn master, before the fork)."""

    def __init__(self, path: Path = MODEL_PATH, name: str = SHIPPED) -> None:
        self.name = name  # the version (models.py) an index records for the vectors made here
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.frontend = LogMel()
        self.net = Embedder()
        self.net.load_state_dict({k: v.float() for k, v in state["weights"].items()})
        self.net = _for_inference(self.net.eval())
        self.version = str(state.get("version", path.stem))
        # Spread of the style statistics over the training music (`ear train` stores them;
        # until it has, none).
        self.style_mean = state["style_mean"].float().numpy() if "style_mean" in state else 0.0
        self.style_std = state["style_std"].float().numpy() if "style_std" in state else 1.0

    def windows(self, samples: np.ndarray, hop_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of the 2 s windows every `hop_s` seconds, and their start times in seconds.

        A clip shorter than one window is zero-padded to one window."""
        return self.scan([samples], hop_s).result()

    def analyse(self, samples: np.ndarray, hop_s: float = 1.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`windows`, and the style vector of the whole (see `style_vector`), in one pass."""
        scanned = self.scan([samples], hop_s)
        return *scanned.result(), self.style_vector(scanned.statistics())

    def scan(self, parts: Iterable[np.ndarray], hop_s: float = 1.0) -> Windows:
        """The windows of audio arriving in parts (a track streams; a clip is one part)."""
        windows = Windows(self, hop_s)
        for block in blocks(parts):
            windows.add(block)
        return windows

    def style_vector(self, statistics: np.ndarray) -> np.ndarray:
        """Style statistics (`Windows.statistics`) → one unit vector (STYLE_DIM) for "sounds
        like", standardised by their spread over the training music (so that no channel's
        scale decides). Similar tracks are searched with it."""
        return unit(((statistics - self.style_mean) / self.style_std).astype(np.float32))

    def clip_vector(self, samples: np.ndarray) -> np.ndarray:
        """One style vector for a whole clip (what "more like this clip" searches with)."""
        return self.analyse(samples, hop_s=1.0)[2]


_BATCH_WINDOWS = 16  # windows through the network at a time: a few MB of activations


class Windows:
    """The vectors of a track's windows and the statistics of their textures, computed a
    block (features.blocks) at a time: the windows that start in a block's own frames, which
    its margin holds whole. Of the textures only running sums are kept, so an hours-long
    track keeps 64 floats a second."""

    def __init__(self, model: Model, hop_s: float) -> None:
        self.model = model
        self.step = max(1, round(hop_s * SAMPLE_RATE / HOP))  # in frames
        self._vectors: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._count = 0
        self._texture_sum = np.zeros(2 * TEXTURE_CHANNELS, np.float64)
        self._level_squares = np.zeros(TEXTURE_CHANNELS, np.float64)

    @torch.inference_mode()
    def add(self, block: Block) -> None:
        power = block.power
        need = int(WINDOW_S * SAMPLE_RATE)
        if block.begin == 0 and block.samples.size < need:  # a clip shorter than a window fills one
            power = power_spectrum(torch.from_numpy(np.pad(block.samples.astype(np.float32),
                                                           (0, need - block.samples.size))))
        available = block.begin + power.shape[-1]  # frames
        lowest = -(-block.first // self.step) * self.step
        starts = np.arange(lowest, min(block.stop, available - WINDOW_FRAMES + 1), self.step)
        if starts.size == 0:
            return
        first, last = int(starts[0]) - block.begin, int(starts[-1]) - block.begin + WINDOW_FRAMES
        logmel = self.model.frontend.from_power(power[:, first:last])
        offsets = starts - block.begin - first
        for batch_offsets in np.array_split(offsets, -(-offsets.size // _BATCH_WINDOWS)):
            batch = torch.stack([logmel[:, s:s + WINDOW_FRAMES] for s in batch_offsets])
            vectors, textures = self.model.net.forward_with_texture(batch)
            textures = textures.numpy().astype(np.float64)
            self._vectors.append(vectors.numpy())
            self._count += len(textures)
            self._texture_sum += textures.sum(axis=0)
            self._level_squares += np.square(textures[:, :TEXTURE_CHANNELS]).sum(axis=0)
        self._starts.append(starts * HOP / SAMPLE_RATE)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (n, DIM), start times in s (n))."""
        return np.concatenate(self._vectors), np.concatenate(self._starts)

    def statistics(self) -> np.ndarray:
        """The windows' mean channel levels and spreads (their textures, see
        `Embedder.forward_with_texture`), and how much the levels vary from window to window:
        STYLE_DIM floats, not yet standardised."""
        mean = self._texture_sum / self._count
        level_mean = mean[:TEXTURE_CHANNELS]
        varies = np.sqrt(np.maximum(self._level_squares / self._count - level_mean ** 2, 0.0))
        return np.concatenate([mean, varies]).astype(np.float32)


def unit(vector: np.ndarray) -> np.ndarray:
    """`vector` scaled to length 1 (a zero vector stays zero)."""
    return vector / max(float(np.linalg.norm(vector)), 1e-9)
