"""SpaceEvo block types: specs with canonical keys, cost estimates, PyTorch modules and Keras twins."""

from nasq.blocks.spec import BLOCK_TYPES, BlockSpec, chain_key, check_chain, mid_channels, spec_features

__all__ = ["BLOCK_TYPES", "BlockSpec", "chain_key", "check_chain", "mid_channels", "spec_features"]
