# otad-go.bbclass — skip a recipe when this build's Go is older than otad's
# go.mod needs.
#
# Inherited by otad itself and by every recipe that needs it (its
# packagegroup, bundle recipes through otad-bundle): when otad is skipped,
# a recipe that still depended on it would make `bitbake world` fail
# ("Nothing RPROVIDES 'otad'", through meta-world-pkgdata) instead of being
# skipped with the reason. scarthgap (1.22), walnascar (1.24) and whinlatter
# (1.25) need a newer Go from a mixin layer (meta-lts-mixins, branch
# <release>/go); wrynose ships 1.26.

OTAD_GO_MIN ??= "1.26"

python () {
    have = (d.getVar('GOVERSION') or '').rstrip('%')
    need = d.getVar('OTAD_GO_MIN')
    if have and bb.utils.vercmp_string_op(have, need, '<'):
        raise bb.parse.SkipRecipe("otad needs Go >= %s (go.mod), this build provides %s: add a layer with a newer Go (meta-lts-mixins <release>/go), see meta-otad/README.md" % (need, have))
}
