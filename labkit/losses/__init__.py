"""Losses shared by more than one chapter."""
from labkit.losses.ranking import (
    RANKING_LOSSES,
    angular_loss,
    contrastive_loss,
    npair_loss,
    pairwise_distances,
    ranking_loss,
    spread_out_regularizer,
    triplet_loss,
)

__all__ = [
    "RANKING_LOSSES", "angular_loss", "contrastive_loss", "npair_loss", "pairwise_distances",
    "ranking_loss", "spread_out_regularizer", "triplet_loss",
]
