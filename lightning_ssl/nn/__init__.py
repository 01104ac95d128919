"""Backbones, heads, queues and other building blocks."""

from lightning_ssl.nn.backbones import Backbone
from lightning_ssl.nn.heads import MLP
from lightning_ssl.nn.queue import FeatureQueue
from lightning_ssl.nn.teacher import frozen_copy
from lightning_ssl.nn.text import TextTower

__all__ = ["MLP", "Backbone", "FeatureQueue", "TextTower", "frozen_copy"]
