"""Procedural faces for the synthetic competition: identity traits, and one image of an identity per call.

An identity is a fixed set of latent traits (face shape, colours, hair, features, accessories) turned once
into polygons in a face-local frame (unit = half the face height, x right, y down). Each image then draws
those polygons under its own pose, expression, framing, background, lighting and sensor nuisances, whose
strength grows with `difficulty` (0..1). Everything is drawn anti-aliased with OpenCV on a supersampled
canvas and shrunk with INTER_AREA, so that identity survives at 32 px while raw pixels do not match it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

SHIFT = 4  # fixed-point bits of the drawing coordinates: 1/16 canvas pixel
_SCALE = float(1 << SHIFT)
_AA = cv2.LINE_AA
Colour = tuple[float, float, float]  # RGB, 0..255 (the canvas is RGB; converted to BGR only to encode)


def _circle(n: int) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


_CIRCLE = {n: _circle(n) for n in (10, 14, 20, 28)}


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20, angle: float = 0.0) -> np.ndarray:
    pts = _CIRCLE[n] * (rx, ry)
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        pts = pts @ np.array([[c, s], [-s, c]])
    return pts + (cx, cy)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int) -> np.ndarray:
    """Points on an ellipse from angle a0 to a1 (radians; y is down, so pi/2 is the bottom)."""
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def _band(xs: np.ndarray, ys: np.ndarray, half: np.ndarray) -> np.ndarray:
    """A filled stroke along a curve: the curve offset up by `half`, then back along it offset down.

    Linear in `ys` and `half`, so a band that varies per image is precomputed as a sum of such terms.
    """
    return np.concatenate([np.stack([xs, ys - half], 1), np.stack([xs[::-1], (ys + half)[::-1]], 1)])


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def _mul(a: Colour, f: float) -> Colour:
    return (min(a[0] * f, 255.0), min(a[1] * f, 255.0), min(a[2] * f, 255.0))


def _random_colour(u0: float, u1: float, u2: float, saturation: float) -> Colour:
    """A colour from three uniforms: grey level, then two chroma directions scaled by `saturation`."""
    grey = 35.0 + 190.0 * u0
    return tuple(min(255.0, max(0.0, grey + (c - 0.5) * 255.0 * saturation)) for c in (u1, u2, 1.0 - u1))


# Palettes: realistic ranges, each jittered per identity.
_SKIN_LIGHT, _SKIN_DARK = (250, 220, 195), (95, 60, 40)
_HAIR = [(20, 16, 14), (60, 40, 28), (110, 72, 40), (165, 110, 60), (225, 190, 120), (150, 60, 30), (180, 180, 180)]
_IRIS = [(70, 45, 25), (40, 30, 20), (70, 110, 160), (80, 120, 80), (110, 110, 120)]
_ACCESSORY = [
    (20, 20, 20),
    (200, 30, 30),
    (30, 60, 160),
    (230, 230, 230),
    (40, 120, 60),
    (230, 180, 30),
    (120, 60, 140),
]
_EYE_WHITE = (238.0, 236.0, 232.0)
_MOUTH_INSIDE = (60.0, 20.0, 25.0)
_LENS_DARK = (25.0, 25.0, 30.0)
_MOLE = (60.0, 40.0, 30.0)

# Depth of each part for the yaw/pitch parallax: what sticks out moves most when the head turns.
_D_BACK, _D_EAR, _D_FACE, _D_HAIR, _D_EYE, _D_MOUTH, _D_NOSE, _D_GLASSES, _D_OCCLUDER = (
    -0.5,
    -0.7,
    0.0,
    0.1,
    0.55,
    0.6,
    1.0,
    0.75,
    1.2,
)

# The body under every face: shoulders (per-image shirt colour) and neck.
_SHOULDERS = _ellipse(0.0, 2.05, 1.75, 0.95, 20)

Shape = tuple[np.ndarray, float, Colour, int]  # local points, depth, colour, -1 to fill or a line thickness


@dataclass(frozen=True, eq=False)
class Identity:
    """The polygons and colours of one identity, fixed across its images (see `make_identity`)."""

    size: float  # face size relative to the frame
    skin: Colour
    hair: Colour
    lip: Colour
    iris: Colour
    brow: Colour
    behind: tuple[Shape, ...]  # neck, hair behind the head, ears: drawn before the face
    face: tuple[Shape, ...]  # face, mole, nose: always drawn
    beard: Shape | None
    eyes: tuple[tuple[np.ndarray, np.ndarray, float, float], ...]  # per eye: P1, P2 (pts = P1 + ry * P2), cx, cy
    eye_ry: float
    iris_r: float
    brows: tuple[np.ndarray, np.ndarray]
    mouth: tuple[np.ndarray, np.ndarray]  # closed: B0 + smile * B1
    mouth_open: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # lip and inside
    hair_top: Shape | None
    hat: tuple[Shape, ...]  # empty: no hat
    glasses: tuple[np.ndarray, ...]  # lens outlines and the bridge; empty: no glasses
    glasses_colour: Colour
    sunglasses: bool
    smile: float  # resting mouth curve


def make_identity(rng: np.random.Generator) -> Identity:
    """Draw the traits of one identity and build its polygons."""
    u = rng.random(64).tolist()  # one draw, read in a fixed order: a trait added at the end keeps the others
    skin = _mix(_SKIN_LIGHT, _SKIN_DARK, u[0] ** 1.3)
    skin = (skin[0] * (0.93 + 0.14 * u[1]), skin[1] * (0.93 + 0.1 * u[2]), skin[2] * (0.9 + 0.16 * u[3]))
    hair = tuple(min(255.0, c * (0.8 + 0.4 * u[5 + i])) for i, c in enumerate(_HAIR[int(u[4] * len(_HAIR))]))
    lip = _mix(skin, (170, 60, 70), 0.35 + 0.45 * u[8])
    iris = _IRIS[int(u[9] * len(_IRIS))]
    brow = _mix(hair, (25, 20, 18), 0.3 + 0.4 * u[10])

    # The face: a wide upper half-ellipse (forehead, cheeks) joined to a narrower lower one (jaw, chin).
    w = 0.66 + 0.2 * u[11]
    jaw_w = w * (0.72 + 0.25 * u[12])
    jaw_drop = 0.95 + 0.15 * u[13]
    size = 0.92 + 0.16 * u[14]
    top = _arc(0.0, 0.05, w, 1.05, math.pi, 2 * math.pi, 14)
    bottom = _arc(0.0, 0.05, jaw_w + (w - jaw_w) * 0.4, jaw_drop, 0.0, math.pi, 14)
    bottom[:3, 0] = np.maximum(bottom[:3, 0], np.linspace(w * 0.97, w * 0.9, 3))
    bottom[-3:, 0] = np.minimum(bottom[-3:, 0], -np.linspace(w * 0.9, w * 0.97, 3))
    face_poly = np.concatenate([top, bottom])
    ear_r, ear_y = 0.14 + 0.08 * u[15], 0.05 + 0.1 * u[16]

    ex, ey = 0.26 + 0.12 * u[17], -0.08 + 0.14 * u[18]
    eye_rx = 0.11 + 0.06 * u[19]
    eye_ry = eye_rx * (0.45 + 0.3 * u[20])
    tilt = (u[21] - 0.5) * 0.5
    brow_gap, brow_half, brow_len = 0.14 + 0.1 * u[22], 0.025 + 0.04 * u[23], eye_rx * (1.2 + 0.8 * u[24])
    brow_tilt, brow_arch = (u[25] - 0.5) * 0.16, 0.07 * u[26]

    nose_len, nose_w = 0.2 + 0.18 * u[27], 0.07 + 0.1 * u[28]
    nose_y = ey + nose_len
    nose = np.array(
        [
            [0.0, ey + 0.05],
            [nose_w, nose_y],
            [nose_w * 0.4, nose_y + 0.05],
            [-nose_w * 0.4, nose_y + 0.05],
            [-nose_w, nose_y],
        ]
    )
    mouth_y = max(nose_y + 0.2, 0.42 + 0.15 * u[30])
    mouth_w, lip_half = 0.17 + 0.17 * u[31], 0.025 + 0.035 * u[32]

    # Hair: a style per identity, with continuous volume and hairline so that no two are alike.
    style = int(u[34] * 6)  # 0 bald, 1 short, 2 fringe, 3 long, 4 side part, 5 curls
    vol = 1.05 + 0.12 * u[35]
    hairline = -0.62 + 0.25 * u[36]
    hair_back = hair_top = None
    if style >= 1:
        outer = _arc(0.0, -0.05, w * vol + 0.02, vol + 0.02, math.pi, 2 * math.pi, 16)
        xs = np.linspace(w, -w, 9)
        t = xs / w
        if style == 2:  # a straight fringe low on the forehead
            ys = np.full_like(xs, hairline + 0.2 * u[38] + 0.05) - 0.05 * t**2
        elif style == 4:  # a side part: the hairline sweeps down on one side
            ys = hairline + 0.06 * (1 - t**2) + 0.35 * (u[38] - 0.5) * t
        else:
            ys = hairline + 0.12 * t**2 - 0.1 * u[38] * (1 - t**2)
        ys[0] = ys[-1] = 0.05 + 0.25 * u[37]  # sideburns
        hair_top = np.concatenate([outer, np.stack([xs, ys], 1)])
    if style == 3:  # long hair falling behind the shoulders
        length, hw = 0.9 + 0.6 * u[39], w * (1.15 + 0.25 * u[40])
        hair_back = np.concatenate(
            [_arc(0.0, -0.05, hw, 1.05 * vol, math.pi, 2 * math.pi, 14), [[hw * 1.05, length], [-hw * 1.05, length]]]
        )
    elif style == 5:  # curls: a big rounded mass around the head
        hair_back = _ellipse(0.0, -0.25, w * (1.3 + 0.3 * u[40]), 1.0 + 0.3 * u[39], 28)
    elif style == 1 and u[41] < 0.3:  # a bun at the back of the head
        hair_back = _ellipse(0.0, -1.05, 0.3, 0.22, 14)

    behind: list[Shape] = [
        (np.array([[-w * 0.42, 0.4], [w * 0.42, 0.4], [w * 0.45, 1.3], [-w * 0.45, 1.3]]), 0.0, _mul(skin, 0.82), -1)
    ]
    if hair_back is not None:
        behind.append((hair_back, _D_BACK, _mul(hair, 0.85), -1))
    for sgn in (-1.0, 1.0):
        behind.append((_ellipse(sgn * (w + 0.02), ear_y, ear_r * 0.7, ear_r * 1.4, 10), _D_EAR, _mul(skin, 0.92), -1))
    face: list[Shape] = [(face_poly, _D_FACE, skin, -1)]
    if u[53] < 0.3:
        face.append((_ellipse((u[54] - 0.5) * w * 1.2, -0.3 + 0.8 * u[55], 0.04, 0.04, 10), _D_EYE, _MOLE, -1))
    face.append((nose, _D_NOSE, _mul(skin, 0.72 + 0.12 * u[29]), -1))

    beard_kind = 0 if u[50] > 0.25 else 1 + int(u[51] * 3)  # full beard, goatee, moustache
    beard = None
    if beard_kind == 1:
        outer = _arc(0.0, 0.05, jaw_w * 1.02 + (w - jaw_w) * 0.4, jaw_drop + 0.06, 0.15, math.pi - 0.15, 12)
        inner = np.array([[-mouth_w * 1.1, mouth_y - 0.12], [0.0, mouth_y - 0.16], [mouth_w * 1.1, mouth_y - 0.12]])
        beard = np.concatenate([outer, inner])
    elif beard_kind == 2:
        beard = _ellipse(0.0, (mouth_y + jaw_drop) / 2 + 0.08, mouth_w * 0.7, (jaw_drop - mouth_y) / 2 + 0.02, 14)
    elif beard_kind == 3:
        xs = np.linspace(-mouth_w * 1.1, mouth_w * 1.1, 7)
        beard = _band(xs, mouth_y - 0.09 + 0.05 * (xs / mouth_w) ** 2, np.full(7, 0.045 + 0.02 * u[52]))

    eyes = []
    c, s = math.cos(tilt), math.sin(tilt)
    for sgn in (-1.0, 1.0):
        cs, sn = _CIRCLE[14][:, :1], _CIRCLE[14][:, 1:]
        p1 = cs * eye_rx * np.array([[c, sgn * s]]) + (sgn * ex, ey)
        p2 = sn * np.array([[-sgn * s, c]])
        eyes.append((p1, p2, sgn * ex, ey))
    bx = np.linspace(-brow_len, brow_len, 5)
    bt = bx / brow_len
    by = ey - brow_gap - brow_arch * (1 - bt**2) - brow_tilt * bt
    brow_band = _band(bx * 0.95, by, brow_half * (1.0 - 0.4 * bt**2))
    brows = (brow_band * (-1.0, 1.0) + (-ex, 0.0), brow_band + (ex, 0.0))

    xs = np.linspace(-mouth_w, mouth_w, 7)
    t2 = (xs / mouth_w) ** 2
    zero = np.zeros(7)
    curve = _band(xs * 0, 0.5 - t2, zero)  # the smile term: corners up, centre down
    mouth = (_band(xs, np.full(7, mouth_y), lip_half * (1.0 - 0.6 * t2) + 0.008), curve)
    gap = 1.0 - t2
    mouth_open = (
        _band(xs, np.full(7, mouth_y), np.full(7, lip_half + 0.01)),
        curve,
        _band(xs * 0, zero, gap),
        _band(xs[1:-1], np.full(5, mouth_y), np.full(5, 0.01)),
        curve[np.r_[1:6, 8:13]],
        _band(xs[1:-1] * 0, zero[1:-1], gap[1:-1] * 0.8),
    )

    hat_kind = 0 if u[46] > 0.15 else 1 + int(u[47] * 2)  # cap, beanie
    hat_colour = _ACCESSORY[int(u[48] * len(_ACCESSORY))]
    hat: tuple[Shape, ...] = ()
    if hat_kind == 1:  # cap: crown plus a brim
        hat = (
            (_arc(0.0, -0.5, w * 1.12, 0.65, math.pi, 2 * math.pi, 14), 0.15, hat_colour, -1),
            (_ellipse(0.1 * (u[49] - 0.5), -0.5, w * 1.25, 0.12, 14), 0.2, _mul(hat_colour, 0.8), -1),
        )
    elif hat_kind == 2:  # beanie: a rounded crown and a folded band
        band = np.array([[-w * 1.12, -0.62], [w * 1.12, -0.62], [w * 1.12, -0.4], [-w * 1.12, -0.4]])
        hat = (
            (_arc(0.0, -0.45, w * 1.1, 0.75, math.pi, 2 * math.pi, 14), 0.15, hat_colour, -1),
            (band, 0.15, _mul(hat_colour, 0.85), -1),
        )

    glasses_kind = 0 if u[42] > 0.3 else 1 + int(u[43] * 3)  # round, square, sunglasses
    glasses: tuple[np.ndarray, ...] = ()
    gr = eye_rx * (1.5 + 0.5 * u[45])
    if glasses_kind:
        lenses = []
        for sgn in (-1.0, 1.0):
            if glasses_kind == 2:
                lenses.append(
                    np.array([[-gr, -gr * 0.7], [gr, -gr * 0.7], [gr, gr * 0.7], [-gr, gr * 0.7]]) + (sgn * ex, ey)
                )
            else:
                lenses.append(_ellipse(sgn * ex, ey, gr, gr * 0.85, 14))
        glasses = (*lenses, np.array([[-ex + gr, ey - 0.02], [ex - gr, ey - 0.02]]))

    return Identity(
        size=size,
        skin=skin,
        hair=hair,
        lip=lip,
        iris=iris,
        brow=brow,
        behind=tuple(behind),
        face=tuple(face),
        beard=None if beard is None else (beard, _D_MOUTH * 0.7, _mul(hair, 0.9), -1),
        eyes=tuple(eyes),
        eye_ry=eye_ry,
        iris_r=eye_rx * 0.55,
        brows=brows,
        mouth=mouth,
        mouth_open=mouth_open,
        hair_top=None if hair_top is None else (hair_top, _D_HAIR, hair, -1),
        hat=hat,
        glasses=glasses,
        glasses_colour=_ACCESSORY[int(u[44] * 4)],
        sunglasses=glasses_kind == 3,
        smile=(u[33] - 0.35) * 0.12,
    )


# Nuisance strengths at difficulty 0 (studio portraits) and 1 (harsh), interpolated linearly in between.
# Units: yaw/pitch in half face heights of feature parallax, roll in degrees (std), scale as log-size std,
# shift as a fraction of the image side (std), colour terms as fractions, noise and gradients in 0..255 levels.
NUISANCE_RANGES: dict[str, tuple[float, float]] = {
    "yaw": (0.03, 0.2),  # std
    "yaw_max": (0.1, 0.6),
    "pitch": (0.02, 0.1),  # std
    "roll": (1.0, 7.0),  # std, degrees
    "scale": (0.01, 0.06),  # std of log size
    "shift": (0.004, 0.03),  # std, fraction of the side
    "blink": (0.0, 0.1),  # probability of closed eyes
    "eye_close": (0.05, 0.4),  # max fraction the eyes narrow
    "brow_raise": (0.01, 0.04),  # std
    "smile": (0.015, 0.065),  # std of the mouth curve around the identity's resting one
    "mouth_open": (0.05, 0.25),  # probability
    "beard_absent": (0.05, 0.15),  # probability a bearded identity is shaven in an image
    "accessory_absent": (0.1, 0.4),  # probability a hat or glasses are left off in an image
    "occluder": (0.0, 0.25),  # probability of a shape over part of the face
    "bg_saturation": (0.2, 0.8),  # colourfulness of the background
    "bg_gradient": (6.0, 60.0),  # max corner-to-corner background change, levels
    "clutter": (0.0, 3.0),  # mean number of background shapes
    "light_gradient": (0.05, 0.55),  # max relative brightness change across the image
    "colour_cast": (0.01, 0.08),  # std of the log gain per channel
    "exposure": (0.04, 0.29),  # std of the log gain
    "blur": (0.1, 0.9),  # max Gaussian sigma at 32 px, px
    "noise": (0.5, 8.5),  # max noise std, levels
    "jpeg_spread": (5.0, 50.0),  # JPEG quality drawn from [max - spread, max]
}


class Nuisance(dict):
    """Strengths at one difficulty, readable as attributes (`a.yaw`)."""

    __getattr__ = dict.__getitem__


@functools.lru_cache(maxsize=16)
def nuisance(difficulty: float) -> Nuisance:
    """The nuisance strengths at `difficulty` (0..1)."""
    return Nuisance({k: lo + (hi - lo) * difficulty for k, (lo, hi) in NUISANCE_RANGES.items()})


def supersampling(size: int) -> int:
    """Canvas scale factor: a canvas of about 100-130 px, at least 2x up to 64 px images."""
    return max(1, min(4, math.ceil(100 / size)))


_RAMPS: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _ramps(size: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y coordinates in [-1, 1] over a `size` x `size` image (cached)."""
    if size not in _RAMPS:
        r = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        _RAMPS[size] = (np.tile(r, (size, 1)), np.tile(r[:, None], (1, size)))
    return _RAMPS[size]


