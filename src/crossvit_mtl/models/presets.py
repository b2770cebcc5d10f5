"""The model zoo as data: one dict of hyper-parameters per preset name, as timm declares them.

``arch`` names the class in ``crossvit_mtl.models.ARCHITECTURES``; every other key is a keyword
argument of that class and can be overridden in ``create_model(name, **overrides)``.
"""
from __future__ import annotations

# CrossViT classifiers with the published sizes (Chen et al., ICCV 2021, Table 2 and appendix):
# branch widths, per-stage depths (small branch, large branch, fusion), heads, MLP ratios. Named
# by the input they take, 240 px (the 16-px branch sees it at 224), as timm names the same weights.
_CROSSVIT = dict(arch="crossvit", num_classes=1000, img_size=(240, 224), patch_sizes=(12, 16))
_DAGGER = dict(_CROSSVIT, stem="multi_conv")
# The dagger models fine-tuned at 384 px, named by their 408-px input as timm names them: the 12-px
# branch sees 408 px (34x34 patches), the 16-px branch 384 (24x24), the ratio of 240 to 224.
_DAGGER_408 = dict(_DAGGER, img_size=(408, 384))

# Dense families at the thesis's 128x256 input: an 8-px branch (16x32 grid) and a 16-px branch
# (8x16 grid); depths per stage are (small branch, large branch, fusion). ``kv_tokens`` caps
# the keys/values each attention takes from a patch grid, so the cost is linear in the image area;
# at 128x256 every grid is within a cap of 512 and nothing changes.
_DENSE = dict(img_size=(128, 256), patch_sizes=(8, 16), fusion="tokens", kv_tokens=512)
_DENSE_TINY = dict(_DENSE, dims=(64, 128), heads=(2, 4), stages=((1, 2, 1),) * 3,
                   mlp_ratios=(3.0, 3.0, 2.0), decoder_channels=64, drop_path_rate=0.0)
# The small family: 2 and 3 heads (widths 48 and 64 per head, where CPU attention kernels run
# far better than at 32) and a cap of 128 keys, so the large branch's fusion also attends over
# the 8-px grid pooled 2x2. Side by side against (3, 6) heads and a cap of 512, it trained 1.29x
# faster and reached 62.6 % instead of 59.0 % val mIoU in the same 5 minutes
# (benchmarks/race_segformer.py; SegFormer-B0 54.1 %).
_DENSE_SMALL = dict(_DENSE, dims=(96, 192), heads=(2, 3), kv_tokens=128, stages=((1, 3, 1),) * 3,
                    mlp_ratios=(3.0, 3.0, 2.0), decoder_channels=96, drop_path_rate=0.05)
_DENSE_BASE = dict(_DENSE, dims=(192, 384), heads=(6, 12), stages=((1, 4, 1),) * 3,
                   mlp_ratios=(4.0, 4.0, 2.0), decoder_channels=192, drop_path_rate=0.1)

#: Multi-task default: the four tasks of the built-in synthetic scenes.
MTL_TASKS = {"segmentation": 8, "depth": 1, "normal": 3, "classification": 4}

PRESETS: dict[str, dict] = {
    "crossvit_tiny_240": dict(_CROSSVIT, dims=(96, 192), heads=(3, 3), stages=((1, 4, 0),) * 3,
                              mlp_ratios=(4.0, 4.0, 1.0)),
    "crossvit_small_240": dict(_CROSSVIT, dims=(192, 384), heads=(6, 6), stages=((1, 4, 0),) * 3,
                               mlp_ratios=(4.0, 4.0, 1.0)),
    "crossvit_base_240": dict(_CROSSVIT, dims=(384, 768), heads=(12, 12), stages=((1, 4, 0),) * 3,
                              mlp_ratios=(4.0, 4.0, 1.0)),
    "crossvit_9_240": dict(_CROSSVIT, dims=(128, 256), heads=(4, 4), stages=((1, 3, 0),) * 3,
                           mlp_ratios=(3.0, 3.0, 1.0)),
    "crossvit_15_240": dict(_CROSSVIT, dims=(192, 384), heads=(6, 6), stages=((1, 5, 0),) * 3,
                            mlp_ratios=(3.0, 3.0, 1.0)),
    "crossvit_18_240": dict(_CROSSVIT, dims=(224, 448), heads=(7, 7), stages=((1, 6, 0),) * 3,
                            mlp_ratios=(3.0, 3.0, 1.0)),
    "crossvit_9_dagger_240": dict(_DAGGER, dims=(128, 256), heads=(4, 4), stages=((1, 3, 0),) * 3,
                                  mlp_ratios=(3.0, 3.0, 1.0)),
    "crossvit_15_dagger_240": dict(_DAGGER, dims=(192, 384), heads=(6, 6), stages=((1, 5, 0),) * 3,
                                   mlp_ratios=(3.0, 3.0, 1.0)),
    "crossvit_18_dagger_240": dict(_DAGGER, dims=(224, 448), heads=(7, 7), stages=((1, 6, 0),) * 3,
                                   mlp_ratios=(3.0, 3.0, 1.0)),
    "crossvit_15_dagger_408": dict(_DAGGER_408, dims=(192, 384), heads=(6, 6), stages=((1, 5, 0),) * 3,
                                   mlp_ratios=(3.0, 3.0, 1.0)),
    "crossvit_18_dagger_408": dict(_DAGGER_408, dims=(224, 448), heads=(7, 7), stages=((1, 6, 0),) * 3,
                                   mlp_ratios=(3.0, 3.0, 1.0)),
    "thesis_seg": dict(arch="thesis", num_classes=8, img_size=(128, 256), patch_sizes=(8, 16),
                       embed_dim=256, num_heads=8, depth=1, cross_depth=1, decoder_channels=256),
    "crossvit_seg_tiny": dict(_DENSE_TINY, arch="seg", num_classes=8),
    "crossvit_seg_small": dict(_DENSE_SMALL, arch="seg", num_classes=8),
    "crossvit_seg_base": dict(_DENSE_BASE, arch="seg", num_classes=8),
    "crossvit_mtl_tiny": dict(_DENSE_TINY, arch="mtl", tasks=MTL_TASKS),
    "crossvit_mtl_small": dict(_DENSE_SMALL, arch="mtl", tasks=MTL_TASKS),
    "crossvit_mtl_base": dict(_DENSE_BASE, arch="mtl", tasks=MTL_TASKS),
}

#: Other names of presets: the classifiers' names before they took their input size (IBM's).
ALIASES: dict[str, str] = {name[:-3] + {"240": "224", "408": "384"}[name[-3:]]: name
                           for name in PRESETS if name.endswith(("_240", "_408"))}
