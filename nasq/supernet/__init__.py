"""Weight-shared elastic modules over the ``nasq.blocks`` types (SpaceEvo §4.5 block-wise KD, §5 supernet)."""

from nasq.supernet.bn import recalibrate_bn
from nasq.supernet.elastic import ElasticStageModule, make_elastic_block, stage_specs
from nasq.supernet.model import DynamicHead, Supernet, build_supernet
from nasq.supernet.train import (SupernetTrainSettings, enable_qat, evaluate, kd_loss, sandwich_step,
                                 sandwich_subnets, step_rng, train_epoch)

__all__ = ["DynamicHead", "ElasticStageModule", "Supernet", "SupernetTrainSettings", "build_supernet",
           "enable_qat", "evaluate", "kd_loss", "make_elastic_block", "recalibrate_bn", "sandwich_step",
           "sandwich_subnets", "stage_specs", "step_rng", "train_epoch"]
