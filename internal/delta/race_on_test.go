//go:build race

package delta

// raceOn: the race detector multiplies memory and CPU ~10x; the 160 MiB
// rootfs round trip is left to runs without it.
const raceOn = true
