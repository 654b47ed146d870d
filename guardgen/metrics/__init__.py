"""Metrics: pure functions on tensors/arrays, thin layers over scikit-learn where it has them."""

from guardgen.metrics.classification import accuracy, class_rates, conditional_accuracy, forget_rate
from guardgen.metrics.clustering import ari, nmi, purity
from guardgen.metrics.detection import auroc, average_precision, bootstrap_ci, threshold_at_fpr, tpr_at_fpr
from guardgen.metrics.fd import (coverage_density, fd_from_features, fd_score, feature_statistics, frechet_distance,
                                 precision_recall_knn)
from guardgen.metrics.membership import mia_auc
from guardgen.metrics.unlearning import gap_to_retrain, mia_efficacy, unlearning_report

__all__ = [
    "accuracy", "class_rates", "conditional_accuracy", "forget_rate",
    "ari", "nmi", "purity",
    "auroc", "average_precision", "bootstrap_ci", "threshold_at_fpr", "tpr_at_fpr",
    "coverage_density", "fd_from_features", "fd_score", "feature_statistics", "frechet_distance", "precision_recall_knn",
    "mia_auc",
    "gap_to_retrain", "mia_efficacy", "unlearning_report",
]
