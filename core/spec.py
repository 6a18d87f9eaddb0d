"""The run spec: every setting that defines a run, in one frozen, typed value.

Every entry point (``gsam2 image|autolabel|video|cvat``, the FiftyOne operators
and ``GroundedSam2Model``, the CVAT functions) turns its own spelling of a
setting (``--slice-size``, ``slice_size``, ``GSAM2_SLICE_SIZE``) into one
:class:`RunSpec`, then runs it (``Run(spec)``, :class:`~.run.Run`, loads its models). The spec
knows nothing of running, so it imports nothing heavy and no module it names.
So a setting means the same thing everywhere, and a spec can travel: as JSON
to another process or machine (:meth:`RunSpec.to_dict`), or as a CVAT
function's environment (:meth:`RunSpec.to_env`).

This module imports no torch: building and checking a spec is cheap, and a
driver that only plans a run never loads a model.

Example:
    >>> spec = RunSpec.build(prompt="car. person.", slice_size=640)
    >>> spec.prompt
    ('car', 'person')
    >>> RunSpec.from_dict(spec.to_dict()) == spec
    True
    >>> spec.to_env()["GSAM2_SLICE_SIZE"]
    '640'
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InputError
from .prompts import parse_prompt, prompt_text

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
DEFAULT_SEGMENTER = "facebook/sam2.1-hiera-tiny"
#: The hub's SAM 2.1 checkpoints load both as image and as video models.
DEFAULT_TRACKER = DEFAULT_SEGMENTER
DEFAULT_BOX_THRESHOLD = 0.35
DEFAULT_TEXT_THRESHOLD = 0.25
DEFAULT_STEP = 20
DEFAULT_IOU_THRESHOLD = 0.8
PROMPT_TYPES = ("mask", "box", "point")
CAPTION_TASKS = ("caption", "detailed_caption", "more_detailed_caption")

#: The prefix of every setting in a CVAT function's environment (``GSAM2_SLICE_SIZE``).
ENV_PREFIX = "GSAM2_"


class SettingError(InputError):
    """A setting of a run has a value it cannot take.

    The message names the setting in neutral words (``"slice overlap 600: must be
    smaller than the slice size (512)"``); an adapter shows it in its own spelling
    with :meth:`spelled` (``--slice-overlap``, ``slice_overlap``, ``GSAM2_SLICE_OVERLAP``).
    """

    def __init__(self, setting: str, value: Any, problem: str):
        self.setting, self.value, self.problem = setting, value, problem
        super().__init__(self.spelled(neutral_name))

    def spelled(self, name_of: Callable[[str], str]) -> str:
        """The one-line message with the setting named by ``name_of(setting)`` (a switch that is on: its name alone)."""
        if self.value is True and _KINDS.get(self.setting) == "bool":  # a switch: --compile, not --compile True
            return f"{name_of(self.setting)}: {self.problem}"
        return f"{name_of(self.setting)} {self.value!r}: {self.problem}"


def neutral_name(setting: str) -> str:
    """``"slice_overlap"`` -> ``"slice overlap"``: how the core names a setting."""
    return setting.replace("_", " ")


def cli_name(setting: str) -> str:
    """``"slice_overlap"`` -> ``"--slice-overlap"``."""
    return "--" + setting.replace("_", "-")


def env_name(setting: str) -> str:
    """``"slice_overlap"`` -> ``"GSAM2_SLICE_OVERLAP"``."""
    return ENV_PREFIX + setting.upper()


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a run; build it with :meth:`build`, check it with :meth:`check`.

    Models are named as users name them (see :func:`~.models.parse_detector_spec`):
    a backend (``"florence2"``, ``"owlv2"``, ``"sam3"``, ``"dinox"``), ``BACKEND:CHECKPOINT``,
    a hub id or a local path.
    """

    #: The phrases to find, normalised (:func:`~.prompts.parse_prompt`); ``None`` for
    #: prompt-free detectors, or when the phrases come with the work (CVAT labels).
    prompt: tuple[str, ...] | None = None
    # ---- models
    detector: str = DEFAULT_DETECTOR
    #: Florence-2's task (``object_detection``, ``phrase_grounding``, ...).
    task: str | None = None
    #: Detect over overlapping square tiles of this many pixels (SAHI); ``None``: whole images.
    slice_size: int | None = None
    #: Overlap of the tiles in pixels; ``None``: 128 or a quarter of the tile.
    slice_overlap: int | None = None
    segmenter: str = DEFAULT_SEGMENTER
    #: A SAM 2 video checkpoint (hub id, folder, size name), or ``sam3[:CHECKPOINT]``.
    tracker: str = DEFAULT_TRACKER
    #: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
    device: str = "auto"
    # ---- thresholds and batching
    box_threshold: float = DEFAULT_BOX_THRESHOLD
    text_threshold: float = DEFAULT_TEXT_THRESHOLD
    #: Images per forward pass; ``None``: 4 on CUDA, 1 elsewhere.
    batch_size: int | None = None
    #: Compile SAM 2's image encoder with ``torch.compile``.
    compile: bool = False
    # ---- tracking (video)
    step: int = DEFAULT_STEP
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    prompt_type: str = "mask"
    reverse: bool = False
    #: End a track after this many frames unseen; ``None``: twice the step.
    end_after: int | None = None
    # ---- auto-labelling (Florence-2 captions, then grounds them)
    caption_task: str | None = None
    #: The cloud detector's token. Never serialised (:meth:`to_dict`, :meth:`to_env`), never
    #: shown, never compared: it comes from the environment or FiftyOne's secrets where the run is.
    api_token: str | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ building

    @classmethod
    def build(cls, **settings: Any) -> RunSpec:
        """A checked spec from keyword settings; ``None`` means the default, strings are parsed.

        Raises:
            SettingError: an unknown setting or a value it cannot take.
        """
        values = {name: value for name, value in _parsed(settings).items() if value is not None}
        if "slice_size" not in values:
            values.pop("slice_overlap", None)  # an overlap means nothing without tiles (a form keeps its default)
        return cls(**values).check()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSpec:
        """The spec that :meth:`to_dict` wrote (JSON-safe); unknown keys are an error."""
        if "api_token" in data:
            raise SettingError("api_token", "***", "is never part of a spec's dict; give it where the run is")
        return cls.build(**data)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-safe values (the prompt as a list), without the API token."""
        data = dataclasses.asdict(self)
        del data["api_token"]
        if self.prompt is not None:
            data["prompt"] = list(self.prompt)
        return data

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> RunSpec:
        """The spec a CVAT function's environment describes (``GSAM2_DETECTOR``, ``GSAM2_SLICE_SIZE``, ...).

        Unset or empty variables take the defaults; ``overrides`` win over the
        environment. The cloud token is read from ``DDS_API_TOKEN`` by the detector itself.
        """
        environ = os.environ if environ is None else environ
        settings: dict[str, Any] = {}
        for name in _KINDS:
            if name == "api_token":
                continue
            text = environ.get(env_name(name), "").strip()
            if text:
                settings[name] = text
        settings.update(overrides)
        return cls.build(**settings)

    def to_env(self) -> dict[str, str]:
        """The settings that differ from the defaults, as a CVAT function's environment variables."""
        env: dict[str, str] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "api_token" or value == item.default:
                continue
            if item.name == "prompt":
                text = prompt_text(value)
            elif isinstance(value, bool):
                text = "1" if value else "0"
            else:
                text = str(value)
            env[env_name(item.name)] = text
        return env

    def replace(self, **settings: Any) -> RunSpec:
        """A copy with some settings changed, parsed as :meth:`build` parses them (``None``: the default), checked again."""
        values = {name: _default(name) if value is None else value for name, value in _parsed(settings).items()}
        if values.get("slice_size", self.slice_size) is None:
            values["slice_overlap"] = None
        return dataclasses.replace(self, **values).check()

    # ------------------------------------------------------------------ checking

    def check(self) -> RunSpec:
        """Raise :class:`SettingError` for the first setting that cannot work; return the spec.

        Only what needs no model is checked here: names of backends and
        checkpoints are checked when they load (:meth:`load`).
        """
        for name in ("detector", "segmenter", "tracker", "device"):
            if not getattr(self, name).strip():
                raise SettingError(name, getattr(self, name), "is empty")
        for name in ("box_threshold", "text_threshold", "iou_threshold"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise SettingError(name, value, "must be a number between 0 and 1")
        for name in ("slice_size", "batch_size", "step", "end_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingError(name, value, "must be at least 1")
        if self.slice_overlap is not None and self.slice_size is not None:
            if not 0 <= self.slice_overlap < self.slice_size:
                raise SettingError(
                    "slice_overlap", self.slice_overlap, f"must be at least 0 and smaller than the slice size ({self.slice_size})"
                )
        if self.prompt_type not in PROMPT_TYPES:
            raise SettingError("prompt_type", self.prompt_type, f"choose one of {', '.join(PROMPT_TYPES)}")
        if self.caption_task is not None and self.caption_task not in CAPTION_TASKS:
            raise SettingError("caption_task", self.caption_task, f"choose one of {', '.join(CAPTION_TASKS)}")
        return self

    @property
    def tracks_with_sam3(self) -> bool:
        """Whether the tracker is SAM 3, which finds and follows the prompt's objects by itself."""
        return self.tracker.strip().partition(":")[0].lower() == "sam3"

    def check_for_video(self) -> RunSpec:
        """:meth:`check`, plus what a video run needs: SAM 3 tracking takes no detector options."""
        self.check()
        if self.tracks_with_sam3:
            for name, default in (("detector", DEFAULT_DETECTOR), ("task", None), ("slice_size", None), ("reverse", False)):
                if getattr(self, name) != default:
                    raise SettingError(
                        name,
                        getattr(self, name),
                        "a SAM 3 tracker detects and tracks by itself; this applies only to a detector + SAM 2 run",
                    )
        return self


def _parsed(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` parsed to their types, unset values as ``None``; an unknown name is a :class:`SettingError`.

    A slice size of 0 is how forms and environments say "no slicing": it becomes ``None``.
    """
    unknown = sorted(set(settings) - set(_KINDS))
    if unknown:
        raise SettingError(unknown[0], settings[unknown[0]], f"is not a setting; settings: {', '.join(_KINDS)}")
    values = {name: None if _is_unset(value) else _coerce(name, value) for name, value in settings.items()}
    if values.get("slice_size") == 0:
        values["slice_size"] = None
    return values


def _default(name: str) -> Any:
    spec_field = RunSpec.__dataclass_fields__[name]
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return spec_field.default


def _is_unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip() and not isinstance(value, bool))


#: How each setting's value is read from a string or a Python value, from its annotation.
_KIND_OF_TYPE = {"tuple[str, ...] | None": "phrases", "str": "text", "str | None": "text", "int": "int",
                 "int | None": "int", "float": "float", "bool": "bool"}
_KINDS: dict[str, str] = {item.name: _KIND_OF_TYPE[item.type] for item in dataclasses.fields(RunSpec)}

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _coerce(name: str, value: Any) -> Any:
    """``value`` as setting ``name`` holds it, or a :class:`SettingError` that names the setting."""
    kind = _KINDS[name]
    if kind == "phrases":
        return tuple(parse_prompt(list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value))
    if kind == "text":
        if not isinstance(value, str):
            raise SettingError(name, value, "must be text")
        return value.strip()
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise SettingError(name, value, "must be true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise SettingError(name, value, "must be a whole number")
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise SettingError(name, value, "must be a whole number") from None
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise SettingError(name, value, "must be a whole number")
        if isinstance(value, (int, float)):
            return int(value)
        raise SettingError(name, value, "must be a whole number")
    # float
    if isinstance(value, bool):
        raise SettingError(name, value, "must be a number")
    try:
        return float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise SettingError(name, value, "must be a number") from None
