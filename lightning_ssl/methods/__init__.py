"""Self-supervised methods, one ``LightningModule`` per file."""

from lightning_ssl.methods.barlow_twins import BarlowTwins
from lightning_ssl.methods.base import SSLMethod
from lightning_ssl.methods.byol import BYOL
from lightning_ssl.methods.clip import CLIP
from lightning_ssl.methods.cpc import CPC
from lightning_ssl.methods.dino import DINO
from lightning_ssl.methods.ibot import IBOT
from lightning_ssl.methods.ijepa import IJEPA
from lightning_ssl.methods.instdisc import InstDisc
from lightning_ssl.methods.mae import MAE
from lightning_ssl.methods.moco import MoCo
from lightning_ssl.methods.mocov3 import MoCoV3
from lightning_ssl.methods.nnclr import NNCLR
from lightning_ssl.methods.pcl import PCL
from lightning_ssl.methods.simclr import SimCLR
from lightning_ssl.methods.simsiam import SimSiam
from lightning_ssl.methods.swav import SwAV
from lightning_ssl.methods.vicreg import VICReg

__all__ = [
    "BYOL",
    "CLIP",
    "CPC",
    "DINO",
    "IBOT",
    "IJEPA",
    "MAE",
    "NNCLR",
    "PCL",
    "BarlowTwins",
    "InstDisc",
    "MoCo",
    "MoCoV3",
    "SSLMethod",
    "SimCLR",
    "SimSiam",
    "SwAV",
    "VICReg",
]
