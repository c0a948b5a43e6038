"""Shared foundations below every stage: fixed-point types and ap_fixed arithmetic (``fixed``),
artifacts (manifests, hashes, atomic writes: ``artifacts``), constants, errors and statistics.

Nothing in ``core`` imports any other part of trigger_ml.
"""
