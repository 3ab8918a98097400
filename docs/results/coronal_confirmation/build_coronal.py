"""A second demo dataset for confirming protocol choices away from the axial test slab: coronal slices of the same
MNI152 2009 template (other anatomy in every slice: ventricles, temporal lobes, cerebellum and brain stem in view).

The demo's 3D volume (``monai_siamese.data.demo_volumes``: 1.5 mm in-plane, 1 mm axial) is resampled to 1.5 mm
isotropic (the image by area; the label, which ``demo_volumes`` gives as the argmax of the class probabilities, by
nearest neighbour), padded to 128 along z, and cut into coronal slices (axis 1) of 128 x 128
with more than 200 WM pixels. Splits as the axial demo's: the central slab of 17 slices (25 mm) is the test set, a
9-slice (13.5 mm) gap on each side is dropped, every 12th remaining slice is validation, the rest the pool.

    python docs/results/coronal_confirmation/build_coronal.py /work/runs/coronal_data
"""

import sys
from pathlib import Path

import torch
from monai.transforms import Resize, SpatialPad

from monai_siamese.data.datalist import write_datalist
from monai_siamese.data.demo import CLASS_NAMES, demo_volumes
from monai_siamese.data.io import save_nifti
from monai_siamese.data.slicing import iter_slices

root = Path(sys.argv[1])
image, label = demo_volumes()  # (1, 128, 128, 189), 1.5 x 1.5 x 1 mm
depth = round(image.shape[-1] / 1.5)  # 126 slices of 1.5 mm
image = Resize((-1, -1, depth), mode="area")(image)
label = Resize((-1, -1, depth), mode="nearest")(label)
pad = SpatialPad((-1, -1, 128))
image, label = pad(image), pad(label)
slices = list(iter_slices({"image": image, "label": label}, axis=1, min_foreground=201, foreground_classes=[3]))
ys = [s["slice_index"] for s in slices]
mid = (min(ys) + max(ys)) // 2
test_lo, test_hi, gap = mid - 8, mid + 8, 9
splits = {"training": [], "validation": [], "test": []}
pool = []
for s in slices:
    y = s["slice_index"]
    if not test_lo <= y <= test_hi and test_lo - gap <= y <= test_hi + gap:
        continue
    name = f"mni152_cor_y{y:03d}.nii.gz"
    img = s["image"][0].float()
    save_nifti(img, s["image"].affine, root / "images" / name)
    save_nifti(s["label"][0].to(torch.uint8), s["label"].affine, root / "labels" / name)
    entry = {"image": f"images/{name}", "label": f"labels/{name}", "slice_index": y}
    (splits["test"] if test_lo <= y <= test_hi else pool).append(entry)
for i, entry in enumerate(pool):
    splits["validation" if i % 12 == 6 else "training"].append(entry)
write_datalist(
    root / "datalist.json",
    splits,
    relative=False,
    extra={
        "name": "MNI152 2009 T1 demo (coronal slices)",
        "description": "coronal slices of the MNI152 2009 template, 1.5 mm, CSF/GM/WM",
        "labels": {str(i): n for i, n in enumerate(CLASS_NAMES)},
        "num_classes": len(CLASS_NAMES),
        "modality": "MR T1",
        "preset": "mr",
        "test_slab": [test_lo, test_hi],
        "gap": gap,
    },
)
print({k: len(v) for k, v in splits.items()}, "slices", min(ys), max(ys), "test", test_lo, test_hi)
