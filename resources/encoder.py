"""EncoderResource: which HAADF encoders run, on which device, in which batches and precision."""

from dagster import ConfigurableResource
from pydantic import Field

from mmlake.encoders import get_encoder
from mmlake.encoders.device import resolve_device


class EncoderResource(ConfigurableResource):
    """The encoders' device settings. The same configuration runs on a CPU-only machine (device
    `auto` falls back to CPU) and on a CUDA host; `cuda` on a machine without CUDA is an error."""

    device: str = Field(default="auto", description="auto | cpu | cuda (auto picks CUDA when available)")
    batch_size: int = Field(default=256, description="chips per forward pass")
    precision: str = Field(default="fp32", description="fp32 | bf16 | fp16 (the latter two on CUDA only)")
    haadf_encoders: list[str] = Field(default=["fft", "vgg16"], description="encoders to run per chip")
    vgg16_weights: str = Field(default="imagenet",
                               description="imagenet (torchvision cache in $TORCH_HOME) | /path/vgg16.pth | random")
    seed: int = Field(default=0, description="seed for weights=random")

    def resolved_device(self) -> str:
        return resolve_device(self.device)

    def build(self, name: str):
        """The encoder `name` configured from this resource."""
        if name == "vgg16":
            return get_encoder("vgg16", weights=self.vgg16_weights, precision=self.precision,
                               seed=self.seed if self.vgg16_weights == "random" else None)
        return get_encoder(name)
