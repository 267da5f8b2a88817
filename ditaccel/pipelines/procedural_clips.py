"""Procedural training clips for the built-in tiny video model.

Each clip shows one or two coloured shapes (circle, square, triangle) that move, bounce, grow or
shrink over a grayscale background (plain or textured), and comes with a template prompt such as
"a red circle moving right on a gray background". Clips are rendered on whatever device the
generator lives on with a handful of vectorised torch ops, so a training loop can stream a fresh
batch every step; a seed fixes everything (on a given device).

Backgrounds are grayscale and object colours saturated on purpose: the prompt-following benchmark
can then find the object in a generated video by saturation alone, without knowing the scene.

Some colour x shape x motion combinations (``HELD_OUT_COMBOS``) never occur in training, so that
the benchmark can test prompts the model has not seen as a whole.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.88, 0.12, 0.12),
    "green": (0.12, 0.72, 0.22),
    "blue": (0.14, 0.30, 0.92),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.18, 0.82),
    "orange": (0.98, 0.52, 0.06),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# The first eight motions are translations; their unit directions are in image coordinates
# (x to the right, y downwards), so "up" is negative y.
TRANSLATIONS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up and right": (1.0, -1.0),
    "up and left": (-1.0, -1.0),
    "down and right": (1.0, 1.0),
    "down and left": (-1.0, 1.0),
}
MOTIONS: tuple[str, ...] = tuple(TRANSLATIONS) + ("bouncing", "growing", "shrinking")

PLAIN_BACKGROUNDS: dict[str, float] = {"gray": 0.5, "black": 0.06, "white": 0.94}
TEXTURED_BACKGROUNDS: tuple[str, ...] = ("checkered", "striped", "noisy")
BACKGROUNDS: tuple[str, ...] = tuple(PLAIN_BACKGROUNDS) + TEXTURED_BACKGROUNDS

NUM_FRAMES, HEIGHT, WIDTH = 16, 64, 64


def motion_phrase(motion: str) -> str:
    return motion if motion in ("bouncing", "growing", "shrinking") else f"moving {motion}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _held_out_combos() -> tuple[tuple[str, str, str], ...]:
    """30 (colour, shape, translation) triples kept out of training.

    One or two directions per colour x shape pair, spread so that every colour, shape and
    direction still occurs in training with other partners.
    """
    directions = list(TRANSLATIONS)
    combos = []
    pairs = [(c, s) for c in COLOURS for s in SHAPES]  # 18 pairs
    for i, (colour, shape) in enumerate(pairs):
        combos.append((colour, shape, directions[(3 * i) % 8]))
        if i < 12:
            combos.append((colour, shape, directions[(3 * i + 4) % 8]))
    return tuple(combos)


HELD_OUT_COMBOS: tuple[tuple[str, str, str], ...] = _held_out_combos()

# Every word a prompt can contain, in a fixed order (the tokenizer's vocabulary is built from it).
VOCABULARY: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["a", "an", "and", "on", "background", "moving"]
        + list(COLOURS)
        + list(SHAPES)
        + [w for m in MOTIONS for w in m.split()]
        + list(BACKGROUNDS)
    )
)


@dataclass
class ObjectSpec:
    colour: str
    shape: str
    motion: str


@dataclass
class ClipSpec:
    """What one clip shows; ``prompt`` renders it as text."""

    objects: list[ObjectSpec]
    background: str = "gray"

    @property
    def prompt(self) -> str:
        parts = [f"{_article(o.colour)} {o.colour} {o.shape} {motion_phrase(o.motion)}" for o in self.objects]
        return " and ".join(parts) + f" on a {self.background} background"


def parse_prompt(prompt: str) -> ClipSpec:
    """Inverse of ``ClipSpec.prompt`` for template prompts (raises ``ValueError`` otherwise)."""
    text = " ".join(prompt.lower().split())
    background = "gray"
    if " on a " in text:
        text, bg = text.rsplit(" on a ", 1)
        bg = bg.removesuffix(" background")
        if bg not in BACKGROUNDS:
            raise ValueError(f"unknown background {bg!r}; allowed: {', '.join(BACKGROUNDS)}")
        background = bg
    objects = []
    for part in re.split(r" and (?=an? )", text):
        words = re.sub(r"^an? ", "", part).split(" ", 2)
        if len(words) < 3 or words[0] not in COLOURS or words[1] not in SHAPES:
            raise ValueError(f"cannot parse {part!r} as '<colour> <shape> <motion>'")
        motion = words[2].removeprefix("moving ")
        if motion not in MOTIONS:
            raise ValueError(f"unknown motion {motion!r}; allowed: {', '.join(MOTIONS)}")
        objects.append(ObjectSpec(words[0], words[1], motion))
    return ClipSpec(objects, background)


def _held_out_table(device) -> torch.Tensor:
    table = torch.zeros(len(COLOURS), len(SHAPES), len(MOTIONS), dtype=torch.bool)
    colours, shapes = list(COLOURS), list(SHAPES)
    for c, s, m in HELD_OUT_COMBOS:
        table[colours.index(c), shapes.index(s), MOTIONS.index(m)] = True
    return table.to(device)


def _uniform(shape, generator, device, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator, device=device)


def _object_tracks(colour, shape, motion, n, generator, device, num_frames, size):
    """Per-frame centre (x, y) and radius of one object per clip, each of shape (n, F).

    Positions are drawn so that the object stays inside the frame for the whole clip.
    """
    f = torch.linspace(0.0, 1.0, num_frames, device=device)[None, :]  # (1, F)
    radius0 = _uniform((n,), generator, device, 0.10, 0.15) * size  # 6.4 .. 9.6 px at 64
    travel = _uniform((n,), generator, device, 0.34, 0.50) * size  # 22 .. 32 px at 64
    directions = torch.tensor(list(TRANSLATIONS.values()) + [(0.0, 0.0)] * 3, device=device)
    d = directions[motion]  # (n, 2)
    diagonal = (d.abs().sum(-1) > 1.5).float()
    travel = travel * (1.0 - 0.25 * diagonal)  # diagonals cover the same ground per axis as ~0.75 x
    is_grow = motion == MOTIONS.index("growing")
    is_shrink = motion == MOTIONS.index("shrinking")
    is_bounce = motion == MOTIONS.index("bouncing")

    # Radius over time: grow 1x -> 1.9x, shrink 1.9x -> 1x (of a smaller base size).
    r_small = radius0 * 0.8
    radius = radius0[:, None].expand(n, num_frames)
    radius = torch.where(is_grow[:, None], r_small[:, None] * (1.0 + 0.9 * f), radius)
    radius = torch.where(is_shrink[:, None], r_small[:, None] * (1.9 - 0.9 * f), radius)
    r_max = radius.max(dim=1).values
    margin = r_max * 1.2 + 1.0  # triangles reach 1.15 r from the centre

    # Bounce: hops twice, |sin| arcs up from a floor position.
    hop = _uniform((n,), generator, device, 0.22, 0.32) * size
    extent_x = travel * d[:, 0].abs()
    extent_y = torch.where(is_bounce, hop, travel * d[:, 1].abs())
    lo_x, hi_x = margin, size - margin - extent_x
    lo_y, hi_y = margin, size - margin - extent_y
    sx = lo_x + (hi_x - lo_x) * torch.rand((n,), generator=generator, device=device)
    sy = lo_y + (hi_y - lo_y) * torch.rand((n,), generator=generator, device=device)
    # A translation starts at the end of its range that it moves away from.
    x0 = torch.where(d[:, 0] < 0, sx + extent_x, sx)
    y0 = torch.where(d[:, 1] < 0, sy + extent_y, sy)
    cx = x0[:, None] + d[:, 0:1] * travel[:, None] * f
    cy = y0[:, None] + d[:, 1:2] * travel[:, None] * f
    bounce_y = (sy + hop)[:, None] - hop[:, None] * torch.sin(2.0 * math.pi * f).abs()
    cy = torch.where(is_bounce[:, None], bounce_y, cy)
    return cx, cy, radius


def _render_shape(shape, cx, cy, radius, xs, ys):
    """Coverage in [0, 1] of each pixel, shape (n, F, H, W), with a one-pixel soft edge."""
    dx = xs[None, None, None, :] - cx[..., None, None]
    dy = ys[None, None, :, None] - cy[..., None, None]
    r = radius[..., None, None]
    circle = torch.sqrt(dx * dx + dy * dy) - r
    square = torch.maximum(dx.abs(), dy.abs()) - 0.88 * r  # same area as the circle
    # Upward equilateral triangle with circumradius 1.15 r: the distance to its three edge
    # lines (normals pointing down, up-right, up-left) minus the inradius.
    R = 1.15 * r
    s3 = math.sqrt(3.0) / 2.0
    triangle = torch.maximum(torch.maximum(dy, s3 * dx - 0.5 * dy), -s3 * dx - 0.5 * dy) - 0.5 * R
    sdf = torch.where(shape[:, None, None, None] == 0, circle, torch.where(shape[:, None, None, None] == 1, square, triangle))
    return (0.5 - sdf).clamp(0.0, 1.0)


def _render_backgrounds(kind, n, generator, device, size):
    """Grayscale backgrounds, shape (n, H, W): plain levels, checkerboard, stripes, block noise."""
    ys = torch.arange(size, device=device)[:, None]
    xs = torch.arange(size, device=device)[None, :]
    plain = torch.tensor(list(PLAIN_BACKGROUNDS.values()), device=device)
    level = plain[kind.clamp(max=len(plain) - 1)][:, None, None].expand(n, size, size)
    cell = size // 8
    checker = (((ys // cell) + (xs // cell)) % 2).float()
    stripes = ((ys // (size // 16)) % 2).float().expand(size, size)
    low = _uniform((n, 1, 1), generator, device, 0.25, 0.40)
    high = low + _uniform((n, 1, 1), generator, device, 0.20, 0.30)
    checker = low + (high - low) * checker
    stripes = low + (high - low) * stripes
    blocks = torch.rand((n, 1, size // 4, size // 4), generator=generator, device=device)
    noisy = (0.3 + 0.4 * torch.nn.functional.interpolate(blocks, size=(size, size), mode="nearest"))[:, 0]
    k = kind[:, None, None]
    out = torch.where(k == BACKGROUNDS.index("checkered"), checker, level)
    out = torch.where(k == BACKGROUNDS.index("striped"), stripes, out)
    return torch.where(k == BACKGROUNDS.index("noisy"), noisy, out)


def sample_specs(
    batch_size: int,
    generator: torch.Generator,
    *,
    two_object_prob: float = 0.3,
    textured_prob: float = 0.4,
    exclude_held_out: bool = True,
) -> dict[str, torch.Tensor]:
    """Draw clip contents as index tensors on the generator's device.

    Returns ``colour``/``shape``/``motion`` of shape (B, 2) (second object is used where
    ``two`` is True), ``background`` (B,) and ``two`` (B,). With ``exclude_held_out`` a held-out
    combination is moved to the next direction that is not held out.
    """
    device = generator.device
    n = batch_size
    colour = torch.randint(len(COLOURS), (n, 2), generator=generator, device=device)
    # The second object never shares the first one's colour (prompts would be ambiguous).
    offset = torch.randint(1, len(COLOURS), (n,), generator=generator, device=device)
    colour[:, 1] = (colour[:, 0] + offset) % len(COLOURS)
    shape = torch.randint(len(SHAPES), (n, 2), generator=generator, device=device)
    motion = torch.randint(len(MOTIONS), (n, 2), generator=generator, device=device)
    textured = torch.rand((n,), generator=generator, device=device) < textured_prob
    plain_bg = torch.randint(len(PLAIN_BACKGROUNDS), (n,), generator=generator, device=device)
    tex_bg = len(PLAIN_BACKGROUNDS) + torch.randint(len(TEXTURED_BACKGROUNDS), (n,), generator=generator, device=device)
    background = torch.where(textured, tex_bg, plain_bg)
    two = torch.rand((n,), generator=generator, device=device) < two_object_prob
    if exclude_held_out:
        table = _held_out_table(device)
        for _ in range(len(TRANSLATIONS)):
            bad = table[colour, shape, motion]
            motion = torch.where(bad, (motion + 1) % len(TRANSLATIONS), motion)
    return {"colour": colour, "shape": shape, "motion": motion, "background": background, "two": two}


def render_clips(
    specs: dict[str, torch.Tensor],
    generator: torch.Generator,
    *,
    num_frames: int = NUM_FRAMES,
    size: int = HEIGHT,
) -> torch.Tensor:
    """Render index specs (from ``sample_specs`` or ``specs_from_clip_specs``) as video.

    Returns float32 (B, 3, F, H, W) in [-1, 1], the layout ``WanTransformer3DModel`` takes.
    """
    device = generator.device
    n = specs["background"].shape[0]
    bg = _render_backgrounds(specs["background"], n, generator, device, size)
    video = bg[:, None, None].expand(n, 3, num_frames, size, size).clone()
    palette = torch.tensor(list(COLOURS.values()), device=device)
    coords = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    for k in range(2):
        cx, cy, radius = _object_tracks(
            specs["colour"][:, k], specs["shape"][:, k], specs["motion"][:, k], n, generator, device, num_frames, size
        )
        alpha = _render_shape(specs["shape"][:, k], cx, cy, radius, coords, coords)  # (n, F, H, W)
        if k == 1:
            alpha = alpha * specs["two"][:, None, None, None].float()
        colour = palette[specs["colour"][:, k]][:, :, None, None, None]  # (n, 3, 1, 1, 1)
        video = video * (1.0 - alpha[:, None]) + colour * alpha[:, None]
    return video * 2.0 - 1.0


def prompts_from_specs(specs: dict[str, torch.Tensor]) -> list[str]:
    return [s.prompt for s in clip_specs_from_specs(specs)]


def clip_specs_from_specs(specs: dict[str, torch.Tensor]) -> list[ClipSpec]:
    colours, cpu = list(COLOURS), {k: v.cpu().tolist() for k, v in specs.items()}
    out = []
    for i in range(len(cpu["background"])):
        count = 2 if cpu["two"][i] else 1
        objects = [
            ObjectSpec(colours[cpu["colour"][i][k]], SHAPES[cpu["shape"][i][k]], MOTIONS[cpu["motion"][i][k]])
            for k in range(count)
        ]
        out.append(ClipSpec(objects, BACKGROUNDS[cpu["background"][i]]))
    return out


def specs_from_clip_specs(clips: list[ClipSpec], device="cpu") -> dict[str, torch.Tensor]:
    colours = list(COLOURS)
    rows = []
    for c in clips:
        objs = list(c.objects) + [c.objects[0]] * (2 - len(c.objects))
        rows.append(
            (
                [colours.index(o.colour) for o in objs],
                [SHAPES.index(o.shape) for o in objs],
                [MOTIONS.index(o.motion) for o in objs],
                BACKGROUNDS.index(c.background),
                len(c.objects) == 2,
            )
        )
    col, shp, mot, bg, two = zip(*rows)
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=device)  # noqa: E731
    return {"colour": t(col), "shape": t(shp), "motion": t(mot), "background": t(bg), "two": t(two, torch.bool)}


def generate_batch(
    batch_size: int, seed: int, device="cpu", **sample_kwargs
) -> tuple[torch.Tensor, list[str]]:
    """A batch of training clips (B, 3, F, H, W) in [-1, 1] and their prompts, fixed by ``seed``."""
    generator = torch.Generator(device=device).manual_seed(seed)
    specs = sample_specs(batch_size, generator, **sample_kwargs)
    return render_clips(specs, generator), prompts_from_specs(specs)


def held_out_prompts() -> list[str]:
    """The 30 single-object prompts of the prompt-following benchmark (never seen in training)."""
    return [
        ClipSpec([ObjectSpec(c, s, m)], BACKGROUNDS[i % len(BACKGROUNDS)]).prompt
        for i, (c, s, m) in enumerate(HELD_OUT_COMBOS)
    ]


def seen_prompts() -> list[str]:
    """Controls for ``held_out_prompts``: same colour, shape and background, a direction seen in training."""
    held = set(HELD_OUT_COMBOS)
    directions = list(TRANSLATIONS)
    prompts = []
    for i, (c, s, m) in enumerate(HELD_OUT_COMBOS):
        k = directions.index(m)
        while (c, s, directions[k]) in held:
            k = (k + 3) % len(directions)
        prompts.append(ClipSpec([ObjectSpec(c, s, directions[k])], BACKGROUNDS[i % len(BACKGROUNDS)]).prompt)
    return prompts

