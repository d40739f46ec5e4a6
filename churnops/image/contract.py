"""The image data contract: input geometry, classes, the simulated sensor and the ISP parameters.

Separate from the tabular `DatasetContract` (which it shares nothing with but the name and the
YAML home); `churnops.contract.load_any_contract` picks the class by the file's `task`.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

CFA_PATTERNS = ("RGGB",)  # what the ISP demosaics; other layouts are refused by name


class SensorSpec(BaseModel):
    """The simulated camera that renders the bundled digits into raw captures."""

    cfa: Literal["RGGB"] = "RGGB"
    black_level: int = Field(1024, ge=0)
    white_level: int = Field(15000, gt=0, le=65535)
    # per-channel sensitivities (R, G, B): what white balance undoes; as-shot neutral = gains / gains[G]
    gains: tuple[float, float, float] = (0.55, 1.0, 0.7)
    # camera RGB from linear sRGB; rows sum to 1 so grey stays grey before the gains
    color_matrix: list[list[float]] = Field(
        default_factory=lambda: [[0.80, 0.15, 0.05], [0.10, 0.80, 0.10], [0.05, 0.20, 0.75]]
    )
    blur_sigma: float = Field(0.7, ge=0)  # optics, in scene pixels
    electrons_per_dn: float = Field(4.0, gt=0)  # shot noise: Poisson in electrons
    read_noise_dn: float = Field(6.0, ge=0)  # Gaussian, in DN
    exposure: float = Field(0.8, gt=0)  # scene 1.0 -> this fraction of full scale (before gains)

    @field_validator("color_matrix")
    @classmethod
    def _three_by_three(cls, v: list[list[float]]) -> list[list[float]]:
        if len(v) != 3 or any(len(r) != 3 for r in v):
            raise ValueError("sensor.color_matrix must be 3x3")
        return v

    @model_validator(mode="after")
    def _levels(self) -> "SensorSpec":
        if self.white_level <= self.black_level:
            raise ValueError(f"sensor.white_level {self.white_level} must exceed black_level {self.black_level}")
        return self


class IspSpec(BaseModel):
    """Parameters of the seven ISP stages (raw captures only; PNG/JPG skip the ISP)."""

    white_balance: Literal["camera", "gray_world", "none"] | tuple[float, float, float] = "camera"
    demosaic: Literal["bilinear", "nearest"] = "bilinear"
    color_correction: Literal["camera", "none"] = "camera"
    exposure_stops: float = 0.0
    gamma: float = Field(2.222, gt=0)  # power 1/gamma ...
    toe_slope: float = Field(4.5, ge=0)  # ... with a linear toe of this slope (BT.709; 0 = pure power)
    denoise_sigma: float = Field(0.5, ge=0)
    sharpen_amount: float = Field(0.3, ge=0)
    sharpen_sigma: float = Field(1.0, gt=0)


class ImageSpec(BaseModel):
    height: int = Field(32, ge=22)  # LibRaw refuses raw frames under 22 pixels a side
    width: int = Field(32, ge=22)
    channels: Literal[3] = 3


class ImageContract(BaseModel):
    """An image-classification data set in the ImageFolder layout (`<class>/<file>`)."""

    name: str
    task: Literal["image_classification"]
    description: str = ""
    model_name: str
    experiment_name: str
    classes: list[str] = Field(min_length=2)
    extensions: list[str] = Field(default_factory=lambda: [".dng", ".png", ".jpg", ".jpeg"])
    image: ImageSpec = Field(default_factory=ImageSpec)
    sensor: SensorSpec = Field(default_factory=SensorSpec)
    isp: IspSpec = Field(default_factory=IspSpec)
    min_images_per_class: int = Field(5, ge=1)
    # promotion-time gates on the sensitivity analysis: accuracy under a variation >= value
    sensitivity_floor: dict[str, float] = Field(default_factory=dict)

    @field_validator("classes")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("classes must be unique")
        return v

    def fingerprint(self) -> str:
        """Stable SHA-256 of the contract's content."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()
