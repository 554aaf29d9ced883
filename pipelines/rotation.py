"""The display matrix: how a coded frame is turned (and mirrored) to be shown.

Phones store portrait video as landscape frames plus a display matrix; ffmpeg applies it ("autorotate")
and so does every decode path here, so shards hold frames as displayed. Mirrored matrices are honoured
too: SSV2's "left" and "right" are different classes, so a mirrored clip must stay mirrored.

ffmpeg's matrix ``[a b u; c d v; x y w]`` maps a pixel ``(x, y)`` (image coordinates, y pointing down)
to ``(a x + c y, b x + d y)`` (checked against ffmpeg's autorotate by tests/pipelines/test_real_video.py);
for the eight axis-aligned matrices that is a transpose or not, then flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class RotationError(ValueError):
    """A display matrix that is not a multiple of 90 degrees (with or without a mirror)."""


@dataclass(frozen=True)
class Orientation:
    transpose: bool = False  # swap rows and columns first (a 90 or 270 degree turn)
    flip_rows: bool = False  # then upside down
    flip_cols: bool = False  # then left-right

    @property
    def upright(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    @property
    def mirrored(self) -> bool:
        """True when the map has a negative determinant (a mirror, not only a turn)."""
        return self.transpose ^ self.flip_rows ^ self.flip_cols

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, ...) coded -> displayed ((W, H, ...) when transposed); a view, no copy."""
        if self.transpose:
            frame = frame.swapaxes(0, 1)
        return frame[:: -1 if self.flip_rows else 1, :: -1 if self.flip_cols else 1]

    def apply_yuv420(self, frame: np.ndarray) -> np.ndarray:
        """(3H/2, W) 4:2:0 planes coded -> displayed ((3W/2, H) when transposed). The layout is PyAV's
        for ``yuv420p``: the Y plane's H rows, then the U and the V plane (H/2 x W/2 each) packed behind
        it. Each plane is turned on its own as :meth:`apply` turns an RGB frame, so a chroma sample stays
        with the 2x2 luma block it covers. A copy unless upright."""
        if self.upright:
            return frame
        h, w = frame.shape[0] * 2 // 3, frame.shape[1]
        flat = frame.reshape(-1)
        planes = [self.apply(p) for p in (flat[: h * w].reshape(h, w), *flat[h * w:].reshape(2, h // 2, w // 2))]
        return np.concatenate([p.reshape(-1) for p in planes]).reshape(-1, planes[0].shape[1])

    def describe(self) -> str:
        if self.upright:
            return "upright"
        turn = {(False, True, True): 180, (True, False, True): 270, (True, True, False): 90}  # counter-clockwise
        key = (self.transpose, self.flip_rows, self.flip_cols)
        return f"rotated {turn[key]}" if key in turn else f"mirrored ({key})"


def from_matrix(matrix: np.ndarray) -> Orientation:
    """The :class:`Orientation` of a 3x3 display matrix (9 int32, 16.16 fixed point in the 2x2 part)."""
    m = np.asarray(matrix, dtype=np.int64).reshape(9)
    a, b, c, d = (int(np.sign(v)) if abs(v) > (1 << 15) else 0 for v in (m[0], m[1], m[3], m[4]))
    if a and d and not b and not c:
        return Orientation(False, d < 0, a < 0)
    if b and c and not a and not d:
        return Orientation(True, b < 0, c < 0)
    raise RotationError(f"display matrix {m[[0, 1, 3, 4]].tolist()} is not a turn by a multiple of 90 degrees")


def orientation_of(frame) -> Orientation:
    """The orientation a decoded PyAV frame's display-matrix side data asks for (upright without one)."""
    for sd in frame.side_data:
        if "DISPLAYMATRIX" in str(sd.type):
            return from_matrix(np.frombuffer(bytes(sd), dtype="=i4"))
    return Orientation()
