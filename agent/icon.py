"""The agent's icon, drawn with Pillow: a coloured disc with a pulse line, one colour per state.

The tray draws it at run time and agent.spec draws the .exe's icon from it at build time, so
no image file has to be kept in step with the code.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image, ImageDraw

from agent.status import State

RGB = tuple[int, int, int]

GREEN: RGB = (46, 160, 67)
AMBER: RGB = (224, 150, 20)
RED: RGB = (205, 45, 45)
GREY: RGB = (128, 128, 128)

STATE_COLOURS: dict[State, RGB] = {
    State.SENDING: GREEN,
    State.CATCHING_UP: AMBER,
    State.RETRYING: AMBER,
    State.OFFLINE: RED,
    State.UNAUTHORIZED: RED,
    State.REJECTED: RED,
    State.PAUSED: GREY,
    State.STARTING: GREY,
}

ICO_SIZES = [(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)]

# the pulse line, as fractions of the icon's side: flat, a spike up, a dip, flat again
_PULSE = [(0.18, 0.55), (0.38, 0.55), (0.46, 0.28), (0.56, 0.74), (0.63, 0.55), (0.82, 0.55)]
_SUPERSAMPLE = 4


def draw_icon(colour: RGB, size: int = 64) -> Image.Image:
    """A disc of `colour` with a white pulse line, `size` pixels square, transparent corners."""
    big = size * _SUPERSAMPLE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin = big // 32
    draw.ellipse((margin, margin, big - margin, big - margin), fill=(*colour, 255))
    points = [(x * big, y * big) for x, y in _PULSE]
    draw.line(points, fill=(255, 255, 255, 255), width=max(1, big // 11), joint="curve")
    # drawing large and scaling down is Pillow's way to antialias shapes
    return image.resize((size, size), Image.Resampling.LANCZOS)


@functools.cache
def state_icon(state: State, size: int = 64) -> Image.Image:
    """The icon for a delivery state (cached: the tray asks for it on every change)."""
    return draw_icon(STATE_COLOURS[state], size)


def write_ico(path: Path, colour: RGB = GREEN) -> Path:
    """Write a multi-size .ico for the executable; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_icon(colour, 256).save(path, format="ICO", sizes=ICO_SIZES)
    return path
