"""Method specs as written on a command line: ``dense``, a preset name, or a config with arguments.

    dense                                  no patch: the pipeline's own attention
    radial                                 the "radial" preset (per model family)
    radial(decay=0.5)                      ditaccel.Radial(decay=0.5) (patch fills decay/sink left
                                           None from the model's preset)
    neighborhood(window=(8,8,8), stride=2) ditaccel.Neighborhood(...): the config's own defaults
                                           for the rest, not the preset's window
    pyramid(samples=16)                    ditaccel.Pyramid(samples=16): the config's defaults for
                                           the rest (mode "fraction", the paper's sampled
                                           importance), not the preset's importance="score"
    radial(decay=0.5, dense_steps=0.3)     Schedule fields change those fields of the model's
                                           default schedule
    radial + broadcast(period=3)           a method with attention caching (``patch(..., cache=)``)
    broadcast(window=(0.2, 0.8))           caching alone, dense attention
    radial + residual_reuse(refresh_every=4)
    radial + residual_reuse(reference="radial(decay=2.0)")   a sparse reference instead of dense
    radial + first_block_cache(threshold=0.05)   diffusers' caches too (first_block_cache, taylorseer_cache)

Every spec resolves to the arguments of ``ditaccel.patch``, so the harness, ``generate`` and the
demo accept whatever ``patch`` accepts: a method added to ``METHOD_CONFIGS`` is usable everywhere
with no change to them. Values are Python literals (numbers, tuples, strings, True/False/None).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from dataclasses import dataclass, field

from .plugins.broadcast import Broadcast
from .plugins.neighborhood import Neighborhood
from .plugins.piecewise import Piecewise
from .plugins.pyramid import Pyramid
from .plugins.radial import Radial
from .plugins.residual_reuse import ResidualReuse
from .plugins.topk import TopK
from .presets import PRESETS, default_schedule, preset
from .schedule import Schedule

# Lower-case name -> config class. A new method registers its config here.
METHOD_CONFIGS: dict[str, type] = {
    "radial": Radial, "neighborhood": Neighborhood, "piecewise": Piecewise, "pyramid": Pyramid, "topk": TopK,
}
# Lower-case name -> cache config class (the part after "+"); diffusers' own caches by the name of
# their config, imported when used.
CACHE_CONFIGS: dict[str, type | str] = {
    "broadcast": Broadcast, "residual_reuse": ResidualReuse,
    "first_block_cache": "FirstBlockCacheConfig", "taylorseer_cache": "TaylorSeerCacheConfig",
}
_SCHEDULE_FIELDS = {f.name for f in dataclasses.fields(Schedule)}
DENSE = "dense"
_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


@dataclass(frozen=True)
class MethodSpec:
    """A parsed spec: ``text`` as written, ``method`` for ``patch`` (a preset name or a config;
    None = dense), ``schedule``: the spec's own schedule fields over ``Schedule()`` (checked when
    parsed; None when it has none); ``patch_arguments(family)`` puts them over the model's default."""

    text: str
    method: object = None
    schedule: Schedule | None = None
    parameters: dict = field(default_factory=dict)
    cache: object = None  # a cache config (Broadcast, ResidualReuse) or None

    @property
    def is_dense(self) -> bool:
        """No patch at all: the pipeline's own attention."""
        return self.method is None and self.cache is None

    def patch_arguments(self, family: str | None = None) -> dict:
        """Keyword arguments for ``ditaccel.patch`` after the pipeline. Schedule fields written in
        the spec change the model ``family``'s default schedule (the one ``patch`` would use) in
        those fields only; without a family they change ``Schedule()``'s defaults."""
        arguments = {"method": self.method}
        if self.cache is not None:
            arguments["cache"] = self.cache
        if any(k in _SCHEDULE_FIELDS for k in self.parameters):
            arguments["schedule"] = self.schedule_for(family)
        return arguments

    def schedule_for(self, family: str | None) -> Schedule | None:
        """The schedule ``patch`` runs this spec with on a model ``family``: the method's default
        there (``Schedule()`` without a family), changed in the fields the spec writes. None for
        dense attention (with or without a cache)."""
        if self.method is None:
            return None
        base = Schedule()
        if family is not None:
            base = preset(self.method, family)[1] if isinstance(self.method, str) else default_schedule(family, self.method)
        overrides = {k: v for k, v in self.parameters.items() if k in _SCHEDULE_FIELDS}
        return dataclasses.replace(base, **overrides) if overrides else base


