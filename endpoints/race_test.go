//go:build race

package endpoints

// raceEnabled: the race detector is on (it multiplies memory use).
const raceEnabled = true
