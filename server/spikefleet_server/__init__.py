"""spikefleet-server: conversion, signed program registry, fleet management."""

__version__ = "0.1.0"
