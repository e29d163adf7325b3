# The CPU demo run by FlexibleRunner + DeepSpeed (ZeRO-1, bf16, gloo), e.g.
#   bash tools/dist_train.sh \
#       configs/mim/eva-mim_demo-tiny-p8_clip-tiny_shapes_deepspeed-bf16.py 2
_base_ = ['./eva-mim_demo-tiny-p8_clip-tiny_shapes.py']

runner_type = 'FlexibleRunner'
strategy = dict(
    type='eva_mm.DeepSpeedStrategy',
    bf16=dict(enabled=True),
    inputs_to_half=['inputs'],
    zero_optimization=dict(stage=1),
    gradient_clipping=3.0,
    train_micro_batch_size_per_gpu={{_base_.batch_per_gpu}})
optim_wrapper = dict(
    type='DeepSpeedOptimWrapper',
    _delete_=True,
    optimizer={{_base_.optim_wrapper.optimizer}},
    constructor='eva_mm.LayerDecayOptimWrapperConstructor',
    # The recipe's groups: mask_token decayed as the official optimizer.
    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})
