"""Weight-shared elastic modules over the ``nasq.blocks`` types (SpaceEvo §4.5 block-wise KD, §5 supernet)."""

from nasq.supernet.elastic import ElasticStageModule, make_elastic_block, stage_specs

__all__ = ["ElasticStageModule", "make_elastic_block", "stage_specs"]
