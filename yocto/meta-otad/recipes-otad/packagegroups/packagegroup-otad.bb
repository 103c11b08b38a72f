SUMMARY = "otad update agent and what it needs on the device"
LICENSE = "MIT"
inherit packagegroup

RDEPENDS:${PN} = "otad"
# Add to an image with: IMAGE_INSTALL:append = " packagegroup-otad"
