# As the fp16 DeepSpeed config, in bf16 (no loss scaling). Also runs on CPU:
# DeepSpeed falls back to its CPU accelerator with gloo.
_base_ = ['./eva-mim_vit-giant-p14_clip-l14_128xb32-150e_deepspeed-fp16.py']

strategy = dict(fp16=None, bf16=dict(enabled=True))
