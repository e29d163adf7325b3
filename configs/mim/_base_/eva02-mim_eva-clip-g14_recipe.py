# EVA-02 MIM pre-training recipe (Fang et al., arXiv:2303.11331): an EVA-02
# student (EVAViT eva02-* preset: SwiGLU, RoPE, patch 14) regresses the
# EVA-CLIP-g/14 features of the masked patches. Everything not set here is
# the EVA-01 recipe it inherits (the same data pipeline, block masking,
# AdamW and schedule shape, EVA-02/asuka's defaults match EVA-01's there).
# Sources: EVA-02/asuka/README.md "Pre-training" (the per-size commands) and
# EVA-02/asuka/run_eva02_pretraining.py (argument defaults).
_base_ = ['./eva-mim_vit-giant-p14_recipe.py']

# Crop (0.2, 1.0), ratio (3/4, 4/3), bicubic, flip 0.5: run_eva02_pretraining
# .py:129-136 and datasets.py:40-45. CLIP mean/std for student and teacher
# (datasets.py:37-38, 67-68). Block masking as EVA-01, 105 of 256 patches
# (README: num_mask_patches=105, "224*224/14/14 * 0.4"), min 16 per block
# (run_eva02_pretraining.py:85-88; masking_generator.py is EVA-01's).
data_root = 'data/imagenet21k'  # README: IN-21K (14.2M images), no labels
train_dataloader = dict(dataset=dict(data_root=data_root))

model = dict(
    backbone=dict(
        arch='eva02-base',  # set per size, with the head's in_channels
        drop_path_rate=0.0,  # README: dpr=0.0 for Ti/S/B, 0.1 for L
        # Every official run builds a *_xavier_normal_init student
        # (modeling_pretrain.py:109-154), with the default init_std 0.02.
        init_mode='eva02-mim'),
    # lm_head: Linear(embed_dim, 1024) on the masked tokens, cosine loss
    # (modeling_pretrain.py:112, 240-245; engine_for_pretraining.py:37-40),
    # Xavier-normal like every Linear of the official model (:121-122).
    head=dict(
        in_channels=768,
        out_channels=1024,
        init_cfg=dict(
            type='Xavier', layer='Linear', distribution='normal', bias=0.)),
    target_generator=dict(
        _delete_=True,
        type='eva_mm.OpenCLIPTeacher',
        # README: teacher_type=evaclip, clip_model=EVA_CLIP_g_14_X, weights
        # eva_clip_psz14.pt (EVA-01's EVA-CLIP-g/14, LAION-400M, 78.5%
        # zero-shot; EVA-01/clip/README.md). open_clip has the same model as
        # 'EVA01-g-14' (timm eva_giant_patch14_224 tower, head with bias) and
        # hosts these weights as 'laion400m_s11b_b41k'; or pass a local file:
        # `convert_eva.py --src-format official-clip eva_clip_psz14.pt OUT`.
        # Its targets: head(norm(tokens))[:, 1:], 1024-d
        # (eva_clip/vit_model.py:347-368).
        model_name='EVA01-g-14',
        pretrained='laion400m_s11b_b41k'),
    # Not EVA-01's init (the student's and head's own above).
    init_std=None,
    # Every official run passes --stop_grad_conv1: the patch embedding gets
    # 0.1 of its gradient (modeling_pretrain.py:213-214).
    patch_embed_grad_scale=0.1)

# README (B/L): lr=1.5e-3 (also the default, run_eva02_pretraining.py:112),
# betas (0.9, 0.98), eps 1e-6, weight decay 0.05, clip grad 3.0 (default,
# :105), no layer decay; all inherited except the lr.
base_lr = 1.5e-3
warmup_epochs = 1  # README: wmep=1
max_epochs = 150  # README: epochs=150 for B/L on IN-21K
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    # The inherited per-iteration linear warm-up from warmup_lr 1e-6
    # (default, :114), one epoch.
    dict(
        _base_.param_scheduler[0],
        start_factor=1e-6 / base_lr,
        end=warmup_epochs),
    # The inherited per-iteration cosine to min_lr 1e-5 (default, :116),
    # until the end of training: without end and T_max, mmengine's Runner
    # takes them from train_cfg.max_epochs.
    {
        key: value
        for key, value in _base_.param_scheduler[1].items()
        if key not in ('end', 'T_max')
    } | dict(begin=warmup_epochs),
]
train_cfg = dict(max_epochs=max_epochs)
