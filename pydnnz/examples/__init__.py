"""Example models and data used by the demo, the tests and the study (bench/)."""
