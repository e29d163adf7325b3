from .open_clip_teacher import OpenCLIPTeacher

__all__ = ['OpenCLIPTeacher']
