"""Outputs: console summary, HTML report, recommendation dumps and exported indexes."""
