"""Schedule: the tb_explain callbacks."""

from tb_explain.callbacks.activation_images import ActivationImages
from tb_explain.callbacks.attention_maps import AttentionMaps
from tb_explain.callbacks.attributions import Attributions
from tb_explain._errors import SkippedWorkWarning
from tb_explain.callbacks.base import ExplainCallback, LoggingFailedWarning, NotApplicable
from tb_explain.callbacks.embeddings import Embeddings
from tb_explain.callbacks.feature_visualization import FeatureVisualization
from tb_explain.callbacks.gradient_norms import GradientNorms
from tb_explain.callbacks.hparams import HParams
from tb_explain.callbacks.integrated_gradients import IntegratedGradients
from tb_explain.callbacks.model_graph import ModelGraph
from tb_explain.callbacks.predictions import Predictions
from tb_explain.callbacks.tabular import DecisionRules, FeatureImportance
from tb_explain.callbacks.training_curves import TrainingCurves
from tb_explain.callbacks.training_dynamics import TrainingDynamics
from tb_explain.callbacks.weight_histograms import WeightHistograms

__all__ = ["ActivationImages", "AttentionMaps", "Attributions", "DecisionRules", "Embeddings", "FeatureVisualization", "ExplainCallback", "LoggingFailedWarning", "NotApplicable", "SkippedWorkWarning", "FeatureImportance", "GradientNorms", "HParams", "IntegratedGradients", "ModelGraph", "Predictions",
           "TrainingCurves", "TrainingDynamics", "WeightHistograms"]
