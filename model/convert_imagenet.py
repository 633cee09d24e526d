"""torchvision's ImageNet MobileNetV2 checkpoint -> Keras no-top weights (.h5).

  python -m model.convert_imagenet --checkpoint=mobilenet_v2-b0353104.pth \\
      --output=imagenet_mnv2_1.0_no_top.h5
"""

import dataclasses

from facelandmark import config_flags
from facelandmark.config_flags import option
from model import imagenet_weights


@dataclasses.dataclass
class ConvertConfig:
  """`python -m model.convert_imagenet`'s flags: convert's arguments."""
  checkpoint: str = option(help='torchvision MobileNetV2 state dict in the '
                           'legacy (non-zip) torch.save format, e.g. '
                           'mobilenet_v2-b0353104.pth.')
  output: str = option(help='Keras weights file to write (.h5), for '
                       'train_loop.py --init_weights.')
  alpha: float = option(1.0, "Width multiplier of the checkpoint's net.")


def main(argv):
  del argv
  cfg = config_flags.config_from_flags(ConvertConfig)
  imagenet_weights.convert(**dataclasses.asdict(cfg))


if __name__ == '__main__':
  config_flags.define_flags(ConvertConfig, required=('checkpoint', 'output'))
  config_flags.run(main, 'convert_imagenet')
