"""Figure builders, one module per topic; ``common`` holds the shared style."""
from .activations import (histogram_heatmap, layer_histograms, moment_lines, percentile_bands,
                          training_curves)
from .common import HEIGHT, PALETTE, WIDTH, color, styled

__all__ = ["HEIGHT", "PALETTE", "WIDTH", "color", "histogram_heatmap", "layer_histograms", "moment_lines",
           "percentile_bands", "styled", "training_curves"]