def allowed_specs() -> str:
    return (f"'{DENSE}', a preset ({', '.join(sorted(PRESETS))}) or a config with keyword arguments "
            f"({', '.join(f'{name}(...)' for name in sorted(METHOD_CONFIGS))}), optionally '+ a cache' "
            f"({', '.join(f'{name}(...)' for name in sorted(CACHE_CONFIGS))}), or a cache alone")


def parse_method_spec(text: str) -> MethodSpec:
    """Parse one spec; raises ValueError naming what is wrong and what is allowed."""
    if not isinstance(text, str):
        raise TypeError(f"method spec must be a string, got {type(text).__name__}")
    parts = _split_top_level(text, "+")
    caches = [p for p in parts if _name_of(p) in CACHE_CONFIGS]
    methods = [p for p in parts if _name_of(p) not in CACHE_CONFIGS]
    if len(caches) > 1 or len(methods) > 1 or not parts:
        raise ValueError(f"spec {text!r} must be a method, a cache ({', '.join(sorted(CACHE_CONFIGS))}) or "
                         f"'method + cache'")
    cache = _parse_cache(caches[0], text) if caches else None
    if not methods:
        return MethodSpec(text.strip(), cache=cache)
    spec = _parse_method(methods[0])
    if cache is not None and spec.method is None:
        raise ValueError(f"spec {text!r}: write a cache alone for dense attention with caching, not 'dense + cache'")
    return dataclasses.replace(spec, text=text.strip(), cache=cache)


def _name_of(part: str) -> str | None:
    match = _SPEC.match(part)
    return match.group(1).lower() if match else None


def _parse_cache(part: str, text: str):
    match = _SPEC.match(part)
    name, body = match.group(1).lower(), match.group(2)
    parameters = _keyword_arguments(body, text) if body is not None else {}
    config_class = CACHE_CONFIGS[name]
    reference = parameters.get("reference")
    if config_class is ResidualReuse and isinstance(reference, str) and reference != DENSE:
        # A richer sparse reference, written as a method spec inside the string.
        parsed = _parse_method(reference)
        if not dataclasses.is_dataclass(parsed.method) or parsed.schedule is not None:
            raise ValueError(f"residual_reuse(reference=...) in spec {text!r} must be 'dense' or a method config "
                             f"with arguments and no schedule fields, e.g. reference='radial(decay=2.0)'; got {reference!r}")
        parameters["reference"] = parsed.method
    if isinstance(config_class, str):
        import diffusers

        config_class = getattr(diffusers, config_class)
    allowed = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(parameters) - allowed)
    if unknown:
        raise ValueError(f"{name}() has no parameter {', '.join(map(repr, unknown))} in spec {text!r}; "
                         f"allowed: {', '.join(sorted(allowed))}")
    return config_class(**parameters)


def _split_top_level(text: str, separator: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text + separator):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [p for p in parts if p]


