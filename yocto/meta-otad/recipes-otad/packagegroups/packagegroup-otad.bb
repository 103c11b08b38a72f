SUMMARY = "otad update agent and what it needs on the device"
LICENSE = "MIT"
# Skipped together with otad when this build's Go is too old for it.
inherit packagegroup otad-go

# otad pulls in its configuration (virtual-otad-conf: otad-conf, or your
# replacement chosen with PREFERRED_RPROVIDER_virtual-otad-conf).
RDEPENDS:${PN} = "otad"
# Add to an image with: IMAGE_INSTALL:append = " packagegroup-otad"
