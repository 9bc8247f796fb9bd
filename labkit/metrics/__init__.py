"""Metrics shared by chapters: retrieval (Recall@K, NMI) and GAN sample quality."""
from labkit.metrics.gan import mode_quality
from labkit.metrics.retrieval import nearest_neighbours, nmi, recall_at_k

__all__ = ["mode_quality", "nearest_neighbours", "nmi", "recall_at_k"]
from labkit.metrics.cost import count_cost

__all__ += ["count_cost"]
from labkit.metrics.detection import COCO_AREA_RANGES, coco_evaluate, ground_truth_to_coco

__all__ += ["COCO_AREA_RANGES", "coco_evaluate", "ground_truth_to_coco"]
from labkit.metrics.gan import frechet_distance, knn_precision_recall
from labkit.metrics.gan_features import (FeatureClassifier, classifier_fd, classifier_precision_recall,
                                         composition_validity, feature_classifier, image_features, real_floor,
                                         train_feature_classifier)

__all__ += ["frechet_distance", "knn_precision_recall", "FeatureClassifier", "classifier_fd",
            "classifier_precision_recall", "composition_validity", "feature_classifier", "image_features",
            "real_floor", "train_feature_classifier"]
