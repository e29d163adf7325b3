from .open_clip_zero_shot import OpenCLIPZeroShot

__all__ = ['OpenCLIPZeroShot']
