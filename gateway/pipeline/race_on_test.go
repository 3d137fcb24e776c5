//go:build race

package pipeline

// raceEnabled: the race detector's sync.Pool drops a quarter of what is put
// back, so allocation counts through a pool are not meaningful under -race.
const raceEnabled = true
