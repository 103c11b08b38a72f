# Optional U-Boot configuration for otad, active only with "otad" in
# DISTRO_FEATURES (as meta-rauc gates its bbappends): adding the layer alone
# changes no other recipe.
require ${@bb.utils.contains('DISTRO_FEATURES', 'otad', 'otad-u-boot.inc', '', d)}
