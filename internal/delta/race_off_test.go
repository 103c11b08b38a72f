//go:build !race

package delta

const raceOn = false
