"""Viable (microbial) environmental monitoring: samples, their lifecycle, judging and labels."""
