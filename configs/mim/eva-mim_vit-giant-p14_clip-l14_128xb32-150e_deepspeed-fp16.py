# The EVA-01 ViT-g/14 MIM recipe as the official code ran it: DeepSpeed
# ZeRO stage 1 with fp16 and dynamic loss scaling, by mmengine's
# FlexibleRunner. GPU only: DeepSpeed has no fp16 on CPU (use the bf16 config).
_base_ = ['./_base_/eva-mim_vit-giant-p14_recipe.py']

runner_type = 'FlexibleRunner'
strategy = dict(
    type='eva_mm.DeepSpeedStrategy',
    # Official EVA-01 DeepSpeed config: ZeRO-1, fp16 with dynamic loss scale
    # starting at 2^16, window 500, hysteresis 2, min scale 1.
    fp16=dict(
        enabled=True,
        loss_scale=0,
        initial_scale_power=16,
        loss_scale_window=500,
        hysteresis=2,
        min_loss_scale=1),
    inputs_to_half=['inputs'],
    zero_optimization=dict(
        stage=1,
        allgather_partitions=True,
        reduce_scatter=True,
        allgather_bucket_size=int(5e8),
        reduce_bucket_size=int(5e8),
        overlap_comm=True,
        contiguous_gradients=True),
    gradient_clipping=3.0,  # paper: gradient clipping 3.0
    train_micro_batch_size_per_gpu={{_base_.batch_per_gpu}})
# DeepSpeed steps, scales and clips; the wrapper only forwards to it.
optim_wrapper = dict(type='DeepSpeedOptimWrapper', _delete_=True,
                     optimizer={{_base_.optim_wrapper.optimizer}},
                     constructor='eva_mm.LayerDecayOptimWrapperConstructor',
                     paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})
