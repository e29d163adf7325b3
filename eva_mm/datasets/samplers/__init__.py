from .repeat_factor_sampler import (RepeatFactorSampler,
                                    repeat_factors_from_category_frequency)

__all__ = ['RepeatFactorSampler', 'repeat_factors_from_category_frequency']
