# NOT FROM THE PAPER: EVA-02 has no video results or video code
# (arXiv:2303.11331; baaivision/EVA EVA-02/ has asuka, det and seg only).
# This is EVA-01's video stage-1 recipe (eva-g-p14_k722-intermediate-ft_
# 8x224.py, inherited unchanged: K-722, 8 frames at 224, lr 8e-6, 40
# epochs, 5 warm-up, cosine to lr / 100, drop path 0.3, Mixup/CutMix, batch
# 256) with an EVA-02-L backbone instead of EVA-g; nothing here was tuned or
# measured for EVA-02.
#
# RoPE is OFF. The EVA-02 weights were pre-trained with 2D rotary position
# embedding in every block, but EVAViT's RoPE is 2D (images) and the video
# EVAViT (num_frames > 1) refuses it: a space-time RoPE would be a new
# design, not EVA-02's. Here the EVA-02 blocks (SwiGLU with sub-LN, q/v
# bias, the EVA-02 widths) see positions only through the absolute
# position embedding, tiled over the 8 frames on load as for EVA-01. The
# loaded weights therefore run without the positional signal they were
# trained with, and the fine-tuning has to recover it.
_base_ = ['eva-g-p14_k722-intermediate-ft_8x224.py']

# An image EVA-02-L: the official MIM weights (eva02_L_pt_m38m_p14.pt)
# converted with
#   python tools/model_converters/convert_eva.py --src-format official-eva02 \
#       eva02_L_pt_m38m_p14.pt checkpoints/eva02_L_pt_m38m_p14.pth
# or an export of configs/mim/eva02-mim_vit-large-*.
pretrained = 'checkpoints/eva02_L_pt_m38m_p14.pth'
model = dict(
    backbone=dict(
        arch='eva02-large',  # 24 blocks, width 1024, patch 14
        use_rot_pos_emb=False,  # see above: 2D RoPE is images only
        init_cfg=dict(checkpoint=pretrained)),
    cls_head=dict(in_channels=1024))
