"""Objectives: the RecA loss and the reconstruction template bank."""
