"""The cvat-sdk functions' parameters (``cvat-cli ... -p name=type:value``) as a run spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core.errors import InputError
from ...core.spec import RunSpec, SettingError


def spec_from_params(params: Mapping[str, Any]) -> RunSpec:
    """``RunSpec.build(**params)``: strings (``-p slice_size=str:640``) are parsed, typed values taken as they are.

    ``slice_size`` 0 means no slicing (as the spec reads it). A setting the
    spec cannot take is one line naming the parameter (``slice_overlap 600: ...``).
    """
    try:
        return RunSpec.build(**params)
    except SettingError as error:
        raise InputError(error.spelled(str)) from None
