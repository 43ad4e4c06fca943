"""Digital topology on 2-D binary images: simple points and 4-connected labelling.

Cells (white, 1) use 4-connectivity and membrane (black, 0) 8-connectivity, the pair of
connectivities of the ISBI warping error. The 3 x 3 neighbourhood of a pixel is encoded as a
9-bit number, bit ``3 * (dy + 1) + (dx + 1)`` holding the value at offset ``(dy, dx)``; the
centre is bit 4.
"""

from __future__ import annotations

import numpy as np

from ._jit import njit

_RING = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
_FOUR = frozenset({(-1, 0), (0, -1), (0, 1), (1, 0)})


def _bit(dy: int, dx: int) -> int:
    return 3 * (dy + 1) + (dx + 1)


def _components(cells: list[tuple[int, int]], diagonal: bool) -> list[set[tuple[int, int]]]:
    """Connected components of ``cells`` (4-adjacency, or 8-adjacency when ``diagonal``)."""
    remaining, components = set(cells), []
    while remaining:
        stack = [remaining.pop()]
        component = set(stack)
        while stack:
            y, x = stack.pop()
            for other in list(remaining):
                dy, dx = abs(other[0] - y), abs(other[1] - x)
                if dy + dx == 1 or (diagonal and dy == dx == 1):
                    remaining.discard(other)
                    component.add(other)
                    stack.append(other)
        components.append(component)
    return components


def is_simple(code: int) -> bool:
    """Whether flipping the centre of the 3 x 3 neighbourhood ``code`` preserves topology.

    Notes
    -----
    Bertrand and Malandain's topological numbers for the (4, 8) picture: the centre is simple
    iff exactly one 4-component of white ring pixels contains a 4-neighbour of the centre
    (T4 = 1) and the black ring pixels form exactly one 8-component (T8 = 1). The test does
    not depend on the centre's own value.

    References
    ----------
    .. [1] G. Bertrand and G. Malandain, "A new characterization of three-dimensional simple
       points", Pattern Recognition Letters 15(2):169-175, 1994.
    """
    white = [p for p in _RING if code >> _bit(*p) & 1]
    black = [p for p in _RING if not code >> _bit(*p) & 1]
    t4 = sum(1 for c in _components(white, diagonal=False) if c & _FOUR)
    t8 = len(_components(black, diagonal=True))
    return t4 == 1 and t8 == 1


#: ``SIMPLE_POINT_LUT[code]`` is 1 where the centre of neighbourhood ``code`` is simple.
SIMPLE_POINT_LUT: np.ndarray = np.array([is_simple(code) for code in range(512)], dtype=np.uint8)
SIMPLE_POINT_LUT.flags.writeable = False


@njit
def label4(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 4-connected components of a uint8 mask, numbered in raster order from 1.

    Returns the int32 label image (0 outside the mask) and the number of components; the
    numbering equals ``scipy.ndimage.label`` with its default cross structure.
    """
    height, width = mask.shape
    labels = np.zeros((height, width), np.int32)
    stack = np.empty(height * width, np.int64)
    n_labels = 0
    for y0 in range(height):
        for x0 in range(width):
            if mask[y0, x0] == 0 or labels[y0, x0] != 0:
                continue
            n_labels += 1
            labels[y0, x0] = n_labels
            stack[0] = y0 * width + x0
            top = 1
            while top > 0:
                top -= 1
                y, x = divmod(stack[top], width)
                for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if 0 <= ny < height and 0 <= nx < width:
                        if mask[ny, nx] != 0 and labels[ny, nx] == 0:
                            labels[ny, nx] = n_labels
                            stack[top] = ny * width + nx
                            top += 1
    return labels, n_labels
