SUMMARY = "Example otad update bundle of core-image-minimal"
LICENSE = "MIT"

inherit otad-bundle

OTAD_BUNDLE_IMAGE = "core-image-minimal"
OTAD_BUNDLE_SECURITY_VERSION = "1"
# Set in local.conf; never commit private keys to a layer:
# OTAD_BUNDLE_KEYS = "/secure/otad/release-2026.key"
