"""Pictures: learning curves, value heatmaps with policy arrows, per-layer statistics.

Uses matplotlib's non-interactive Agg backend; every function writes a PNG and returns its path.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
