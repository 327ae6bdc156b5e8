"""AWS Lambda entry points; each module exports ``handler``."""
