# The optimiser of both EVA-01 fine-tuning stages: AdamW with layer-wise lr
# decay and --weight_decay 0.05, as both official commands (IN-21K and
# IN-1K, EVA-01/eva/README.md). Each stage sets --lr, --layer_decay and the
# AdamW betas / eps.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', weight_decay=0.05),
    constructor='eva_mm.LayerDecayOptimWrapperConstructor')
