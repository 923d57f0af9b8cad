"""Continual-learning runner (installed as ``caopd_pl.continual``)."""
