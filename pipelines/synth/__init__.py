"""Synthetic two-centre cohort of sagittal T2 cervical spine MRI phantoms (DICOM) with simulated reader boxes.

The reference study's data are private; this generator makes data good enough to train, validate and monitor
the whole system honestly. Everything it writes is marked as synthetic.
"""

from __future__ import annotations

from pipelines.synth.cohort import CohortSummary, generate_cohort
from pipelines.synth.params import SynthParams, SynthProfile

__all__ = ["CohortSummary", "SynthParams", "SynthProfile", "generate_cohort"]