def render(ident: Identity, rng: np.random.Generator, size: int, difficulty: float) -> np.ndarray:
    """One image of `ident`: an RGB uint8 array of `size` x `size`, its nuisances drawn from `rng`."""
    a = nuisance(difficulty)
    side = size * supersampling(size)
    g = rng.standard_normal(16).tolist()
    u = rng.random(32).tolist()

    # Pose and framing: yaw and pitch move features by their depth (parallax), roll rotates the whole head.
    yaw = max(-a.yaw_max, min(a.yaw_max, g[0] * a.yaw))
    pitch = g[1] * a.pitch
    roll = math.radians(g[2] * a.roll)
    unit = side * 0.33 * ident.size * math.exp(g[3] * a.scale)
    cx = side * (0.5 + g[4] * a.shift)
    cy = side * (0.56 + g[5] * a.shift)

    # Expression.
    eye_open = 0.15 if u[0] < a.blink else 1.0 - a.eye_close * u[1]
    brow_raise = g[6] * a.brow_raise
    smile = ident.smile + g[7] * a.smile

    # Background: a four-corner gradient, then clutter, all behind the person.
    bg = _random_colour(u[3], u[4], u[5], a.bg_saturation)
    corners = np.array(g[8:12], dtype=np.float32).reshape(2, 2, 1) * (a.bg_gradient * u[6])
    corners = corners + np.array(bg, dtype=np.float32)
    canvas = cv2.resize(np.clip(corners, 0, 255).astype(np.uint8), (side, side), interpolation=cv2.INTER_LINEAR)
    n_clutter = int(rng.poisson(a.clutter)) if a.clutter > 0 else 0
    if n_clutter:
        for row in (rng.random((n_clutter, 8)) * side).tolist():
            colour = _random_colour(row[5] / side, row[6] / side, row[7] / side, 0.8)
            p0 = (int(row[0] * _SCALE), int(row[1] * _SCALE))
            if row[4] < side * 0.5:
                cv2.rectangle(canvas, p0, (int(row[2] * _SCALE), int(row[3] * _SCALE)), colour, -1, _AA, SHIFT)
            else:
                cv2.circle(canvas, p0, int(row[2] * _SCALE * 0.25), colour, -1, _AA, SHIFT)

    shapes: list[Shape] = [(_SHOULDERS, 0.0, _random_colour(u[7], u[8], u[9], 0.7), -1), *ident.behind, *ident.face]
    add = shapes.append
    if ident.beard is not None and u[10] > a.beard_absent:
        add(ident.beard)
    if u[2] < a.mouth_open:
        lip0, lip1, lip2, in0, in1, in2 = ident.mouth_open
        gap = 0.04 + 0.1 * u[11]
        add((lip0 + smile * lip1 + gap * lip2, _D_MOUTH, ident.lip, -1))
        add((in0 + smile * in1 + gap * in2, _D_MOUTH, _MOUTH_INSIDE, -1))
    else:
        add((ident.mouth[0] + smile * ident.mouth[1], _D_MOUTH, ident.lip, -1))
    ry = max(ident.eye_ry * eye_open, 0.012)
    iris_r = min(ident.iris_r, ry * 1.05)
    for (p1, p2, ex, ey), brow in zip(ident.eyes, ident.brows, strict=True):
        add((p1 + ry * p2, _D_EYE, _EYE_WHITE, -1))
        if eye_open > 0.3:
            add((_CIRCLE[10] * iris_r + (ex + 0.1 * yaw, ey), _D_EYE, ident.iris, -1))
        add((brow + (0.0, -brow_raise), _D_EYE, ident.brow, -1))
    if ident.hair_top is not None:
        add(ident.hair_top)
    if ident.hat and u[12] > a.accessory_absent:
        shapes += ident.hat
    if ident.glasses and u[13] > a.accessory_absent:
        thick = max(1, round(unit * 0.035))
        lens = (_LENS_DARK, -1) if ident.sunglasses else (ident.glasses_colour, thick)
        add((ident.glasses[0], _D_GLASSES, *lens))
        add((ident.glasses[1], _D_GLASSES, *lens))
        add((ident.glasses[2], _D_GLASSES, ident.glasses_colour, -thick))
    if u[14] < a.occluder:  # an occluder (hand, microphone, someone else's head) over part of the face
        occluder = _ellipse(
            (u[15] - 0.5) * 1.6, 0.2 + 0.8 * u[16], 0.25 + 0.3 * u[17], 0.2 + 0.3 * u[18], 14, u[19] * 3
        )
        add((occluder, _D_OCCLUDER, _random_colour(u[20], u[21], u[22], 0.6), -1))

    # One vectorised transform of every point: parallax by depth, foreshortening, roll, scale, position.
    lengths = [len(s[0]) for s in shapes]
    pts = np.concatenate([s[0] for s in shapes])
    depth = np.repeat(np.array([s[1] for s in shapes]), lengths)
    x = pts[:, 0] * (1.0 - 0.25 * abs(yaw)) + (0.3 * yaw) * depth
    y = pts[:, 1] * (1.0 - 0.2 * abs(pitch)) + (0.3 * pitch) * depth
    cr, sr = math.cos(roll) * unit * _SCALE, math.sin(roll) * unit * _SCALE
    out = np.empty((len(pts), 2), dtype=np.int32)
    out[:, 0] = np.rint(cx * _SCALE + cr * x - sr * y)
    out[:, 1] = np.rint(cy * _SCALE + sr * x + cr * y)
    start = 0
    for (_, _, colour, thick), n in zip(shapes, lengths, strict=True):
        poly = out[start : start + n]
        start += n
        if thick == -1:
            cv2.fillPoly(canvas, [poly], colour, _AA, SHIFT)
        else:
            cv2.polylines(canvas, [poly], thick > 0, colour, abs(thick), _AA, SHIFT)

    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)

    # Light: exposure, a directional gradient, a colour cast; then optics and sensor: blur and noise.
    rx, ry_ = _ramps(size)
    strength = a.light_gradient * u[23]
    theta = 2.0 * math.pi * u[24]
    img *= (1.0 + strength * (math.cos(theta) * rx + math.sin(theta) * ry_))[:, :, None]
    img *= np.exp(np.array(g[12:15], dtype=np.float32) * a.colour_cast + g[15] * a.exposure)
    sigma = a.blur * u[25] * size / 32.0
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = a.noise * u[26]
    if noise > 0.5:
        img += rng.standard_normal(img.shape, dtype=np.float32) * noise
    return np.clip(img, 0, 255).astype(np.uint8)


def render_jpeg(ident: Identity, rng: np.random.Generator, size: int, difficulty: float, max_quality: int) -> bytes:
    """One JPEG-encoded image of `ident`; its quality is drawn per image, up to `max_quality`."""
    low = max(30, max_quality - round(nuisance(difficulty).jpeg_spread))
    quality = int(rng.integers(low, max_quality + 1))
    rgb = render(ident, rng, size, difficulty)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode a JPEG")
    return buf.tobytes()
