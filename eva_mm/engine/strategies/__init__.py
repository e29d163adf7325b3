from .deepspeed import DeepSpeedStrategy, register_deepspeed_optimizers

__all__ = ['DeepSpeedStrategy', 'register_deepspeed_optimizers']
