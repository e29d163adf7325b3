# The evaluation transform of EVA-01's ImageNet-1K evaluation (--crop_pct
# 1.0, EVA-01/eva/README.md) and of open_clip's validation: bicubic resize
# of the short edge to the size, then a center crop of the size. The
# configs of other sizes set img_size and rescale the two steps.
img_size = 224
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='ResizeEdge',
        scale=img_size,
        edge='short',
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
