"""Pure notification rules: which event makes which notices, for whom."""