def _parse_method(text: str) -> MethodSpec:
    match = _SPEC.match(text)
    if match is None:
        raise ValueError(f"method spec {text!r} is not NAME or NAME(key=value, ...); use {allowed_specs()}")
    name, body = match.group(1).lower(), match.group(2)
    if body is None:
        if name == DENSE:
            return MethodSpec(text.strip())
        if name not in PRESETS:
            raise ValueError(f"unknown method {name!r} in spec {text!r}; use {allowed_specs()}")
        return MethodSpec(text.strip(), method=name)
    if name not in METHOD_CONFIGS:
        raise ValueError(f"unknown method {name!r} in spec {text!r}; configs take arguments: "
                         f"{', '.join(sorted(METHOD_CONFIGS))}")
    parameters = _keyword_arguments(body, text)
    config_class = METHOD_CONFIGS[name]
    config_fields = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(parameters) - config_fields - _SCHEDULE_FIELDS)
    if unknown:
        raise ValueError(f"{name}() has no parameter {', '.join(map(repr, unknown))} in spec {text!r}; "
                         f"allowed: {', '.join(sorted(config_fields))} (method), "
                         f"{', '.join(sorted(_SCHEDULE_FIELDS))} (schedule)")
    method = config_class(**{k: v for k, v in parameters.items() if k in config_fields})
    schedule_args = {k: v for k, v in parameters.items() if k in _SCHEDULE_FIELDS}
    schedule = Schedule(**schedule_args) if schedule_args else None
    return MethodSpec(text.strip(), method=method, schedule=schedule, parameters=parameters)


def compose_spec(method: str, cache: str | None = None, schedule: str | None = None) -> MethodSpec:
    """One spec from a command line's separate parts: ``method`` (a spec, maybe with its cache),
    ``cache`` (a cache spec, e.g. ``broadcast(period=3)``) and ``schedule`` (Schedule fields,
    ``dense_steps=0.3, dense_layers=2``, over the method's default schedule)."""
    if cache:
        if any(_name_of(p) in CACHE_CONFIGS for p in _split_top_level(method, "+")):
            raise ValueError(f"--cache {cache!r}: the method spec {method!r} has a cache already")
        if _name_of(cache) not in CACHE_CONFIGS:
            raise ValueError(f"--cache {cache!r}: not a cache; use one of {', '.join(sorted(CACHE_CONFIGS))}")
        method = cache if method.strip().lower() == DENSE else f"{method} + {cache}"
    spec = parse_method_spec(method)
    if not schedule:
        return spec
    if spec.method is None:
        raise ValueError(f"--schedule {schedule!r}: a schedule says which steps and layers run sparse; pass a --method")
    overrides = _keyword_arguments(schedule, schedule)
    unknown = sorted(set(overrides) - _SCHEDULE_FIELDS)
    if unknown:
        raise ValueError(f"--schedule has no field {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(_SCHEDULE_FIELDS))}")
    parameters = {**spec.parameters, **overrides}
    scheduled = {k: v for k, v in parameters.items() if k in _SCHEDULE_FIELDS}
    return dataclasses.replace(spec, text=f"{spec.text} [{schedule.strip()}]", schedule=Schedule(**scheduled),
                               parameters=parameters)


def parse_method_specs(text: str) -> list[MethodSpec]:
    """A comma-separated list of specs; commas inside parentheses belong to a spec."""
    specs, depth, start = [], 0, 0
    for i, char in enumerate(text + ","):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            part = text[start:i].strip()
            if part:
                specs.append(parse_method_spec(part))
            start = i + 1
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in method list {text!r}")
    if not specs:
        raise ValueError(f"no method in {text!r}; use {allowed_specs()}")
    seen = set()
    for spec in specs:
        if spec.text in seen:
            raise ValueError(f"method {spec.text!r} is listed twice")
        seen.add(spec.text)
    return specs


def _keyword_arguments(body: str, text: str) -> dict:
    try:
        call = ast.parse(f"f({body})", mode="eval").body
    except SyntaxError as error:
        raise ValueError(f"cannot parse the arguments of spec {text!r}: {error.msg}") from None
    if call.args:
        raise ValueError(f"spec {text!r}: write arguments as key=value (positional arguments are not accepted)")
    parameters = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ValueError(f"spec {text!r}: ** is not accepted")
        try:
            value = ast.literal_eval(keyword.value)
        except ValueError:
            raise ValueError(f"spec {text!r}: the value of {keyword.arg} must be a literal "
                             f"(number, tuple, string, True/False/None)") from None
        parameters[keyword.arg] = tuple(value) if isinstance(value, list) else value
    return parameters
